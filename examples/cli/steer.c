/* Steering in the CLI (docs/cli.md, docs/steering.md):
 *   `generate --steer HOOK=VECTOR.npy[:SCALE]` and `--control-vector FILE.gguf[:SCALE]`;
 *   `circuits steer-vector MODEL`: a contrastive vector from pairs of prompts
 *   (circuits_context_contrastive_vector), written as .npy or as a llama.cpp control vector. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Splits "PATH[:SCALE]": *path_len and *scale (1 without a scale; a suffix after the last ':'
 * that is not a number is part of the path). */
static void split_scale(const char *s, size_t *path_len, double *scale)
{
    *path_len = strlen(s);
    *scale = 1.0;
    const char *colon = strrchr(s, ':');
    if (!colon || !colon[1]) return;
    char *end;
    double v = strtod(colon + 1, &end);
    if (*end || !isfinite(v)) return;
    *path_len = (size_t)(colon - s);
    *scale = v;
}

int steer_parse(const char *opt, const char *arg)
{
    size_t len;
    double scale;
    if (strcmp(opt, "--steer") == 0) {
        const char *eq = strchr(arg, '=');
        if (!eq || eq == arg || !eq[1]) return usage_error("--steer: '%s' is not HOOK=VECTOR.npy[:SCALE]", arg);
        split_scale(eq + 1, &len, &scale);
    } else {
        split_scale(arg, &len, &scale);
    }
    if (len == 0) return usage_error("%s: '%s' names no file", opt, arg);
    return 0;
}

int steer_apply(circuits_context *ctx, const circuits_config *cfg, const steer_spec *specs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *arg = specs[i].arg, *eq = specs[i].control ? NULL : strchr(arg, '=');
        const char *file = eq ? eq + 1 : arg;
        size_t len;
        double scale;
        split_scale(file, &len, &scale);
        char *path = strndup(file, len), *hook = eq ? strndup(arg, (size_t)(eq - arg)) : NULL;
        if (!path || (eq && !hook)) {
            free(path);
            free(hook);
            return failure("out of memory");
        }
        circuits_steering_options o;
        circuits_steering_options_init(&o);
        o.scale = (float)scale;
        int rc = 0;
        if (!specs[i].control) {
            float *v;
            int64_t d;
            if (!(rc = read_npy_vector(path, &v, &d))) {
                if (circuits_context_add_steering(ctx, hook, v, d, &o, NULL) != CIRCUITS_OK) rc = lib_failure("--steer");
                free(v);
            }
        } else {
            size_t total = (size_t)cfg->n_layers * (size_t)cfg->d_model;
            float *dirs = malloc(total * sizeof(float));
            if (!dirs) rc = failure("out of memory");
            else if (circuits_control_vector_load(path, cfg->n_layers, cfg->d_model, dirs) != CIRCUITS_OK ||
                     circuits_context_add_control_vector(ctx, dirs, cfg->n_layers, cfg->d_model, &o, NULL) != CIRCUITS_OK)
                rc = lib_failure("--control-vector");
            free(dirs);
        }
        free(path);
        free(hook);
        if (rc) return rc;
    }
    return 0;
}

/* ---- circuits steer-vector ---- */

static void usage(void)
{
    printf("usage: circuits steer-vector MODEL (--positive TEXT | --positive-file FILE)...\n"
           "                                   (--negative TEXT | --negative-file FILE)...\n"
           "                                   (--out VECTOR.npy [--hook HOOK] | --gguf FILE.gguf [--model-hint NAME])\n"
           "                                   [--reduce last|mean] [--normalize] [--no-bos] [--no-processing]\n"
           "                                   [--no-mmap] [--json]\n"
           "\n"
           "A contrastive steering vector: the mean over the pairs of prompts of the activation of the\n"
           "positive prompt minus the negative one, at each hook point, each prompt reduced to its last\n"
           "token (--reduce last, the default) or the mean over its tokens. Prompt files hold one prompt\n"
           "a line (empty lines skipped, as llama.cpp's cvector-generator reads them); the i-th positive\n"
           "and i-th negative prompts are a pair.\n"
           "\n"
           "  --positive TEXT, --negative TEXT          one prompt (repeatable)\n"
           "  --positive-file FILE, --negative-file FILE  one prompt a line\n"
           "  --hook HOOK          the hook point(s) (default blocks.*.hook_resid_post: every layer)\n"
           "  --out VECTOR.npy     float32 [n_points, d] ([d] for one point): `generate --steer HOOK=VECTOR.npy`\n"
           "  --gguf FILE.gguf     every block's resid_post as a llama.cpp control vector (direction.N\n"
           "                       is added after block N; block 0 has none): `generate --control-vector`\n"
           "                       here, `llama-cli --control-vector` in llama.cpp\n"
           "  --model-hint NAME    controlvector.model_hint of the GGUF file (e.g. llama)\n"
           "  --reduce last|mean   each prompt's last token (default) or mean over its tokens\n"
           "  --normalize          scale each point's vector to unit length (cvector-generator's mean method)\n"
           "  --no-bos             do not prepend BOS to the prompts\n"
           "  --no-processing      load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap            read the weight files into memory instead of mapping them\n"
           "  --json               one JSON object on stdout\n");
}

