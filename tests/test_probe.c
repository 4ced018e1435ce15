/* Linear probes (lib/analysis/probe*.c, lib/io/probe_file.c) against scikit-learn 1.9.1
 * (tests/reference/probes/, tests/reference/generate_probes.py): every case's coefficients,
 * held-out predictions and scores; the file's round trip; a monitor during generation with a
 * KV cache against circuits_probe_predict on the cached activations of the same positions; and
 * the bad inputs of the catalogue (docs/errors.md "Linear probes").
 *
 * Tolerances. sklearn's fits are exact to ~1e-10 (newton-cholesky, tol 1e-12, in float64); ours
 * solve the same objective in double (Newton to a step below tol = 1e-6: quadratic convergence
 * puts the error near 1e-12) and store float32 coefficients (relative rounding 6e-8). So a
 * coefficient or intercept may differ by about 6e-8 of the largest of them; we allow 5e-7 of that
 * (the measured worst is printed: 5.2e-8; under valgrind's arithmetic 6.5e-8).
 * Probabilities are computed from float32 coefficients and rows: |dz| <= sum |w x| * 1.2e-7,
 * about 1e-5 for these rows, so 2e-5 on a probability (|dp| <= |dz| / 4). Scores: 1e-5. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalogue.h"
#include "reference_get.h"

static char g_root[] = "/tmp/circuits_probe_XXXXXX";
static const char *g_model;

static const float *tensor_f32(const char *k, int64_t *rows, int64_t *cols)
{
    const cx_st_tensor *t = get(k);
    if (t->dtype != CX_DT_F32) {
        fprintf(stderr, "%s is not F32\n", k);
        exit(2);
    }
    *rows = t->shape[0];
    *cols = t->ndim > 1 ? t->shape[1] : 1;
    return (const float *)t->data;
}

static const double *tensor_f64(const char *k)
{
    const cx_st_tensor *t = get(k);
    if (t->dtype != CX_DT_F64) {
        fprintf(stderr, "%s is not F64\n", k);
        exit(2);
    }
    return (const double *)t->data;
}

static double worst_coef = 0, worst_pred = 0, worst_score = 0;

static void check_case(json_t *c)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    const char *kind = json_string_value(json_object_get(c, "kind"));
    const char *xk = json_string_value(json_object_get(c, "X")), *yk = json_string_value(json_object_get(c, "y"));
    bool logistic = strcmp(kind, "logistic") == 0;
    char k[128];
    int64_t n, d, ny, nt, nte, dte;
    snprintf(k, sizeof k, "%s_train", xk);
    const float *X = tensor_f32(k, &n, &d);
    snprintf(k, sizeof k, "%s_train", yk);
    const float *y = tensor_f32(k, &ny, &nt);
    snprintf(k, sizeof k, "%s_test", xk);
    const float *Xt = tensor_f32(k, &nte, &dte);
    snprintf(k, sizeof k, "%s_test", yk);
    int64_t nyt, ntt;
    const float *yt = tensor_f32(k, &nyt, &ntt);
    circuits_probe_options o;
    circuits_probe_options_init(&o);
    o.kind = logistic ? CIRCUITS_PROBE_LOGISTIC : CIRCUITS_PROBE_LINEAR;
    o.l2 = (float)json_number_value(json_object_get(c, "l2"));
    o.fit_intercept = json_is_true(json_object_get(c, "fit_intercept"));
    o.hook_name = "blocks.1.hook_resid_post";
    circuits_probe *p = NULL;
    CHECK_OK(circuits_probe_fit(&p, X, n, d, y, logistic ? 1 : nt, &o));
    if (!p) return;
    circuits_tensor W, b;
    CHECK_OK(circuits_probe_weights(p, &W, &b));
    snprintf(k, sizeof k, "%s.coef64", name);
    const double *cref = tensor_f64(k);
    snprintf(k, sizeof k, "%s.intercept64", name);
    const double *bref = tensor_f64(k);
    int64_t n_coef = get(k)->shape[0];
    CHECK(W.ndim == 2 && W.shape[0] == n_coef && W.shape[1] == d && b.shape[0] == n_coef, "%s: W [%lld, %lld]", name,
          (long long)W.shape[0], (long long)W.shape[1]);
    double cmax = 0, cerr = 0;
    /* relative to the largest coefficient or intercept: each is stored as float32 */
    for (int64_t i = 0; i < n_coef * d; i++) cmax = fmax(cmax, fabs(cref[i]));
    for (int64_t i = 0; i < n_coef; i++) cmax = fmax(cmax, fabs(bref[i]));
    for (int64_t i = 0; i < n_coef * d && W.shape[0] == n_coef; i++) cerr = fmax(cerr, fabs(W.data[i] - cref[i]));
    for (int64_t i = 0; i < n_coef; i++) cerr = fmax(cerr, fabs(b.data[i] - bref[i]));
    double rel = cerr / cmax;
    if (getenv("PROBE_VERBOSE")) printf("  %-20s coef %.3g\n", name, rel);
    worst_coef = fmax(worst_coef, rel);
    CHECK(rel < 5e-7, "%s: coefficients differ from sklearn's by %g (max |coef|, |b| %g: %g relative)", name, cerr, cmax,
          rel);
    circuits_probe_info info = {.size = sizeof info};
    CHECK_OK(circuits_probe_get_info(p, &info));
    int64_t n_out = logistic ? (n_coef == 1 ? 2 : n_coef) : nt;
    CHECK(info.kind == o.kind && info.d == d && info.n_outputs == n_out && info.l2 == o.l2 &&
              info.fit_intercept == o.fit_intercept && strcmp(info.hook_name, "blocks.1.hook_resid_post") == 0,
          "%s: info", name);
    CHECK(logistic ? info.n_iter >= 1 && info.n_iter < o.max_iter : info.n_iter == 0, "%s: n_iter %d", name,
          info.n_iter);
    /* held-out predictions */
    float *out = malloc((size_t)(nte * n_out) * sizeof(float));
    CHECK_OK(circuits_probe_predict(p, Xt, nte, out));
    snprintf(k, sizeof k, "%s.pred", name);
    int64_t pr, pc;
    const float *pref = tensor_f32(k, &pr, &pc);
    CHECK(pr == nte && pc == n_out, "%s: pred shape", name);
    double perr = 0, pmax = 0;
    for (int64_t i = 0; i < nte * n_out; i++) {
        perr = fmax(perr, fabs(out[i] - pref[i]));
        pmax = fmax(pmax, fabs(pref[i]));
    }
    /* regression outputs are relative to their size */
    double ptol = logistic ? 2e-5 : 2e-5 * fmax(1.0, pmax);
    worst_pred = fmax(worst_pred, perr / (logistic ? 1.0 : fmax(1.0, pmax)));
    CHECK(perr < ptol, "%s: predictions differ by %g", name, perr);
    free(out);
    /* scores */
    circuits_probe_score s = {.size = sizeof s};
    CHECK_OK(circuits_probe_evaluate(p, Xt, nte, yt, &s));
    if (logistic) {
        double acc = json_number_value(json_object_get(c, "accuracy"));
        double ll = json_number_value(json_object_get(c, "log_loss"));
        CHECK(s.accuracy == acc, "%s: accuracy %g, sklearn %g", name, s.accuracy, acc);
        CHECK(fabs(s.log_loss - ll) < 1e-5 * fmax(1, ll), "%s: log-loss %.9g, sklearn %.9g", name, s.log_loss, ll);
        worst_score = fmax(worst_score, fabs(s.log_loss - ll) / fmax(1, ll));
    } else {
        double r2 = json_number_value(json_object_get(c, "r2")), mse = json_number_value(json_object_get(c, "mse"));
        CHECK(fabs(s.r2 - r2) < 1e-5, "%s: R^2 %.9g, sklearn %.9g", name, s.r2, r2);
        CHECK(fabs(s.mse - mse) < 1e-5 * fmax(1, mse), "%s: MSE %.9g, sklearn %.9g", name, s.mse, mse);
        worst_score = fmax(worst_score, fmax(fabs(s.r2 - r2), fabs(s.mse - mse) / fmax(1, mse)));
    }
    /* the file: the same probe back, bit for bit */
    char path[256];
    snprintf(path, sizeof path, "%s/%s.probe", g_root, name);
    CHECK_OK(circuits_probe_save(p, path));
    circuits_probe *q = NULL;
    CHECK_OK(circuits_probe_load(&q, path));
    if (q) {
        circuits_probe_info qi = {.size = sizeof qi};
        circuits_tensor W2, b2;
        CHECK_OK(circuits_probe_get_info(q, &qi));
        CHECK_OK(circuits_probe_weights(q, &W2, &b2));
        CHECK(qi.kind == info.kind && qi.d == info.d && qi.n_outputs == info.n_outputs && qi.l2 == info.l2 &&
                  qi.fit_intercept == info.fit_intercept && qi.n_iter == info.n_iter &&
                  strcmp(qi.hook_name, info.hook_name) == 0,
              "%s: info after the round trip", name);
        CHECK(memcmp(W2.data, W.data, (size_t)(n_coef * d) * sizeof(float)) == 0 &&
                  memcmp(b2.data, b.data, (size_t)n_coef * sizeof(float)) == 0,
              "%s: weights after the round trip", name);
        circuits_probe_free(q);
    }
    circuits_probe_free(p);
}

