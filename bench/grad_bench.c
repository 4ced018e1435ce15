/* libcircuits' side of bench/grad.py (issue 16): gradient runs driven by commands on stdin,
 * one JSON line on stdout per command, so that grad.py can interleave the repetitions of this
 * process with those of its PyTorch / TransformerLens workers (each in its own process: no two
 * thread pools in one address space).
 *
 *   grad_bench MODEL_DIR [--threads N]
 *
 * The model is loaded without processing (no fold_ln, centering or value-bias folding), the
 * arithmetic the transformers model and the unprocessed HookedTransformer of grad.py run.
 * Tokens [1, T] are bench/peers.py's: (i * 2654435761 mod 2^32) mod d_vocab.
 *
 * Commands (T = positions, batch 1):
 *   fwd T          circuits_context_forward: logits [1, T, d_vocab]
 *   bwd T MODE     circuits_context_backward, metric = mean next-token loss (CIRCUITS_METRIC_LOSS),
 *                  logits written; MODE w: + weight gradients (no cache); a: activation gradients
 *                  only (computed at every point, nothing stored); c: a full incl_bwd cache (every
 *                  point's activation and gradient); cw: c + weight gradients
 *   src T          run_with_cache of every blocks.L.attn.hook_z on the clean tokens, stopping after the
 *                  last block (no logits needed): the source
 *                  activations attribution and activation patching take
 *   attr KIND T [FILE]  circuits_context_attribution_patch of KIND (z_all: HEAD_Z_ALL_POS,
 *                  z_pos: HEAD_Z_BY_POS) on the corrupted tokens (the clean ones with positions
 *                  2 and T/2 changed), source = src's clean hook_z, metric = logit difference of
 *                  tokens 17 and 42 at the last position; the grid into FILE (raw float32) if given
 *   patch KIND T [FILE] circuits_context_activation_patch of the same kind, tokens, sources and
 *                  metric (default options: incremental, batched)
 *   rss            VmHWM and VmRSS of this process (KiB)
 *   clear_hwm      resets VmHWM to the current RSS (/proc/self/clear_refs 5): the next peak is
 *                  the next commands' own
 * Each timed command prints {"cmd": ..., "ms": wall time, "cpu_ms": process CPU time, ...}. */
#include <circuits.h>

#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    circuits_model *model;
    circuits_context *ctx;
    circuits_config cfg;
    circuits_cache *cache, *wgrads, *src; /* reused across commands */
    int64_t src_pos;                      /* the positions src was run at (0: none yet) */
    int32_t *tokens, *corrupted;          /* [1, cap] */
    float *logits;                        /* [1, cap, d_vocab_out] */
    float *grid;
    int64_t cap;
} bench;

/* Wall and process CPU time of one timed call (ms). */
typedef struct {
    double wall, cpu;
} timer;

static double cpu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static timer timer_start(void) { return (timer){bench_now_ms(), cpu_now_ms()}; }

static timer timer_stop(timer t0) { return (timer){bench_now_ms() - t0.wall, cpu_now_ms() - t0.cpu}; }

static int fail(const char *what)
{
    printf("{\"cmd\": \"%s\", \"error\": \"", what);
    for (const char *c = circuits_last_error(); c && *c; c++) /* a JSON string */
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if ((unsigned char)*c >= 0x20) putchar(*c);
    printf("\"}\n");
    fflush(stdout);
    return -1;
}

/* Buffers for T positions (grown, never shrunk). */
static int reserve(bench *b, int64_t T)
{
    if (T <= b->cap) return 0;
    free(b->tokens);
    free(b->corrupted);
    free(b->logits);
    free(b->grid);
    b->tokens = malloc(sizeof(int32_t) * (size_t)T);
    b->corrupted = malloc(sizeof(int32_t) * (size_t)T);
    b->logits = malloc(sizeof(float) * (size_t)T * (size_t)b->cfg.d_vocab_out);
    b->grid = malloc(sizeof(float) * (size_t)(b->cfg.n_layers * b->cfg.n_heads * T));
    if (!b->tokens || !b->corrupted || !b->logits || !b->grid) return -1;
    b->cap = T;
    return 0;
}

static void make_tokens(bench *b, int64_t T)
{
    uint32_t v = (uint32_t)b->cfg.d_vocab;
    for (int64_t i = 0; i < T; i++) b->tokens[i] = (int32_t)(((uint32_t)i * 2654435761u) % v);
    memcpy(b->corrupted, b->tokens, sizeof(int32_t) * (size_t)T);
    if (T > 2) b->corrupted[2] = (int32_t)((b->tokens[2] + 7) % v);
    b->corrupted[T / 2] = (int32_t)((b->tokens[T / 2] + 11) % v);
}

static void print_probe(const char *key, const float *x)
{
    printf(", \"%s\": [%.7g, %.7g, %.7g, %.7g]", key, x[0], x[1], x[2], x[3]);
}

