/* Times libcircuits on one model and prints one JSON object per line.
 *
 *   bench_forward MODEL_DIR [options] B:T [B:T ...]
 *     --reps N       timed forwards per shape (median reported; default 5)
 *     --warmup N     untimed forwards per shape first (default 1)
 *     --threads N    circuits_set_num_threads(N) (default: OpenBLAS's default)
 *     --raw          weights as stored: no TransformerLens processing (zero-copy mapping)
 *     --load-reps N  time N warm loads (median) instead of one
 *     --cold         evict the weight files from the page cache first (checked with mincore),
 *                    time one load and the first forward after it (which faults mapped pages in)
 *     --hooks        a no-op callback at every hook point of the context
 *     --hooks-no-attn  the same at every point except attn.hook_attn_scores / attn.hook_pattern
 *                    (a callback there puts [B, H, T, T] in memory: the two goals)
 *     --cache        run_with_cache of every hook point, into one cache reused across reps
 *     --last         logits at the last position only (circuits_context_run, logit_positions)
 *
 * Run one configuration per process: the peak RSS printed is the process's (ru_maxrss). */
#include <circuits.h>

#include "bench_util.h"
#include "page_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { MODE_PLAIN, MODE_HOOKS, MODE_HOOKS_NO_ATTN, MODE_CACHE, MODE_LAST } run_mode;
static const char *const MODE_NAMES[] = {"plain", "hooks", "hooks_no_attn", "cache", "last"};

typedef struct {
    const char *model_dir;
    int reps, warmup, threads, load_reps;
    int raw, cold;
    run_mode mode;
    char **shapes; /* "B:T" arguments */
    int n_shapes;
} bench_options;

/* What one forward needs; the mode decides which call is made. */
typedef struct {
    circuits_context *ctx;
    circuits_cache *cache;
    run_mode mode;
    const int32_t *tokens;
    int64_t batch, pos;
    float *logits;
} forward_job;

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s MODEL_DIR [--reps N] [--warmup N] [--threads N] [--raw] [--load-reps N] [--cold] "
                    "[--hooks | --hooks-no-attn | --cache | --last] B:T [B:T ...]\n", argv0);
    return 2;
}

static int parse_options(int argc, char **argv, bench_options *o)
{
    *o = (bench_options){.reps = 5, .warmup = 1, .load_reps = 1, .mode = MODE_PLAIN};
    o->shapes = calloc((size_t)argc, sizeof *o->shapes);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--reps") && has_value) o->reps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && has_value) o->warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && has_value) o->threads = atoi(argv[++i]);
        else if (!strcmp(a, "--load-reps") && has_value) o->load_reps = atoi(argv[++i]);
        else if (!strcmp(a, "--raw")) o->raw = 1;
        else if (!strcmp(a, "--cold")) o->cold = 1;
        else if (!strcmp(a, "--hooks")) o->mode = MODE_HOOKS;
        else if (!strcmp(a, "--hooks-no-attn")) o->mode = MODE_HOOKS_NO_ATTN;
        else if (!strcmp(a, "--cache")) o->mode = MODE_CACHE;
        else if (!strcmp(a, "--last")) o->mode = MODE_LAST;
        else if (a[0] == '-') return -1;
        else if (!o->model_dir) o->model_dir = a;
        else o->shapes[o->n_shapes++] = argv[i];
    }
    if (o->reps < 1) o->reps = 1;
    if (o->load_reps < 1 || o->cold) o->load_reps = 1; /* a second load would be warm */
    return o->model_dir ? 0 : -1;
}

static int fail(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, circuits_last_error());
    return 1;
}

/* Loads the model (warm: the median of load_reps loads; cold: one load after eviction). */
static int load_model(const bench_options *o, circuits_model **out)
{
    circuits_load_options lo;
    circuits_load_options_init(&lo);
    if (o->raw) lo.fold_ln = lo.center_writing_weights = lo.center_unembed = lo.fold_value_biases = 0;
    size_t weight_bytes = 0;
    char **files = page_cache_weight_files(o->model_dir, &weight_bytes);
    double resident = 0; /* the least-resident file's fraction: 0 means a truly cold load */
    if (o->cold)
        for (char **f = files; f && *f; f++) {
            page_cache_evict(*f);
            double r = page_cache_resident(*f);
            if (r > resident) resident = r;
        }
    page_cache_free_list(files);
    double *t = calloc((size_t)o->load_reps, sizeof *t);
    for (int r = 0; r < o->load_reps; r++) {
        if (r) circuits_model_free(*out);
        double t0 = bench_now_ms();
        if (circuits_model_load(out, o->model_dir, &lo)) return fail("load");
        t[r] = bench_now_ms() - t0;
    }
    printf("{\"what\": \"load\", \"cold\": %d, \"raw\": %d, \"reps\": %d, \"median_ms\": %.3f, "
           "\"weight_bytes\": %zu, \"resident_before\": %.4f}\n",
           o->cold, o->raw, o->load_reps, bench_median(t, o->load_reps), weight_bytes, o->cold ? resident : 1.0);
    free(t);
    return 0;
}

