/* SAEs and transcoders (lib/sae/sae_load.c, sae_math.c): directories in SAELens 6's saved format
 * written here (cfg.json + sae_weights.safetensors [+ sparsity.safetensors]) for every
 * architecture and input normalization, loaded, and encode / decode checked against a plain
 * double-precision implementation of SAELens's inference arithmetic written below (not the
 * library's code). Inputs are kept away from the discontinuities: jumprelu thresholds and gated
 * gates are moved away from every row's value, and topk's k-th and (k+1)-th values are checked to
 * be apart. Then F16 / BF16 files, the info and weight views, and hostile directories through
 * CALL_FAILS (docs/errors.md "SAE directories").
 * Usage: test_sae [-v] (-v prints the catalogue rows), or test_sae --write-seeds DIR: writes the
 * seed corpus of tests/fuzz/fuzz_sae.c into DIR. */
#include "catalogue.h"
#include "rng.h"
#include "st_write.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[] = "/tmp/circuits-sae-XXXXXX";

/* ---- a directory's description ---- */

typedef struct spec {
    const char *arch;    /* cfg "architecture" */
    int d_in, d_sae, d_out;
    bool apply_b_dec;
    const char *norm;    /* normalize_activations */
    const char *reshape; /* reshape_activations (NULL: "none") */
    int k;
    bool rescale;
    const char *hook, *hook_out;
} spec;

typedef struct weights {
    float *W_enc, *W_dec, *b_enc, *b_dec, *b_gate, *b_mag, *r_mag, *threshold, *W_skip;
} weights;

static bool is_tc(const spec *s) { return strstr(s->arch, "transcoder") != NULL; }
static bool has_skip(const spec *s) { return strstr(s->arch, "skip") != NULL; }
static bool is_jump(const spec *s) { return strncmp(s->arch, "jumprelu", 8) == 0; }
static bool is_gated(const spec *s) { return strcmp(s->arch, "gated") == 0; }
static bool is_topk(const spec *s) { return strcmp(s->arch, "topk") == 0; }
static int dout_of(const spec *s) { return is_tc(s) ? s->d_out : s->d_in; }

static float *gauss_vec(rng *g, size_t n, double sd)
{
    float *p = malloc(n * sizeof *p);
    if (!p) abort();
    for (size_t i = 0; i < n; i++) p[i] = (float)(rng_gauss(g) * sd);
    return p;
}

static weights make_weights(const spec *s, uint64_t seed)
{
    rng g = {seed};
    weights w = {0};
    size_t di = (size_t)s->d_in, ds = (size_t)s->d_sae, dout = (size_t)dout_of(s);
    w.W_enc = gauss_vec(&g, di * ds, 0.4);
    w.W_dec = gauss_vec(&g, ds * dout, 0.4);
    w.b_dec = gauss_vec(&g, dout, 0.2);
    if (is_gated(s)) {
        w.b_gate = gauss_vec(&g, ds, 0.2);
        w.b_mag = gauss_vec(&g, ds, 0.2);
        w.r_mag = gauss_vec(&g, ds, 0.3);
    } else {
        w.b_enc = gauss_vec(&g, ds, 0.2);
    }
    if (is_jump(s)) {
        w.threshold = gauss_vec(&g, ds, 0.1);
        for (size_t j = 0; j < ds; j++) w.threshold[j] = 0.1f + fabsf(w.threshold[j]);
    }
    if (has_skip(s)) w.W_skip = gauss_vec(&g, dout * di, 0.3);
    return w;
}

static void free_weights(weights *w)
{
    float *p[] = {w->W_enc, w->W_dec, w->b_enc, w->b_dec, w->b_gate, w->b_mag, w->r_mag, w->threshold, w->W_skip};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    memset(w, 0, sizeof *w);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) st_fail(path);
}

/* cfg.json as SAELens 6.54.12 writes it (SAEConfig.to_dict), `extra` spliced in before
 * "architecture" (",\"key\": value" fragments) */
static void write_cfg(const char *dir, const spec *s, const char *extra)
{
    char path[512], buf[4096], topk[128] = "", dout[64] = "", out[256] = "";
    if (is_topk(s))
        snprintf(topk, sizeof topk, ", \"k\": %d, \"rescale_acts_by_decoder_norm\": %s", s->k,
                 s->rescale ? "true" : "false");
    if (is_tc(s)) snprintf(dout, sizeof dout, ", \"d_out\": %d", s->d_out);
    if (s->hook_out) snprintf(out, sizeof out, ", \"hook_name_out\": \"%s\"", s->hook_out);
    snprintf(buf, sizeof buf,
             "{\"d_in\": %d, \"d_sae\": %d, \"dtype\": \"float32\", \"device\": \"cpu\", \"apply_b_dec_to_input\": %s, "
             "\"normalize_activations\": \"%s\", \"reshape_activations\": \"%s\", \"metadata\": {\"sae_lens_version\": "
             "\"6.54.12\", \"sae_lens_training_version\": \"6.54.12\", \"hook_name\": \"%s\"%s}%s%s%s, "
             "\"architecture\": \"%s\"}",
             s->d_in, s->d_sae, s->apply_b_dec ? "true" : "false", s->norm, s->reshape ? s->reshape : "none", s->hook,
             out, topk, dout, extra ? extra : "", s->arch);
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    write_text(path, buf);
}

static int add_entry(st_entry *e, int n, const char *name, const float *data, int ndim, int64_t d0, int64_t d1)
{
    if (!data) return n;
    memset(&e[n], 0, sizeof e[n]);
    snprintf(e[n].name, sizeof e[n].name, "%s", name);
    e[n].ndim = ndim;
    e[n].shape[0] = d0;
    e[n].shape[1] = d1;
    e[n].data = data;
    return n + 1;
}

/* The state dict (SAELens's names) in dtype dt; skip names the one tensor left out (NULL: none). */
static void write_weights(const char *dir, const spec *s, const weights *w, st_dtype dt, const char *skip)
{
    st_entry e[12];
    int n = 0, di = s->d_in, ds = s->d_sae, dout = dout_of(s);
    n = add_entry(e, n, "W_enc", w->W_enc, 2, di, ds);
    n = add_entry(e, n, "W_dec", w->W_dec, 2, ds, dout);
    n = add_entry(e, n, "b_enc", w->b_enc, 1, ds, 0);
    n = add_entry(e, n, "b_dec", w->b_dec, 1, dout, 0);
    n = add_entry(e, n, "b_gate", w->b_gate, 1, ds, 0);
    n = add_entry(e, n, "b_mag", w->b_mag, 1, ds, 0);
    n = add_entry(e, n, "r_mag", w->r_mag, 1, ds, 0);
    n = add_entry(e, n, "threshold", w->threshold, 1, ds, 0);
    n = add_entry(e, n, "W_skip", w->W_skip, 2, dout, di);
    if (skip)
        for (int i = 0; i < n; i++)
            if (strcmp(e[i].name, skip) == 0) {
                memmove(&e[i], &e[i + 1], (size_t)(n - i - 1) * sizeof e[0]);
                n--;
                break;
            }
    char path[512];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    st_write_as(path, e, n, dt);
}

static void make_dir(char *dir, size_t n, const char *name)
{
    snprintf(dir, n, "%s/%s", g_root, name);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) st_fail(dir);
}

