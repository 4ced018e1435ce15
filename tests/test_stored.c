/* keep_stored_dtype (docs/loading.md#keep_stored_dtype): weights kept in their stored dtype.
 *
 *   test_stored CASES_DIR TMP_DIR [-v]
 *
 * Each reference case below is rewritten into TMP_DIR with every tensor stored as F16 (and, for
 * some, BF16; tests/st_write.h): then the same files are loaded twice without processing, as fp32 (the
 * F16/BF16 values widened exactly) and with keep_stored_dtype = 1, and
 *   1. the weight matrices whose layout a stored matrix expresses report their stored dtype, the
 *      others F32; circuits_model_weight refuses the stored ones (CIRCUITS_E_DTYPE) and
 *      circuits_model_weight_read gives exactly the fp32 load's values (both are the file's
 *      values widened);
 *   2. every hook point of run_with_cache and the logits agree within BOUND (relative to the
 *      activation's largest magnitude): only the order of fp32 sums differs, so the bound is
 *      fp32 rounding over the layers, not quantization error; also with use_attn_result and
 *      use_split_qkv_input (the per-head products), and with a KV cache (forward_kv in two
 *      steps) and greedy generation with and without it;
 *   3. weight processing: each step that would rewrite a stored matrix is refused by name, and
 *      fold_value_biases (which only reads W_O) gives what the fp32 load gives;
 *   4. the analyses: those that read weight matrices directly refuse by name, the others
 *      (residual directions, logit lens, accumulated residual stack, induction scores) agree
 *      with the fp32 load.
 * The largest relative difference seen is printed (docs/loading.md quotes it). */
#include "catalogue.h"
#include "testutil.h"

#include "safetensors.h"
#include "st_write.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define BOUND 2e-5 /* |stored - fp32| <= BOUND * max |fp32| of the activation */
#define B 2
#define T 7

static const char *g_cases, *g_tmp;
static double g_worst;
static char g_worst_at[160];

static void die(const char *what)
{
    fprintf(stderr, "test_stored: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* ---- writing a case with its F32 tensors stored as F16 or BF16 ---- */

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) die(from);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) die(to);
    if (ferror(in) || fclose(out) != 0) die(to);
    fclose(in);
}

static bool exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* TMP/<case>_<dt>: the case's config and one model.safetensors with its F32 tensors as dt
 * (sharded cases become one file). */
static void convert(const char *name, st_dtype dt, char *out, size_t cap)
{
    char src[4096], path[4200], to[4200];
    snprintf(src, sizeof src, "%s/%s", g_cases, name);
    snprintf(out, cap, "%s/%s_%s", g_tmp, name, dt == ST_F16 ? "f16" : "bf16");
    if (mkdir(out, 0700) != 0 && errno != EEXIST) die(out);
    const char *cfgs[] = {"config.json", "tl_config.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", src, cfgs[i]);
        snprintf(to, sizeof to, "%s/%s", out, cfgs[i]);
        if (exists(path)) copy_file(path, to);
    }
    cx_st_set *set = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    int rc = exists(path) ? cx_st_open(&set, path, CX_ST_MAP) : (snprintf(path, sizeof path, "%s/model.safetensors.index.json", src),
                                                                cx_st_open_index(&set, src, path, CX_ST_MAP));
    if (rc) {
        fprintf(stderr, "test_stored: %s: %s\n", src, circuits_last_error());
        exit(2);
    }
    st_entry *e = calloc(set->n_tensors, sizeof *e);
    if (!e) die("calloc");
    for (size_t i = 0; i < set->n_tensors; i++) {
        const cx_st_tensor *t = &set->tensors[i];
        float *d = malloc(t->numel * sizeof *d);
        if (!d || t->ndim > 3 || strlen(t->name) >= sizeof e[i].name) die(t->name);
        for (size_t k = 0; k < t->numel; k++) d[k] = cx_st_read_f32(t, k);
        snprintf(e[i].name, sizeof e[i].name, "%s", t->name);
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, (size_t)t->ndim * sizeof *t->shape);
        e[i].data = d;
    }
    snprintf(to, sizeof to, "%s/model.safetensors", out);
    st_write_as(to, e, (int)set->n_tensors, dt);
    for (size_t i = 0; i < set->n_tensors; i++) free((void *)e[i].data);
    free(e);
    cx_st_close(set);
}

