/* Feature statistics (lib/sae/features.c; docs/saes.md "Feature statistics"): fire counts,
 * means, maxima and top-k contexts against a brute-force computation written here (run_with_cache
 * at the SAE's point over the whole dataset, circuits_sae_encode on every counted token, counts,
 * sums and a sort of every firing), for an SAE, a TopK SAE with a threshold and skipped
 * positions, a hook_z SAE and a transcoder; the results bit-identical whatever the batch sizes the
 * dataset is fed in; the file's round trip; hostile files and arguments (named checks:
 * docs/errors.md "Sparse autoencoders"). Usage: test_features MODEL_DIR (examples/models/mlp-2l). */
#include "catalogue.h"
#include "st_write.h"
#include "testutil.h"

#include "../lib/io/st_save.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[] = "/tmp/circuits_features_XXXXXX";
static int64_t D, V;
enum { S = 40, ROWS = 9, T = 12 };
static int32_t tokens[ROWS * T];

static uint64_t g_rng = 777;
static float rnd(void) /* uniform in [-1, 1) */
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

/* An SAE directory as SAELens saves it (standard, topk, or a transcoder when hook_out is set). */
static const char *write_sae(const char *name, const char *arch, const char *hook, const char *hook_out, int64_t d_in,
                             const char *extra)
{
    static char dirs[8][512];
    static int next;
    char *dir = dirs[next++ % 8];
    snprintf(dir, 512, "%s/%s", g_root, name);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    char path[600];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(2); }
    int64_t d_out = d_in;
    fprintf(f, "{\"d_in\": %lld, \"d_sae\": %d, %s\"dtype\": \"float32\", \"device\": \"cpu\", "
            "\"apply_b_dec_to_input\": %s, \"normalize_activations\": \"none\", %s"
            "\"metadata\": {\"sae_lens_version\": \"6.54.12\", \"hook_name\": \"%s\"%s%s%s}, \"architecture\": \"%s\"}",
            (long long)d_in, S, hook_out ? "\"d_out\": 128, " : "", hook_out ? "false" : "true", extra, hook,
            hook_out ? ", \"hook_name_out\": \"" : "", hook_out ? hook_out : "", hook_out ? "\"" : "", arch);
    fclose(f);
    float *W_enc = malloc(sizeof(float) * d_in * S), *W_dec = malloc(sizeof(float) * S * d_out);
    float *b_enc = malloc(sizeof(float) * S), *b_dec = malloc(sizeof(float) * d_out);
    for (int64_t i = 0; i < d_in * S; i++) W_enc[i] = 0.3f * rnd();
    for (int64_t i = 0; i < S * d_out; i++) W_dec[i] = 0.2f * rnd();
    for (int64_t i = 0; i < S; i++) b_enc[i] = 0.3f * rnd();
    for (int64_t i = 0; i < d_out; i++) b_dec[i] = 0.1f * rnd();
    st_entry t[4] = {{"W_dec", 2, {S, d_out}, W_dec}, {"W_enc", 2, {d_in, S}, W_enc},
                     {"b_dec", 1, {d_out}, b_dec}, {"b_enc", 1, {S}, b_enc}};
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    st_write(path, t, 4);
    free(W_enc), free(W_dec), free(b_enc), free(b_dec);
    return dir;
}

