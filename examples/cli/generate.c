/* circuits generate MODEL --prompt TEXT: continue a prompt (circuits_context_generate). */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    printf("usage: circuits generate MODEL (--prompt TEXT | --tokens IDS) [--max-new N] [--greedy]\n"
           "                               [--temperature T] [--top-k K] [--top-p P] [--freq-penalty F]\n"
           "                               [--seed S] [--samples N] [--eos ID] [--no-eos] [--no-cache]\n"
           "                               [--steer HOOK=VECTOR.npy[:SCALE]]... [--control-vector FILE.gguf[:SCALE]]...\n"
           "                               [--no-bos] [--no-processing] [--no-mmap] [--json]\n"
           "                               [--probe FILE [--probe-hook NAME]]\n"
           "\n"
           "Continues the prompt as TransformerLens's generate does: each step samples the next\n"
           "token from softmax(logits / T) after the frequency penalty, restricted to the top K\n"
           "tokens, or else to the smallest set with probability >= P; a row stops at EOS.\n"
           "The text is printed as it is generated.\n"
           "\n"
           "  --prompt TEXT       text, tokenized with the model's tokenizer (BOS first unless --no-bos)\n"
           "  --tokens IDS        token ids instead, e.g. 464,3290,318\n"
           "  --max-new N         tokens to generate (default 20; prompt + N must fit in n_ctx)\n"
           "  --greedy            always the most likely token (same as --temperature 0)\n"
           "  --temperature T     default 1; 0 is greedy\n"
           "  --top-k K           sample among the K most likely tokens (default: all)\n"
           "  --top-p P           nucleus sampling, 0 < P <= 1 (ignored with --top-k)\n"
           "  --freq-penalty F    subtract F times each token's count so far (default 0)\n"
           "  --seed S            the sampler's seed (default 0): the same seed, the same text\n"
           "  --samples N         N continuations of the prompt, generated as one batch (default 1)\n"
           "  --eos ID            the end-of-text token (default: the tokenizer's)\n"
           "  --no-eos            do not stop at EOS\n"
           "  --no-cache          recompute the whole sequence at each step (no KV cache; slower)\n"
           "  --steer HOOK=VECTOR.npy[:SCALE]\n"
           "                      add SCALE (default 1) times the float32 [d] vector at every position of\n"
           "                      hook point HOOK (a name, short name or * pattern; repeatable)\n"
           "  --control-vector FILE.gguf[:SCALE]\n"
           "                      a llama.cpp control vector: direction.N added after block N (repeatable)\n"
           "  --no-bos            do not prepend the BOS token to --prompt\n"
           "  --no-processing     load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap           read the weight files into memory instead of mapping them\n"
           "  --json              one JSON object on stdout\n"
           "  --probe FILE        a probe file (circuits probe-fit): after the text, the probe's output\n"
           "                      at each position that chose a generated token (its hook point's\n"
           "                      activation there), per generated token; with --json a \"probe\" array\n"
           "  --probe-hook NAME   the hook point to run it at (default: the one stored in the probe)\n");
}

typedef struct stream {
    const circuits_tokenizer *tok;
    int32_t eos;
    bool print;      /* stream row 0 to stdout */
    bool started;    /* the prompt has been printed */
    bool done;       /* row 0 has emitted EOS */
    progress *pg;
    const char *prompt_text; /* --prompt, or NULL: print the ids */
    const int32_t *ids;
    int64_t n_ids;
} stream;

/* The prompt, printed once the first step has succeeded (so that a failure prints nothing). */
static void start(stream *s)
{
    if (s->started) return;
    s->started = true;
    if (s->prompt_text) fputs(s->prompt_text, stdout);
    else
        for (int64_t i = 0; i < s->n_ids; i++) printf("%s%d", i ? " " : "", s->ids[i]);
}

