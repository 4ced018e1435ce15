/* Comparing two models (lib/analysis/diff.c): a model against itself and against a copy of its
 * weights is exactly equal at every hook point; against a copy with one weight of layer 1's MLP
 * changed it is equal up to blocks.1.mlp.hook_pre and differs from there on; every measure is
 * the one computed directly from two run_with_cache caches; a Hugging Face directory and its GGUF
 * conversion compare equal; F32 against F16, Q8_0, Q5_1, Q4_0 of one model: the error grows as
 * the bits shrink; a quantized file dequantized at load against the same file kept in its stored
 * type: equal to fp32 rounding; the hook filter, the logits entry and
 * the attention mask; and the refusals (named checks: docs/errors.md, "Comparing two models").
 * Usage: test_diff CASES_DIR [-v] */
#define TESTUTIL_API_HELPERS
#include "catalogue.h"
#include "st_write.h"

#include <ftw.h>
#include <math.h>
#include <unistd.h>

enum { B = 2, T = 7 };

static char g_root[] = "/tmp/circuits_diff_XXXXXX";

static int rm_entry(const char *p, const struct stat *s, int f, struct FTW *w)
{
    (void)s, (void)f, (void)w;
    return remove(p);
}

static circuits_model *load_plain(const char *dir)
{
    circuits_load_options lo;
    circuits_load_options_init(&lo);
    lo.fold_ln = lo.center_writing_weights = lo.center_unembed = lo.fold_value_biases = 0;
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, &lo));
    return m;
}

/* A TransformerLens-layout copy of m's weights in $TMP/name (tl_config.json from src_dir), with
 * element 0 of weight `perturb` (NULL: none) increased by delta. */
static circuits_model *write_copy(const circuits_model *m, const char *src_dir, const char *name, const char *perturb,
                                  float delta)
{
    char dir[512], path[600], cmd[1400];
    snprintf(dir, sizeof dir, "%s/%s", g_root, name);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/tl_config.json' '%s/'", dir, src_dir, dir);
    if (system(cmd) != 0) st_fail(dir);
    size_t n = circuits_model_weight_count(m);
    st_entry *e = calloc(n, sizeof *e);
    float **bufs = calloc(n, sizeof *bufs);
    if (!e || !bufs) st_fail("weights");
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        CHECK_OK(circuits_model_weight_at(m, i, &t));
        size_t numel = 1;
        for (int d = 0; d < t.ndim; d++) numel *= (size_t)t.shape[d];
        bufs[i] = malloc(numel * sizeof(float));
        if (!bufs[i]) st_fail("weights");
        CHECK_OK(circuits_model_weight_read(m, t.name, bufs[i], numel, NULL));
        if (perturb && strcmp(t.name, perturb) == 0) bufs[i][0] += delta;
        snprintf(e[i].name, sizeof e[i].name, "%s", t.name);
        e[i].ndim = t.ndim;
        for (int d = 0; d < t.ndim; d++) e[i].shape[d] = t.shape[d];
        e[i].data = bufs[i];
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_write(path, e, (int)n);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(e);
    return load_plain(dir);
}

static circuits_diff_entry entry_at(const circuits_diff *d, size_t i)
{
    circuits_diff_entry e = {.size = sizeof e};
    CHECK_OK(circuits_diff_at(d, i, &e));
    return e;
}

static circuits_diff *diff_of(const circuits_model *a, const circuits_model *b, const int32_t *tok,
                              const circuits_diff_options *o)
{
    circuits_diff *d = NULL;
    CHECK_OK(circuits_model_diff(a, b, tok, B, T, o, &d));
    return d;
}