/* A callback that changes the activation: the statistics must see its result. */
static int double_it(const circuits_tensor *t, void *u)
{
    (void)u;
    int64_t n = t->shape[0] * t->strides[0];
    for (int64_t i = 0; i < n; i++) t->data[i] *= 2.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

/* ---- the brute-force statistics ---- */

typedef struct firing {
    float v;
    int64_t row, pos;
} firing;

static int by_value(const void *a, const void *b)
{
    const firing *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

typedef struct brute {
    int64_t n_tokens, fires[S];
    double sum[S];
    float max[S];
    firing *top[S];
    int32_t n_top[S];
} brute;

static void brute_force(circuits_context *ctx, const circuits_sae *sae, const char *hook,
                        const circuits_feature_stats_options *o, brute *r)
{
    memset(r, 0, sizeof *r);
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    const char *names[1] = {hook};
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, ROWS, T, names, 1, cache, NULL, NULL, NULL));
    circuits_tensor a;
    CHECK_OK(circuits_cache_get(cache, hook, &a));
    circuits_sae_info info = {.size = sizeof info};
    CHECK_OK(circuits_sae_get_info(sae, &info));
    int64_t d_in = info.d_in, row = a.strides[0] / T;
    CHECK(row == d_in, "%s: %lld values per token, the SAE reads %lld", hook, (long long)row, (long long)d_in);
    float *x = malloc(sizeof(float) * ROWS * T * d_in), *post = malloc(sizeof(float) * ROWS * T * S);
    firing *all = malloc(sizeof(firing) * ROWS * T * S);
    int64_t n = 0;
    for (int64_t b = 0; b < ROWS; b++)
        for (int64_t t = o->skip_positions; t < T; t++, n++) memcpy(x + n * d_in, a.data + (b * T + t) * d_in, sizeof(float) * d_in);
    CHECK_OK(circuits_sae_encode(sae, x, n, NULL, post));
    r->n_tokens = n;
    for (int j = 0; j < S; j++) {
        int64_t m = 0;
        r->max[j] = -INFINITY;
        int64_t i = 0;
        for (int64_t b = 0; b < ROWS; b++)
            for (int64_t t = o->skip_positions; t < T; t++, i++) {
                float v = post[i * S + j];
                r->sum[j] += v;
                if (v > r->max[j]) r->max[j] = v;
                if (v > o->threshold) {
                    r->fires[j]++;
                    all[m++] = (firing){v, b, t};
                }
            }
        qsort(all, (size_t)m, sizeof *all, by_value);
        r->n_top[j] = (int32_t)(m < o->top_k ? m : o->top_k);
        r->top[j] = malloc(sizeof(firing) * (r->n_top[j] + 1));
        memcpy(r->top[j], all, sizeof(firing) * r->n_top[j]);
    }
    free(x), free(post), free(all);
    circuits_cache_free(cache);
}

static void brute_free(brute *r)
{
    for (int j = 0; j < S; j++) free(r->top[j]);
}

static bool close_to(double a, double b) { return fabs(a - b) <= 1e-5 * (1.0 + fabs(b)); }

/* st against the brute force: counts and top-context places exactly, values within float noise
 * (the brute force runs the dataset as one batch), windows from the tokens. */
static void same_as_brute(const char *what, const circuits_feature_stats *st, const brute *r,
                          const circuits_feature_stats_options *o)
{
    int64_t n_tokens, d_sae;
    int32_t k, W;
    CHECK_OK(circuits_feature_stats_dims(st, &n_tokens, &d_sae, &k, &W));
    CHECK(n_tokens == r->n_tokens && d_sae == S && k == o->top_k && W == o->context_left + 1 + o->context_right,
          "%s: dims %lld %lld %d %d", what, (long long)n_tokens, (long long)d_sae, k, W);
    float freq[S], mean[S], mx[S];
    CHECK_OK(circuits_feature_stats_get(st, freq, mean, mx));
    float *vals = malloc(sizeof(float) * k + 1);
    int64_t *rows = malloc(sizeof(int64_t) * k + 1), *pos = malloc(sizeof(int64_t) * k + 1);
    int32_t *win = malloc(sizeof(int32_t) * k * W + 1);
    int bad = 0, fired = 0;
    for (int j = 0; j < S; j++) {
        fired += r->fires[j] > 0;
        bad += freq[j] != (float)((double)r->fires[j] / (double)r->n_tokens);
        bad += !close_to(mean[j], r->sum[j] / (double)r->n_tokens) || !close_to(mx[j], r->max[j]);
        int32_t cnt;
        CHECK_OK(circuits_feature_stats_top(st, j, vals, rows, pos, win, &cnt));
        bad += cnt != r->n_top[j];
        for (int32_t i = 0; i < cnt && i < r->n_top[j]; i++) {
            const firing *e = &r->top[j][i];
            bad += rows[i] != e->row || pos[i] != e->pos || !close_to(vals[i], e->v);
            for (int32_t q = 0; q < W; q++) {
                int64_t at = e->pos - o->context_left + q;
                bad += win[i * W + q] != (at >= 0 && at < T ? tokens[e->row * T + at] : -1);
            }
        }
        for (int32_t i = cnt; i < k; i++) bad += rows[i] != -1 || pos[i] != -1 || vals[i] != 0.0f;
    }
    CHECK(bad == 0, "%s: %d values differ from the brute force", what, bad);
    CHECK(fired > S / 4 && fired < S + 1, "%s: only %d of %d latents fired (a vacuous test)", what, fired, S);
    free(vals), free(rows), free(pos), free(win);
}