static long hook_calls;
static int noop_hook(const circuits_tensor *act, void *user_data) { return CIRCUITS_HOOK_CONTINUE; }
static int counting_hook(const circuits_tensor *act, void *user_data)
{
    hook_calls++;
    return CIRCUITS_HOOK_CONTINUE;
}

/* The attention scores and pattern: the points whose callback keeps [B, H, T, T] in memory. */
static int is_attention_square(const char *name)
{
    return strstr(name, ".hook_attn_scores") || strstr(name, ".hook_pattern");
}

/* Registers fn at every hook point (but the attention squares with MODE_HOOKS_NO_ATTN), one
 * registration per point; returns the count or -1. */
static long add_hook_everywhere(circuits_context *ctx, circuits_hook_fn fn, run_mode mode)
{
    size_t n = circuits_context_hook_point_count(ctx);
    long added = 0;
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        if (circuits_context_hook_point(ctx, i, 1, 1, &t)) return -1;
        if (mode == MODE_HOOKS_NO_ATTN && is_attention_square(t.name)) continue;
        if (circuits_context_add_hook(ctx, t.name, fn, NULL, NULL)) return -1;
        added++;
    }
    return added;
}

/* Bytes of one block's activations at [batch, pos]: the hook points of layer 0 (an estimate
 * of the scratch one layer needs). */
static size_t layer_bytes(const circuits_context *ctx, int64_t batch, int64_t pos)
{
    size_t total = 0, n = circuits_context_hook_point_count(ctx);
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        if (circuits_context_hook_point(ctx, i, batch, pos, &t) || t.layer != 0) continue;
        size_t numel = 1;
        for (int d = 0; d < t.ndim; d++) numel *= (size_t)t.shape[d];
        total += 4 * numel;
    }
    return total;
}

static int by_start(const void *a, const void *b)
{
    const uintptr_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* The bytes of weights the loaded model holds: the union of its weights' extents (processed or
 * converted copies, the zeros of absent biases once, and the parts of the mapped file it reads in
 * place, e.g. GPT-2's fused c_attn once for W_Q, W_K and W_V). Weights kept in a stored dtype
 * (data NULL) are not counted: no mode of this driver keeps them. 0 if it cannot be counted. */
static size_t model_weight_bytes(const circuits_model *m)
{
    size_t n = circuits_model_weight_count(m), k = 0, total = 0;
    uintptr_t *r = calloc(2 * (n ? n : 1), sizeof *r), end = 0;
    if (!r) return 0;
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        if (circuits_model_weight_at(m, i, &t) != CIRCUITS_OK || !t.data) continue;
        uintptr_t last = 0;
        for (int d = 0; d < t.ndim; d++) last += (uintptr_t)((t.shape[d] - 1) * t.strides[d]);
        r[2 * k] = (uintptr_t)t.data;
        r[2 * k++ + 1] = (uintptr_t)t.data + (last + 1) * sizeof(float);
    }
    qsort(r, k, 2 * sizeof *r, by_start);
    for (size_t i = 0; i < k; i++) {
        uintptr_t lo = r[2 * i] > end ? r[2 * i] : end;
        if (r[2 * i + 1] > lo) total += r[2 * i + 1] - lo;
        if (r[2 * i + 1] > end) end = r[2 * i + 1];
    }
    free(r);
    return total;
}

static int run_forward(const forward_job *j)
{
    if (j->mode == MODE_CACHE)
        return circuits_context_run_with_cache(j->ctx, j->tokens, j->batch, j->pos, NULL, 0, j->cache, j->logits,
                                               NULL, NULL);
    if (j->mode == MODE_LAST) {
        static const int64_t last = -1;
        circuits_run_options ro;
        circuits_run_options_init(&ro);
        ro.logit_positions = &last;
        ro.n_logit_positions = 1;
        return circuits_context_run(j->ctx, &ro, j->tokens, j->batch, j->pos, j->logits);
    }
    return circuits_context_forward(j->ctx, j->tokens, j->batch, j->pos, j->logits, NULL, NULL);
}

/* The cache goal's yardstick: one memcpy of the cache's bytes (its block: the entries lie in it
 * one after another) into a buffer of the same size, faulted in first; the median of reps. Run
 * after the forward line, whose peak RSS this buffer must not count in. */
static int cache_copy(const bench_options *o, const circuits_cache *cache)
{
    circuits_tensor first;
    if (circuits_cache_at(cache, 0, &first)) return fail("cache_at");
    size_t bytes = circuits_cache_nbytes(cache);
    char *dst = malloc(bytes);
    double *t = calloc((size_t)o->reps, sizeof *t);
    if (!dst || !t) return fail("malloc");
    memcpy(dst, first.data, bytes);
    for (int r = 0; r < o->reps; r++) {
        double t0 = bench_now_ms();
        memcpy(dst, first.data, bytes);
        t[r] = bench_now_ms() - t0;
    }
    printf("{\"what\": \"cache_copy\", \"bytes\": %zu, \"reps\": %d, \"median_ms\": %.3f, \"probe\": %d}\n", bytes,
           o->reps, bench_median(t, o->reps), dst[bytes - 1]);
    fflush(stdout);
    free(t);
    free(dst);
    return 0;
}