static int cmd_fwd(bench *b, int64_t T)
{
    timer t = timer_start();
    if (circuits_context_forward(b->ctx, b->tokens, 1, T, b->logits, NULL, NULL)) return fail("fwd");
    t = timer_stop(t);
    printf("{\"cmd\": \"fwd\", \"pos\": %lld, \"ms\": %.3f, \"cpu_ms\": %.3f", (long long)T, t.wall, t.cpu);
    print_probe("logits_probe", b->logits + (size_t)(T - 1) * (size_t)b->cfg.d_vocab_out);
    printf("}\n");
    return 0;
}

static int cmd_bwd(bench *b, int64_t T, const char *mode)
{
    int weights = !strcmp(mode, "w") || !strcmp(mode, "cw");
    int cache = !strcmp(mode, "c") || !strcmp(mode, "cw");
    if (!weights && !cache && strcmp(mode, "a")) return fail("bwd: MODE is w, a, c or cw");
    circuits_metric m;
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_LOSS;
    m.tokens = b->tokens;
    circuits_backward_options o;
    circuits_backward_options_init(&o);
    o.weight_grads = weights;
    float value = 0;
    timer t = timer_start();
    if (circuits_context_backward(b->ctx, &o, b->tokens, 1, T, &m, &value, b->logits, cache ? b->cache : NULL,
                                  weights ? b->wgrads : NULL))
        return fail("bwd");
    t = timer_stop(t);
    printf("{\"cmd\": \"bwd\", \"mode\": \"%s\", \"pos\": %lld, \"ms\": %.3f, \"cpu_ms\": %.3f, \"loss\": %.7g", mode,
           (long long)T, t.wall, t.cpu, value);
    circuits_tensor e;
    if (cache) {
        size_t n = circuits_cache_count(b->cache), n_grad = 0;
        for (size_t i = 0; i < n; i++) {
            size_t len;
            if (!circuits_cache_at(b->cache, i, &e) && (len = strlen(e.name)) > 5 && !strcmp(e.name + len - 5, "_grad"))
                n_grad++;
        }
        printf(", \"cache_entries\": %zu, \"grad_entries\": %zu, \"cache_bytes\": %zu", n, n_grad,
               circuits_cache_nbytes(b->cache));
        if (!circuits_cache_get(b->cache, "blocks.0.hook_resid_pre_grad", &e))
            print_probe("resid_pre0_grad_probe", e.data); /* position 0: every loss term reads it */
    }
    if (weights) {
        printf(", \"weight_grads\": %zu, \"weight_grad_bytes\": %zu", circuits_cache_count(b->wgrads),
               circuits_cache_nbytes(b->wgrads));
        if (!circuits_cache_get(b->wgrads, "ln_final.w", &e)) print_probe("ln_final_w_grad_probe", e.data);
    }
    printf("}\n");
    return 0;
}

static int cmd_src(bench *b, int64_t T)
{
    static const char *const filter[] = {"blocks.*.attn.hook_z"};
    /* the blocks only: hook_z needs no logits (stop_at_layer = n_layers skips the unembedding, a
     * third of the forward) */
    circuits_run_options o;
    circuits_run_options_init(&o);
    o.stop_at_layer = b->cfg.n_layers;
    timer t = timer_start();
    if (circuits_context_run_with_cache_opts(b->ctx, &o, b->tokens, 1, T, filter, 1, b->src, NULL, NULL, NULL))
        return fail("src");
    t = timer_stop(t);
    if (circuits_cache_count(b->src) != (size_t)b->cfg.n_layers) {
        printf("{\"cmd\": \"src\", \"error\": \"%zu hook_z entries, not n_layers\"}\n", circuits_cache_count(b->src));
        return -1;
    }
    b->src_pos = T;
    printf("{\"cmd\": \"src\", \"pos\": %lld, \"ms\": %.3f, \"cpu_ms\": %.3f}\n", (long long)T, t.wall,
           t.cpu);
    return 0;
}

static int patch_kind(const char *s)
{
    if (!strcmp(s, "z_all")) return CIRCUITS_PATCH_HEAD_Z_ALL_POS;
    if (!strcmp(s, "z_pos")) return CIRCUITS_PATCH_HEAD_Z_BY_POS;
    return -1;
}