/* Everything st holds, as bytes (for bit-identity). */
static size_t snapshot(const circuits_feature_stats *st, unsigned char **out)
{
    int64_t n_tokens, d;
    int32_t k, W;
    CHECK_OK(circuits_feature_stats_dims(st, &n_tokens, &d, &k, &W));
    size_t per = (size_t)k * (sizeof(float) + 2 * sizeof(int64_t) + W * sizeof(int32_t)) + sizeof(int32_t);
    size_t n = sizeof n_tokens + 3 * (size_t)d * sizeof(float) + (size_t)d * per;
    unsigned char *p = calloc(1, n), *q = p;
    memcpy(q, &n_tokens, sizeof n_tokens), q += sizeof n_tokens;
    CHECK_OK(circuits_feature_stats_get(st, (float *)q, (float *)q + d, (float *)q + 2 * d));
    q += 3 * (size_t)d * sizeof(float);
    /* each latent's top contexts into aligned buffers, then their bytes one after another */
    float *v = calloc((size_t)k + 1, sizeof *v);
    int64_t *r = calloc((size_t)k + 1, sizeof *r), *ps = calloc((size_t)k + 1, sizeof *ps);
    int32_t *w = calloc((size_t)k * W + 1, sizeof *w), cnt = 0;
    for (int64_t j = 0; j < d; j++) {
        CHECK_OK(circuits_feature_stats_top(st, j, v, r, ps, w, &cnt));
        memcpy(q, v, (size_t)k * sizeof *v), q += (size_t)k * sizeof *v;
        memcpy(q, r, (size_t)k * sizeof *r), q += (size_t)k * sizeof *r;
        memcpy(q, ps, (size_t)k * sizeof *ps), q += (size_t)k * sizeof *ps;
        memcpy(q, w, (size_t)k * W * sizeof *w), q += (size_t)k * W * sizeof *w;
        memcpy(q, &cnt, sizeof cnt), q += sizeof cnt;
    }
    free(v), free(r), free(ps), free(w);
    *out = p;
    return n;
}

/* Statistics of the dataset fed in batches of `batch` rows (the last one shorter). */
static circuits_feature_stats *stats_in_batches(circuits_context *ctx, const circuits_sae *sae,
                                                const circuits_feature_stats_options *o, int64_t batch)
{
    circuits_feature_stats *st = NULL;
    CHECK_OK(circuits_feature_stats_create(&st, sae, o));
    for (int64_t r = 0; st && r < ROWS; r += batch)
        CHECK_OK(circuits_context_feature_stats_add(ctx, st, tokens + r * T, r + batch <= ROWS ? batch : ROWS - r, T));
    return st;
}