/* ---- loading and comparing ---- */

static circuits_model *load(const char *dir, int keep)
{
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    o.keep_stored_dtype = keep;
    circuits_model *m = NULL;
    int rc = circuits_model_load(&m, dir, &o);
    if (rc) {
        fprintf(stderr, "test_stored: loading %s (keep %d): %s\n", dir, keep, circuits_last_error());
        exit(2);
    }
    return m;
}

static circuits_config config(const circuits_model *m)
{
    circuits_config c;
    c.size = sizeof c;
    if (circuits_model_config(m, &c)) die("config");
    return c;
}

/* max |a - b| / max(max |b|, tiny), checked against BOUND and recorded. */
static void close_enough(const char *what, const char *name, const float *a, const float *b, size_t n)
{
    double d = 0, mag = 1e-30;
    for (size_t i = 0; i < n; i++) {
        if (a[i] == b[i]) continue; /* also the -inf of masked attention scores */
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d || e != e) d = e;
    }
    for (size_t i = 0; i < n; i++)
        if (isfinite(b[i]) && fabs((double)b[i]) > mag) mag = fabs((double)b[i]);
    double rel = d / mag;
    CHECK(rel <= BOUND, "%s: %s differs by %g relative (%g absolute)", what, name, rel, d);
    if (rel > g_worst) {
        g_worst = rel;
        snprintf(g_worst_at, sizeof g_worst_at, "%s: %s", what, name);
    }
}

static size_t numel(const circuits_tensor *t)
{
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

/* Weight views: dtypes, refusals, reads bit-identical to the fp32 load. Returns the number of
 * weights kept stored. */
static int check_weights(const char *what, const circuits_model *f, const circuits_model *s)
{
    int kept = 0;
    size_t n = circuits_model_weight_count(s);
    CHECK(n == circuits_model_weight_count(f), "%s: weight counts differ", what);
    for (size_t i = 0; i < n; i++) {
        circuits_tensor ts, tf, rs, rf;
        int rc = circuits_model_weight_at(s, i, &ts);
        CHECK_OK(circuits_model_weight_at(f, i, &tf));
        int32_t dt = -1;
        CHECK_OK(circuits_model_weight_dtype(s, ts.name, &dt));
        if (dt != CIRCUITS_DTYPE_F32) {
            kept++;
            CHECK(rc == CIRCUITS_E_DTYPE && ts.data == NULL && strstr(circuits_last_error(), "circuits_model_weight_read"),
                  "%s: weight_at of stored %s -> %d (%s)", what, ts.name, rc, circuits_last_error());
            circuits_tensor v;
            CHECK_FAILS(circuits_model_weight(s, ts.name, &v), CIRCUITS_E_DTYPE, "keep_stored_dtype");
            CHECK(strcmp(v.name, ts.name) == 0 && v.data == NULL, "%s: the refused view names the weight", what);
        } else {
            CHECK(rc == CIRCUITS_OK && ts.data != NULL, "%s: %s is F32 but has no view", what, ts.name);
        }
        size_t k = numel(&tf);
        float *a = malloc(k * sizeof *a), *b = malloc(k * sizeof *b);
        if (!a || !b) die("malloc");
        CHECK_OK(circuits_model_weight_read(s, tf.name, a, k, &rs));
        CHECK_OK(circuits_model_weight_read(f, tf.name, b, k, &rf));
        CHECK(memcmp(a, b, k * sizeof *a) == 0, "%s: weight_read of %s differs from the fp32 load's", what, tf.name);
        CHECK(rs.ndim == rf.ndim && memcmp(rs.shape, rf.shape, sizeof rs.shape) == 0 &&
                  memcmp(rs.strides, rf.strides, sizeof rs.strides) == 0, "%s: %s described differently", what, tf.name);
        if (k > 1 && dt != CIRCUITS_DTYPE_F32) /* a buffer one short is refused */
            CHECK_FAILS(circuits_model_weight_read(s, tf.name, a, k - 1, NULL), CIRCUITS_E_RANGE, "buf holds");
        free(a);
        free(b);
    }
    return kept;
}

static void tokens_for(const circuits_config *c, int32_t *tok, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        tok[i] = (int32_t)((seed >> 8) % (uint32_t)c->d_vocab);
    }
}