/* attr / patch: the grid of kind on the corrupted tokens with the clean hook_z patched in. */
static int cmd_grid(bench *b, const char *cmd, const char *kind_name, int64_t T, const char *file)
{
    int kind = patch_kind(kind_name);
    if (kind < 0) return fail("grid: KIND is z_all or z_pos");
    if (b->src_pos != T && cmd_src(b, T)) return -1;
    const float *source[256];
    for (int64_t l = 0; l < b->cfg.n_layers && l < 256; l++) {
        circuits_tensor t;
        if (circuits_cache_at(b->src, (size_t)l, &t)) return fail(cmd);
        source[l] = t.data;
    }
    int32_t answer = 17, wrong = 42;
    circuits_metric m;
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_LOGIT_DIFF;
    m.answer = &answer;
    m.wrong = &wrong;
    int64_t shape[4];
    int32_t ndim;
    if (circuits_patch_grid_shape(b->model, kind, T, shape, &ndim)) return fail(cmd);
    size_t cells = 1;
    for (int i = 0; i < ndim; i++) cells *= (size_t)shape[i];
    float value = 0;
    timer t = timer_start();
    int rc = !strcmp(cmd, "attr")
                 ? circuits_context_attribution_patch(b->ctx, kind, b->corrupted, 1, T, source, &m, &value, b->grid)
                 : circuits_context_activation_patch(b->ctx, kind, b->corrupted, 1, T, source, &m, NULL, b->grid);
    if (rc) return fail(cmd);
    t = timer_stop(t);
    if (file) {
        FILE *f = fopen(file, "wb");
        if (!f || fwrite(b->grid, sizeof(float), cells, f) != cells) {
            if (f) fclose(f);
            printf("{\"cmd\": \"%s\", \"error\": \"cannot write %s\"}\n", cmd, file);
            return -1;
        }
        fclose(f);
    }
    printf("{\"cmd\": \"%s\", \"kind\": \"%s\", \"pos\": %lld, \"ms\": %.3f, \"cpu_ms\": %.3f, \"cells\": %zu", cmd,
           kind_name, (long long)T, t.wall, t.cpu, cells);
    print_probe("grid_probe", b->grid);
    printf("}\n");
    return 0;
}

/* A field of /proc/self/status in KiB, or -1. */
static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') v = atol(line + n + 1);
    if (f) fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else dir = argv[i];
    }
    if (!dir) {
        fprintf(stderr, "usage: %s MODEL_DIR [--threads N]  (commands on stdin: see the header)\n", argv[0]);
        return 2;
    }
    if (threads > 0) circuits_set_num_threads(threads);
    bench b = {.cfg = {.size = sizeof b.cfg}};
    circuits_load_options lo;
    circuits_load_options_init(&lo);
    lo.fold_ln = lo.center_writing_weights = lo.center_unembed = lo.fold_value_biases = 0;
    double t0 = bench_now_ms();
    if (circuits_model_load(&b.model, dir, &lo) || circuits_model_config(b.model, &b.cfg) ||
        circuits_context_create(&b.ctx, b.model, NULL) || circuits_cache_create(&b.cache) ||
        circuits_cache_create(&b.wgrads) || circuits_cache_create(&b.src)) {
        fail("load");
        return 1;
    }
    printf("{\"cmd\": \"ready\", \"load_ms\": %.1f, \"threads\": %d, \"hook_points\": %zu}\n", bench_now_ms() - t0,
           circuits_get_num_threads(), circuits_context_hook_point_count(b.ctx));
    fflush(stdout);
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        char cmd[16] = "", a2[64] = "", a3[512] = "", a4[512] = "";
        int n = sscanf(line, "%15s %63s %511s %511s", cmd, a2, a3, a4);
        if (n < 1) continue;
        int rc = 0;
        if (!strcmp(cmd, "quit")) break;
        if (!strcmp(cmd, "clear_hwm")) { /* VmHWM back to the current RSS (Linux 4.0+) */
            FILE *f = fopen("/proc/self/clear_refs", "w");
            int ok = f && fputs("5", f) >= 0;
            if (f && fclose(f)) ok = 0;
            printf(ok ? "{\"cmd\": \"clear_hwm\"}\n" : "{\"cmd\": \"clear_hwm\", \"error\": \"clear_refs\"}\n");
        } else if (!strcmp(cmd, "rss")) {
            printf("{\"cmd\": \"rss\", \"hwm_kb\": %ld, \"rss_kb\": %ld}\n", status_kb("VmHWM"), status_kb("VmRSS"));
        } else if (!strcmp(cmd, "fwd") || !strcmp(cmd, "bwd") || !strcmp(cmd, "src")) {
            int64_t T = atoll(a2);
            if (T < 1 || T > b.cfg.n_ctx || reserve(&b, T)) {
                printf("{\"cmd\": \"%s\", \"error\": \"bad positions\"}\n", cmd);
            } else {
                make_tokens(&b, T);
                rc = !strcmp(cmd, "fwd") ? cmd_fwd(&b, T) : !strcmp(cmd, "src") ? cmd_src(&b, T) : cmd_bwd(&b, T, a3);
            }
        } else if (!strcmp(cmd, "attr") || !strcmp(cmd, "patch")) {
            int64_t T = atoll(a3);
            if (T < 1 || T > b.cfg.n_ctx || reserve(&b, T)) {
                printf("{\"cmd\": \"%s\", \"error\": \"bad positions\"}\n", cmd);
            } else {
                make_tokens(&b, T);
                rc = cmd_grid(&b, cmd, a2, T, n >= 4 ? a4 : NULL);
            }
        } else {
            printf("{\"cmd\": \"%s\", \"error\": \"unknown command\"}\n", cmd);
        }
        (void)rc;
        fflush(stdout);
    }
    circuits_cache_free(b.src);
    circuits_cache_free(b.wgrads);
    circuits_cache_free(b.cache);
    circuits_context_free(b.ctx);
    circuits_model_free(b.model);
    free(b.tokens);
    free(b.corrupted);
    free(b.logits);
    free(b.grid);
    return 0;
}
