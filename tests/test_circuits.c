/* Weight processing and circuits against TransformerLens (tests/reference/generate_circuits.py):
 * the processed weights, logits, log-probs and hooks of from_pretrained's default processing;
 * refactor_factored_attn_matrices; FactoredMatrix eigenvalues, SVD, norms and corners of OV
 * and QK; all_composition_scores; copying scores; head detectors; induction scores.
 * Usage: test_circuits CASE_DIR */
#include "testutil.h"

#include <jansson.h>
#include <math.h>

#include "../lib/io/safetensors.h"

#define TOL_LOGITS 5e-5
#define TOL_HOOK 1e-4
#define TOL_WEIGHT 2e-5
#define TOL_SCORE 1e-5

static cx_st_set *ref, *unproc;
static double worst_weight, worst_logit, worst_hook, worst_eig, worst_comp, worst_misc;

static const cx_st_tensor *get(const char *name) { return cx_st_find(ref, name); }

static double max_diff(const float *got, const cx_st_tensor *t, int64_t got_stride_mask)
{
    (void)got_stride_mask;
    double m = 0.0;
    for (size_t i = 0; i < t->numel; i++) {
        float e = cx_st_read_f32(t, i), g = got[i];
        double d = (isinf(e) && g == e) ? 0.0 : fabs((double)g - (double)e);
        if (isnan(g) != isnan(e)) d = INFINITY;
        else if (isnan(g)) d = 0;
        if (d > m) m = d;
    }
    return m;
}

/* A weight view gathered into contiguous order. */
static float *gather(const circuits_tensor *t, size_t *n)
{
    size_t numel = 1;
    for (int i = 0; i < t->ndim; i++) numel *= (size_t)t->shape[i];
    float *out = malloc(numel * sizeof *out);
    int64_t sh[4] = {1, 1, 1, 1}, st[4] = {0, 0, 0, 0};
    for (int i = 0; i < t->ndim; i++) {
        sh[4 - t->ndim + i] = t->shape[i];
        st[4 - t->ndim + i] = t->strides[i];
    }
    size_t k = 0;
    for (int64_t a = 0; a < sh[0]; a++)
        for (int64_t b = 0; b < sh[1]; b++)
            for (int64_t c = 0; c < sh[2]; c++)
                for (int64_t d = 0; d < sh[3]; d++) out[k++] = t->data[a * st[0] + b * st[1] + c * st[2] + d * st[3]];
    *n = numel;
    return out;
}

/* Complex eigenvalues compared as multisets: greedy nearest matching. */
static double eig_diff(const float *re, const float *im, const cx_st_tensor *ere, const cx_st_tensor *eim, size_t off,
                       size_t n)
{
    double worst = 0;
    char *used = calloc(n, 1);
    for (size_t i = 0; i < n; i++) {
        double best = INFINITY;
        size_t bj = 0;
        for (size_t j = 0; j < n; j++) {
            if (used[j]) continue;
            double d = hypot(re[i] - cx_st_read_f32(ere, off + j), im[i] - cx_st_read_f32(eim, off + j));
            if (d < best) best = d, bj = j;
        }
        used[bj] = 1;
        /* relative to the eigenvalue's size: eigenvalues of BA carry the factors' scale */
        double scale = fmax(1.0, hypot(re[i], im[i]));
        if (best / scale > worst) worst = best / scale;
    }
    free(used);
    return worst;
}

static void check_tensor(const char *what, const float *got, const char *key, double tol, double *worst)
{
    const cx_st_tensor *t = get(key);
    CHECK(t != NULL, "reference has no '%s'", key);
    if (!t) return;
    double d = max_diff(got, t, 0);
    CHECK(d <= tol, "%s: max-abs diff %.3g (tol %.1g)", what, d, tol);
    if (d > *worst) *worst = d;
}

static circuits_model *load(const char *dir, int refactor)
{
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.refactor_factored_attn_matrices = refactor;
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, &o));
    return m;
}