/* Every hook point (and the logits) of one run, stored vs fp32, with these context options. */
static void compare_hooks(const char *what, const circuits_model *f, const circuits_model *s, int attn_result,
                          int split)
{
    circuits_config c = config(f);
    circuits_context_options co;
    circuits_context_options_init(&co);
    co.use_attn_result = attn_result;
    co.use_split_qkv_input = split;
    circuits_context *cf = NULL, *cs = NULL;
    circuits_cache *hf = NULL, *hs = NULL;
    CHECK_OK(circuits_context_create(&cf, f, &co));
    CHECK_OK(circuits_context_create(&cs, s, &co));
    CHECK_OK(circuits_cache_create(&hf));
    CHECK_OK(circuits_cache_create(&hs));
    if (!cf || !cs || !hf || !hs) die("context");
    int32_t tok[B * T];
    tokens_for(&c, tok, B * T, 11);
    size_t nl = (size_t)B * T * (size_t)c.d_vocab_out;
    float *lf = malloc(nl * sizeof *lf), *ls = malloc(nl * sizeof *ls);
    if (!lf || !ls) die("malloc");
    CHECK_OK(circuits_context_run_with_cache(cf, tok, B, T, NULL, 0, hf, lf, NULL, NULL));
    CHECK_OK(circuits_context_run_with_cache(cs, tok, B, T, NULL, 0, hs, ls, NULL, NULL));
    size_t n = circuits_cache_count(hf);
    CHECK(n > 0 && n == circuits_cache_count(hs), "%s: %zu and %zu cached points", what, n, circuits_cache_count(hs));
    for (size_t i = 0; i < n && n == circuits_cache_count(hs); i++) {
        circuits_tensor a, b;
        CHECK_OK(circuits_cache_at(hf, i, &a));
        CHECK_OK(circuits_cache_at(hs, i, &b));
        CHECK(strcmp(a.name, b.name) == 0 && numel(&a) == numel(&b), "%s: entry %zu differs", what, i);
        if (strcmp(a.name, "hook_tokens") != 0) close_enough(what, a.name, b.data, a.data, numel(&a));
    }
    close_enough(what, "logits", ls, lf, nl);
    free(lf);
    free(ls);
    circuits_cache_free(hf);
    circuits_cache_free(hs);
    circuits_context_free(cf);
    circuits_context_free(cs);
}

/* forward_kv in two steps and greedy generation with and without the cache. */
static void compare_generation(const char *what, const circuits_model *f, const circuits_model *s)
{
    circuits_config c = config(f);
    circuits_context *cf = NULL, *cs = NULL;
    CHECK_OK(circuits_context_create(&cf, f, NULL));
    CHECK_OK(circuits_context_create(&cs, s, NULL));
    if (!cf || !cs) die("context");
    int32_t tok[B * T];
    tokens_for(&c, tok, B * T, 5);
    size_t V = (size_t)c.d_vocab_out;
    float *lf = malloc(B * T * V * sizeof *lf), *ls = malloc(B * T * V * sizeof *ls);
    if (!lf || !ls) die("malloc");
    circuits_kv_cache *kf = NULL, *ks = NULL;
    CHECK_OK(circuits_kv_cache_create(&kf, f, B, T));
    CHECK_OK(circuits_kv_cache_create(&ks, s, B, T));
    int32_t first[B * 4], second[B * 3];
    for (int b = 0; b < B; b++) {
        memcpy(first + b * 4, tok + b * T, 4 * sizeof *tok);
        memcpy(second + b * 3, tok + b * T + 4, 3 * sizeof *tok);
    }
    CHECK_OK(circuits_context_forward_kv(cf, kf, first, B, 4, lf));
    CHECK_OK(circuits_context_forward_kv(cs, ks, first, B, 4, ls));
    close_enough(what, "forward_kv step 1 logits", ls, lf, B * 4 * V);
    CHECK_OK(circuits_context_forward_kv(cf, kf, second, B, 3, lf));
    CHECK_OK(circuits_context_forward_kv(cs, ks, second, B, 3, ls));
    close_enough(what, "forward_kv step 2 logits", ls, lf, B * 3 * V);
    circuits_kv_cache_free(kf);
    circuits_kv_cache_free(ks);

    int32_t max_new = c.n_ctx - 3 > 12 ? 12 : c.n_ctx - 3;
    int64_t L = 3 + max_new;
    int32_t *out[3];
    for (int k = 0; k < 3; k++)
        if (!(out[k] = calloc((size_t)(B * L), sizeof(int32_t)))) die("calloc");
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    o.max_new_tokens = max_new;
    o.do_sample = 0;
    o.stop_at_eos = 0;
    int32_t prompt[B * 3] = {tok[0], tok[1], tok[2], tok[T], tok[T + 1], tok[T + 2]};
    int64_t len[3] = {0, 0, 0};
    o.use_kv_cache = 1;
    CHECK_OK(circuits_context_generate(cf, prompt, B, 3, &o, out[0], &len[0]));
    CHECK_OK(circuits_context_generate(cs, prompt, B, 3, &o, out[1], &len[1]));
    o.use_kv_cache = 0;
    CHECK_OK(circuits_context_generate(cs, prompt, B, 3, &o, out[2], &len[2]));
    CHECK(len[0] == L && len[1] == L && len[2] == L, "%s: generated lengths", what);
    CHECK(memcmp(out[0], out[1], (size_t)(B * L) * sizeof(int32_t)) == 0, "%s: stored greedy tokens differ from fp32's",
          what);
    CHECK(memcmp(out[1], out[2], (size_t)(B * L) * sizeof(int32_t)) == 0,
          "%s: stored greedy tokens differ with and without the KV cache", what);
    for (int k = 0; k < 3; k++) free(out[k]);
    free(lf);
    free(ls);
    circuits_context_free(cf);
    circuits_context_free(cs);
}