typedef struct prompts {
    char **s;
    size_t n, cap;
} prompts;

static int add_prompt(prompts *p, const char *s, size_t len)
{
    if (p->n == p->cap) {
        size_t c = p->cap ? 2 * p->cap : 8;
        char **g = realloc(p->s, c * sizeof *g);
        if (!g) return failure("out of memory");
        p->s = g;
        p->cap = c;
    }
    if (!(p->s[p->n] = strndup(s, len))) return failure("out of memory");
    p->n++;
    return 0;
}

static int read_prompt_file(prompts *p, const char *opt, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return failure("%s: cannot open '%s'", opt, path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (n > 0) rc = add_prompt(p, line, (size_t)n);
    }
    free(line);
    fclose(f);
    return rc;
}

static void free_prompts(prompts *p)
{
    for (size_t i = 0; i < p->n; i++) free(p->s[i]);
    free(p->s);
}

/* Tokenizes every prompt (BOS first unless --no-bos): *ids the token ids back to back, *lens
 * each prompt's count. */
static int tokenize_all(const common *c, const circuits_model *m, const prompts *p, int32_t **ids, int64_t **lens)
{
    *ids = NULL;
    *lens = calloc(p->n, sizeof **lens);
    int32_t **each = calloc(p->n, sizeof *each);
    if (!*lens || !each) {
        free(each);
        return failure("out of memory");
    }
    int rc = 0;
    for (size_t i = 0; i < p->n && !rc; i++) {
        common one = *c;
        one.prompt = p->s[i];
        one.tokens = NULL;
        rc = input_tokens(&one, m, &each[i], &(*lens)[i]);
    }
    if (!rc) {
        /* packed: each[i] back to back in *ids, offsets implied by lens */
        size_t total = 0;
        for (size_t i = 0; i < p->n; i++) total += (size_t)(*lens)[i];
        *ids = malloc((total ? total : 1) * sizeof(int32_t));
        if (!*ids) rc = failure("out of memory");
        for (size_t i = 0, at = 0; !rc && i < p->n; at += (size_t)(*lens)[i], i++)
            memcpy(*ids + at, each[i], (size_t)(*lens)[i] * sizeof(int32_t));
    }
    for (size_t i = 0; i < p->n; i++) free(each[i]);
    free(each);
    return rc;
}

/* Lays packed prompts (lens) into tokens / mask [n, T], right-padded with pad. */
static void lay_out(const int32_t *ids, const int64_t *lens, size_t n, int64_t T, int32_t pad, int32_t *tokens,
                    int32_t *mask)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        for (int64_t t = 0; t < T; t++) {
            bool real = t < lens[i];
            tokens[i * (size_t)T + (size_t)t] = real ? ids[at + (size_t)t] : pad;
            mask[i * (size_t)T + (size_t)t] = real;
        }
        at += (size_t)lens[i];
    }
}