/* The full check of one SAE: brute force, batch invariance, the file's round trip. */
static void check_sae(circuits_context *ctx, const char *what, const char *dir, const circuits_feature_stats_options *o,
                      const char *hook)
{
    circuits_sae *sae = NULL;
    CHECK_OK(circuits_sae_load(&sae, dir));
    if (!sae) return;
    brute r;
    brute_force(ctx, sae, hook, o, &r);
    circuits_feature_stats *whole = stats_in_batches(ctx, sae, o, ROWS);
    if (!whole) return;
    same_as_brute(what, whole, &r, o);
    unsigned char *s0, *s1;
    size_t n0 = snapshot(whole, &s0);
    const int64_t batches[] = {1, 2, 4};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        circuits_feature_stats *st = stats_in_batches(ctx, sae, o, batches[i]);
        size_t n1 = snapshot(st, &s1);
        CHECK(n1 == n0 && memcmp(s0, s1, n0) == 0, "%s: batches of %lld rows differ from one batch", what,
              (long long)batches[i]);
        free(s1);
        circuits_feature_stats_free(st);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/%s.safetensors", g_root, what);
    CHECK_OK(circuits_feature_stats_save(whole, path));
    circuits_feature_stats *back = NULL;
    CHECK_OK(circuits_feature_stats_load(&back, path));
    if (back) {
        size_t n1 = snapshot(back, &s1);
        CHECK(n1 == n0 && memcmp(s0, s1, n0) == 0, "%s: the file read back differs", what);
        /* the options the statistics were made with, from the object and from the file */
        circuits_feature_stats_options a = {.size = sizeof a}, b = {.size = sizeof b};
        CHECK_OK(circuits_feature_stats_get_options(whole, &a));
        CHECK_OK(circuits_feature_stats_get_options(back, &b));
        CHECK(a.size == sizeof a && memcmp(&a, &b, sizeof a) == 0, "%s: options read back differ", what);
        CHECK(a.top_k == o->top_k && a.context_left == o->context_left && a.context_right == o->context_right &&
                  a.threshold == o->threshold && a.skip_positions == o->skip_positions,
              "%s: get_options is not what create was given", what);
        free(s1);
        circuits_feature_stats_free(back);
    }
    free(s0);
    brute_free(&r);
    circuits_feature_stats_free(whole);
    circuits_sae_free(sae);
}

/* ---- hostile files: a saved file rewritten with one change ---- */

typedef struct change {
    const char *meta_key, *meta_value; /* metadata set (value NULL: removed) */
    const char *drop;                  /* tensor left out */
    const char *extra;                 /* tensor added */
    const char *poke;                  /* tensor whose first element is set to poke_value */
    double poke_value;
    const char *retype;                /* tensor written as F32 whatever it was */
} change;

static void rewrite(const char *src, const char *dst, const change *c)
{
    cx_st_set *set;
    CHECK_OK(cx_st_open(&set, src, CX_ST_READ));
    json_t *md;
    CHECK_OK(cx_st_metadata(&set->maps[0], &md, "test"));
    cx_st_out out[16];
    void *copies[16] = {0};
    size_t n = 0;
    for (size_t i = 0; i < set->n_tensors && n < 15; i++) {
        const cx_st_tensor *t = &set->tensors[i];
        if (c->drop && strcmp(t->name, c->drop) == 0) continue;
        out[n] = (cx_st_out){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(out[n].shape, t->shape, sizeof t->shape);
        if ((c->poke && strcmp(t->name, c->poke) == 0) || (c->retype && strcmp(t->name, c->retype) == 0)) {
            copies[n] = malloc(t->nbytes + 8);
            memcpy(copies[n], t->data, t->nbytes);
            if (c->retype && strcmp(t->name, c->retype) == 0) out[n].dtype = CX_DT_F32; /* same bytes: 4-byte words */
            if (c->poke && strcmp(t->name, c->poke) == 0) {
                if (t->dtype == CX_DT_I64) ((int64_t *)copies[n])[0] = (int64_t)c->poke_value;
                if (t->dtype == CX_DT_I32) ((int32_t *)copies[n])[0] = (int32_t)c->poke_value;
                if (t->dtype == CX_DT_F32) ((float *)copies[n])[0] = (float)c->poke_value;
                if (t->dtype == CX_DT_F64) ((double *)copies[n])[0] = c->poke_value;
            }
            out[n].data = copies[n];
        }
        n++;
    }
    static const float one = 1.0f;
    if (c->extra) out[n++] = (cx_st_out){c->extra, CX_DT_F32, 1, {1}, &one};
    const char *kv[64];
    size_t m = 0;
    const char *key;
    json_t *val;
    bool seen = false;
    json_object_foreach(md, key, val) {
        if (c->meta_key && strcmp(key, c->meta_key) == 0) {
            seen = true;
            if (!c->meta_value) continue;
            kv[2 * m] = key, kv[2 * m + 1] = c->meta_value;
        } else {
            kv[2 * m] = key, kv[2 * m + 1] = json_string_value(val);
        }
        m++;
    }
    if (c->meta_key && !seen && c->meta_value) kv[2 * m] = c->meta_key, kv[2 * m + 1] = c->meta_value, m++;
    CHECK_OK(cx_st_write(dst, out, n, kv, m, "test"));
    for (size_t i = 0; i < 16; i++) free(copies[i]);
    json_decref(md);
    cx_st_close(set);
}

static const char *hostile(const char *good, const char *name, change c)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s.safetensors", g_root, name);
    rewrite(good, path, &c);
    return path;
}