/* Every entry exactly equal: error 0, cosine 1 (to rounding of the division). */
static void check_equal(const circuits_diff *d, const char *what)
{
    CHECK(circuits_diff_count(d) > 0, "%s: no entries", what);
    for (size_t i = 0; i < circuits_diff_count(d); i++) {
        circuits_diff_entry e = entry_at(d, i);
        CHECK(e.rel_error == 0.0 && e.max_abs == 0.0 && e.norm_a == e.norm_b, "%s: %s differs: rel %g max %g", what,
              e.name, e.rel_error, e.max_abs);
        CHECK(fabs(e.cosine - 1.0) < 1e-12, "%s: %s cosine %.17g", what, e.name, e.cosine);
        CHECK(e.norm_a > 0, "%s: %s is all zero: the comparison says nothing", what, e.name);
    }
}

/* The measures of two caches' entries (or logits), computed here. */
static size_t direct(const float *a, const float *b, size_t n, double *rel, double *mx, double *cos)
{
    double aa = 0, bb = 0, ab = 0, dd = 0;
    size_t used = 0;
    *mx = 0;
    for (size_t i = 0; i < n; i++) {
        if (isinf(a[i]) && a[i] == b[i]) continue; /* masked attention scores */
        used++;
        double d = (double)a[i] - (double)b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
        ab += (double)a[i] * b[i];
        dd += d * d;
        if (fabs(d) > *mx) *mx = fabs(d);
    }
    *rel = sqrt(dd) / sqrt(aa);
    *cos = ab / (sqrt(aa) * sqrt(bb));
    return used;
}

static bool close_to(double x, double y)
{
    return fabs(x - y) <= 1e-9 * fabs(y) + 1e-300;
}