/* ---- the reference: SAELens's inference arithmetic in double ---- */

typedef struct ref_out {
    double *pre, *post, *out;  /* [n, d_sae], [n, d_sae], [n, d_out] */
    double *coeff;             /* [n, 2] */
    double jump_margin;        /* min |pre - threshold| (jumprelu), min |gate| (gated) */
    double topk_gap;           /* min over rows of the k-th minus the (k+1)-th key (topk) */
} ref_out;

static double dec_norm(const spec *s, const weights *w, int j)
{
    double a = 0;
    for (int i = 0; i < dout_of(s); i++) a += (double)w->W_dec[(size_t)j * dout_of(s) + i] * w->W_dec[(size_t)j * dout_of(s) + i];
    return sqrt(a);
}

/* The encoder's input of row x (normalization, - b_dec) into xi; the factors into c[2]. */
static void ref_input(const spec *s, const weights *w, const float *x, double *xi, double *c)
{
    int D = s->d_in;
    for (int i = 0; i < D; i++) xi[i] = x[i];
    c[0] = c[1] = 0;
    if (strcmp(s->norm, "constant_norm_rescale") == 0) {
        double a = 0;
        for (int i = 0; i < D; i++) a += xi[i] * xi[i];
        c[0] = sqrt((double)D) / sqrt(a);
        for (int i = 0; i < D; i++) xi[i] *= c[0];
    } else if (strcmp(s->norm, "layer_norm") == 0) {
        double mu = 0, v = 0;
        for (int i = 0; i < D; i++) mu += xi[i];
        mu /= D;
        for (int i = 0; i < D; i++) v += (xi[i] - mu) * (xi[i] - mu);
        double sd = sqrt(v / (D - 1));
        for (int i = 0; i < D; i++) xi[i] = (xi[i] - mu) / (sd + 1e-5);
        c[0] = mu;
        c[1] = sd;
    }
    if (s->apply_b_dec && !is_tc(s))
        for (int i = 0; i < D; i++) xi[i] -= w->b_dec[i];
}

/* decode of one row of activations a into y (the SAE's output; x the raw row, c its factors) */
static void ref_decode_row(const spec *s, const weights *w, const double *a, const float *x, const double *c, double *y)
{
    int ds = s->d_sae, dout = dout_of(s);
    for (int i = 0; i < dout; i++) y[i] = w->b_dec[i];
    for (int j = 0; j < ds; j++) {
        double v = a[j] * (is_topk(s) && s->rescale ? 1.0 / dec_norm(s, w, j) : 1.0);
        for (int i = 0; i < dout; i++) y[i] += v * w->W_dec[(size_t)j * dout + i];
    }
    if (!is_tc(s) && strcmp(s->norm, "constant_norm_rescale") == 0)
        for (int i = 0; i < dout; i++) y[i] /= c[0];
    if (!is_tc(s) && strcmp(s->norm, "layer_norm") == 0)
        for (int i = 0; i < dout; i++) y[i] = y[i] * c[1] + c[0];
    if (has_skip(s))
        for (int i = 0; i < dout; i++)
            for (int k = 0; k < s->d_in; k++) y[i] += (double)w->W_skip[(size_t)i * s->d_in + k] * x[k];
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void ref_run(const spec *s, const weights *w, const float *x, int n, ref_out *r)
{
    int di = s->d_in, ds = s->d_sae, dout = dout_of(s);
    r->pre = calloc((size_t)n * ds, sizeof(double));
    r->post = calloc((size_t)n * ds, sizeof(double));
    r->out = calloc((size_t)n * dout, sizeof(double));
    r->coeff = calloc((size_t)n * 2, sizeof(double));
    double *xi = calloc((size_t)di, sizeof(double)), *h = calloc((size_t)ds, sizeof(double)),
           *sorted = calloc((size_t)ds, sizeof(double));
    if (!r->pre || !r->post || !r->out || !r->coeff || !xi || !h || !sorted) abort();
    r->jump_margin = INFINITY;
    r->topk_gap = INFINITY;
    for (int row = 0; row < n; row++) {
        const float *xr = x + (size_t)row * di;
        double *c = r->coeff + 2 * row, *pre = r->pre + (size_t)row * ds, *post = r->post + (size_t)row * ds;
        ref_input(s, w, xr, xi, c);
        for (int j = 0; j < ds; j++) {
            double a = 0, gate = 0;
            for (int i = 0; i < di; i++) {
                double we = w->W_enc[(size_t)i * ds + j];
                a += xi[i] * (is_gated(s) ? we * exp(w->r_mag[j]) : we);
                gate += xi[i] * we;
            }
            pre[j] = a + (is_gated(s) ? w->b_mag[j] : w->b_enc[j]);
            double relu = pre[j] > 0 ? pre[j] : 0;
            if (is_gated(s)) {
                gate += w->b_gate[j];
                post[j] = gate > 0 ? relu : 0;
                if (fabs(gate) < r->jump_margin) r->jump_margin = fabs(gate);
            } else if (is_jump(s)) {
                post[j] = pre[j] > w->threshold[j] ? relu : 0;
                if (fabs(pre[j] - w->threshold[j]) < r->jump_margin) r->jump_margin = fabs(pre[j] - w->threshold[j]);
            } else {
                post[j] = relu;
            }
            h[j] = is_topk(s) && s->rescale ? pre[j] * dec_norm(s, w, j) : pre[j];
        }
        if (is_topk(s)) {
            memcpy(sorted, h, (size_t)ds * sizeof *h);
            qsort(sorted, (size_t)ds, sizeof *sorted, cmp_desc);
            double t = s->k > 0 ? sorted[s->k - 1] : INFINITY;
            if (s->k > 0 && s->k < ds && sorted[s->k - 1] - sorted[s->k] < r->topk_gap)
                r->topk_gap = sorted[s->k - 1] - sorted[s->k];
            for (int j = 0; j < ds; j++) post[j] = h[j] >= t ? (h[j] > 0 ? h[j] : 0) : 0;
        }
        ref_decode_row(s, w, post, xr, c, r->out + (size_t)row * dout);
    }
    free(xi);
    free(h);
    free(sorted);
}

static void ref_free(ref_out *r)
{
    free(r->pre);
    free(r->post);
    free(r->out);
    free(r->coeff);
}

/* max |a - b| / (1 + |b|) */
/* fp32 against double over sums of `terms` products: the rounding grows with the length (a BLAS
 * kernel may sum in blocks of any order; valgrind's forced SSE kernels measured 1.2e-5 at 512) */
static double tol_for(int terms)
{
    return 1e-5 * (terms > 128 ? terms / 128.0 : 1.0);
}

static double rel_err(const float *a, const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (1.0 + fabs(b[i]));
        if (!(e <= m)) m = e; /* NaN propagates */
    }
    return m;
}