static int on_step(int64_t step, const int32_t *tokens, const float *logits, int64_t batch, void *user)
{
    (void)logits;
    (void)batch;
    stream *s = user;
    progress_set(s->pg, step + 1);
    if (!s->print || s->done) return CIRCUITS_HOOK_CONTINUE;
    start(s);
    if (tokens[0] == s->eos) {
        s->done = true;
        return CIRCUITS_HOOK_CONTINUE;
    }
    if (s->tok) {
        char raw[256];
        size_t n = token_bytes(s->tok, tokens[0], raw, sizeof raw);
        fwrite(raw, 1, n, stdout);
    } else {
        printf(" %d", tokens[0]);
    }
    fflush(stdout);
    return CIRCUITS_HOOK_CONTINUE;
}

/* A probe monitor's outputs: out[b, position, k], every position of every row a run computes. */
typedef struct probe_log {
    float *out;
    int64_t L, K, B;
} probe_log;

static int on_probe(const float *out, int64_t batch, int64_t pos, int64_t n_outputs, int64_t first, void *user)
{
    probe_log *pl = user;
    if (batch != pl->B || n_outputs != pl->K || first + pos > pl->L) return -1;
    for (int64_t b = 0; b < batch; b++)
        memcpy(pl->out + ((size_t)b * (size_t)pl->L + (size_t)first) * (size_t)pl->K,
               out + (size_t)b * (size_t)pos * (size_t)pl->K, sizeof(float) * (size_t)(pos * pl->K));
    return CIRCUITS_HOOK_CONTINUE;
}

/* The generated tokens of one row up to (not including) its first EOS, as text. */
static char *decode(const circuits_tokenizer *tok, const int32_t *ids, int64_t n)
{
    size_t need = 0;
    circuits_tokenizer_decode(tok, ids, (size_t)n, NULL, 0, &need);
    char *buf = malloc(need ? need : 1);
    if (!buf) return NULL;
    buf[0] = '\0';
    if (circuits_tokenizer_decode(tok, ids, (size_t)n, buf, need ? need : 1, &need) != CIRCUITS_OK) buf[0] = '\0';
    return buf;
}