static void check_weights_and_forward(const char *dir, json_t *cj)
{
    circuits_model *m = load(dir, 0);
    if (!m) return;
    circuits_config cfg = {.size = sizeof cfg};
    circuits_model_config(m, &cfg);
    const cx_st_tensor *flags = get("flags");
    uint32_t want = 0;
    for (int i = 0; i < 5; i++)
        if (((const int32_t *)(const void *)flags->data)[i]) want |= 1u << i;
    CHECK(cfg.processing == want, "processing flags 0x%x, TransformerLens applied 0x%x", cfg.processing, want);
    json_t *proc = json_object_get(cj, "processed");
    const char *nt = json_string_value(json_object_get(proc, "normalization_type"));
    int want_nt = !nt                    ? CIRCUITS_NORM_NONE
                  : !strcmp(nt, "LN")     ? CIRCUITS_NORM_LN
                  : !strcmp(nt, "LNPre")  ? CIRCUITS_NORM_LNPRE
                  : !strcmp(nt, "RMS")    ? CIRCUITS_NORM_RMS
                  : !strcmp(nt, "RMSPre") ? CIRCUITS_NORM_RMSPRE
                                          : -1;
    CHECK(cfg.normalization_type == want_nt, "normalization after processing %d, TL %s", cfg.normalization_type,
          nt ? nt : "None");

    /* every processed weight, and no others */
    size_t n_ref = 0;
    for (size_t i = 0; i < ref->n_tensors; i++)
        if (!strncmp(ref->tensors[i].name, "weight:", 7)) n_ref++;
    CHECK(circuits_model_weight_count(m) == n_ref, "%zu weights after processing, TransformerLens has %zu",
          circuits_model_weight_count(m), n_ref);
    for (size_t i = 0; i < circuits_model_weight_count(m); i++) {
        circuits_tensor t;
        circuits_model_weight_at(m, i, &t);
        char key[128];
        snprintf(key, sizeof key, "weight:%s", t.name);
        size_t n;
        float *g = gather(&t, &n);
        check_tensor(t.name, g, key, TOL_WEIGHT, &worst_weight);
        free(g);
    }

    /* forward on the processed weights */
    const cx_st_tensor *tok = cx_st_find(unproc, "tokens");
    int64_t B = tok->shape[0], T = tok->shape[1], V = cfg.d_vocab_out;
    const int32_t *tokens = (const int32_t *)(const void *)tok->data;
    float *logits = malloc((size_t)(B * T * V) * sizeof *logits), loss, *ptl = malloc((size_t)(B * (T - 1)) * sizeof *ptl);
    circuits_context *ctx = NULL;
    circuits_context_options co;
    circuits_context_options_init(&co);
    co.use_attn_result = json_is_true(json_object_get(cj, "use_attn_result"));
    CHECK_OK(circuits_context_create(&ctx, m, &co));
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, &loss, ptl));
    if (get("logits")) check_tensor("logits", logits, "logits", TOL_LOGITS, &worst_logit);
    /* log-probs, and the unprocessed model's log-probs: processing changes logits only by a
     * per-position constant */
    float *lp = malloc((size_t)(B * T * V) * sizeof *lp), *lp0 = malloc((size_t)(B * T * V) * sizeof *lp0);
    const cx_st_tensor *l0 = cx_st_find(unproc, "logits");
    for (int64_t r = 0; r < B * T; r++) {
        double mx = -INFINITY, mx0 = -INFINITY, s = 0, s0 = 0;
        for (int64_t v = 0; v < V; v++) {
            mx = fmax(mx, logits[r * V + v]);
            mx0 = fmax(mx0, cx_st_read_f32(l0, (size_t)(r * V + v)));
        }
        for (int64_t v = 0; v < V; v++) {
            s += exp(logits[r * V + v] - mx);
            s0 += exp(cx_st_read_f32(l0, (size_t)(r * V + v)) - mx0);
        }
        for (int64_t v = 0; v < V; v++) {
            lp[r * V + v] = (float)(logits[r * V + v] - mx - log(s));
            lp0[r * V + v] = (float)(cx_st_read_f32(l0, (size_t)(r * V + v)) - mx0 - log(s0));
        }
    }
    if (get("log_probs")) check_tensor("log_probs", lp, "log_probs", TOL_LOGITS, &worst_logit);
    double inv = 0;
    for (size_t i = 0; i < (size_t)(B * T * V); i++) inv = fmax(inv, fabs(lp[i] - lp0[i]));
    CHECK(inv <= 1e-4, "processing changed log-probs by %.3g (must be invariant)", inv);
    check_tensor("loss", &loss, "loss", 4e-5, &worst_logit);
    check_tensor("per_token_loss", ptl, "per_token_loss", 4e-5, &worst_logit);
    for (size_t i = 0; i < circuits_cache_count(cache); i++) {
        circuits_tensor t;
        circuits_cache_at(cache, i, &t);
        char key[160];
        snprintf(key, sizeof key, "hook:%s", t.name);
        if (!get(key)) continue;
        check_tensor(t.name, t.data, key, TOL_HOOK, &worst_hook);
    }
    circuits_cache_free(cache);

    /* refactor_factored_attn_matrices: same function */
    if (get("refactor:logits")) {
        circuits_model *mr = load(dir, 1);
        circuits_context *cr = NULL;
        if (mr) CHECK_OK(circuits_context_create(&cr, mr, &co));
        if (cr) {
            CHECK_OK(circuits_context_forward(cr, tokens, B, T, logits, NULL, NULL));
            check_tensor("refactored logits", logits, "refactor:logits", TOL_LOGITS, &worst_logit);
            circuits_config rc = {.size = sizeof rc};
            circuits_model_config(mr, &rc);
            CHECK(rc.processing & CIRCUITS_PROCESSED_REFACTOR_FACTORED_ATTN_MATRICES, "refactor flag reported");
        }
        circuits_context_free(cr);
        circuits_model_free(mr);
    }
    free(lp);
    free(lp0);
    free(logits);
    free(ptl);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