/* ---- processing ---- */

static bool is_stored(const circuits_model *s, const char *name)
{
    int32_t dt = -1;
    return circuits_model_weight_dtype(s, name, &dt) == CIRCUITS_OK && dt != CIRCUITS_DTYPE_F32;
}

/* One load with o (keep_stored_dtype set): refused naming `step` if `refused`, else it loads. */
static void load_refused(const char *what, const char *dir, const circuits_load_options *o, bool refused,
                         const char *step)
{
    circuits_model *m = NULL;
    circuits_clear_error();
    int rc = circuits_model_load(&m, dir, o);
    char want[96];
    snprintf(want, sizeof want, "%s would rewrite", step);
    if (refused)
        CHECK(rc == CIRCUITS_E_UNSUPPORTED && m == NULL && strstr(circuits_last_error(), want),
              "%s: %s: -> %d (%s)", what, step, rc, circuits_last_error());
    else CHECK(rc == CIRCUITS_OK, "%s: %s touches no stored matrix, yet: %s", what, step, circuits_last_error());
    if (m) { /* applied (to fp32 weights only): as on the fp32 load, the stored weights still in place */
        circuits_load_options fo = *o;
        fo.keep_stored_dtype = 0;
        circuits_model *f = NULL;
        CHECK_OK(circuits_model_load(&f, dir, &fo));
        char label[160];
        snprintf(label, sizeof label, "%s with %s", what, step);
        if (f) compare_hooks(label, f, m, 0, 0);
        circuits_model_free(f);
    }
    circuits_model_free(m);
}

static void check_processing(const char *what, const char *dir, const circuits_model *s, const circuits_config *c)
{
    bool ln = c->normalization_type == CIRCUITS_NORM_LN, rms = c->normalization_type == CIRCUITS_NORM_RMS;
    bool q = is_stored(s, "blocks.0.attn.W_Q"), u = is_stored(s, "unembed.W_U"), e = is_stored(s, "embed.W_E");
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.keep_stored_dtype = 1;
    o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    load_refused(what, dir, &o, (ln || rms) && (q || u), "fold_ln");
    o.fold_ln = 0;
    o.center_writing_weights = 1; /* TL centres LN models only (and not with final_rms) */
    load_refused(what, dir, &o, ln && !c->final_rms && (e || q), "center_writing_weights");
    o.center_writing_weights = 0;
    o.center_unembed = 1;
    load_refused(what, dir, &o, u && c->output_logits_soft_cap <= 0.0f, "center_unembed");
    o.center_unembed = 0;
    if (q) { /* (the other refusals of refactor come first when W_Q is fp32) */
        o.refactor_factored_attn_matrices = 1;
        load_refused(what, dir, &o, true, "refactor_factored_attn_matrices");
        o.refactor_factored_attn_matrices = 0;
    }
    /* fold_value_biases reads W_O only: applied, as on the fp32 load */
    o.fold_value_biases = 1;
    circuits_model *ms = NULL, *mf = NULL;
    CHECK_OK(circuits_model_load(&ms, dir, &o));
    o.keep_stored_dtype = 0;
    CHECK_OK(circuits_model_load(&mf, dir, &o));
    if (!ms || !mf) return;
    for (int l = 0; l < c->n_layers; l++) {
        char name[64];
        float a[4096], b[4096];
        snprintf(name, sizeof name, "blocks.%d.attn.b_O", l);
        CHECK_OK(circuits_model_weight_read(ms, name, a, 4096, NULL));
        CHECK_OK(circuits_model_weight_read(mf, name, b, 4096, NULL));
        CHECK(memcmp(a, b, (size_t)c->d_model * sizeof *a) == 0, "%s: fold_value_biases: %s differs", what, name);
    }
    compare_hooks("fold_value_biases", mf, ms, 0, 0);
    circuits_model_free(ms);
    circuits_model_free(mf);
}