int cmd_steer_vector(int argc, char **argv)
{
    common c = {0};
    prompts pos = {0}, neg = {0};
    const char *out_npy = NULL, *out_gguf = NULL, *hook = NULL, *hint = NULL, *reduce_s = "last";
    bool normalize = false;
    int rc = 0;
    args a = {argc, argv, 1};
    for (; a.i < argc && !rc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) {
            usage();
            goto done;
        }
        if ((r = common_opt(&a, &c, false))) {
            if (r < 0) rc = EXIT_USAGE;
        } else if ((r = opt_value(&a, "--positive", &v))) {
            rc = r < 0 ? EXIT_USAGE : add_prompt(&pos, v, strlen(v));
        } else if ((r = opt_value(&a, "--negative", &v))) {
            rc = r < 0 ? EXIT_USAGE : add_prompt(&neg, v, strlen(v));
        } else if ((r = opt_value(&a, "--positive-file", &v))) {
            rc = r < 0 ? EXIT_USAGE : read_prompt_file(&pos, "--positive-file", v);
        } else if ((r = opt_value(&a, "--negative-file", &v))) {
            rc = r < 0 ? EXIT_USAGE : read_prompt_file(&neg, "--negative-file", v);
        } else if ((r = opt_value(&a, "--out", &out_npy)) || (r = opt_value(&a, "--gguf", &out_gguf)) ||
                   (r = opt_value(&a, "--hook", &hook)) || (r = opt_value(&a, "--model-hint", &hint)) ||
                   (r = opt_value(&a, "--reduce", &reduce_s))) {
            if (r < 0) rc = EXIT_USAGE;
        } else if ((r = opt_flag(&a, "--no-bos"))) {
            if (r < 0) rc = EXIT_USAGE;
            c.no_bos = true;
        } else if ((r = opt_flag(&a, "--normalize"))) {
            if (r < 0) rc = EXIT_USAGE;
            normalize = true;
        } else if (common_positional(&a, &c) < 0) {
            rc = EXIT_USAGE;
        }
    }
    if (rc) goto done;
    if ((rc = common_check(&c, false))) goto done;
    int reduce = strcmp(reduce_s, "last") == 0 ? CIRCUITS_CONTRAST_LAST
                 : strcmp(reduce_s, "mean") == 0 ? CIRCUITS_CONTRAST_MEAN
                                                 : -1;
    if (reduce < 0) {
        rc = usage_error("--reduce: '%s' is not last or mean", reduce_s);
        goto done;
    }
    if (!out_npy == !out_gguf) {
        rc = usage_error("needs one of --out VECTOR.npy and --gguf FILE.gguf");
        goto done;
    }
    if (out_gguf && hook) {
        rc = usage_error("--gguf writes every block's hook_resid_post (llama.cpp's layout): --hook is for --out");
        goto done;
    }
    if (!pos.n || pos.n != neg.n) {
        rc = usage_error("%zu positive and %zu negative prompts: give pairs (at least one)", pos.n, neg.n);
        goto done;
    }
    if (!hook) hook = "blocks.*.hook_resid_post";
    circuits_model *m = NULL;
    circuits_config cfg;
    if ((rc = load_model(&c, &m, &cfg))) goto done;
    circuits_context *ctx = NULL;
    int32_t *pids = NULL, *nids = NULL, *tok = NULL, *mask = NULL;
    int64_t *plen = NULL, *nlen = NULL;
    float *out = NULL;
    char (*names)[256] = NULL;
    if ((rc = tokenize_all(&c, m, &pos, &pids, &plen)) || (rc = tokenize_all(&c, m, &neg, &nids, &nlen)))
        goto free_all;
    int64_t B = (int64_t)pos.n, T = 1;
    for (int64_t i = 0; i < B; i++) {
        if (plen[i] > T) T = plen[i];
        if (nlen[i] > T) T = nlen[i];
    }
    if (T > cfg.n_ctx) {
        rc = failure("a prompt of %lld tokens exceeds the model's n_ctx = %d", (long long)T, cfg.n_ctx);
        goto free_all;
    }
    tok = malloc(sizeof(int32_t) * (size_t)(2 * B * T));
    mask = malloc(sizeof(int32_t) * (size_t)(2 * B * T));
    if (!tok || !mask) {
        rc = failure("out of memory");
        goto free_all;
    }
    int32_t pad = circuits_tokenizer_eos_id(circuits_model_tokenizer(m));
    lay_out(pids, plen, pos.n, T, pad >= 0 ? pad : 0, tok, mask);
    lay_out(nids, nlen, neg.n, T, pad >= 0 ? pad : 0, tok + B * T, mask + B * T);
    if (circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK) {
        rc = lib_failure("context");
        goto free_all;
    }
    size_t n_points = 0;
    char buf[256];
    if (circuits_context_resolve_hook_name(ctx, hook, 0, buf, sizeof buf, &n_points) != CIRCUITS_OK) {
        rc = lib_failure("--hook");
        goto free_all;
    }
    names = calloc(n_points, sizeof *names);
    int64_t d = 0;
    for (size_t i = 0; names && i < n_points; i++) {
        circuits_context_resolve_hook_name(ctx, hook, i, names[i], sizeof names[i], NULL);
        circuits_tensor t;
        for (size_t j = 0; j < circuits_context_hook_point_count(ctx); j++)
            if (circuits_context_hook_point(ctx, j, 1, 1, &t) == CIRCUITS_OK && strcmp(t.name, names[i]) == 0 &&
                t.shape[t.ndim - 1] > d)
                d = t.shape[t.ndim - 1];
    }
    out = names && d > 0 ? calloc(n_points * (size_t)d, sizeof(float)) : NULL;
    if (!out) {
        rc = failure("out of memory");
        goto free_all;
    }
    circuits_contrast_options o;
    circuits_contrast_options_init(&o);
    o.reduce = reduce;
    o.positive_mask = mask;
    o.negative_mask = mask + B * T;
    if (circuits_context_contrastive_vector(ctx, hook, tok, tok + B * T, B, T, &o, out, n_points * (size_t)d) !=
        CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto free_all;
    }
    double *norms = calloc(n_points, sizeof(double));
    if (!norms) {
        rc = failure("out of memory");
        goto free_all;
    }
    for (size_t i = 0; i < n_points; i++) {
        double s = 0;
        for (int64_t j = 0; j < d; j++) s += (double)out[i * (size_t)d + (size_t)j] * out[i * (size_t)d + (size_t)j];
        norms[i] = sqrt(s);
        if (normalize && norms[i] > 0)
            for (int64_t j = 0; j < d; j++) out[i * (size_t)d + (size_t)j] = (float)(out[i * (size_t)d + (size_t)j] / norms[i]);
    }
    if (out_gguf) {
        memset(out, 0, (size_t)d * sizeof(float)); /* block 0: llama.cpp steers no block 0 */
        if (circuits_control_vector_save(out_gguf, out, (int32_t)n_points, d, hint) != CIRCUITS_OK)
            rc = lib_failure(out_gguf);
    } else {
        int64_t shape[2] = {(int64_t)n_points, d};
        named_tensor t = {hook, n_points == 1 ? 1 : 2, n_points == 1 ? shape + 1 : shape, out};
        rc = write_npy(out_npy, &t);
    }
    if (!rc && c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"hook\":");
        json_cstr(stdout, hook);
        printf(",\"pairs\":%lld,\"reduce\":\"%s\",\"normalized\":%s,\"file\":", (long long)B, reduce_s,
               normalize ? "true" : "false");
        json_cstr(stdout, out_gguf ? out_gguf : out_npy);
        printf(",\"format\":\"%s\",\"d\":%lld,\"points\":[", out_gguf ? "control-vector-gguf" : "npy", (long long)d);
        for (size_t i = 0; i < n_points; i++) {
            printf("%s{\"name\":", i ? "," : "");
            json_cstr(stdout, names[i]);
            printf(",\"norm\":");
            json_num(stdout, norms[i]);
            printf(",\"written\":%s}", out_gguf && i == 0 ? "false" : "true");
        }
        printf("]}\n");
    } else if (!rc) {
        printf("%s: %zu point%s x %lld (%s over %lld pair%s%s)\n", out_gguf ? out_gguf : out_npy, n_points,
               n_points == 1 ? "" : "s", (long long)d, reduce_s, (long long)B, B == 1 ? "" : "s",
               normalize ? ", normalized" : "");
        for (size_t i = 0; i < n_points; i++)
            printf("  %-40s norm %10.4f%s\n", names[i], norms[i],
                   out_gguf && i == 0 ? "  (not written: llama.cpp has no direction for block 0)" : "");
    }
    free(norms);
free_all:
    free(names);
    free(out);
    free(tok);
    free(mask);
    free(pids);
    free(nids);
    free(plen);
    free(nlen);
    circuits_context_free(ctx);
    circuits_model_free(m);
done:
    free_prompts(&pos);
    free_prompts(&neg);
    return rc;
}