/* Jumprelu thresholds and gated gate biases moved until every row is 0.02 away from the jump. */
static void away_from_jumps(const spec *s, weights *w, const float *x, int n)
{
    if (!is_jump(s) && !is_gated(s)) return;
    for (int round = 0; round < 200; round++) {
        ref_out r;
        ref_run(s, w, x, n, &r);
        bool moved = false;
        for (int j = 0; j < s->d_sae; j++)
            for (int row = 0; row < n; row++) {
                double p = r.pre[(size_t)row * s->d_sae + j];
                if (is_jump(s) && fabs(p - w->threshold[j]) < 0.02) {
                    w->threshold[j] += 0.037f;
                    moved = true;
                    break;
                }
                if (is_gated(s)) {
                    double gate = 0;
                    double xi[256], c[2];
                    ref_input(s, w, x + (size_t)row * s->d_in, xi, c);
                    for (int i = 0; i < s->d_in; i++) gate += xi[i] * w->W_enc[(size_t)i * s->d_sae + j];
                    gate += w->b_gate[j];
                    if (fabs(gate) < 0.02) {
                        w->b_gate[j] += 0.037f;
                        moved = true;
                        break;
                    }
                }
            }
        ref_free(&r);
        if (!moved) return;
    }
}

/* ---- the architecture checks ---- */

/* Loads s's directory, encodes x and decodes, against the reference; then decodes arbitrary
 * dense activations (what a hook may leave at hook_sae_acts_post). */
static void check_case(const char *name, const spec *s, uint64_t seed)
{
    char dir[512];
    make_dir(dir, sizeof dir, name);
    weights w = make_weights(s, seed);
    const int n = 9;
    int di = s->d_in, ds = s->d_sae, dout = dout_of(s);
    rng g = {seed ^ 0x5a5a};
    float *x = NULL;
    ref_out r;
    /* inputs: topk's draws repeat until no row has its k-th and (k+1)-th values within 1e-3 */
    for (int attempt = 0; attempt < 50; attempt++) {
        free(x);
        x = gauss_vec(&g, (size_t)n * di, 1.0);
        for (int i = 0; i < n * di; i++) x[i] += 0.3f; /* a mean for layer_norm to remove */
        away_from_jumps(s, &w, x, n);
        ref_run(s, &w, x, n, &r);
        if (!is_topk(s) || r.topk_gap > 1e-3 || attempt == 49) break;
        ref_free(&r);
    }
    write_cfg(dir, s, NULL);
    write_weights(dir, s, &w, ST_F32, NULL);
    if (is_gated(s) || is_jump(s)) CHECK(r.jump_margin > 0.01, "%s: jump margin %g", name, r.jump_margin);
    if (is_topk(s) && s->k > 0 && s->k < ds) CHECK(r.topk_gap > 1e-3, "%s: topk gap %g (pick another seed)", name, r.topk_gap);

    circuits_sae *sae = NULL;
    CHECK_OK(circuits_sae_load(&sae, dir));
    if (!sae) {
        ref_free(&r);
        free_weights(&w);
        free(x);
        return;
    }
    float *pre = calloc((size_t)n * ds, sizeof(float)), *post = calloc((size_t)n * ds, sizeof(float)),
          *out = calloc((size_t)n * dout, sizeof(float)), *post2 = calloc((size_t)n * ds, sizeof(float));
    CHECK_OK(circuits_sae_encode(sae, x, n, pre, post));
    CHECK(rel_err(pre, r.pre, (size_t)n * ds) < tol_for(di), "%s: acts_pre off by %g", name, rel_err(pre, r.pre, (size_t)n * ds));
    CHECK(rel_err(post, r.post, (size_t)n * ds) < tol_for(di), "%s: acts_post off by %g", name,
          rel_err(post, r.post, (size_t)n * ds));
    /* acts_post alone (acts_pre NULL) is the same */
    CHECK_OK(circuits_sae_encode(sae, x, n, NULL, post2));
    CHECK(memcmp(post, post2, (size_t)n * ds * sizeof(float)) == 0, "%s: encode without acts_pre differs", name);
    CHECK_OK(circuits_sae_decode(sae, post, n, x, out));
    CHECK(rel_err(out, r.out, (size_t)n * dout) < tol_for(ds), "%s: decode off by %g", name,
          rel_err(out, r.out, (size_t)n * dout));
    if (is_topk(s)) {
        int bad = 0;
        for (int row = 0; row < n; row++) {
            int nz = 0;
            for (int j = 0; j < ds; j++) nz += post[(size_t)row * ds + j] != 0.0f;
            bad += nz > s->k;
        }
        CHECK(bad == 0, "%s: rows with more than k = %d latents", name, s->k);
    }
    /* dense activations, half of them zero */
    float *acts = gauss_vec(&g, (size_t)n * ds, 1.0);
    double *acts_d = malloc((size_t)n * ds * sizeof(double)), *y = malloc((size_t)n * dout * sizeof(double));
    for (int i = 0; i < n * ds; i++) {
        if (i % 2) acts[i] = 0;
        acts_d[i] = acts[i];
    }
    for (int row = 0; row < n; row++)
        ref_decode_row(s, &w, acts_d + (size_t)row * ds, x + (size_t)row * di, r.coeff + 2 * row, y + (size_t)row * dout);
    CHECK_OK(circuits_sae_decode(sae, acts, n, x, out));
    CHECK(rel_err(out, y, (size_t)n * dout) < tol_for(ds), "%s: dense decode off by %g", name, rel_err(out, y, (size_t)n * dout));
    /* sparse activations (one latent per row) take the row loop: the same */
    memset(acts, 0, (size_t)n * ds * sizeof(float));
    for (int i = 0; i < n * ds; i++) acts_d[i] = 0;
    for (int row = 0; row < n; row++) acts[(size_t)row * ds + (row * 7) % ds] = acts_d[(size_t)row * ds + (row * 7) % ds] = 1.5f;
    for (int row = 0; row < n; row++)
        ref_decode_row(s, &w, acts_d + (size_t)row * ds, x + (size_t)row * di, r.coeff + 2 * row, y + (size_t)row * dout);
    CHECK_OK(circuits_sae_decode(sae, acts, n, x, out));
    CHECK(rel_err(out, y, (size_t)n * dout) < tol_for(ds), "%s: sparse decode off by %g", name, rel_err(out, y, (size_t)n * dout));
    free(acts);
    free(acts_d);
    free(y);
    free(pre);
    free(post);
    free(post2);
    free(out);
    circuits_sae_free(sae);
    ref_free(&r);
    free_weights(&w);
    free(x);
}