int cmd_generate(int argc, char **argv)
{
    common c = {0};
    long long max_new = 20, top_k = 0, seed = 0, samples = 1, eos_opt = -1;
    double temperature = 1.0, top_p = 0.0, freq = 0.0;
    bool greedy = false, no_eos = false, no_cache = false;
    steer_spec steers[32];
    size_t n_steers = 0;
    const char *probe_path = NULL, *probe_hook = NULL;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, true))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--max-new", &v))) {
            if (r < 0 || parse_int("--max-new", v, 0, INT32_MAX, &max_new)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--temperature", &v))) {
            if (r < 0 || parse_float("--temperature", v, 0.0, 1e30, &temperature)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--top-k", &v))) {
            if (r < 0 || parse_int("--top-k", v, 1, INT32_MAX, &top_k)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--top-p", &v))) {
            if (r < 0 || parse_float("--top-p", v, 0.0, 1.0, &top_p)) return EXIT_USAGE;
            if (top_p == 0.0) return usage_error("--top-p: must be above 0 (it is the probability mass kept)");
        } else if ((r = opt_value(&a, "--freq-penalty", &v))) {
            if (r < 0 || parse_float("--freq-penalty", v, 0.0, 1e30, &freq)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--seed", &v))) {
            if (r < 0 || parse_int("--seed", v, 0, LLONG_MAX, &seed)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--samples", &v))) {
            if (r < 0 || parse_int("--samples", v, 1, 4096, &samples)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--eos", &v))) {
            if (r < 0 || parse_int("--eos", v, 0, INT32_MAX, &eos_opt)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--steer", &v))) {
            if (r < 0 || steer_parse("--steer", v)) return EXIT_USAGE;
            if (n_steers == sizeof steers / sizeof steers[0]) return usage_error("at most 32 --steer / --control-vector");
            steers[n_steers++] = (steer_spec){v, false};
        } else if ((r = opt_value(&a, "--control-vector", &v))) {
            if (r < 0 || steer_parse("--control-vector", v)) return EXIT_USAGE;
            if (n_steers == sizeof steers / sizeof steers[0]) return usage_error("at most 32 --steer / --control-vector");
            steers[n_steers++] = (steer_spec){v, true};
        } else if ((r = opt_value(&a, "--probe", &probe_path)) || (r = opt_value(&a, "--probe-hook", &probe_hook))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_flag(&a, "--greedy"))) {
            if (r < 0) return EXIT_USAGE;
            greedy = true;
        } else if ((r = opt_flag(&a, "--no-eos"))) {
            if (r < 0) return EXIT_USAGE;
            no_eos = true;
        } else if ((r = opt_flag(&a, "--no-cache"))) {
            if (r < 0) return EXIT_USAGE;
            no_cache = true;
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    int rc = common_check(&c, true);
    if (rc) return rc;
    if (probe_hook && !probe_path) return usage_error("--probe-hook needs --probe FILE");
    if (c.tokens) {
        int32_t *ids;
        int64_t n;
        if ((rc = parse_ids("--tokens", c.tokens, &ids, &n))) return rc;
        free(ids);
    }
    circuits_model *m;
    circuits_config cfg;
    if ((rc = load_model(&c, &m, &cfg))) return rc;
    const circuits_tokenizer *tok = circuits_model_tokenizer(m);
    int32_t *ids = NULL, *prompt = NULL, *out = NULL;
    int64_t P = 0;
    circuits_context *ctx = NULL;
    circuits_probe *probe = NULL;
    probe_log pl = {0};
    circuits_probe_info pinfo = {.size = sizeof pinfo};
    if (probe_path && (circuits_probe_load(&probe, probe_path) || circuits_probe_get_info(probe, &pinfo))) {
        rc = lib_failure("--probe");
        goto done;
    }
    if ((rc = input_tokens(&c, m, &ids, &P))) goto done;
    if (P + max_new > cfg.n_ctx) {
        rc = failure("the prompt's %lld tokens + --max-new %lld exceed the model's n_ctx = %d", (long long)P, max_new,
                     cfg.n_ctx);
        goto done;
    }
    int64_t B = samples, L = P + max_new;
    prompt = malloc(sizeof(int32_t) * (size_t)(B * P));
    out = malloc(sizeof(int32_t) * (size_t)(B * L));
    if (!prompt || !out) {
        rc = failure("out of memory");
        goto done;
    }
    for (int64_t b = 0; b < B; b++) memcpy(prompt + b * P, ids, sizeof(int32_t) * (size_t)P);
    if (circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK) {
        rc = lib_failure("context");
        goto done;
    }
    if ((rc = steer_apply(ctx, &cfg, steers, n_steers))) goto done;
    if (probe) {
        pl = (probe_log){calloc((size_t)(B * L * pinfo.n_outputs), sizeof(float)), L, pinfo.n_outputs, B};
        if (!pl.out) {
            rc = failure("out of memory");
            goto done;
        }
        if (circuits_context_add_probe_monitor(ctx, probe, probe_hook, on_probe, &pl, NULL) != CIRCUITS_OK) {
            rc = lib_failure("--probe");
            goto done;
        }
    }
    int32_t eos = eos_opt >= 0 ? (int32_t)eos_opt : circuits_tokenizer_eos_id(tok);
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    o.max_new_tokens = (int32_t)max_new;
    o.do_sample = !greedy;
    o.temperature = (float)temperature;
    o.top_k = (int32_t)top_k;
    o.top_p = (float)top_p;
    o.freq_penalty = (float)freq;
    o.seed = (uint64_t)seed;
    o.stop_at_eos = !no_eos && eos >= 0;
    o.eos_token_id = eos;
    o.use_kv_cache = !no_cache;
    progress pg;
    bool streaming = !c.json && B == 1;
    progress_begin(&pg, "generate", max_new);
    if (streaming && isatty(1)) pg.enabled = false; /* the text itself shows the progress */
    stream st = {tok, o.stop_at_eos ? eos : -1, streaming, false, false, &pg, c.prompt, ids, P};
    o.on_step = on_step;
    o.user_data = &st;
    int64_t n = 0;
    int grc = circuits_context_generate(ctx, prompt, B, P, &o, out, &n);
    progress_end(&pg);
    if (streaming && (grc == CIRCUITS_OK || st.started)) {
        start(&st);
        putchar('\n');
    }
    if (grc != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    if (c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"prompt\":");
        if (c.prompt) json_cstr(stdout, c.prompt);
        else printf("null");
        printf(",\"prompt_tokens\":[");
        for (int64_t i = 0; i < P; i++) printf("%s%d", i ? "," : "", ids[i]);
        printf("],\"options\":{\"max_new_tokens\":%lld,\"do_sample\":%s,\"temperature\":", max_new,
               greedy ? "false" : "true");
        json_num(stdout, temperature);
        printf(",\"top_k\":%lld,\"top_p\":", top_k);
        json_num(stdout, top_p);
        printf(",\"freq_penalty\":");
        json_num(stdout, freq);
        printf(",\"seed\":%lld,\"stop_at_eos\":%s,\"eos_token_id\":%d,\"use_kv_cache\":%s},\"samples\":[", seed,
               o.stop_at_eos ? "true" : "false", eos, no_cache ? "false" : "true");
    }
    for (int64_t b = 0; b < B; b++) {
        const int32_t *gen = out + b * L + P;
        int64_t ng = n - P, upto = ng;
        bool finished = false;
        for (int64_t i = 0; i < ng; i++)
            if (o.stop_at_eos && gen[i] == eos) {
                upto = i;
                finished = true;
                break;
            }
        char *text = tok ? decode(tok, gen, upto) : NULL;
        if (c.json) {
            printf("%s{\"tokens\":[", b ? "," : "");
            for (int64_t i = 0; i < ng; i++) printf("%s%d", i ? "," : "", gen[i]);
            printf("],\"text\":");
            if (text) json_cstr(stdout, text);
            else printf("null");
            printf(",\"finished\":%s", finished ? "true" : "false");
            if (probe) { /* row t: the output at position P - 1 + t, which chose generated token t */
                printf(",\"probe\":[");
                for (int64_t i = 0; i < ng; i++) {
                    printf("%s[", i ? "," : "");
                    for (int64_t k = 0; k < pl.K; k++) {
                        printf("%s", k ? "," : "");
                        json_num(stdout, pl.out[((size_t)b * (size_t)L + (size_t)(P - 1 + i)) * (size_t)pl.K + (size_t)k]);
                    }
                    printf("]");
                }
                printf("]");
            }
            printf("}");
        } else if (!streaming) {
            printf("--- sample %lld%s\n", (long long)(b + 1), finished ? " (EOS)" : "");
            if (c.prompt) fputs(c.prompt, stdout);
            else
                for (int64_t i = 0; i < P; i++) printf("%s%d", i ? " " : "", ids[i]);
            if (text) fputs(text, stdout);
            else
                for (int64_t i = 0; i < upto; i++) printf(" %d", gen[i]);
            putchar('\n');
        }
        free(text);
        if (probe && !c.json) {
            printf("probe %s at %s (%s, %lld outputs), at the position that chose each generated token%s:\n",
                   probe_path, probe_hook ? probe_hook : pinfo.hook_name,
                   pinfo.kind == CIRCUITS_PROBE_LOGISTIC ? "class probabilities" : "linear",
                   (long long)pinfo.n_outputs, B > 1 ? " (this sample)" : "");
            printf("  %5s  %-12s", "pos", "generated");
            for (int64_t k = 0; k < pl.K; k++) printf("  %9s%-3lld", "out", (long long)k);
            putchar('\n');
            for (int64_t i = 0; i < n - P; i++) {
                char shown[64];
                token_display(tok, gen[i], shown, sizeof shown);
                printf("  %5lld  %-12s", (long long)(P - 1 + i), shown);
                for (int64_t k = 0; k < pl.K; k++)
                    printf("  %12.6f", (double)pl.out[((size_t)b * (size_t)L + (size_t)(P - 1 + i)) * (size_t)pl.K + (size_t)k]);
                putchar('\n');
            }
        }
    }
    if (c.json) printf("]}\n");
done:
    circuits_context_free(ctx);
    ctx = NULL;
    circuits_probe_free(probe);
    free(pl.out);
    free(out);
    free(prompt);
    free(ids);
    circuits_model_free(m);
    return rc;
}