static void check_circuits(const char *dir)
{
    circuits_model *m = load(dir, 0);
    if (!m) return;
    circuits_config c = {.size = sizeof c};
    circuits_model_config(m, &c);
    int64_t L = c.n_layers, H = c.n_heads, D = c.d_model, dh = c.d_head, LH = L * H;
    float *re = malloc((size_t)(LH * dh) * sizeof *re), *im = malloc((size_t)(LH * dh) * sizeof *im);
    float *nrm = malloc((size_t)LH * sizeof *nrm), *S = malloc((size_t)(LH * dh) * sizeof *S);
    float *corner = malloc((size_t)(LH * 9) * sizeof *corner);
    const char *names[2] = {"ov", "qk"};
    for (int w = 0; w < 2; w++) {
        circuits_factored *f = NULL;
        CHECK_OK(w ? circuits_model_qk(m, -1, -1, &f) : circuits_model_ov(m, -1, -1, &f));
        if (!f) continue;
        int64_t shape[4], mdim;
        int32_t nd;
        CHECK_OK(circuits_factored_shape(f, shape, &nd, &mdim));
        CHECK(nd == 4 && shape[0] == L && shape[1] == H && shape[2] == D && shape[3] == D && mdim == dh,
              "%s shape [L, H, D, D], inner d_head", names[w]);
        char kr[32], ki[32];
        snprintf(kr, sizeof kr, "%s_eig_re", names[w]);
        snprintf(ki, sizeof ki, "%s_eig_im", names[w]);
        CHECK_OK(circuits_factored_eigenvalues(f, re, im));
        for (int64_t k = 0; k < LH; k++) {
            double d = eig_diff(re + k * dh, im + k * dh, get(kr), get(ki), (size_t)(k * dh), (size_t)dh);
            CHECK(d <= 1e-4, "%s eigenvalues of head %lld differ by %.3g (relative)", names[w], (long long)k, d);
            worst_eig = fmax(worst_eig, d);
        }
        snprintf(kr, sizeof kr, "%s_norm", names[w]);
        CHECK_OK(circuits_factored_norm(f, nrm));
        /* norms are as large as the weights: compare relatively */
        for (int64_t k = 0; k < LH; k++) {
            double e = cx_st_read_f32(get(kr), (size_t)k), d = fabs(nrm[k] - e) / fmax(1.0, fabs(e));
            CHECK(d <= 1e-5, "%s norm of head %lld: %g vs %g", names[w], (long long)k, nrm[k], e);
            worst_misc = fmax(worst_misc, d);
        }
        snprintf(kr, sizeof kr, "%s_corner", names[w]);
        const cx_st_tensor *ec = get(kr);
        if (D >= 3 && ec) {
            /* TransformerLens's get_corner also cuts the leading dims to k: compare those heads */
            CHECK_OK(circuits_factored_corner(f, 3, corner));
            int64_t el = ec->shape[0], eh = ec->shape[1];
            double d = 0;
            for (int64_t a = 0; a < el; a++)
                for (int64_t b = 0; b < eh; b++)
                    for (int64_t i = 0; i < 9; i++)
                        d = fmax(d, fabs(corner[(a * H + b) * 9 + i] - cx_st_read_f32(ec, (size_t)((a * eh + b) * 9 + i))));
            CHECK(d <= 1e-5, "%s corner: max-abs diff %.3g", names[w], d);
            worst_misc = fmax(worst_misc, d);
        }
        if (w == 0) {
            float *U = malloc((size_t)(LH * D * dh) * sizeof *U), *Vv = malloc((size_t)(LH * D * dh) * sizeof *Vv);
            CHECK_OK(circuits_factored_svd(f, U, S, Vv));
            for (int64_t k = 0; k < LH * dh; k++) {
                double e = cx_st_read_f32(get("ov_S"), (size_t)k), d = fabs(S[k] - e) / fmax(1.0, fabs(e));
                CHECK(d <= 1e-5, "OV singular value %lld: %g vs %g", (long long)k, S[k], e);
                worst_misc = fmax(worst_misc, d);
            }
            /* singular vectors of layer 0 agree up to sign (where singular values are distinct) */
            const cx_st_tensor *U0 = get("ov_U0"), *V0 = get("ov_V0");
            for (int64_t h = 0; h < H && U0 && V0; h++)
                for (int64_t j = 0; j < dh; j++) {
                    const float *s = S + h * dh;
                    bool distinct = (j == 0 || s[j - 1] - s[j] > 1e-3 * s[0]) && (j + 1 == dh || s[j] - s[j + 1] > 1e-3 * s[0]);
                    if (!distinct || s[j] < 1e-4 * s[0]) continue;
                    double du = 0, dv = 0;
                    for (int64_t i = 0; i < D; i++) {
                        du += U[(h * D + i) * dh + j] * cx_st_read_f32(U0, (size_t)((h * D + i) * dh + j));
                        dv += Vv[(h * D + i) * dh + j] * cx_st_read_f32(V0, (size_t)((h * D + i) * dh + j));
                    }
                    CHECK(fabs(fabs(du) - 1) < 1e-3 && fabs(fabs(dv) - 1) < 1e-3 && du * dv > 0,
                          "OV singular vectors of L0H%lld #%lld: |u.u'| = %g, |v.v'| = %g", (long long)h, (long long)j, du,
                          dv);
                }
            free(U);
            free(Vv);
        }
        circuits_factored_free(f);
    }
    if (L >= 2 && get("comp_Q")) {
        float *sc = malloc((size_t)(LH * LH) * sizeof *sc);
        const char *keys[3] = {"comp_Q", "comp_K", "comp_V"};
        for (int mode = 0; mode < 3; mode++) {
            CHECK_OK(circuits_model_composition_scores(m, mode, sc));
            check_tensor(keys[mode], sc, keys[mode], TOL_SCORE, &worst_comp);
        }
        free(sc);
    }
    float *cs = malloc((size_t)LH * sizeof *cs);
    CHECK_OK(circuits_model_copying_scores(m, 0, cs));
    check_tensor("copying score (OV)", cs, "copying_ov", 1e-4, &worst_misc);
    if (get("copying_full_ov")) {
        CHECK_OK(circuits_model_copying_scores(m, 1, cs));
        check_tensor("copying score (full OV)", cs, "copying_full_ov", 1e-4, &worst_misc);
    }
    if (get("full_ov_eig_re")) {
        circuits_factored *f = NULL;
        CHECK_OK(circuits_model_full_ov(m, -1, -1, &f));
        if (f) {
            CHECK_OK(circuits_factored_eigenvalues(f, re, im));
            for (int64_t k = 0; k < LH; k++) {
                double d = eig_diff(re + k * dh, im + k * dh, get("full_ov_eig_re"), get("full_ov_eig_im"),
                                    (size_t)(k * dh), (size_t)dh);
                CHECK(d <= 1e-4, "full OV eigenvalues of head %lld differ by %.3g (relative)", (long long)k, d);
                worst_eig = fmax(worst_eig, d);
            }
        }
        circuits_factored_free(f);
    }
    free(cs);
    free(re);
    free(im);
    free(nrm);
    free(S);
    free(corner);
    circuits_model_free(m);
}