/* ---- the monitor ---- */

typedef struct seen {
    float out[64][2];   /* outputs by absolute position */
    int hits[64];
    int calls;
    int64_t last_first, last_pos;
} seen;

static int on_probe(const float *out, int64_t batch, int64_t pos, int64_t n_outputs, int64_t first, void *user)
{
    seen *s = user;
    s->calls++;
    s->last_first = first;
    s->last_pos = pos;
    if (batch != 1 || n_outputs != 2) return -1;
    for (int64_t t = 0; t < pos; t++) {
        if (first + t >= 64) return -1;
        s->out[first + t][0] = out[t * 2];
        s->out[first + t][1] = out[t * 2 + 1];
        s->hits[first + t]++;
    }
    return 0;
}

static int stop_at_second(const float *out, int64_t batch, int64_t pos, int64_t n_outputs, int64_t first, void *user)
{
    (void)out, (void)batch, (void)pos, (void)n_outputs, (void)user;
    return first > 0 ? CIRCUITS_HOOK_STOP : 0;
}

static void check_monitor(void)
{
    int64_t n, d, ny, nt;
    const float *X = tensor_f32("act_train", &n, &d);
    const float *y = tensor_f32("vowel_train", &ny, &nt);
    circuits_probe_options o;
    circuits_probe_options_init(&o);
    o.hook_name = "blocks.1.hook_resid_post";
    circuits_probe *p = NULL;
    CHECK_OK(circuits_probe_fit(&p, X, n, d, y, 1, &o));
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, g_model, NULL));
    circuits_context *ctx = NULL;
    if (m) CHECK_OK(circuits_context_create(&ctx, m, NULL));
    if (!p || !ctx) goto done;
    seen s;
    memset(&s, 0, sizeof s);
    circuits_hook_id id = -1;
    CHECK_OK(circuits_context_add_probe_monitor(ctx, p, NULL, on_probe, &s, &id));
    const char *prompt_s = "And the evening and the morning were";
    int32_t prompt[64], gen[64];
    int64_t P = (int64_t)strlen(prompt_s), len = 0;
    for (int64_t i = 0; i < P; i++) prompt[i] = (unsigned char)prompt_s[i];
    circuits_generate_options g;
    circuits_generate_options_init(&g);
    g.max_new_tokens = 12;
    g.do_sample = 0;
    g.stop_at_eos = 0;
    CHECK_OK(circuits_context_generate(ctx, prompt, 1, P, &g, gen, &len));
    CHECK(len == P + 12, "generated %lld columns", (long long)len);
    /* one call for the prompt, then one per step (the last token is never run) */
    CHECK(s.calls == 12, "monitor called %d times", s.calls);
    CHECK(s.last_first == P + 10 && s.last_pos == 1, "last call first %lld pos %lld", (long long)s.last_first,
          (long long)s.last_pos);
    for (int64_t t = 0; t < len - 1; t++) CHECK(s.hits[t] == 1, "position %lld seen %d times", (long long)t, s.hits[t]);
    /* the same positions' activations from one run of the whole sequence, through predict */
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    const char *filter[] = {"blocks.1.hook_resid_post"};
    CHECK_OK(circuits_context_run_with_cache(ctx, gen, 1, len - 1, filter, 1, cache, NULL, NULL, NULL));
    circuits_tensor a;
    CHECK_OK(circuits_cache_get(cache, filter[0], &a));
    float pred[64 * 2];
    CHECK_OK(circuits_probe_predict(p, a.data, len - 1, pred));
    double err = 0;
    for (int64_t t = 0; t < len - 1; t++)
        for (int k = 0; k < 2; k++) err = fmax(err, fabs(pred[t * 2 + k] - s.out[t][k]));
    printf("monitor during generation vs predict on the cached run: max |diff| %.3g\n", err);
    CHECK(err < 1e-4, "monitor outputs differ from predict by %g", err);
    circuits_cache_free(cache);
    /* a callback's stop ends the run there; a failing callback fails it */
    CHECK_OK(circuits_context_add_probe_monitor(ctx, p, "resid_post1", stop_at_second, NULL, &id));
    CHECK_FAILS(circuits_context_generate(ctx, prompt, 1, P, &g, gen, &len), CIRCUITS_E_STOPPED, "");
    circuits_context_clear_hooks(ctx);
    /* bad registrations */
    circuits_probe *nohook = NULL, *narrow = NULL;
    o.hook_name = NULL;
    CHECK_OK(circuits_probe_fit(&nohook, X, n, d, y, 1, &o));
    CHECK_OK(circuits_probe_fit(&narrow, X, n, 10, y, 1, &o));
    CALL_FAILS("probe_monitor_null", circuits_context_add_probe_monitor(ctx, p, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("probe_monitor_no_hook_name", circuits_context_add_probe_monitor(ctx, nohook, NULL, on_probe, &s, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "the probe has no hook_name");
    CALL_FAILS("probe_monitor_not_found", circuits_context_add_probe_monitor(ctx, p, "blocks.9.hook_resid_post", on_probe, &s, NULL),
               CIRCUITS_E_NOT_FOUND, "blocks.9.hook_resid_post");
    CALL_FAILS("probe_monitor_pattern", circuits_context_add_probe_monitor(ctx, p, "blocks.*.hook_resid_post", on_probe, &s, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "selects 2 hook points; name exactly one");
    CALL_FAILS("probe_monitor_width", circuits_context_add_probe_monitor(ctx, narrow, "blocks.1.hook_resid_post", on_probe, &s, NULL),
               CIRCUITS_E_SHAPE, "has 128 values per position; the probe reads d = 10");
    CALL_FAILS("probe_monitor_pattern_width", circuits_context_add_probe_monitor(ctx, p, "blocks.0.attn.hook_pattern", on_probe, &s, NULL),
               CIRCUITS_E_UNSUPPORTED, "a width that grows with the positions");
    circuits_probe_free(nohook);
    circuits_probe_free(narrow);
done:
    circuits_context_free(ctx);
    circuits_model_free(m);
    circuits_probe_free(p);
}

/* ---- bad input ---- */

/* A probe-shaped safetensors file with header JSON `h` (padded here) and `nbytes` of data. */
static void write_file(const char *path, const char *h, const void *data, size_t nbytes)
{
    FILE *f = fopen(path, "wb");
    if (!f) exit(2);
    size_t n = strlen(h), padded = (n + 7) & ~(size_t)7;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(h, 1, n, f);
    for (size_t i = n; i < padded; i++) fputc(' ', f);
    if (nbytes) fwrite(data, 1, nbytes, f);
    fclose(f);
}

#define META(kind, l2, fi, nout) \
    "\"__metadata__\":{\"format\":\"libcircuits-probe\",\"version\":\"1\",\"kind\":\"" kind "\",\"l2\":\"" l2 \
    "\",\"fit_intercept\":\"" fi "\",\"n_outputs\":\"" nout "\",\"n_iter\":\"3\",\"hook_name\":\"\"}"
#define WB(rows, cols) \
    "\"W\":{\"dtype\":\"F32\",\"shape\":[" #rows "," #cols "],\"data_offsets\":[0," #rows "*4*" #cols "]}"

static void bad_files(void)
{
    char path[256];
    circuits_probe *q = (circuits_probe *)1;
    float data[16] = {1, 2, 3, 4, 5, 6, 0.5f, 0};
    cat_tmp = g_root;
    snprintf(path, sizeof path, "%s/bad.probe", g_root);
#define W23 "\"W\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[0,12]}"
#define B1 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}"
    /* a valid file first: the variations below break one thing each */
    write_file(path, "{" META("logistic", "1", "1", "2") "," W23 "," B1 "}", data, 16);
    CHECK_OK(circuits_probe_load(&q, path));
    circuits_probe_free(q);
    q = NULL;
    CALL_FAILS("probe_load_null", circuits_probe_load(NULL, path), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("probe_load_missing_file", circuits_probe_load(&q, "/nonexistent/x.probe"), CIRCUITS_E_IO, "x.probe");
    write_file(path, "{" W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_no_metadata", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "has no __metadata__");
    write_file(path, "{\"__metadata__\":{\"format\":\"pt\"}," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_wrong_format", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "format 'pt'");
    write_file(path, "{\"__metadata__\":{\"format\":\"libcircuits-probe\",\"version\":\"2\"}," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_version", circuits_probe_load(&q, path), CIRCUITS_E_UNSUPPORTED, "probe file version '2'");
    write_file(path, "{" META("svm", "1", "1", "2") "," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_kind", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "kind 'svm'");
    write_file(path, "{" META("logistic", "nan", "1", "2") "," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_l2_nan", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "metadata l2 = 'nan'");
    write_file(path, "{" META("logistic", "0", "1", "2") "," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_l2_zero_logistic", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "metadata l2 = '0'");
    write_file(path, "{" META("logistic", "1", "yes", "2") "," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_fit_intercept", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "fit_intercept = 'yes'");
    write_file(path, "{" META("logistic", "1", "1", "3") "," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_n_outputs", circuits_probe_load(&q, path), CIRCUITS_E_SHAPE, "a logistic probe of 3 outputs cannot have W of 1 rows");
    write_file(path, "{" META("linear", "0", "1", "-1") "," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_n_outputs_negative", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "n_outputs = '-1'");
    write_file(path, "{\"__metadata__\":{\"format\":\"libcircuits-probe\",\"version\":\"1\",\"kind\":\"linear\"}," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_metadata_missing", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "metadata 'l2' is missing");
    write_file(path, "{" META("logistic", "1", "1", "2") "," B1 "}", data, 16);
    CALL_FAILS("probe_load_no_w", circuits_probe_load(&q, path), CIRCUITS_E_TENSOR_MISSING, "no tensor 'W'");
    write_file(path, "{" META("logistic", "1", "1", "2") ",\"W\":{\"dtype\":\"F16\",\"shape\":[1,3],\"data_offsets\":[0,6]}," B1 "}", data, 16);
    CALL_FAILS("probe_load_w_dtype", circuits_probe_load(&q, path), CIRCUITS_E_DTYPE, "'W' is F16, not F32");
    write_file(path, "{" META("logistic", "1", "1", "2") ",\"W\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}," B1 "}", data, 16);
    CALL_FAILS("probe_load_w_ndim", circuits_probe_load(&q, path), CIRCUITS_E_SHAPE, "'W' has 1 dims, not 2");
    write_file(path, "{" META("logistic", "1", "1", "2") ",\"W\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", data, 16);
    CALL_FAILS("probe_load_b_shape", circuits_probe_load(&q, path), CIRCUITS_E_SHAPE, "do not make a probe");
    write_file(path, "{" META("logistic", "1", "1", "2") ",\"W\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", data, 0);
    CALL_FAILS("probe_load_empty", circuits_probe_load(&q, path), CIRCUITS_E_SHAPE, "W [0, 3] and b [0]");
    write_file(path, "{" META("logistic", "1", "1", "2") "," W23 ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]},\"extra\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}", data, 20);
    CALL_FAILS("probe_load_extra_tensor", circuits_probe_load(&q, path), CIRCUITS_E_TENSOR_UNEXPECTED, "unexpected tensor 'extra'");
    float nanw[4] = {1, NAN, 3, 0};
    write_file(path, "{" META("logistic", "1", "1", "2") "," W23 "," B1 "}", nanw, 16);
    CALL_FAILS("probe_load_weight_nan", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "a weight is not finite (W element 1)");
    write_file(path, "{" META("logistic", "1", "0", "2") "," W23 "," B1 "}", data, 16);
    CALL_FAILS("probe_load_intercept_without_fit", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "b is not zero but fit_intercept is 0");
    write_file(path, "{" META("logistic", "1", "1", "2") "," W23 ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,20]}}", data, 16);
    CALL_FAILS("probe_load_truncated", circuits_probe_load(&q, path), CIRCUITS_E_FORMAT, "outside the data section");
    CHECK(q == NULL, "a failed load set *out");
    remove(path);
}

static void bad_fits(void)
{
    float X[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, y[4] = {0, 1, 0, 1}, out[8];
    circuits_probe *p = (circuits_probe *)1;
    circuits_probe_options o;
    circuits_probe_options_init(&o);
    CALL_FAILS("probe_fit_null", circuits_probe_fit(NULL, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("probe_fit_n_0", circuits_probe_fit(&p, X, 0, 3, y, 1, &o), CIRCUITS_E_SHAPE, "X must be [n >= 1, d >= 1], not [0, 3]");
    CHECK(p == NULL, "a failed fit set *out");
    CALL_FAILS("probe_fit_d_0", circuits_probe_fit(&p, X, 4, 0, y, 1, &o), CIRCUITS_E_SHAPE, "not [4, 0]");
    CALL_FAILS("probe_fit_too_large", circuits_probe_fit(&p, X, INT64_C(1) << 40, INT64_C(1) << 30, y, 1, &o), CIRCUITS_E_RANGE, "is too large");
    X[4] = NAN;
    CALL_FAILS("probe_fit_x_nan", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "X[1, 1] = nan is not finite");
    X[4] = INFINITY;
    CALL_FAILS("probe_fit_x_inf", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "X[1, 1] = inf is not finite");
    X[4] = 4;
    y[2] = 0.5f;
    CALL_FAILS("probe_fit_label_fraction", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "y[2] = 0.5 is not a class label");
    y[2] = -1;
    CALL_FAILS("probe_fit_label_negative", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "y[2] = -1 is not a class label");
    y[2] = NAN;
    CALL_FAILS("probe_fit_label_nan", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "y[2] = nan is not a class label");
    y[2] = 1e6f;
    CALL_FAILS("probe_fit_label_huge", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "an integer in [0, 65536)");
    float one[4] = {1, 1, 1, 1}, zero[4] = {0, 0, 0, 0}, gap[4] = {0, 2, 0, 2};
    CALL_FAILS("probe_fit_single_class", circuits_probe_fit(&p, X, 4, 3, zero, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "a single class");
    CALL_FAILS("probe_fit_absent_class", circuits_probe_fit(&p, X, 4, 3, one, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "class 0 has no rows");
    CALL_FAILS("probe_fit_class_gap", circuits_probe_fit(&p, X, 4, 3, gap, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "class 1 has no rows");
    y[2] = 0;
    CALL_FAILS("probe_fit_logistic_targets", circuits_probe_fit(&p, X, 4, 3, y, 2, &o), CIRCUITS_E_SHAPE, "n_targets 1, not 2");
    o.l2 = -1;
    CALL_FAILS("probe_fit_l2_negative", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "l2 = -1 must be finite and >= 0");
    o.l2 = NAN;
    CALL_FAILS("probe_fit_l2_nan", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "l2 = nan must be finite");
    o.l2 = 0;
    CALL_FAILS("probe_fit_logistic_l2_0", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_UNSUPPORTED, "unpenalised logistic regression");
    o.l2 = 1;
    o.max_iter = 0;
    CALL_FAILS("probe_fit_max_iter_0", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "max_iter must be >= 1, not 0");
    o.max_iter = 50;
    o.tol = 0;
    CALL_FAILS("probe_fit_tol_0", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "tol = 0 must be finite and > 0");
    o.tol = 1e-6f;
    o.kind = 7;
    CALL_FAILS("probe_fit_kind", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "kind 7");
    o.kind = CIRCUITS_PROBE_LOGISTIC;
    o.fit_intercept = 2;
    CALL_FAILS("probe_fit_fit_intercept", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "fit_intercept must be 0 or 1, not 2");
    o.fit_intercept = 1;
    o.size = 12;
    CALL_FAILS("probe_fit_options_size", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_VERSION, "circuits_probe_fit");
    circuits_probe_options_init(&o);
    o.hook_name = "blocks.0.hook_\xc3\xa9";
    CALL_FAILS("probe_fit_hook_name", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "hook_name must be printable ASCII");
    o.hook_name = NULL;
    float *big = calloc(2 * 20000, sizeof(float));
    CALL_FAILS("probe_fit_newton_too_big", circuits_probe_fit(&p, big, 2, 20000, y, 1, &o), CIRCUITS_E_UNSUPPORTED, "exceeds 16384 unknowns");
    free(big);
    o.kind = CIRCUITS_PROBE_LINEAR;
    CALL_FAILS("probe_fit_linear_targets", circuits_probe_fit(&p, X, 4, 3, y, 0, &o), CIRCUITS_E_SHAPE, "n_targets >= 1");
    y[1] = INFINITY;
    CALL_FAILS("probe_fit_linear_y_inf", circuits_probe_fit(&p, X, 4, 3, y, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "y[1, 0] = inf is not finite");
    y[1] = 1;
    /* predict / evaluate / info on a good probe */
    o.kind = CIRCUITS_PROBE_LOGISTIC;
    p = NULL;
    CHECK_OK(circuits_probe_fit(&p, X, 4, 3, y, 1, &o));
    if (!p) return;
    circuits_probe_score s = {.size = sizeof s};
    CALL_FAILS("probe_predict_null", circuits_probe_predict(p, NULL, 4, out), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("probe_predict_n_0", circuits_probe_predict(p, X, 0, out), CIRCUITS_E_SHAPE, "circuits_probe_predict: X must be");
    X[0] = NAN;
    CALL_FAILS("probe_predict_nan", circuits_probe_predict(p, X, 4, out), CIRCUITS_E_INVALID_ARGUMENT, "X[0, 0] = nan is not finite");
    X[0] = 0;
    float y5[4] = {0, 1, 5, 1};
    CALL_FAILS("probe_evaluate_label_range", circuits_probe_evaluate(p, X, 4, y5, &s), CIRCUITS_E_RANGE, "y[2] = 5 is not one of the probe's 2 classes");
    s.size = 3;
    CALL_FAILS("probe_evaluate_score_size", circuits_probe_evaluate(p, X, 4, y, &s), CIRCUITS_E_VERSION, "circuits_probe_evaluate");
    circuits_probe_info info = {.size = 5};
    CALL_FAILS("probe_info_size", circuits_probe_get_info(p, &info), CIRCUITS_E_VERSION, "circuits_probe_get_info");
    CALL_FAILS("probe_weights_null", circuits_probe_weights(p, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("probe_save_null", circuits_probe_save(p, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("probe_save_bad_dir", circuits_probe_save(p, "/nonexistent/dir/x.probe"), CIRCUITS_E_IO, "cannot write /nonexistent/dir/x.probe");
    circuits_probe_free(p);
    circuits_probe_free(NULL);
}

/* A few small properties solved by hand: perfectly linear data is recovered exactly; an
 * intercept-free fit has b = 0; the multinomial intercepts have mean 0. */
static void small_cases(void)
{
    float X[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, y[5], Y2[10];
    for (int i = 0; i < 5; i++) {
        y[i] = 3 * X[2 * i] - 2 * X[2 * i + 1] + 0.5f;
        Y2[2 * i] = y[i];
        Y2[2 * i + 1] = X[2 * i] + 1;
    }
    /* X's columns differ by 1: rank 1 plus the intercept; gelsd gives the minimum-norm solution */
    circuits_probe_options o;
    circuits_probe_options_init(&o);
    o.kind = CIRCUITS_PROBE_LINEAR;
    o.l2 = 0;
    circuits_probe *p = NULL;
    CHECK_OK(circuits_probe_fit(&p, X, 5, 2, Y2, 2, &o));
    if (p) {
        float out[10];
        CHECK_OK(circuits_probe_predict(p, X, 5, out));
        double e = 0;
        for (int i = 0; i < 10; i++) e = fmax(e, fabs(out[i] - Y2[i]));
        CHECK(e < 1e-4, "exact linear data predicted with error %g", e);
        circuits_probe_score s = {.size = sizeof s};
        CHECK_OK(circuits_probe_evaluate(p, X, 5, Y2, &s));
        CHECK(fabs(s.r2 - 1) < 1e-6 && s.mse < 1e-8, "R^2 %g MSE %g", s.r2, s.mse);
        circuits_probe_free(p);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s REFERENCE_DIR MODEL_DIR [-v]\n", argv[0]);
        return 2;
    }
    cat_verbose = argc > 3 && strcmp(argv[3], "-v") == 0;
    g_model = argv[2];
    if (!mkdtemp(g_root)) return 2;
    char path[1024];
    snprintf(path, sizeof path, "%s/probes.safetensors", argv[1]);
    if (cx_st_open_file(&ref, path)) {
        fprintf(stderr, "%s: %s\n", path, circuits_last_error());
        return 2;
    }
    snprintf(path, sizeof path, "%s/probes.json", argv[1]);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) {
        fprintf(stderr, "%s: %s\n", path, err.text);
        return 2;
    }
    json_t *cases = json_object_get(j, "cases");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) check_case(c);
    CHECK(json_array_size(cases) >= 10, "%zu cases", json_array_size(cases));
    printf("%zu sklearn cases: worst coefficient error %.3g (of max |coef|, |b|), prediction %.3g, score %.3g\n",
           json_array_size(cases), worst_coef, worst_pred, worst_score);
    json_decref(j);
    small_cases();
    check_monitor();
    bad_fits();
    bad_files();
    cx_st_close(ref);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", g_root);
    return tu_finish("test_probe");
}