static void check_hostile_files(const char *good)
{
    circuits_feature_stats *st = (circuits_feature_stats *)&st; /* must come back NULL */
    const char *p;
    CALL_FAILS("stats_load_null", circuits_feature_stats_load(NULL, good), CIRCUITS_E_INVALID_ARGUMENT, "out is NULL");
    CALL_FAILS("stats_load_null_path", circuits_feature_stats_load(&st, NULL), CIRCUITS_E_INVALID_ARGUMENT, "path is NULL");
    CHECK(st == NULL, "a failed load left *out set");
    char missing[600];
    snprintf(missing, sizeof missing, "%s/absent.safetensors", g_root);
    CALL_FAILS("stats_load_missing_file", circuits_feature_stats_load(&st, missing), CIRCUITS_E_IO, "absent");
    p = hostile(good, "no_meta", (change){.meta_key = "format"});
    CALL_FAILS("stats_file_not_stats", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "'format' is missing");
    p = hostile(good, "other_format", (change){.meta_key = "format", .meta_value = "probe"});
    CALL_FAILS("stats_file_format_name", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "not \"circuits-feature-stats\"");
    p = hostile(good, "version2", (change){.meta_key = "format_version", .meta_value = "2"});
    CALL_FAILS("stats_file_format_version", circuits_feature_stats_load(&st, p), CIRCUITS_E_UNSUPPORTED, "format_version \"2\"");
    p = hostile(good, "bad_int", (change){.meta_key = "n_tokens", .meta_value = "12x"});
    CALL_FAILS("stats_file_metadata_integer", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "'n_tokens' is \"12x\"");
    p = hostile(good, "huge_k", (change){.meta_key = "top_k", .meta_value = "100000"});
    CALL_FAILS("stats_file_top_k_range", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "'top_k' is \"100000\"");
    p = hostile(good, "nan_thr", (change){.meta_key = "threshold", .meta_value = "nan"});
    CALL_FAILS("stats_file_threshold", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "not a finite number");
    p = hostile(good, "k_shape", (change){.meta_key = "top_k", .meta_value = "3"});
    CALL_FAILS("stats_file_shape", circuits_feature_stats_load(&st, p), CIRCUITS_E_SHAPE, "as the metadata says");
    p = hostile(good, "no_max", (change){.drop = "act_max"});
    CALL_FAILS("stats_file_tensor_missing", circuits_feature_stats_load(&st, p), CIRCUITS_E_TENSOR_MISSING, "'act_max'");
    p = hostile(good, "extra", (change){.extra = "notes"});
    CALL_FAILS("stats_file_tensor_unexpected", circuits_feature_stats_load(&st, p), CIRCUITS_E_TENSOR_UNEXPECTED, "'notes'");
    p = hostile(good, "retyped", (change){.retype = "top_count"});
    CALL_FAILS("stats_file_dtype", circuits_feature_stats_load(&st, p), CIRCUITS_E_DTYPE, "'top_count' is F32, not I32");
    p = hostile(good, "fires", (change){.poke = "fire_count", .poke_value = 1e9});
    CALL_FAILS("stats_file_fire_count", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "fire_count[0]");
    p = hostile(good, "count", (change){.poke = "top_count", .poke_value = 99});
    CALL_FAILS("stats_file_top_count", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "top_count[0]");
    p = hostile(good, "order", (change){.poke = "top_values", .poke_value = -1.0});
    CALL_FAILS("stats_file_top_values", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "top_values[0, 0]");
    p = hostile(good, "row", (change){.poke = "top_rows", .poke_value = 1e6});
    CALL_FAILS("stats_file_top_rows", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "row 1000000");
    p = hostile(good, "window", (change){.poke = "top_windows", .poke_value = -7});
    CALL_FAILS("stats_file_top_windows", circuits_feature_stats_load(&st, p), CIRCUITS_E_FORMAT, "neither a token id");
    snprintf(missing, sizeof missing, "%s/garbage.safetensors", g_root);
    FILE *f = fopen(missing, "wb");
    fputs("not a safetensors file at all", f);
    fclose(f);
    CHECK_FAILS(circuits_feature_stats_load(&st, missing), CIRCUITS_E_FORMAT, "");
    CHECK(st == NULL, "a failed load left *out set");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [-v]\n", argv[0]);
        return 2;
    }
    cat_verbose = argc > 2 && strcmp(argv[2], "-v") == 0;
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = g_root;
    circuits_model *m;
    CHECK_OK(circuits_model_load(&m, argv[1], NULL));
    if (!m) return tu_finish("test_features");
    circuits_config cfg = {.size = sizeof cfg};
    CHECK_OK(circuits_model_config(m, &cfg));
    D = cfg.d_model, V = cfg.d_vocab;
    for (int i = 0; i < ROWS * T; i++) tokens[i] = (int32_t)((i * 37 + (i / T) * 11 + 5) % V);
    circuits_context *ctx;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));

    circuits_feature_stats_options o;
    circuits_feature_stats_options_init(&o);
    CHECK(o.size == sizeof o && o.top_k == 10 && o.context_left == 8 && o.context_right == 2 && o.threshold == 0.0f &&
          o.skip_positions == 0, "options_init defaults");
    o.top_k = 5;
    o.context_left = 3;
    o.context_right = 2;
    const char *std_dir = write_sae("std", "standard", "blocks.0.hook_resid_post", NULL, D, "");
    check_sae(ctx, "standard", std_dir, &o, "blocks.0.hook_resid_post");
    circuits_feature_stats_options o2 = o;
    o2.threshold = 0.05f;
    o2.skip_positions = 1;
    o2.top_k = 7;
    o2.context_left = 0;
    o2.context_right = 4;
    const char *topk_dir = write_sae("topk", "topk", "blocks.1.hook_mlp_out", NULL, D, "\"k\": 6, ");
    check_sae(ctx, "topk_threshold_skip", topk_dir, &o2, "blocks.1.hook_mlp_out");
    circuits_feature_stats_options o0 = o; /* no contexts kept: counts, sums and maxima only */
    o0.top_k = 0;
    check_sae(ctx, "no_top", std_dir, &o0, "blocks.0.hook_resid_post");
    const char *z_dir = write_sae("z", "standard", "blocks.1.attn.hook_z", NULL, D,
                                  "\"reshape_activations\": \"hook_z\", ");
    check_sae(ctx, "hook_z", z_dir, &o, "blocks.1.attn.hook_z");
    /* blocks.L.hook_resid_pre is read at blocks.(L-1).hook_resid_post when nothing is registered
     * at it; with a callback there, at the point itself after the callback */
    const char *pre_dir = write_sae("pre", "standard", "blocks.1.hook_resid_pre", NULL, D, "");
    check_sae(ctx, "resid_pre", pre_dir, &o, "blocks.1.hook_resid_pre");
    circuits_hook_id hid;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.hook_resid_pre", double_it, NULL, &hid));
    check_sae(ctx, "resid_pre_hooked", pre_dir, &o, "blocks.1.hook_resid_pre");
    CHECK_OK(circuits_context_remove_hook(ctx, hid));
    const char *tc_dir = write_sae("tc", "transcoder", "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", D, "");
    check_sae(ctx, "transcoder", tc_dir, &o, "blocks.0.ln2.hook_normalized");

    /* ---- arguments ---- */
    circuits_sae *sae = NULL, *wide = NULL;
    CHECK_OK(circuits_sae_load(&sae, std_dir));
    circuits_feature_stats *st = NULL;
    CHECK_OK(circuits_feature_stats_create(&st, sae, &o));
    circuits_feature_stats *dflt = NULL; /* NULL options: the defaults */
    CHECK_OK(circuits_feature_stats_create(&dflt, sae, NULL));
    int32_t k_d = 0, w_d = 0;
    CHECK_OK(circuits_feature_stats_dims(dflt, NULL, NULL, &k_d, &w_d));
    CHECK(k_d == 10 && w_d == 11, "default top_k %d window %d", k_d, w_d);
    circuits_feature_stats_free(dflt);
    circuits_feature_stats *none = (circuits_feature_stats *)&none;
    CALL_FAILS("stats_create_null", circuits_feature_stats_create(NULL, sae, &o), CIRCUITS_E_INVALID_ARGUMENT, "out is NULL");
    CALL_FAILS("stats_create_null_sae", circuits_feature_stats_create(&none, NULL, &o), CIRCUITS_E_INVALID_ARGUMENT, "sae is NULL");
    CHECK(none == NULL, "a failed create left *out set");
    circuits_feature_stats_options bad = o;
    bad.size = 12;
    CALL_FAILS("stats_options_size", circuits_feature_stats_create(&none, sae, &bad), CIRCUITS_E_VERSION, "options size 12");
    bad = o, bad.top_k = -1;
    CALL_FAILS("stats_options_top_k", circuits_feature_stats_create(&none, sae, &bad), CIRCUITS_E_INVALID_ARGUMENT, "top_k -1");
    bad = o, bad.context_right = -2;
    CALL_FAILS("stats_options_context", circuits_feature_stats_create(&none, sae, &bad), CIRCUITS_E_INVALID_ARGUMENT, "context_right -2");
    bad = o, bad.threshold = NAN;
    CALL_FAILS("stats_options_threshold", circuits_feature_stats_create(&none, sae, &bad), CIRCUITS_E_INVALID_ARGUMENT, "not a finite");
    bad = o, bad.skip_positions = -1;
    CALL_FAILS("stats_options_skip", circuits_feature_stats_create(&none, sae, &bad), CIRCUITS_E_INVALID_ARGUMENT, "skip_positions -1");
    CALL_FAILS("stats_add_null", circuits_context_feature_stats_add(ctx, st, NULL, 1, T), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("stats_add_shape", circuits_context_feature_stats_add(ctx, st, tokens, 0, T), CIRCUITS_E_SHAPE, "");
    CALL_FAILS("stats_add_too_long", circuits_context_feature_stats_add(ctx, st, tokens, 1, cfg.n_ctx + 1), CIRCUITS_E_RANGE, "");
    int32_t oov[T];
    memcpy(oov, tokens, sizeof oov);
    oov[3] = (int32_t)V;
    CALL_FAILS("stats_add_token_range", circuits_context_feature_stats_add(ctx, st, oov, 1, T), CIRCUITS_E_RANGE, "");
    int64_t n_tok = -1;
    CHECK_OK(circuits_feature_stats_dims(st, &n_tok, NULL, NULL, NULL));
    CHECK(n_tok == 0, "failed adds counted %lld tokens", (long long)n_tok);
    /* an SAE reading a point of another width: written for d_mlp at a d_model point */
    const char *wide_dir = write_sae("wide", "standard", "blocks.0.hook_resid_pre", NULL, cfg.d_mlp, "");
    CHECK_OK(circuits_sae_load(&wide, wide_dir));
    circuits_feature_stats *wst = NULL;
    CHECK_OK(circuits_feature_stats_create(&wst, wide, &o));
    CALL_FAILS("stats_point_width", circuits_context_feature_stats_add(ctx, wst, tokens, 1, T), CIRCUITS_E_SHAPE,
               "reads 512 values per token at 'blocks.0.hook_resid_pre', which has 128");
    /* the point replaced by an attached SAE */
    CHECK_OK(circuits_context_add_sae(ctx, sae, 0));
    CALL_FAILS("stats_point_replaced", circuits_context_feature_stats_add(ctx, st, tokens, 1, T), CIRCUITS_E_UNSUPPORTED,
               "is replaced by an attached SAE");
    CHECK_OK(circuits_context_remove_sae(ctx, NULL));
    CHECK_OK(circuits_context_feature_stats_add(ctx, st, tokens, 2, T));
    CALL_FAILS("stats_top_latent", circuits_feature_stats_top(st, S, NULL, NULL, NULL, NULL, NULL), CIRCUITS_E_RANGE,
               "latent 40 is not in 0 .. 39");
    CALL_FAILS("stats_dims_null", circuits_feature_stats_dims(NULL, NULL, NULL, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "st is NULL");
    CALL_FAILS("stats_get_null", circuits_feature_stats_get(NULL, NULL, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "st is NULL");
    char path[600];
    snprintf(path, sizeof path, "%s/no_such_dir/s.safetensors", g_root);
    CALL_FAILS("stats_save_io", circuits_feature_stats_save(st, path), CIRCUITS_E_IO, "cannot create");
    CALL_FAILS("stats_save_null", circuits_feature_stats_save(st, NULL), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    snprintf(path, sizeof path, "%s/good.safetensors", g_root);
    CHECK_OK(circuits_feature_stats_save(st, path));
    circuits_feature_stats *loaded = NULL;
    CHECK_OK(circuits_feature_stats_load(&loaded, path));
    CALL_FAILS("stats_add_loaded", circuits_context_feature_stats_add(ctx, loaded, tokens, 1, T), CIRCUITS_E_UNSUPPORTED,
               "loaded from a file");
    /* an empty statistics object: zeros, and a file that reads back */
    circuits_feature_stats *empty = NULL;
    CHECK_OK(circuits_feature_stats_create(&empty, sae, &o));
    float f0[S], m0[S], x0[S];
    CHECK_OK(circuits_feature_stats_get(empty, f0, m0, x0));
    CHECK(f0[0] == 0 && m0[0] == 0 && x0[S - 1] == 0, "empty statistics are zeros");
    snprintf(path, sizeof path, "%s/empty.safetensors", g_root);
    CHECK_OK(circuits_feature_stats_save(empty, path));
    circuits_feature_stats *eback = NULL;
    CHECK_OK(circuits_feature_stats_load(&eback, path));
    circuits_feature_stats_free(eback);
    circuits_feature_stats_free(empty);
    snprintf(path, sizeof path, "%s/good.safetensors", g_root);
    check_hostile_files(path);

    circuits_feature_stats_free(loaded);
    circuits_feature_stats_free(wst);
    circuits_feature_stats_free(st);
    circuits_feature_stats_free(NULL);
    circuits_sae_free(wide);
    circuits_sae_free(sae);
    circuits_context_free(ctx);
    circuits_model_free(m);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return tu_finish("test_features");
}