/* ---- analyses ---- */

#define REFUSES(call) CHECK_FAILS(call, CIRCUITS_E_UNSUPPORTED, "keep_stored_dtype")

static void check_analyses(const char *what, const circuits_model *f, const circuits_model *s)
{
    circuits_config c = config(f);
    circuits_factored *fa = NULL;
    float *buf = malloc(sizeof(float) * 65536 * 4);
    if (!buf) die("malloc");
    /* those that read weight matrices refuse by name */
    REFUSES(circuits_model_ov(s, 0, 0, &fa));
    REFUSES(circuits_model_qk(s, 0, 0, &fa));
    REFUSES(circuits_model_full_ov(s, 0, 0, &fa));
    REFUSES(circuits_model_full_qk(s, 0, 0, &fa));
    if (c.positional_embedding_type != CIRCUITS_POS_ROTARY) REFUSES(circuits_model_pos_qk(s, 0, 0, &fa));
    else REFUSES(circuits_model_rotary_qk(s, 0, 0, 2, &fa));
    REFUSES(circuits_model_composition_circuit(s, CIRCUITS_COMPOSITION_Q, 0, 0, 1, 0, &fa));
    REFUSES(circuits_model_virtual_ov(s, 0, 0, 1, 0, &fa));
    REFUSES(circuits_model_virtual_weights(s, CIRCUITS_WRITER_EMBED, 0, 0, CIRCUITS_READER_Q, 0, 0, &fa));
    REFUSES(circuits_model_composition_scores(s, CIRCUITS_COMPOSITION_K, buf));
    if (!c.attn_only) REFUSES(circuits_model_mlp_composition_scores(s, CIRCUITS_COMPOSITION_V, buf));
    REFUSES(circuits_model_copying_scores(s, 0, buf));
    CHECK(fa == NULL, "%s: a refused circuit leaves *out NULL", what);

    /* residual directions: a stored W_U's rows */
    int32_t toks[3] = {0, 1, c.d_vocab_out - 1};
    size_t D = (size_t)c.d_model;
    float *dirs = malloc(2 * 3 * D * sizeof *dirs);
    if (!dirs) die("malloc");
    CHECK_OK(circuits_model_residual_directions(s, toks, 3, dirs));
    CHECK_OK(circuits_model_residual_directions(f, toks, 3, dirs + 3 * D));
    CHECK(memcmp(dirs, dirs + 3 * D, 3 * D * sizeof *dirs) == 0, "%s: residual directions differ", what);
    free(dirs);

    /* cache-based: the logit lens and the accumulated stack work, heads (from hook_z @ W_O) and
     * neurons (hook_post * W_out) refuse */
    circuits_context *cf = NULL, *cs = NULL;
    circuits_cache *hf = NULL, *hs = NULL;
    CHECK_OK(circuits_context_create(&cf, f, NULL));
    CHECK_OK(circuits_context_create(&cs, s, NULL));
    CHECK_OK(circuits_cache_create(&hf));
    CHECK_OK(circuits_cache_create(&hs));
    int32_t tok[B * T];
    tokens_for(&c, tok, B * T, 3);
    CHECK_OK(circuits_context_run_with_cache(cf, tok, B, T, NULL, 0, hf, NULL, NULL, NULL));
    CHECK_OK(circuits_context_run_with_cache(cs, tok, B, T, NULL, 0, hs, NULL, NULL, NULL));
    size_t n_lens = (size_t)(2 * c.n_layers + 1) * B * T * (size_t)c.d_vocab_out;
    float *la = malloc(n_lens * sizeof *la), *lb = malloc(n_lens * sizeof *lb);
    if (!la || !lb) die("malloc");
    CHECK_OK(circuits_logit_lens(f, hf, NULL, la, n_lens));
    CHECK_OK(circuits_logit_lens(s, hs, NULL, lb, n_lens));
    int64_t shape[4];
    CHECK_OK(circuits_resid_shape(f, hf, CIRCUITS_RESID_ACCUMULATED, NULL, shape));
    close_enough(what, "logit lens", lb, la, (size_t)shape[0] * B * T * (size_t)c.d_vocab_out);
    size_t n_st = (size_t)shape[0] * shape[1] * shape[2] * shape[3];
    CHECK(n_st <= n_lens, "%s: stack fits", what);
    CHECK_OK(circuits_resid_stack(f, hf, CIRCUITS_RESID_ACCUMULATED, NULL, la, n_lens));
    CHECK_OK(circuits_resid_stack(s, hs, CIRCUITS_RESID_ACCUMULATED, NULL, lb, n_lens));
    close_enough(what, "accumulated resid", lb, la, n_st);
    REFUSES(circuits_resid_stack(s, hs, CIRCUITS_RESID_HEADS, NULL, lb, n_lens));
    if (!c.attn_only) {
        CHECK_OK(circuits_resid_shape(s, hs, CIRCUITS_RESID_NEURONS, NULL, shape));
        size_t nn = (size_t)shape[0] * shape[1] * shape[2] * shape[3];
        float *nb = malloc(nn * sizeof *nb);
        if (!nb) die("malloc");
        REFUSES(circuits_resid_stack(s, hs, CIRCUITS_RESID_NEURONS, NULL, nb, nn));
        free(nb);
    }
    int32_t answer = 1;
    CHECK_OK(circuits_direct_logit_attribution(f, hf, CIRCUITS_RESID_DECOMPOSED, NULL, &answer, NULL, 1, la, n_lens));
    CHECK_OK(circuits_direct_logit_attribution(s, hs, CIRCUITS_RESID_DECOMPOSED, NULL, &answer, NULL, 1, lb, n_lens));
    CHECK_OK(circuits_resid_shape(f, hf, CIRCUITS_RESID_DECOMPOSED, NULL, shape));
    close_enough(what, "direct logit attribution", lb, la, (size_t)shape[0] * B * T);
    free(la);
    free(lb);

    /* activation patching with a logit-difference metric (whose sparse unembedding reads W_U
     * columns: with a stored W_U the whole unembedding runs) */
    circuits_metric ld;
    circuits_metric_init(&ld);
    int32_t ans[B] = {1, 2}, wrong[B] = {3, 0};
    ld.answer = ans;
    ld.wrong = wrong;
    int32_t corrupted[B * T];
    tokens_for(&c, corrupted, B * T, 77);
    const float *clean[2][64];
    for (int l = 0; l < c.n_layers && l < 64; l++) {
        char name[64];
        circuits_tensor t;
        snprintf(name, sizeof name, "blocks.%d.hook_resid_pre", l);
        CHECK_OK(circuits_cache_get(hf, name, &t));
        clean[0][l] = t.data;
        CHECK_OK(circuits_cache_get(hs, name, &t));
        clean[1][l] = t.data;
    }
    size_t ng = (size_t)c.n_layers * T;
    float *grid = malloc(2 * ng * sizeof *grid);
    if (!grid) die("malloc");
    CHECK_OK(circuits_context_activation_patch(cf, CIRCUITS_PATCH_RESID_PRE, corrupted, B, T, clean[0], &ld, NULL, grid));
    CHECK_OK(circuits_context_activation_patch(cs, CIRCUITS_PATCH_RESID_PRE, corrupted, B, T, clean[1], &ld, NULL,
                                               grid + ng));
    close_enough(what, "activation patching grid", grid + ng, grid, ng);
    free(grid);

    /* activation-based detectors run the model */
    int64_t seq = (c.n_ctx - 1) / 2 < 6 ? (c.n_ctx - 1) / 2 : 6, pos = 2 * seq + 1;
    int32_t *rep = malloc(sizeof(int32_t) * (size_t)(B * pos));
    if (!rep) die("malloc");
    CHECK_OK(circuits_repeated_tokens(B, seq, c.d_vocab, 9, 0, rep));
    size_t LH = (size_t)c.n_layers * (size_t)c.n_heads;
    CHECK_OK(circuits_context_induction_scores(cf, rep, B, pos, seq, buf, NULL, NULL));
    CHECK_OK(circuits_context_induction_scores(cs, rep, B, pos, seq, buf + LH, NULL, NULL));
    close_enough(what, "induction scores", buf + LH, buf, LH);
    free(rep);
    circuits_cache_free(hf);
    circuits_cache_free(hs);
    circuits_context_free(cf);
    circuits_context_free(cs);
    free(buf);
}