static int bench_shape(const bench_options *o, circuits_context *ctx, const circuits_config *c, const char *shape,
                       int first_after_cold, size_t weight_bytes)
{
    int B, T;
    if (sscanf(shape, "%d:%d", &B, &T) != 2 || B < 1 || T < 1) return usage("bench_forward");
    forward_job j = {.ctx = ctx, .mode = o->mode, .batch = B, .pos = T};
    int32_t *tok = malloc(sizeof *tok * (size_t)B * (size_t)T);
    size_t logits_bytes = sizeof *j.logits * (size_t)B * (size_t)T * (size_t)c->d_vocab_out;
    j.logits = malloc(logits_bytes);
    /* the same tokens as the Python peers (bench/peers.py tokens()) */
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)(((uint32_t)i * 2654435761u) % (uint32_t)c->d_vocab);
    j.tokens = tok;
    if (o->mode == MODE_CACHE && circuits_cache_create(&j.cache)) return fail("cache");
    if (first_after_cold) { /* the forward that faults the mapped weights in */
        double t0 = bench_now_ms();
        if (run_forward(&j)) return fail("forward");
        printf("{\"what\": \"first_forward\", \"batch\": %d, \"pos\": %d, \"ms\": %.3f}\n", B, T, bench_now_ms() - t0);
    }
    hook_calls = 0;
    if (o->mode == MODE_HOOKS || o->mode == MODE_HOOKS_NO_ATTN) { /* count the calls one forward makes, untimed */
        circuits_context_clear_hooks(ctx);
        if (add_hook_everywhere(ctx, counting_hook, o->mode) < 0) return fail("add_hook");
        if (run_forward(&j)) return fail("forward");
        circuits_context_clear_hooks(ctx);
        if (add_hook_everywhere(ctx, noop_hook, o->mode) < 0) return fail("add_hook");
    }
    for (int r = 0; r < o->warmup; r++)
        if (run_forward(&j)) return fail("forward");
    double *t = calloc((size_t)o->reps, sizeof *t);
    for (int r = 0; r < o->reps; r++) {
        double t0 = bench_now_ms();
        if (run_forward(&j)) return fail("forward");
        t[r] = bench_now_ms() - t0;
    }
    double med = bench_median(t, o->reps);
    /* logits at the last position of row 0, for the same-weights check of bench/run.py */
    const float *last = j.logits + ((size_t)T - 1) * (size_t)c->d_vocab_out;
    printf("{\"what\": \"forward\", \"mode\": \"%s\", \"raw\": %d, \"threads\": %d, \"batch\": %d, \"pos\": %d, "
           "\"reps\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f, \"max_ms\": %.3f, \"tokens_per_s\": %.1f, "
           "\"hook_calls\": %ld, \"cache_entries\": %zu, \"cache_bytes\": %zu, \"logits_bytes\": %zu, "
           "\"layer_bytes\": %zu, \"model_weight_bytes\": %zu, \"peak_rss_kb\": %ld, "
           "\"logits_probe\": [%.6g, %.6g, %.6g, %.6g]}\n",
           MODE_NAMES[o->mode], o->raw, circuits_get_num_threads(), B, T, o->reps, med, t[0], t[o->reps - 1],
           B * T / (med / 1e3), hook_calls, j.cache ? circuits_cache_count(j.cache) : 0,
           j.cache ? circuits_cache_nbytes(j.cache) : 0, logits_bytes, layer_bytes(ctx, B, T),
           weight_bytes, bench_peak_rss_kb(),
           last[0], last[1], last[2], last[3]);
    fflush(stdout);
    if (j.cache && circuits_cache_count(j.cache) && cache_copy(o, j.cache)) return 1;
    free(t);
    free(tok);
    free(j.logits);
    circuits_cache_free(j.cache);
    return 0;
}

int main(int argc, char **argv)
{
    bench_options o;
    if (parse_options(argc, argv, &o)) return usage(argv[0]);
    if (o.threads > 0) circuits_set_num_threads(o.threads);
    circuits_model *m = NULL;
    if (load_model(&o, &m)) return 1;
    circuits_config c = {.size = sizeof c};
    circuits_context *ctx;
    if (circuits_model_config(m, &c) || circuits_context_create(&ctx, m, NULL)) return fail("context");
    size_t weight_bytes = model_weight_bytes(m);
    if (o.mode == MODE_HOOKS || o.mode == MODE_HOOKS_NO_ATTN) {
        long n = add_hook_everywhere(ctx, noop_hook, o.mode);
        if (n < 0) return fail("add_hook");
        printf("{\"what\": \"hooks\", \"registered\": %ld}\n", n);
    }
    for (int i = 0; i < o.n_shapes; i++)
        if (bench_shape(&o, ctx, &c, o.shapes[i], o.cold && i == 0, weight_bytes)) return 1;
    printf("{\"what\": \"process\", \"peak_rss_kb\": %ld}\n", bench_peak_rss_kb());
    circuits_context_free(ctx);
    circuits_model_free(m);
    free(o.shapes);
    return 0;
}