static void test_architectures(void)
{
    const char *R = "blocks.1.hook_resid_pre", *M = "blocks.1.hook_mlp_out", *LN2 = "blocks.1.ln2.hook_normalized";
    static const char *const norms[] = {"none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"};
    for (int nm = 0; nm < 4; nm++)
        for (int b = 0; b < 2; b++) {
            char name[96];
            const char *archs[] = {"standard", "gated", "jumprelu"};
            for (int a = 0; a < 3; a++) {
                spec s = {archs[a], 12, 40, 0, b, norms[nm], NULL, 0, false, R, NULL};
                snprintf(name, sizeof name, "%s_%s_%d", archs[a], norms[nm], b);
                check_case(name, &s, 100 + (uint64_t)(nm * 10 + b * 3 + a));
            }
            spec t = {"topk", 12, 64, 0, b, norms[nm], NULL, 3, false, R, NULL};
            snprintf(name, sizeof name, "topk_%s_%d", norms[nm], b);
            check_case(name, &t, 200 + (uint64_t)(nm * 10 + b));
            t.rescale = true;
            snprintf(name, sizeof name, "topk_rescale_%s_%d", norms[nm], b);
            check_case(name, &t, 300 + (uint64_t)(nm * 10 + b));
            /* transcoders (apply_b_dec_to_input must be false) */
            if (b) continue;
            const char *tcs[] = {"transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder"};
            for (int a = 0; a < 4; a++) {
                spec c = {tcs[a], 12, 40, 10, false, norms[nm], NULL, 0, false, LN2, M};
                snprintf(name, sizeof name, "%s_%s", tcs[a], norms[nm]);
                check_case(name, &c, 400 + (uint64_t)(nm * 10 + a));
            }
        }
    /* topk: k above the density threshold (GEMM decode), k = d_sae, k = 0 */
    spec t = {"topk", 12, 64, 0, true, "none", NULL, 20, false, R, NULL};
    check_case("topk_k20", &t, 501);
    t.rescale = true;
    check_case("topk_k20_rescale", &t, 502);
    t.k = 64;
    check_case("topk_all", &t, 503);
    t.k = 0;
    check_case("topk_none", &t, 504);
    /* hook_z: rows read flat */
    spec z = {"standard", 16, 24, 0, true, "none", "hook_z", 0, false, "blocks.0.attn.hook_z", NULL};
    check_case("hook_z", &z, 505);
    /* a transcoder writing the point it reads (no hook_name_out: SAELens uses hook_name) */
    spec same = {"transcoder", 12, 40, 12, false, "none", NULL, 0, false, M, NULL};
    check_case("transcoder_same_point", &same, 506);
    /* wider: several threads' rows, the GEMM paths */
    spec big = {"standard", 64, 512, 0, true, "layer_norm", NULL, 0, false, R, NULL};
    check_case("standard_wide", &big, 507);
    spec bigk = {"topk", 64, 512, 0, true, "constant_norm_rescale", NULL, 16, true, R, NULL};
    check_case("topk_wide", &bigk, 508);
}

/* topk's ties: all of a row's pre-activations equal (W_enc 0): exactly k kept, the first k by
 * index (torch leaves the order of ties unspecified; docs/saes.md says which); a NaN row keeps k
 * NaNs (torch.topk ranks NaN above everything) */
static void test_topk_ties(void)
{
    spec s = {"topk", 4, 32, 0, false, "none", NULL, 5, false, "blocks.0.hook_resid_pre", NULL};
    weights w = make_weights(&s, 9);
    memset(w.W_enc, 0, sizeof(float) * 4 * 32);
    for (int j = 0; j < 32; j++) w.b_enc[j] = j == 30 ? 0.75f : 0.5f;
    char dir[512];
    make_dir(dir, sizeof dir, "topk_ties");
    write_cfg(dir, &s, NULL);
    write_weights(dir, &s, &w, ST_F32, NULL);
    circuits_sae *sae = NULL;
    CHECK_OK(circuits_sae_load(&sae, dir));
    if (sae) {
        float x[2 * 4] = {1, 2, 3, 4, NAN, 0, 0, 0}, post[2 * 32];
        CHECK_OK(circuits_sae_encode(sae, x, 2, NULL, post));
        bool ok = post[30] == 0.75f;
        for (int j = 0; j < 32; j++)
            if (j != 30) ok = ok && post[j] == (j < 4 ? 0.5f : 0.0f);
        CHECK(ok, "topk ties: latent 30 and the first 4 of the tied ones");
        int nans = 0, zeros = 0;
        for (int j = 0; j < 32; j++) {
            nans += isnan(post[32 + j]);
            zeros += post[32 + j] == 0.0f;
        }
        CHECK(nans == 5 && zeros == 27, "topk NaN row: %d NaN, %d zeros", nans, zeros);
        circuits_sae_free(sae);
    }
    free_weights(&w);
}

/* ---- F16 / BF16, info, weight views, sparsity ---- */