/* ---- the catalogue rows (docs/errors.md, "weights kept in their stored dtype") ---- */

static void catalogue(void)
{
    char dir[4096];
    convert("hf_llama_gqa", ST_F16, dir, sizeof dir);
    circuits_model *m = load(dir, 1), *out = NULL;
    circuits_tensor t;
    float buf[64];
    circuits_factored *fa = NULL;
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.keep_stored_dtype = 1;
    CALL_FAILS("stored_weight_view", circuits_model_weight(m, "blocks.0.attn.W_Q", &t), CIRCUITS_E_DTYPE,
               "circuits_model_weight_read");
    CALL_FAILS("stored_weight_at", circuits_model_weight_at(m, 0, &t), CIRCUITS_E_DTYPE, "circuits_model_weight_read");
    CALL_FAILS("stored_weight_read_short", circuits_model_weight_read(m, "blocks.0.attn.W_Q", buf, 64, NULL),
               CIRCUITS_E_RANGE, "buf holds 64");
    CALL_FAILS("stored_load_fold_ln", circuits_model_load(&out, dir, &o), CIRCUITS_E_UNSUPPORTED, "fold_ln = 0");
    o.fold_ln = o.center_writing_weights = o.fold_value_biases = 0;
    CALL_FAILS("stored_load_center_unembed", circuits_model_load(&out, dir, &o), CIRCUITS_E_UNSUPPORTED,
               "center_unembed = 0");
    o.center_unembed = 0;
    o.refactor_factored_attn_matrices = 1;
    CALL_FAILS("stored_load_refactor", circuits_model_load(&out, dir, &o), CIRCUITS_E_UNSUPPORTED,
               "refactor_factored_attn_matrices = 0");
    CALL_FAILS("stored_ov", circuits_model_ov(m, 0, 0, &fa), CIRCUITS_E_UNSUPPORTED, "without keep_stored_dtype");
    CALL_FAILS("stored_composition_scores", circuits_model_composition_scores(m, CIRCUITS_COMPOSITION_Q, buf),
               CIRCUITS_E_UNSUPPORTED, "without keep_stored_dtype");
    CHECK(out == NULL && fa == NULL, "refused calls leave no object");
    circuits_model_free(m);
    /* center_writing_weights: an LN model (GPT-NeoX) */
    convert("hf_neox", ST_F16, dir, sizeof dir);
    circuits_load_options_init(&o);
    o.keep_stored_dtype = 1;
    o.fold_ln = o.center_unembed = o.fold_value_biases = 0;
    CALL_FAILS("stored_load_center_writing_weights", circuits_model_load(&out, dir, &o), CIRCUITS_E_UNSUPPORTED,
               "center_writing_weights = 0");
    CHECK(out == NULL, "a refused load leaves *out NULL");
}