static void check_detectors(const char *dir)
{
    circuits_model *m = load(dir, 0);
    circuits_context *ctx = NULL;
    if (!m || circuits_context_create(&ctx, m, NULL)) return;
    circuits_config c = {.size = sizeof c};
    circuits_model_config(m, &c);
    size_t LH = (size_t)(c.n_layers * c.n_heads);
    float *sc = malloc(LH * sizeof *sc);
    const cx_st_tensor *td = get("tokens_det");
    if (td) {
        const int32_t *tok = (const int32_t *)(const void *)td->data;
        const char *kinds[3] = {"previous_token_head", "duplicate_token_head", "induction_head"};
        for (int k = 0; k < 3; k++)
            for (int meas = 0; meas < 2; meas++) {
                circuits_detect_options o;
                circuits_detect_options_init(&o);
                o.error_measure = meas;
                CHECK_OK(circuits_context_detect_heads(ctx, tok, 1, td->shape[0], k, NULL, &o, sc));
                char key[96];
                snprintf(key, sizeof key, "detect:%s:%s%s", kinds[k], meas ? "abs" : "mul", meas ? ":unrounded" : "");
                check_tensor(key, sc, key, 1e-5, &worst_misc);
                if (meas) { /* TransformerLens rounds abs scores to 3 places */
                    snprintf(key, sizeof key, "detect:%s:abs", kinds[k]);
                    for (size_t i = 0; i < LH; i++) sc[i] = roundf(sc[i] * 1000.0f) / 1000.0f;
                    check_tensor(key, sc, key, 1.01e-3, &worst_misc);
                }
            }
        circuits_detect_options o;
        circuits_detect_options_init(&o);
        o.exclude_bos = 1;
        CHECK_OK(circuits_context_detect_heads(ctx, tok, 1, td->shape[0], CIRCUITS_HEAD_INDUCTION, NULL, &o, sc));
        check_tensor("induction, exclude_bos", sc, "detect:induction_head:mul:exclude_bos", 1e-5, &worst_misc);
        /* a custom pattern equal to the previous-token pattern gives the same scores */
        int64_t T = td->shape[0];
        float *pat = calloc((size_t)(T * T), sizeof *pat), *sc2 = malloc(LH * sizeof *sc2);
        for (int64_t i = 1; i < T; i++) pat[i * T + i - 1] = 1.0f;
        CHECK_OK(circuits_context_detect_heads(ctx, tok, 1, T, CIRCUITS_HEAD_CUSTOM, pat, NULL, sc2));
        CHECK_OK(circuits_context_detect_heads(ctx, tok, 1, T, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, NULL, sc));
        CHECK(memcmp(sc, sc2, LH * sizeof *sc) == 0, "custom previous-token pattern equals the built-in one");
        pat[0 * T + 1] = 1.0f; /* not lower triangular */
        CHECK_FAILS(circuits_context_detect_heads(ctx, tok, 1, T, CIRCUITS_HEAD_CUSTOM, pat, NULL, sc), CIRCUITS_E_SHAPE,
                    "lower triangular");
        free(pat);
        free(sc2);
    }
    const char *rk[2] = {"rep_tokens", "rep_tokens_bos"}, *sk[2] = {"induction_score", "induction_score_bos"};
    for (int v = 0; v < 2; v++) {
        const cx_st_tensor *rt = get(rk[v]);
        if (!rt) continue;
        int64_t B = rt->shape[0], T = rt->shape[1], L = T / 2;
        float lf, lr;
        CHECK_OK(circuits_context_induction_scores(ctx, (const int32_t *)(const void *)rt->data, B, T, L, sc, &lf, &lr));
        check_tensor(sk[v], sc, sk[v], 1e-5, &worst_misc);
        if (v == 0 && get("rep_per_token_loss")) {
            /* the two halves' losses are means of TransformerLens's per-token loss */
            const cx_st_tensor *p = get("rep_per_token_loss");
            double f = 0, s = 0;
            for (int64_t b = 0; b < B; b++)
                for (int64_t k = 1; k < L; k++) {
                    f += cx_st_read_f32(p, (size_t)(b * (T - 1) + k - 1));
                    s += cx_st_read_f32(p, (size_t)(b * (T - 1) + L + k - 1));
                }
            CHECK(fabs(lf - f / (double)(B * (L - 1))) < 4e-5 && fabs(lr - s / (double)(B * (L - 1))) < 4e-5,
                  "loss on the halves: %g, %g vs %g, %g", lf, lr, f / (double)(B * (L - 1)), s / (double)(B * (L - 1)));
        }
    }
    free(sc);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    const char *dir = argv[1];
    char path[4096];
    snprintf(path, sizeof path, "%s/processed.safetensors", dir);
    if (cx_st_open_file(&ref, path)) {
        fprintf(stderr, "%s\n", circuits_last_error());
        return 2;
    }
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    if (cx_st_open_file(&unproc, path)) return 2;
    snprintf(path, sizeof path, "%s/case.json", dir);
    json_t *cj = json_load_file(path, 0, NULL);
    if (!cj) return 2;
    check_weights_and_forward(dir, cj);
    check_circuits(dir);
    check_detectors(dir);
    printf("%-26s weights %.1e  logits %.1e  hooks %.1e  eig %.1e  composition %.1e  other %.1e\n",
           json_string_value(json_object_get(cj, "name")), worst_weight, worst_logit, worst_hook, worst_eig, worst_comp,
           worst_misc);
    json_decref(cj);
    cx_st_close(ref);
    cx_st_close(unproc);
    return tu_finish(dir);
}