static void test_dtypes_info_views(void)
{
    spec s = {"jumprelu", 8, 16, 0, true, "layer_norm", NULL, 0, false, "blocks.2.hook_resid_post", NULL};
    weights w = make_weights(&s, 7);
    /* values F16 and BF16 hold exactly: multiples of 1/64 in (-2, 2) */
    float *all[] = {w.W_enc, w.W_dec, w.b_enc, w.b_dec, w.threshold};
    size_t sizes[] = {8 * 16, 16 * 8, 16, 8, 16};
    for (int a = 0; a < 5; a++)
        for (size_t i = 0; i < sizes[a]; i++) {
            float v = roundf(all[a][i] * 64.0f) / 64.0f;
            all[a][i] = fmaxf(-1.96875f, fminf(1.96875f, v));
        }
    const st_dtype dts[] = {ST_F32, ST_F16, ST_BF16};
    const char *names[] = {"f32", "f16", "bf16"};
    float x[3 * 8], post_ref[3 * 16];
    for (int i = 0; i < 24; i++) x[i] = (float)sin(i * 0.7) + 0.5f;
    for (int d = 0; d < 3; d++) {
        char dir[512];
        make_dir(dir, sizeof dir, names[d]);
        write_cfg(dir, &s, NULL);
        write_weights(dir, &s, &w, dts[d], NULL);
        circuits_sae *sae = NULL;
        CHECK_OK(circuits_sae_load(&sae, dir));
        if (!sae) continue;
        circuits_tensor t;
        CHECK_OK(circuits_sae_weight(sae, "W_enc", &t));
        CHECK(t.ndim == 2 && t.shape[0] == 8 && t.shape[1] == 16 && t.strides[0] == 16 && t.strides[1] == 1,
              "%s: W_enc view shape", names[d]);
        CHECK(memcmp(t.data, w.W_enc, sizeof(float) * 8 * 16) == 0, "%s: W_enc values", names[d]);
        CHECK_OK(circuits_sae_weight(sae, "threshold", &t));
        CHECK(t.ndim == 1 && t.shape[0] == 16 && memcmp(t.data, w.threshold, sizeof(float) * 16) == 0,
              "%s: threshold", names[d]);
        float post[3 * 16];
        CHECK_OK(circuits_sae_encode(sae, x, 3, NULL, post));
        if (d == 0) memcpy(post_ref, post, sizeof post);
        else CHECK(memcmp(post, post_ref, sizeof post) == 0, "%s: encode differs from F32's", names[d]);
        circuits_sae_free(sae);
    }
    free_weights(&w);

    /* info and views of a skip transcoder with a sparsity file */
    spec c = {"skip_transcoder", 6, 10, 4, false, "constant_norm_rescale", NULL, 0, false, "blocks.3.ln2.hook_normalized",
              "blocks.3.hook_mlp_out"};
    w = make_weights(&c, 8);
    char dir[512], path[600];
    make_dir(dir, sizeof dir, "info");
    write_cfg(dir, &c, NULL);
    write_weights(dir, &c, &w, ST_F32, NULL);
    float sp[10];
    for (int i = 0; i < 10; i++) sp[i] = -1.0f - 0.25f * (float)i;
    st_entry e = {"sparsity", 1, {10}, sp};
    snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
    st_write(path, &e, 1);
    circuits_sae *sae = NULL;
    CHECK_OK(circuits_sae_load(&sae, dir));
    if (sae) {
        circuits_sae_info info = {.size = sizeof info};
        CHECK_OK(circuits_sae_get_info(sae, &info));
        CHECK(info.architecture == CIRCUITS_SAE_STANDARD && info.is_transcoder == 1 && info.has_skip == 1,
              "info: architecture %d transcoder %d skip %d", info.architecture, info.is_transcoder, info.has_skip);
        CHECK(info.d_in == 6 && info.d_sae == 10 && info.d_out == 4, "info: dims");
        CHECK(info.apply_b_dec_to_input == 0 && info.normalize_activations == CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE &&
                  info.reshape_hook_z == 0 && info.k == 0 && info.rescale_acts_by_decoder_norm == 0,
              "info: settings");
        CHECK(info.hook_layer == 3 && strcmp(info.hook_name, "blocks.3.ln2.hook_normalized") == 0 &&
                  strcmp(info.hook_name_out, "blocks.3.hook_mlp_out") == 0 &&
                  strcmp(info.architecture_name, "skip_transcoder") == 0 && info.has_sparsity == 1,
              "info: names");
        /* a newer program's larger struct: filled up to this version, size says so */
        struct {
            circuits_sae_info i;
            char more[16];
        } big;
        memset(&big, 0x7f, sizeof big);
        big.i.size = sizeof big;
        CHECK_OK(circuits_sae_get_info(sae, &big.i));
        CHECK(big.i.size == sizeof(circuits_sae_info) && big.more[0] == 0x7f && big.i.d_sae == 10, "info: newer size");
        circuits_tensor t;
        CHECK_OK(circuits_sae_weight(sae, "W_skip", &t));
        CHECK(t.ndim == 2 && t.shape[0] == 4 && t.shape[1] == 6 && memcmp(t.data, w.W_skip, sizeof(float) * 24) == 0,
              "W_skip view");
        CHECK_OK(circuits_sae_weight(sae, "W_dec", &t));
        CHECK(t.ndim == 2 && t.shape[0] == 10 && t.shape[1] == 4 && strcmp(t.name, "W_dec") == 0, "W_dec view");
        CHECK_OK(circuits_sae_weight(sae, "b_dec", &t));
        CHECK(t.ndim == 1 && t.shape[0] == 4 && t.strides[0] == 1 && memcmp(t.data, w.b_dec, 16) == 0, "b_dec view");
        CHECK_OK(circuits_sae_weight(sae, "log_feature_sparsity", &t));
        CHECK(t.ndim == 1 && t.shape[0] == 10 && memcmp(t.data, sp, sizeof sp) == 0, "sparsity view");
        CALL_FAILS("sae_weight_absent", circuits_sae_weight(sae, "b_gate", &t), CIRCUITS_E_NOT_FOUND, "has no 'b_gate'");
        CALL_FAILS("sae_weight_unknown", circuits_sae_weight(sae, "W_foo", &t), CIRCUITS_E_NOT_FOUND, "no parameter 'W_foo'");
        CALL_FAILS("sae_weight_null", circuits_sae_weight(sae, NULL, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
        info.size = 3;
        CALL_FAILS("sae_info_size", circuits_sae_get_info(sae, &info), CIRCUITS_E_VERSION, "out->size 3");
        CALL_FAILS("sae_info_null", circuits_sae_get_info(NULL, &info), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
        float xx[6] = {1, 2, 3, 4, 5, 6}, acts[10] = {0}, out[4];
        CALL_FAILS("sae_decode_needs_x", circuits_sae_decode(sae, acts, 1, NULL, out), CIRCUITS_E_INVALID_ARGUMENT,
                   "pass them as x");
        CALL_FAILS("sae_encode_null_x", circuits_sae_encode(sae, NULL, 1, NULL, acts), CIRCUITS_E_INVALID_ARGUMENT,
                   "must not be NULL");
        CALL_FAILS("sae_encode_negative_n", circuits_sae_encode(sae, xx, -1, NULL, acts), CIRCUITS_E_INVALID_ARGUMENT,
                   "negative");
        CALL_FAILS("sae_encode_too_many_rows", circuits_sae_encode(sae, xx, INT64_MAX / 4, NULL, acts), CIRCUITS_E_RANGE,
                   "too many");
        CHECK_OK(circuits_sae_encode(sae, xx, 0, NULL, NULL));
        circuits_sae_free(sae);
    }
    /* without the sparsity file: no log_feature_sparsity */
    unlink(path);
    CHECK_OK(circuits_sae_load(&sae, dir));
    if (sae) {
        circuits_tensor t;
        CALL_FAILS("sae_weight_no_sparsity", circuits_sae_weight(sae, "log_feature_sparsity", &t), CIRCUITS_E_NOT_FOUND,
                   "no sparsity.safetensors");
        /* a plain SAE's decode takes no x when nothing needs it */
        circuits_sae_free(sae);
    }
    free_weights(&w);
    circuits_sae_free(NULL);
}

/* ---- configs written before SAELens 6 (handle_pre_6_0_config) ---- */

/* A pre-6 cfg.json (cfg) over the weights of spec s must load as the SAELens 6 one does: the
 * same info and bit-identical encode / decode. */
static void check_pre6(const char *name, const spec *s, const char *cfg)
{
    char dir6[512], dir5[512], path[600];
    char n6[96];
    snprintf(n6, sizeof n6, "%s_v6", name);
    make_dir(dir6, sizeof dir6, n6);
    make_dir(dir5, sizeof dir5, name);
    weights w = make_weights(s, 77);
    write_cfg(dir6, s, NULL);
    write_weights(dir6, s, &w, ST_F32, NULL);
    write_weights(dir5, s, &w, ST_F32, NULL);
    snprintf(path, sizeof path, "%s/cfg.json", dir5);
    write_text(path, cfg);
    circuits_sae *a = NULL, *b = NULL;
    CHECK_OK(circuits_sae_load(&a, dir6));
    CHECK_OK(circuits_sae_load(&b, dir5));
    if (a && b) {
        circuits_sae_info ia = {.size = sizeof ia}, ib = {.size = sizeof ib};
        CHECK_OK(circuits_sae_get_info(a, &ia));
        CHECK_OK(circuits_sae_get_info(b, &ib));
        CHECK(ia.architecture == ib.architecture && ia.k == ib.k && ia.normalize_activations == ib.normalize_activations &&
                  ia.apply_b_dec_to_input == ib.apply_b_dec_to_input && ia.reshape_hook_z == ib.reshape_hook_z &&
                  strcmp(ia.hook_name, ib.hook_name) == 0 && ia.hook_layer == ib.hook_layer,
              "%s: info differs from the SAELens 6 config's", name);
        enum { N = 4 };
        float x[N * 16], pa[N * 40], pb[N * 40], oa[N * 16], ob[N * 16];
        for (int i = 0; i < N * s->d_in; i++) x[i] = (float)sin(1.3 * i);
        CHECK_OK(circuits_sae_encode(a, x, N, NULL, pa));
        CHECK_OK(circuits_sae_encode(b, x, N, NULL, pb));
        CHECK_OK(circuits_sae_decode(a, pa, N, x, oa));
        CHECK_OK(circuits_sae_decode(b, pb, N, x, ob));
        CHECK(memcmp(pa, pb, sizeof(float) * (size_t)(N * s->d_sae)) == 0 &&
                  memcmp(oa, ob, sizeof(float) * (size_t)(N * s->d_in)) == 0,
              "%s: encode / decode differ from the SAELens 6 config's", name);
    }
    circuits_sae_free(a);
    circuits_sae_free(b);
    free_weights(&w);
}

static void test_pre6(void)
{
    /* SAELens 2-3 (jbloom's GPT-2 small residual SAEs): hook_point, torch dtype, training fields */
    spec s = {"standard", 12, 40, 0, true, "none", NULL, 0, false, "blocks.2.hook_resid_pre", NULL};
    check_pre6("pre6_jb", &s,
               "{\"model_name\": \"gpt2-small\", \"hook_point\": \"blocks.2.hook_resid_pre\", \"hook_point_layer\": 2, "
               "\"hook_point_head_index\": null, \"d_in\": 12, \"d_sae\": 40, \"dtype\": \"torch.float32\", "
               "\"device\": \"mps\", \"b_dec_init_method\": \"geometric_median\", \"expansion_factor\": 32, "
               "\"l1_coefficient\": 8e-05, \"context_size\": 128}");
    /* SAELens 4-5: topk through activation_fn_kwargs, normalize_activations as a boolean */
    spec t = {"topk", 12, 40, 0, false, "expected_average_only_in", NULL, 3, false, "blocks.1.hook_resid_post", NULL};
    check_pre6("pre6_topk", &t,
               "{\"architecture\": \"standard\", \"d_in\": 12, \"d_sae\": 40, \"dtype\": \"float32\", "
               "\"hook_name\": \"blocks.1.hook_resid_post\", \"hook_layer\": 1, \"activation_fn\": \"topk\", "
               "\"activation_fn_kwargs\": {\"k\": 3}, \"apply_b_dec_to_input\": false, \"normalize_activations\": true, "
               "\"finetuning_scaling_factor\": false, \"sae_lens_training_version\": \"4.3.0\"}");
    /* hook_z when the hook name says so */
    spec z = {"jumprelu", 16, 40, 0, true, "none", "hook_z", 0, false, "blocks.0.attn.hook_z", NULL};
    check_pre6("pre6_hook_z", &z,
               "{\"architecture\": \"jumprelu\", \"d_in\": 16, \"d_sae\": 40, \"hook_name\": \"blocks.0.attn.hook_z\", "
               "\"activation_fn\": \"relu\", \"normalize_activations\": null, \"sae_lens_version\": \"5.10.2\"}");
}

/* ---- hostile directories ---- */

static char g_dir[512];

/* A valid standard SAE directory "bad" with cfg.json replaced by text (NULL: the valid one). */
static const spec BASE = {"standard", 4, 6, 0, true, "none", NULL, 0, false, "blocks.0.hook_resid_pre", NULL};
static weights g_w;

static void reset_dir(const spec *s, const char *extra)
{
    char path[600];
    snprintf(path, sizeof path, "%s/sparsity.safetensors", g_dir);
    unlink(path);
    free_weights(&g_w);
    g_w = make_weights(s, 11);
    write_cfg(g_dir, s, extra);
    write_weights(g_dir, s, &g_w, ST_F32, NULL);
}

static void cfg_text(const char *text)
{
    char path[600];
    snprintf(path, sizeof path, "%s/cfg.json", g_dir);
    write_text(path, text);
}

/* a raw safetensors file: header JSON then nbytes of zeros */
static void raw_st(const char *file, const char *header, size_t nbytes)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", g_dir, file);
    FILE *f = fopen(path, "wb");
    if (!f) st_fail(path);
    size_t hl = strlen(header);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, hl, f);
    for (size_t i = 0; i < nbytes; i++) fputc(0, f);
    if (fclose(f) != 0) st_fail(path);
}

#define LOAD_FAILS(name, status, needle)                                                            \
    do {                                                                                            \
        circuits_sae *sae_ = (circuits_sae *)(void *)&g_dir;                                        \
        CALL_FAILS(name, circuits_sae_load(&sae_, g_dir), status, needle);                          \
        CHECK(sae_ == NULL, "%s: *out not NULL after a failure", name);                             \
    } while (0)

static void test_hostile(void)
{
    make_dir(g_dir, sizeof g_dir, "bad");
    circuits_sae *sae = NULL;
    CALL_FAILS("sae_load_null", circuits_sae_load(&sae, NULL), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nonexistent", g_root);
    CALL_FAILS("sae_load_no_dir", circuits_sae_load(&sae, missing), CIRCUITS_E_IO, "is not a directory");
    reset_dir(&BASE, NULL);
    CHECK_OK(circuits_sae_load(&sae, g_dir)); /* the control */
    circuits_sae_free(sae);
    sae = NULL;

    char path[600];
    snprintf(path, sizeof path, "%s/cfg.json", g_dir);
    unlink(path);
    LOAD_FAILS("sae_cfg_missing", CIRCUITS_E_IO, "cfg.json");
    cfg_text("{\"d_in\": 4,");
    LOAD_FAILS("sae_cfg_bad_json", CIRCUITS_E_FORMAT, "not valid JSON");
    cfg_text("[1, 2]");
    LOAD_FAILS("sae_cfg_not_object", CIRCUITS_E_FORMAT, "not a JSON object");
    cfg_text("{\"d_in\": 4, \"d_sae\": 6, \"architecture\": \"standard\", \"sae_lens_version\": \"6.1.0\"}");
    LOAD_FAILS("sae_cfg_no_metadata", CIRCUITS_E_CONFIG, "missing object 'metadata'");
    cfg_text("{\"d_in\": 4, \"d_sae\": 6, \"architecture\": \"standard\", \"metadata\": [1]}");
    LOAD_FAILS("sae_cfg_metadata_not_object", CIRCUITS_E_CONFIG, "'metadata' must be an object");
    /* before SAELens 6 (no version, or < 6): the hook name at the top level */
    cfg_text("{\"d_in\": 4, \"d_sae\": 6, \"metadata\": {\"hook_name\": \"blocks.0.hook_resid_pre\"}}");
    LOAD_FAILS("sae_pre6_no_hook", CIRCUITS_E_CONFIG, "hook_name (or hook_point: a config from before SAELens 6) is missing");
    cfg_text("{\"d_in\": 4, \"d_sae\": 6, \"sae_lens_version\": \"3.2.1\", \"hook_point\": \"blocks.0.hook_resid_pre\", "
             "\"activation_fn_str\": \"tanh-relu\"}");
    LOAD_FAILS("sae_pre6_activation_fn", CIRCUITS_E_UNSUPPORTED, "activation_fn_str 'tanh-relu'");
    cfg_text("{\"d_in\": 4, \"d_sae\": 6, \"metadata\": {\"sae_lens_version\": \"6.54.12\", \"hook_name\": \"blocks.0.hook_resid_pre\"}}");
    LOAD_FAILS("sae_cfg_no_architecture", CIRCUITS_E_CONFIG, "'architecture'");

    /* architectures */
    spec s = BASE;
    s.arch = "fancy_sae";
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_arch_unknown", CIRCUITS_E_UNSUPPORTED, "architecture 'fancy_sae' is not supported");
    /* the architectures SAELens has that libcircuits refuses, each by name */
#define ARCH_FAILS(check, arch_name)                                                                    \
    do {                                                                                             \
        s.arch = arch_name;                                                                          \
        reset_dir(&s, NULL);                                                                         \
        LOAD_FAILS(check, CIRCUITS_E_UNSUPPORTED, "architecture '" arch_name "' is not supported");  \
    } while (0)
    ARCH_FAILS("sae_arch_batchtopk", "batchtopk");
    ARCH_FAILS("sae_arch_matryoshka", "matryoshka_batchtopk");
    ARCH_FAILS("sae_arch_abstopk", "abstopk");
    ARCH_FAILS("sae_arch_temporal", "temporal");
    ARCH_FAILS("sae_arch_matching_pursuit", "matching_pursuit");
#undef ARCH_FAILS

    /* sizes */
    const char *m = "\"metadata\": {\"sae_lens_version\": \"6.54.12\", \"hook_name\": \"blocks.0.hook_resid_pre\"}";
    char buf[1024];
    reset_dir(&BASE, NULL);
    snprintf(buf, sizeof buf, "{\"d_sae\": 6, \"architecture\": \"standard\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_d_in_missing", CIRCUITS_E_CONFIG, "missing required field 'd_in'");
    snprintf(buf, sizeof buf, "{\"d_in\": -4, \"d_sae\": 6, \"architecture\": \"standard\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_d_in_negative", CIRCUITS_E_CONFIG, "'d_in' = -4 is outside");
    snprintf(buf, sizeof buf, "{\"d_in\": 4, \"d_sae\": 99999999999, \"architecture\": \"standard\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_d_sae_huge", CIRCUITS_E_CONFIG, "'d_sae' = 99999999999 is outside");
    snprintf(buf, sizeof buf, "{\"d_in\": 4.5, \"d_sae\": 6, \"architecture\": \"standard\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_d_in_not_integer", CIRCUITS_E_CONFIG, "'d_in' must be an integer");
    snprintf(buf, sizeof buf, "{\"d_in\": 4, \"d_sae\": 7, \"architecture\": \"standard\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_d_sae_mismatch", CIRCUITS_E_SHAPE, "tensor 'W_enc' is [4, 6] but the config makes it [4, 7]");

    /* hook names */
    snprintf(buf, sizeof buf, "{\"d_in\": 4, \"d_sae\": 6, \"architecture\": \"standard\", \"metadata\": "
             "{\"sae_lens_version\": \"6.54.12\"}}");
    cfg_text(buf);
    LOAD_FAILS("sae_hook_name_missing", CIRCUITS_E_CONFIG, "metadata.hook_name is missing");
    snprintf(buf, sizeof buf, "{\"d_in\": 4, \"d_sae\": 6, \"architecture\": \"standard\", \"metadata\": "
             "{\"sae_lens_version\": \"6.54.12\", \"hook_name\": 3}}");
    cfg_text(buf);
    LOAD_FAILS("sae_hook_name_not_string", CIRCUITS_E_CONFIG, "'hook_name' must be a string");
    s = BASE;
    s.hook_out = "blocks.0.hook_mlp_out";
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_hook_name_out_for_sae", CIRCUITS_E_UNSUPPORTED, "differs from hook_name");

    /* settings */
    s = BASE;
    s.norm = "covariance_whitening";
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_covariance_whitening", CIRCUITS_E_UNSUPPORTED, "'covariance_whitening' is not supported");
    s.norm = "unit_norm";
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_norm_unknown", CIRCUITS_E_UNSUPPORTED, "normalize_activations 'unit_norm'");
    s = BASE;
    s.reshape = "hook_q";
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_reshape_unknown", CIRCUITS_E_UNSUPPORTED, "reshape_activations 'hook_q'");
    s.reshape = "hook_z";
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_hook_z_not_z", CIRCUITS_E_CONFIG, "ending in _z");
    reset_dir(&BASE, NULL);
    snprintf(buf, sizeof buf, "{\"d_in\": 4, \"d_sae\": 6, \"dtype\": \"torch.float64\", \"architecture\": \"standard\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_dtype_float64", CIRCUITS_E_UNSUPPORTED, "dtype 'torch.float64' is not supported");
    snprintf(buf, sizeof buf, "{\"d_in\": 4, \"d_sae\": 6, \"dtype\": \"int8\", \"architecture\": \"standard\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_dtype_unknown", CIRCUITS_E_CONFIG, "dtype 'int8' is not a dtype SAELens knows");
    snprintf(buf, sizeof buf, "{\"d_in\": 4, \"d_sae\": 6, \"finetuning_scaling_factor\": true, \"architecture\": "
             "\"standard\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_finetuning_scaling_factor", CIRCUITS_E_UNSUPPORTED, "finetuning_scaling_factor");
    s = (spec){"topk", 4, 6, 0, true, "none", NULL, 7, false, "blocks.0.hook_resid_pre", NULL};
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_topk_k_too_large", CIRCUITS_E_CONFIG, "k = 7 is larger than d_sae = 6");
    s.k = -1;
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_topk_k_negative", CIRCUITS_E_CONFIG, "'k' = -1 is outside");
    s = (spec){"transcoder", 4, 6, 5, true, "none", NULL, 0, false, "blocks.0.hook_resid_pre", "blocks.0.hook_mlp_out"};
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_transcoder_b_dec_to_input", CIRCUITS_E_CONFIG, "apply_b_dec_to_input must be false");
    s.apply_b_dec = false;
    s.reshape = "hook_z";
    s.hook = "blocks.0.attn.hook_z";
    reset_dir(&s, NULL);
    LOAD_FAILS("sae_transcoder_hook_z", CIRCUITS_E_UNSUPPORTED, "'hook_z' for a transcoder");
    snprintf(buf, sizeof buf, "{\"d_in\": 4, \"d_sae\": 6, \"apply_b_dec_to_input\": false, \"architecture\": "
             "\"transcoder\", %s}", m);
    cfg_text(buf);
    LOAD_FAILS("sae_transcoder_no_d_out", CIRCUITS_E_CONFIG, "missing required field 'd_out'");

    /* tensors */
    reset_dir(&BASE, NULL);
    write_weights(g_dir, &BASE, &g_w, ST_F32, "b_enc");
    LOAD_FAILS("sae_tensor_missing", CIRCUITS_E_TENSOR_MISSING, "tensor 'b_enc' is missing");
    s = (spec){"jumprelu", 4, 6, 0, true, "none", NULL, 0, false, "blocks.0.hook_resid_pre", NULL};
    reset_dir(&s, NULL);
    write_cfg(g_dir, &BASE, NULL); /* a jumprelu's threshold in a standard SAE */
    LOAD_FAILS("sae_tensor_unexpected", CIRCUITS_E_TENSOR_UNEXPECTED, "tensor 'threshold' has no place in a 'standard'");
    s = (spec){"skip_transcoder", 4, 6, 5, false, "none", NULL, 0, false, "blocks.0.hook_resid_pre", "blocks.0.hook_mlp_out"};
    reset_dir(&s, NULL);
    write_weights(g_dir, &s, &g_w, ST_F32, "W_skip");
    LOAD_FAILS("sae_skip_missing", CIRCUITS_E_TENSOR_MISSING, "tensor 'W_skip' is missing");
    reset_dir(&BASE, NULL);
    raw_st("sae_weights.safetensors",
           "{\"W_enc\":{\"dtype\":\"I32\",\"shape\":[4,6],\"data_offsets\":[0,96]},"
           "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[6,4],\"data_offsets\":[96,192]},"
           "\"b_enc\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[192,216]},"
           "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[216,232]}}", 232);
    LOAD_FAILS("sae_tensor_dtype", CIRCUITS_E_DTYPE, "tensor 'W_enc' is I32");
    raw_st("sae_weights.safetensors",
           "{\"W_enc\":{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[0,96]},"
           "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[6,4],\"data_offsets\":[96,192]},"
           "\"b_enc\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[192,216]},"
           "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[216,232]}}", 232);
    LOAD_FAILS("sae_tensor_rank", CIRCUITS_E_SHAPE, "tensor 'W_enc' is [24] but the config makes it [4, 6]");
    raw_st("sae_weights.safetensors", "{\"W_enc\":{\"dtype\":\"F32\",\"shape\":[4,6],\"data_offsets\":[0,96]}}", 10);
    LOAD_FAILS("sae_weights_truncated", CIRCUITS_E_FORMAT, "sae_weights.safetensors");
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", g_dir);
    unlink(path);
    LOAD_FAILS("sae_weights_missing", CIRCUITS_E_IO, "sae_weights.safetensors");
    /* scaling_factor: ones are dropped (as SAELens), anything else refused */
    reset_dir(&BASE, NULL);
    {
        float ones[6] = {1, 1, 1, 1, 1, 1}, twos[6] = {2, 1, 1, 1, 1, 1};
        st_entry e[5] = {{"W_enc", 2, {4, 6}, g_w.W_enc}, {"W_dec", 2, {6, 4}, g_w.W_dec}, {"b_enc", 1, {6}, g_w.b_enc},
                         {"b_dec", 1, {4}, g_w.b_dec}, {"scaling_factor", 1, {6}, ones}};
        st_write(path, e, 5);
        CHECK_OK(circuits_sae_load(&sae, g_dir));
        circuits_sae_free(sae);
        sae = NULL;
        e[4].data = twos;
        st_write(path, e, 5);
        LOAD_FAILS("sae_scaling_factor", CIRCUITS_E_UNSUPPORTED, "'scaling_factor' other than ones");
    }
    /* the sparsity file */
    reset_dir(&BASE, NULL);
    {
        float sp[7] = {0};
        st_entry e = {"sparsity", 1, {7}, sp};
        snprintf(path, sizeof path, "%s/sparsity.safetensors", g_dir);
        st_write(path, &e, 1);
        LOAD_FAILS("sae_sparsity_shape", CIRCUITS_E_SHAPE, "tensor 'sparsity' is [7] but the config makes it [6]");
        st_entry e2[2] = {{"sparsity", 1, {6}, sp}, {"counts", 1, {6}, sp}};
        st_write(path, e2, 2);
        LOAD_FAILS("sae_sparsity_extra", CIRCUITS_E_TENSOR_UNEXPECTED, "tensor 'counts' is unexpected");
        st_entry e3 = {"log_sparsity", 1, {6}, sp};
        st_write(path, &e3, 1);
        LOAD_FAILS("sae_sparsity_missing_tensor", CIRCUITS_E_TENSOR_MISSING, "tensor 'sparsity' is missing");
    }
    free_weights(&g_w);
}

/* ---- fuzz seeds (tests/fuzz/fuzz_sae.c's input format) ---- */

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) st_fail(path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(len > 0 ? (size_t)len : 1);
    if (!p || fread(p, 1, (size_t)len, f) != (size_t)len) st_fail(path);
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* [c: 2 bytes][s: 2 bytes][cfg.json][sparsity.safetensors][sae_weights.safetensors] */
static void write_seed(const char *out_dir, const char *name, const spec *s, bool sparsity, const char *cfg)
{
    char dir[512], path[700];
    make_dir(dir, sizeof dir, name);
    weights w = make_weights(s, 3);
    write_cfg(dir, s, NULL);
    if (cfg) {
        snprintf(path, sizeof path, "%s/cfg.json", dir);
        write_text(path, cfg);
    }
    write_weights(dir, s, &w, ST_F32, NULL);
    if (sparsity) {
        float sp[64] = {0};
        st_entry e = {"sparsity", 1, {s->d_sae}, sp};
        snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
        st_write(path, &e, 1);
    }
    size_t nc, ns = 0, nw;
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    unsigned char *c = slurp(path, &nc), *sp = NULL;
    if (sparsity) {
        snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
        sp = slurp(path, &ns);
    }
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    unsigned char *wt = slurp(path, &nw);
    snprintf(path, sizeof path, "%s/%s", out_dir, name);
    FILE *f = fopen(path, "wb");
    unsigned char hdr[4] = {(unsigned char)nc, (unsigned char)(nc >> 8), (unsigned char)ns, (unsigned char)(ns >> 8)};
    if (!f || fwrite(hdr, 1, 4, f) != 4 || fwrite(c, 1, nc, f) != nc || (ns && fwrite(sp, 1, ns, f) != ns) ||
        fwrite(wt, 1, nw, f) != nw || fclose(f) != 0)
        st_fail(path);
    free(c);
    free(sp);
    free(wt);
    free_weights(&w);
}

static void write_seeds(const char *out_dir)
{
    const char *R = "blocks.0.hook_resid_pre";
    spec a = {"standard", 4, 6, 0, true, "none", NULL, 0, false, R, NULL};
    write_seed(out_dir, "standard", &a, true, NULL);
    spec g = {"gated", 4, 6, 0, true, "layer_norm", NULL, 0, false, R, NULL};
    write_seed(out_dir, "gated_layer_norm", &g, false, NULL);
    spec j = {"jumprelu", 4, 6, 0, false, "constant_norm_rescale", NULL, 0, false, R, NULL};
    write_seed(out_dir, "jumprelu", &j, false, NULL);
    spec t = {"topk", 4, 6, 0, true, "none", NULL, 2, true, R, NULL};
    write_seed(out_dir, "topk_rescale", &t, false, NULL);
    spec k = {"jumprelu_skip_transcoder", 4, 6, 3, false, "layer_norm", NULL, 0, false, R, "blocks.0.hook_mlp_out"};
    write_seed(out_dir, "jumprelu_skip_transcoder", &k, false, NULL);
    spec z = {"standard", 4, 6, 0, true, "expected_average_only_in", "hook_z", 0, false, "blocks.0.attn.hook_z", NULL};
    write_seed(out_dir, "hook_z", &z, false, NULL);
    spec p = {"topk", 4, 6, 0, true, "none", NULL, 2, false, R, NULL};
    write_seed(out_dir, "pre6_topk", &p, false,
               "{\"d_in\": 4, \"d_sae\": 6, \"hook_point\": \"blocks.0.hook_resid_pre\", \"dtype\": \"torch.float32\", "
               "\"activation_fn\": \"topk\", \"activation_fn_kwargs\": {\"k\": 2}, \"normalize_activations\": false}");
}

int main(int argc, char **argv)
{
    cat_verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    if (!mkdtemp(g_root)) return 2;
    cat_tmp = g_root;
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) {
        write_seeds(argv[2]);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
        return system(cmd) != 0;
    }
    test_architectures();
    test_topk_ties();
    test_dtypes_info_views();
    test_pre6();
    test_hostile();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return tu_finish("test_sae");
}