/* ---- one case ---- */

typedef struct scase {
    const char *name;
    st_dtype dt; /* ST_F32: the case is stored F16 / BF16 already (or its GGUF file) */
    int min_kept; /* weights that must be kept stored (the layouts a cx_qmat expresses) */
    bool analyses, split;
    bool gguf; /* the case's model.mixed.gguf (tests/reference/generate_gguf_stored.py) */
} scase;

static void run_case(const scase *k)
{
    char dir[4096];
    if (k->gguf) snprintf(dir, sizeof dir, "%s/%s/model.mixed.gguf", g_cases, k->name);
    else if (k->dt == ST_F32) snprintf(dir, sizeof dir, "%s/%s", g_cases, k->name); /* already F16/BF16 */
    else convert(k->name, k->dt, dir, sizeof dir);
    circuits_model *f = load(dir, 0), *s = load(dir, 1);
    circuits_config c = config(f);
    int kept = check_weights(k->name, f, s);
    CHECK(kept >= k->min_kept, "%s: %d weights kept stored, want at least %d", k->name, kept, k->min_kept);
    compare_hooks(k->name, f, s, 0, 0);
    compare_hooks(k->name, f, s, 1, k->split);
    compare_generation(k->name, f, s);
    if (k->analyses) check_analyses(k->name, f, s);
    check_processing(k->name, dir, s, &c);
    printf("%-22s %-9s %2d of %2zu weights kept stored\n", k->name, k->gguf ? "GGUF" : k->dt == ST_BF16 ? "BF16" : k->dt == ST_F16 ? "F16" : "as stored", kept,
           circuits_model_weight_count(s));
    circuits_model_free(f);
    circuits_model_free(s);
    if (k->dt == ST_F32) return; /* the committed files */
    const char *files[] = {"config.json", "tl_config.json", "model.safetensors"};
    for (int i = 0; i < 3; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    if (rmdir(dir) != 0) die(dir);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[3], "-v") == 0) cat_verbose = 1;
    else if (argc != 3) {
        fprintf(stderr, "usage: test_stored CASES_DIR TMP_DIR [-v]\n");
        return 2;
    }
    g_cases = argv[1];
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/test_stored_XXXXXX", argv[2]);
    if (!mkdtemp(tmpl)) die(tmpl);
    g_tmp = tmpl;
    cat_tmp = tmpl;
    catalogue();
    /* 2 layers or more (the analyses compose layer 0 with layer 1). Per layer: W_Q, W_K, W_V, W_O,
     * W_in, (W_gate), W_out; plus W_E and W_U. GPT-2's safetensors keep W_E and W_U only (Conv1D,
     * fused c_attn: converted to fp32); TransformerLens-layout files W_E only. */
    const scase cases[] = {
        {"hf_llama_gqa", ST_F16, 2 + 2 * 7, true, true, false},
        {"hf_llama_gqa", ST_BF16, 2 + 2 * 7, false, false, false},
        {"hf_neox", ST_F16, 2 + 2 * 6, true, true, false},
        {"hf_gemma", ST_F16, 2 + 2 * 7, true, true, false},
        {"hf_gemma2", ST_BF16, 2 + 2 * 7, false, true, false},
        {"hf_gptj", ST_F16, 2 + 2 * 6, false, true, false},
        {"hf_qwen2_bias", ST_F16, 2 + 2 * 7, false, true, false},
        {"hf_mistral_window", ST_F16, 2 + 2 * 7, false, false, false},
        {"hf_mistral_sharded", ST_BF16, 2 + 2 * 7, false, false, false},
        {"hf_llama3_rope", ST_F16, 2 + 2 * 7, false, false, false},
        {"hf_qwen2_bf16", ST_F32, 2 + 2 * 7, true, true, false},
        {"hf_random_f16", ST_F32, 2, false, true, false},
        {"hf_random_bf16", ST_F32, 2, false, false, false},
        {"tl_f16", ST_F32, 1, false, true, false},
        /* GGUF files of mixed types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16): llama.cpp's permuted
         * q/k rows (llama, mistral, qwen2, gemma) kept through a row map, the fused attn_qkv of
         * GPT-NeoX and GPT-2 as row ranges */
        {"hf_llama_gqa", ST_F32, 2 + 2 * 7, true, true, true},
        {"hf_mistral_window", ST_F32, 2 + 2 * 7, false, false, true},
        {"hf_qwen2_bias", ST_F32, 2 + 2 * 7, false, true, true},
        {"hf_gemma", ST_F32, 2 + 2 * 7, true, true, true},
        {"hf_gemma2", ST_F32, 2 + 3 * 7, false, true, true},
        {"hf_neox", ST_F32, 2 + 2 * 6, true, true, true},
        {"hf_gptj", ST_F32, 2 + 2 * 6, false, true, true},
        {"hf_tiny_random_gpt2", ST_F32, 2 + 5 * 6, false, true, true}, /* fused attn_qkv: kept too */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    if (rmdir(g_tmp) != 0) die(g_tmp);
    printf("largest relative difference, stored vs fp32: %.3g (%s)\n", g_worst, g_worst_at);
    return tu_finish("test_stored");
}