/* d's entries against run_with_cache(_opts) on both models, with the same mask. */
static void check_direct(const circuits_diff *d, const circuits_model *a, const circuits_model *b, const int32_t *tok,
                         const int32_t *mask)
{
    circuits_config cfg = {.size = sizeof cfg};
    CHECK_OK(circuits_model_config(a, &cfg));
    circuits_context *ca = NULL, *cb = NULL;
    circuits_cache *xa = NULL, *xb = NULL;
    size_t nl = (size_t)B * T * (size_t)cfg.d_vocab_out;
    float *la = malloc(nl * sizeof *la), *lb = malloc(nl * sizeof *lb);
    CHECK_OK(circuits_context_create(&ca, a, NULL));
    CHECK_OK(circuits_context_create(&cb, b, NULL));
    CHECK_OK(circuits_cache_create(&xa));
    CHECK_OK(circuits_cache_create(&xb));
    circuits_run_options ro;
    circuits_run_options_init(&ro);
    ro.attention_mask = mask;
    CHECK_OK(circuits_context_run_with_cache_opts(ca, &ro, tok, B, T, NULL, 0, xa, la, NULL, NULL));
    CHECK_OK(circuits_context_run_with_cache_opts(cb, &ro, tok, B, T, NULL, 0, xb, lb, NULL, NULL));
    size_t n = circuits_diff_count(d);
    size_t n_heads = 0; /* per-head entries */
    for (size_t i = 0; i < n; i++) n_heads += entry_at(d, i).head >= 0;
    CHECK(n == circuits_cache_count(xa) + n_heads + 1, "%zu entries for %zu cached points, %zu heads + the logits", n,
          circuits_cache_count(xa), n_heads);
    for (size_t i = 0; i < n; i++) {
        circuits_diff_entry e = entry_at(d, i);
        const float *pa = la, *pb = lb;
        size_t numel = nl;
        float *ga = NULL, *gb = NULL; /* one head's slice, gathered */
        if (i + 1 < n) {
            circuits_tensor ta, tb;
            CHECK_OK(circuits_cache_get(xa, e.name, &ta));
            CHECK_OK(circuits_cache_get(xb, e.name, &tb));
            CHECK(ta.layer == e.layer, "%s: layer %d, the cache says %d", e.name, e.layer, ta.layer);
            numel = 1;
            for (int k = 0; k < ta.ndim; k++) numel *= (size_t)ta.shape[k];
            pa = ta.data;
            pb = tb.data;
            if (e.head >= 0) { /* [outer, heads, inner] around the head axis */
                CHECK(ta.head_axis >= 0 && e.head < ta.shape[ta.head_axis], "%s: head %d", e.name, e.head);
                size_t outer = 1, inner = 1, H = (size_t)ta.shape[ta.head_axis];
                for (int k = 0; k < ta.head_axis; k++) outer *= (size_t)ta.shape[k];
                for (int k = ta.head_axis + 1; k < ta.ndim; k++) inner *= (size_t)ta.shape[k];
                ga = malloc(outer * inner * sizeof *ga);
                gb = malloc(outer * inner * sizeof *gb);
                if (!ga || !gb) st_fail("a head's slice");
                for (size_t o = 0; o < outer; o++) {
                    memcpy(ga + o * inner, ta.data + (o * H + (size_t)e.head) * inner, inner * sizeof *ga);
                    memcpy(gb + o * inner, tb.data + (o * H + (size_t)e.head) * inner, inner * sizeof *gb);
                }
                pa = ga;
                pb = gb;
                numel = outer * inner;
            }
        } else {
            CHECK(strcmp(e.name, "logits") == 0 && e.layer == -1, "the last entry is '%s'", e.name);
        }
        double rel, mx, cos;
        size_t used = direct(pa, pb, numel, &rel, &mx, &cos);
        CHECK(e.numel == (int64_t)used, "%s: numel %lld, want %zu", e.name, (long long)e.numel, used);
        if (strstr(e.name, "attn_scores")) CHECK(used < numel, "%s: no masked score left out", e.name);
        free(ga);
        free(gb);
        CHECK(close_to(e.rel_error, rel) && close_to(e.max_abs, mx) && close_to(e.cosine, cos),
              "%s: diff rel %.17g max %.17g cos %.17g, direct %.17g %.17g %.17g", e.name, e.rel_error, e.max_abs,
              e.cosine, rel, mx, cos);
    }
    free(la);
    free(lb);
    circuits_cache_free(xa);
    circuits_cache_free(xb);
    circuits_context_free(ca);
    circuits_context_free(cb);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASES_DIR [-v]\n", argv[0]);
        return 2;
    }
    cat_verbose = argc > 2 && strcmp(argv[2], "-v") == 0;
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    char src[512], other_dir[512];
    snprintf(src, sizeof src, "%s/tl_2l_lnpre_gelu", argv[1]);
    snprintf(other_dir, sizeof other_dir, "%s/tl_final_rms_ln", argv[1]);
    circuits_model *a = load_plain(src);
    if (!a) return tu_finish("test_diff");
    circuits_model *copy = write_copy(a, src, "copy", NULL, 0.0f);
    circuits_model *pert = write_copy(a, src, "perturbed", "blocks.1.mlp.W_in", 0.5f);
    int32_t tok[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 7 + 3) % 50;

    /* a model against itself and against a copy of its weights */
    circuits_diff *d = diff_of(a, a, tok, NULL);
    check_equal(d, "a vs a");
    circuits_diff_free(d);
    d = diff_of(a, copy, tok, NULL);
    check_equal(d, "a vs copy");
    check_direct(d, a, copy, tok, NULL);
    circuits_diff_free(d);

    /* a NaN in one element stays in max_abs: W_E[0][0] is NaN in the copy and token 0 comes only
     * first, so hook_embed's first element differs by NaN and every later one by 0 (a finite
     * difference after a NaN once replaced it: max_abs 0 beside a NaN rel_error) */
    {
        circuits_model *nan_m = write_copy(a, src, "nan_embed", "embed.W_E", NAN);
        int32_t nt[B * T];
        for (int i = 0; i < B * T; i++) nt[i] = i == 0 ? 0 : 1 + i % 40;
        circuits_diff_options no;
        circuits_diff_options_init(&no);
        const char *embed[] = {"hook_embed"};
        no.names = embed;
        no.n_names = 1;
        no.logits = 0;
        circuits_diff *dn = nan_m ? diff_of(a, nan_m, nt, &no) : NULL;
        CHECK(dn && circuits_diff_count(dn) == 1, "NaN diff: one entry");
        if (dn && circuits_diff_count(dn) == 1) {
            circuits_diff_entry e = entry_at(dn, 0);
            CHECK(isnan(e.max_abs) && isnan(e.rel_error), "NaN diff: %s max_abs %g rel_error %g (both NaN)", e.name,
                  e.max_abs, e.rel_error);
        }
        circuits_diff_free(dn);
        circuits_model_free(nan_m);
    }

    /* a Hugging Face directory against its GGUF conversion by llama.cpp's converter: the same
     * model; processed (contiguous weights in both) exactly equal at every point */
    {
        char dir[600], gguf[640];
        snprintf(dir, sizeof dir, "%s/hf_tiny_random_gpt2", argv[1]);
        snprintf(gguf, sizeof gguf, "%s/../gguf/hf_tiny_random_gpt2.f32.gguf", argv[1]);
        circuits_model *hf = NULL, *gg = NULL;
        CHECK_OK(circuits_model_load(&hf, dir, NULL));
        CHECK_OK(circuits_model_load(&gg, gguf, NULL));
        int32_t t5[B * T];
        for (int i = 0; i < B * T; i++) t5[i] = (i * 131 + 7) % 1000;
        circuits_diff *dg = NULL;
        if (hf && gg) CHECK_OK(circuits_model_diff(hf, gg, t5, B, T, NULL, &dg));
        if (dg) check_equal(dg, "directory vs GGUF");
        CHECK(circuits_diff_count(dg) == 5 * 17 + 7, "%zu entries", circuits_diff_count(dg));
        circuits_diff_free(dg);
        circuits_model_free(hf);
        circuits_model_free(gg);
        hf = load_plain(dir);
        gg = load_plain(gguf);
        dg = NULL;
        if (hf && gg) CHECK_OK(circuits_model_diff(hf, gg, t5, B, T, NULL, &dg));
        /* unprocessed, the GPT-2 directory's weights are used in place as strided views of its
         * Conv1D layout and the GGUF file's as [out, in]: the same numbers through products of
         * another layout, equal to fp32 rounding */
        for (size_t i = 0; dg && i < circuits_diff_count(dg); i++) {
            circuits_diff_entry e = entry_at(dg, i);
            CHECK(e.rel_error < 1e-6 && e.cosine > 1 - 1e-12, "directory vs GGUF, unprocessed: %s rel %g", e.name,
                  e.rel_error);
        }
        circuits_diff_free(dg);
        circuits_model_free(hf);
        circuits_model_free(gg);
    }

    /* quantization as an intervention (tests/reference/gguf/gpt2: llama.cpp's F32 conversion of a
     * random GPT-2 and gguf-py's quantizations of it): the fewer bits, the larger the error at the
     * last residual stream and the logits; every point of the Q4_0 model differs */
    {
        static const char *const types[] = {"F16", "Q8_0", "Q5_1", "Q4_0"};
        char path[700];
        snprintf(path, sizeof path, "%s/../gguf/gpt2/F32.gguf", argv[1]);
        circuits_model *f32 = load_plain(path);
        circuits_config gc = {.size = sizeof gc};
        if (f32) CHECK_OK(circuits_model_config(f32, &gc));
        int32_t tq[B * T];
        for (int i = 0; i < B * T; i++) tq[i] = (i * 37 + 5) % (gc.d_vocab > 0 ? gc.d_vocab : 1);
        char last[64];
        snprintf(last, sizeof last, "blocks.%d.hook_resid_post", gc.n_layers - 1);
        double prev_logits = 0, prev_resid = 0;
        for (size_t q = 0; f32 && q < sizeof types / sizeof *types; q++) {
            snprintf(path, sizeof path, "%s/../gguf/gpt2/%s.gguf", argv[1], types[q]);
            circuits_model *mq = load_plain(path);
            circuits_diff *dq = NULL;
            if (mq) CHECK_OK(circuits_model_diff(f32, mq, tq, B, T, NULL, &dq));
            double lg = -1, rs = -1;
            for (size_t i = 0; dq && i < circuits_diff_count(dq); i++) {
                circuits_diff_entry e = entry_at(dq, i);
                if (strcmp(e.name, "logits") == 0) lg = e.rel_error;
                if (strcmp(e.name, last) == 0) rs = e.rel_error;
                if (strcmp(types[q], "Q4_0") == 0) CHECK(e.rel_error > 0, "Q4_0: %s unchanged", e.name);
            }
            CHECK(lg > prev_logits && rs > prev_resid, "%s: logits error %g, %s %g; the type before: %g, %g",
                  types[q], lg, last, rs, prev_logits, prev_resid);
            prev_logits = lg;
            prev_resid = rs;
            circuits_diff_free(dq);
            circuits_model_free(mq);
        }
        circuits_model_free(f32);
    }

    /* the same quantized file loaded both ways (dequantized at load, kept in its stored type):
     * the same weights, products summed in another order: equal to fp32 rounding everywhere */
    {
        static const char *const files[] = {"gpt2/Q4_0.gguf", "llama_k/Q4_K.gguf"};
        for (size_t f = 0; f < 2; f++) {
            char path[700];
            snprintf(path, sizeof path, "%s/../gguf/%s", argv[1], files[f]);
            circuits_load_options lo;
            circuits_load_options_init(&lo);
            lo.fold_ln = lo.center_writing_weights = lo.center_unembed = lo.fold_value_biases = 0;
            circuits_model *fp = NULL, *st = NULL;
            CHECK_OK(circuits_model_load(&fp, path, &lo));
            lo.keep_stored_dtype = 1;
            CHECK_OK(circuits_model_load(&st, path, &lo));
            int32_t dtype = -1;
            if (st) CHECK_OK(circuits_model_weight_dtype(st, "blocks.0.attn.W_Q", &dtype));
            CHECK(dtype == (f ? CIRCUITS_DTYPE_Q4_K : CIRCUITS_DTYPE_Q4_0), "%s: W_Q held as %d", files[f], dtype);
            int32_t tk[B * T];
            for (int i = 0; i < B * T; i++) tk[i] = (i * 13 + 2) % 32;
            circuits_diff *ds = NULL;
            if (fp && st) CHECK_OK(circuits_model_diff(fp, st, tk, B, T, NULL, &ds));
            CHECK(circuits_diff_count(ds) > 20, "%s: %zu entries", files[f], circuits_diff_count(ds));
            for (size_t i = 0; ds && i < circuits_diff_count(ds); i++) {
                circuits_diff_entry e = entry_at(ds, i);
                CHECK(e.rel_error < 1e-5, "%s stored vs fp32: %s rel %g", files[f], e.name, e.rel_error);
            }
            circuits_diff_free(ds);
            circuits_model_free(fp);
            circuits_model_free(st);
        }
    }

    /* one weight of layer 1's MLP changed: equal before blocks.1.mlp.hook_pre, different from it on */
    d = diff_of(a, pert, tok, NULL);
    bool after = false;
    size_t n_after = 0;
    for (size_t i = 0; i < circuits_diff_count(d); i++) {
        circuits_diff_entry e = entry_at(d, i);
        if (strcmp(e.name, "blocks.1.mlp.hook_pre") == 0) after = true;
        n_after += after;
        if (after)
            CHECK(e.rel_error > 0 && e.max_abs > 0 && e.cosine < 1.0, "%s after the change: rel %g", e.name, e.rel_error);
        else
            CHECK(e.rel_error == 0 && e.max_abs == 0, "%s before the change: rel %g", e.name, e.rel_error);
        if (e.layer >= 0) {
            char want[96];
            snprintf(want, sizeof want, "blocks.%d.%s", e.layer, e.kind);
            CHECK(strcmp(want, e.name) == 0, "kind '%s' of '%s'", e.kind, e.name);
        }
    }
    CHECK(after && n_after >= 5, "%zu entries from blocks.1.mlp.hook_pre on", n_after);
    check_direct(d, a, pert, tok, NULL);
    circuits_diff_free(d);

    /* with padding: the first row's first two positions */
    int32_t mask[B * T];
    for (int i = 0; i < B * T; i++) mask[i] = !(i < 2);
    circuits_diff_options o;
    circuits_diff_options_init(&o);
    o.attention_mask = mask;
    d = diff_of(a, pert, tok, &o);
    check_direct(d, a, pert, tok, mask);
    circuits_diff_free(d);

    /* per head: every point with a head axis followed by one entry per head, each the direct
     * computation over that head's slice; the layer-0 heads equal, the layer-1 heads too (the
     * change is in layer 1's MLP, after attention) */
    circuits_diff_options_init(&o);
    o.per_head = 1;
    d = diff_of(a, pert, tok, &o);
    check_direct(d, a, pert, tok, NULL);
    size_t heads_seen = 0;
    for (size_t i = 0; i < circuits_diff_count(d); i++) {
        circuits_diff_entry e = entry_at(d, i);
        if (e.head < 0) continue;
        heads_seen++;
        circuits_diff_entry whole = entry_at(d, i - 1 - (size_t)e.head);
        CHECK(whole.head == -1 && strcmp(whole.name, e.name) == 0, "%s head %d follows its point", e.name, e.head);
        if (strstr(e.name, "attn.")) CHECK(e.rel_error == 0, "%s head %d: rel %g", e.name, e.head, e.rel_error);
    }
    CHECK(heads_seen == 2 * 6 * 2, "%zu per-head entries (2 layers x 6 points with heads x 2 heads)", heads_seen);
    circuits_diff_free(d);

    /* a filter, no logits */
    const char *names[] = {"blocks.*.hook_resid_post", "embed"};
    circuits_diff_options_init(&o);
    o.names = names;
    o.n_names = 2;
    o.logits = 0;
    d = diff_of(a, pert, tok, &o);
    CHECK(circuits_diff_count(d) == 3, "%zu entries for hook_embed + 2 resid_post", circuits_diff_count(d));
    if (circuits_diff_count(d) == 3) {
        circuits_diff_entry e0 = entry_at(d, 0), e2 = entry_at(d, 2);
        CHECK(strcmp(e0.name, "hook_embed") == 0 && e0.layer == -1 && strcmp(e0.kind, "hook_embed") == 0,
              "first entry '%s' layer %d", e0.name, e0.layer);
        CHECK(strcmp(e2.name, "blocks.1.hook_resid_post") == 0 && e2.rel_error > 0, "last entry '%s'", e2.name);
    }
    /* an older entry struct is filled up to its size; a smaller unknown one is refused */
    circuits_diff_entry small = {.size = 3};
    CALL_FAILS("diff_entry_size_3", circuits_diff_at(d, 0, &small), CIRCUITS_E_VERSION,
               "circuits_diff_at: out->size 3 is not one this library knows");
    circuits_diff_entry e = {.size = sizeof e};
    CALL_FAILS("diff_at_out_of_range", circuits_diff_at(d, 3, &e), CIRCUITS_E_RANGE,
               "circuits_diff_at: index 3 is out of range (3 entries)");
    CALL_FAILS("null_diff_at", circuits_diff_at(NULL, 0, &e), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_diff_at: diff and out must not be NULL");
    CHECK(circuits_diff_count(NULL) == 0, "count of NULL");
    circuits_diff_free(d);
    circuits_diff_free(NULL);

    /* refusals */
    circuits_diff *out = (circuits_diff *)&o;
    CALL_FAILS("null_model_diff", circuits_model_diff(a, NULL, tok, B, T, NULL, &out), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_model_diff: a, b, tokens and out must not be NULL");
    CHECK(out == NULL, "*out is set to NULL on failure");
    CALL_FAILS("null_model_diff_tokens", circuits_model_diff(a, a, NULL, B, T, NULL, &out), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_model_diff: a, b, tokens and out must not be NULL");
    char other_path[600];
    snprintf(other_path, sizeof other_path, "%s/hf_tiny_random_gpt2", argv[1]);
    circuits_model *other = load_plain(other_path);
    CALL_FAILS("diff_config_mismatch", circuits_model_diff(a, other, tok, B, T, NULL, &out), CIRCUITS_E_CONFIG,
               "circuits_model_diff: the models differ in n_layers (2 and 5)");
    /* the same shapes, but the MLP reads resid_pre: no hook_resid_mid */
    char par_dir[600];
    snprintf(par_dir, sizeof par_dir, "%s/tl_parallel_ln", argv[1]);
    circuits_model *rms = load_plain(other_dir), *par = load_plain(par_dir);
    CALL_FAILS("diff_hook_points_differ", circuits_model_diff(rms, par, tok, B, T, NULL, &out), CIRCUITS_E_CONFIG,
               "circuits_model_diff: hook point");
    int32_t bad[B * T];
    memcpy(bad, tok, sizeof bad);
    bad[5] = 50;
    CALL_FAILS("diff_token_out_of_range", circuits_model_diff(a, pert, bad, B, T, NULL, &out), CIRCUITS_E_RANGE,
               "token id 50 at [0, 5] is outside the vocabulary [0, 50)");
    CALL_FAILS("diff_pos_over_n_ctx", circuits_model_diff(a, pert, tok, 1, 33, NULL, &out), CIRCUITS_E_RANGE,
               "circuits_model_diff: 33 positions exceed the models' n_ctx = 32");
    CALL_FAILS("diff_batch_0", circuits_model_diff(a, pert, tok, 0, T, NULL, &out), CIRCUITS_E_SHAPE,
               "circuits_model_diff: batch 0 and pos 7 must be at least 1");
    circuits_diff_options_init(&o);
    o.size = 2;
    CALL_FAILS("version_diff_options_size_2", circuits_model_diff(a, pert, tok, B, T, &o, &out), CIRCUITS_E_VERSION,
               "circuits_model_diff: options size 2 is not one this library knows");
    circuits_diff_options_init(&o);
    o.n_names = 1;
    CALL_FAILS("diff_names_null", circuits_model_diff(a, pert, tok, B, T, &o, &out), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_model_diff: names is NULL with n_names 1");
    const char *nomatch[] = {"blocks.*.hook_nothing"};
    o.names = nomatch;
    CALL_FAILS("diff_names_no_match", circuits_model_diff(a, pert, tok, B, T, &o, &out), CIRCUITS_E_NOT_FOUND,
               "pattern 'blocks.*.hook_nothing' matches no hook point of this model");
    const char *null_name[] = {NULL};
    o.names = null_name;
    CALL_FAILS("diff_names_entry_null", circuits_model_diff(a, pert, tok, B, T, &o, &out), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_model_diff: names[0] is NULL");
    circuits_diff_options_init(&o);
    o.per_head = -1;
    CALL_FAILS("diff_per_head_flag", circuits_model_diff(a, pert, tok, B, T, &o, &out), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_model_diff: per_head must be 0 or 1 (got -1)");
    circuits_diff_options_init(&o);
    o.logits = 2;
    CALL_FAILS("diff_logits_flag", circuits_model_diff(a, pert, tok, B, T, &o, &out), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_model_diff: logits must be 0 or 1 (got 2)");
    int32_t bad_mask[B * T];
    for (int i = 0; i < B * T; i++) bad_mask[i] = i >= T; /* row 0 all padding */
    circuits_diff_options_init(&o);
    o.attention_mask = bad_mask;
    CALL_FAILS("diff_mask_row_all_padding", circuits_model_diff(a, pert, tok, B, T, &o, &out), CIRCUITS_E_INVALID_ARGUMENT,
               "forward: attention_mask row 0 has no real token");
    CHECK(out == NULL, "*out stays NULL after a refusal");

    circuits_model_free(rms);
    circuits_model_free(par);
    circuits_model_free(other);
    circuits_model_free(pert);
    circuits_model_free(copy);
    circuits_model_free(a);
    nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return tu_finish("test_diff");
}
