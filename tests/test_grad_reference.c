/* Gradients against PyTorch autograd through TransformerLens (tests/reference/generate_grads.py,
 * README "Gradients"): for every reference case, loaded as test_reference.c loads it (unprocessed),
 * circuits_context_backward's gradient at every hook point (mean loss, logit difference), every
 * weight gradient, a head zeroed by a forward hook, a backward hook halving the gradient, a
 * left-padded loss, use_split_qkv_input (ln1's per-input firings) and the processed model (the
 * default load: fold_ln, centring, value-bias folding), each tensor held to
 * max |got - ref| <= 1e-4 * max(max |ref|, FLOOR).
 * Usage: test_grad_reference CASES_DIR GRADS_DIR [CASE ...]. Without CASE: every case directory
 * in CASES_DIR, each of which must have its reference (a case without one fails). Prints a table
 * of the worst relative errors (each case in a child process, so that one crash fails only its case). */
#include "testutil.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/io/safetensors.h"

#define TOL 1e-4
/* Below this gradient scale the tolerance stops shrinking (absolute 1e-7). Gradients that are zero
 * in exact arithmetic (b_K's without rotary: softmax ignores a shift of a query's scores) come out
 * of fp32 as rounding noise, up to 2.3e-8 in TransformerLens's own references against fp64
 * (manifest "fp32_vs_fp64"). The only other gradients below it are in the three shared GPT-2
 * checkpoints with near-uniform attention; the test prints how they fare against their own scale. */
#define FLOOR 1e-3
#define MAX_REPORTS 40 /* failing tensors printed per case (all are counted) */

enum { S_LOSS, S_DIFF, S_WEIGHT, S_ZERO, S_HALVE, S_PAD, S_SPLIT, S_PROC, S_VALUE, N_SECTIONS };
static const char *section_name[N_SECTIONS] = {"loss", "logit_diff", "wgrad", "zero_head", "halve_grad", "pad",
                                               "split_qkv", "processed", "values"};

typedef struct stats {
    double worst[N_SECTIONS]; /* max relative error; NAN: section not run for the case */
    char where[N_SECTIONS][240];
    double worst_scaled;      /* the same over tensors whose scale is at least FLOOR */
    double worst_own_small;   /* max |C - TL| / max |TL| over the tensors below FLOOR but b_K's (informative) */
    size_t n_small;
    size_t n_tensors, n_failed, n_nan_skipped;
} stats;

static cx_st_set *ref;
static json_t *info; /* the case's manifest entry */
static stats st;

static void note(int s, double rel, const char *what)
{
    if (isnan(st.worst[s])) st.worst[s] = 0.0;
    if (rel > st.worst[s] || isnan(rel)) {
        st.worst[s] = isnan(rel) ? INFINITY : rel;
        snprintf(st.where[s], sizeof st.where[s], "%s", what);
    }
}

static const char *case_name;

static void fail(const char *fmt, ...)
{
    st.n_failed++;
    tu_failures++;
    if (st.n_failed <= MAX_REPORTS) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "FAIL %s: ", case_name);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
}

static bool omitted(const char *key)
{
    json_t *o = json_object_get(info, "omitted");
    for (size_t i = 0; i < json_array_size(o); i++)
        if (strcmp(json_string_value(json_array_get(o, i)), key) == 0) return true;
    return false;
}

/* got (any strides) against the reference tensor `key`; NaN reference elements (TransformerLens's
 * gradient at a padded query's scores: softmax over no key) are not compared, only counted. */
static void compare(int s, const char *key, const circuits_tensor *got)
{
    tu_checks++;
    st.n_tensors++;
    const cx_st_tensor *e = cx_st_find(ref, key);
    if (!e) {
        if (omitted(key)) return; /* listed as too large to store (manifest "omitted") */
        fail("%s: no reference", key);
        return;
    }
    bool same = e->ndim == got->ndim;
    for (int d = 0; same && d < got->ndim; d++) same = e->shape[d] == got->shape[d];
    if (!same) {
        fail("%s: shape differs from the reference", key);
        return;
    }
    int64_t idx[CIRCUITS_MAX_DIMS] = {0}, at[CIRCUITS_MAX_DIMS] = {0};
    double d = 0.0, scale = 0.0;
    float at_got = 0.0f, at_ref = 0.0f;
    for (size_t i = 0; i < e->numel; i++) {
        int64_t off = 0;
        for (int k = 0; k < got->ndim; k++) off += idx[k] * got->strides[k];
        float r = cx_st_read_f32(e, i), g = got->data[off];
        if (isnan(r)) {
            st.n_nan_skipped++;
        } else {
            double dd = fabs((double)g - (double)r);
            if (isnan(dd) || isinf(dd)) dd = INFINITY;
            if (dd > d) {
                d = dd;
                memcpy(at, idx, sizeof at);
                at_got = g;
                at_ref = r;
            }
            if (fabs(r) > scale) scale = fabs(r);
        }
        for (int k = got->ndim - 1; k >= 0; k--) {
            if (++idx[k] < got->shape[k]) break;
            idx[k] = 0;
        }
    }
    double rel = d / fmax(scale, FLOOR);
    note(s, rel, key);
    if (scale >= FLOOR && !(rel <= st.worst_scaled)) st.worst_scaled = rel;
    size_t kl = strlen(key);
    if (scale < FLOOR && !(kl >= 3 && strcmp(key + kl - 3, "b_K") == 0)) {
        st.n_small++;
        double own = scale > 0 ? d / scale : (d > 0 ? INFINITY : 0.0);
        if (!(own <= st.worst_own_small)) st.worst_own_small = own;
    }
    if (!(rel <= TOL)) {
        char where[96] = "";
        for (int k = 0, o = 0; k < got->ndim && o < (int)sizeof where - 24; k++)
            o += snprintf(where + o, sizeof where - (size_t)o, k ? ", %lld" : "%lld", (long long)at[k]);
        fail("%s: max-abs diff %.3g at [%s] (got %.6g, reference %.6g), reference scale %.3g, relative %.3g", key, d,
             where, at_got, at_ref, scale, rel);
    }
}

static void compare_value(const char *key, float got)
{
    const cx_st_tensor *e = cx_st_find(ref, key);
    if (!e) {
        fail("%s: no reference", key);
        return;
    }
    tu_checks++;
    double r = cx_st_read_f32(e, 0), d = fabs((double)got - r), rel = d / fmax(fabs(r), FLOOR);
    note(S_VALUE, rel, key);
    if (!(rel <= TOL)) fail("%s: got %.7g, reference %.7g", key, got, r);
}

static const cx_st_tensor *need(const char *key)
{
    const cx_st_tensor *t = cx_st_find(ref, key);
    if (!t) {
        fprintf(stderr, "reference lacks %s\n", key);
        exit(2);
    }
    return t;
}

static int32_t *ints(const char *key)
{
    const cx_st_tensor *t = need(key);
    if (t->dtype != CX_DT_I32) exit(2);
    int32_t *p = malloc(t->numel * sizeof *p);
    memcpy(p, t->data, t->numel * sizeof *p);
    return p;
}

/* The gradient of every point in `points` (a JSON array of names) against "<prefix><name>": cache
 * entries "<name>_grad" (suffix "_grad"), or "<name>" (suffix "": the weight gradients). */
static void compare_points(int s, const char *prefix, json_t *points, const circuits_cache *cache, const char *suffix)
{
    for (size_t i = 0; i < json_array_size(points); i++) {
        const char *name = json_string_value(json_array_get(points, i));
        char gname[200], key[240];
        snprintf(gname, sizeof gname, "%s%s", name, suffix);
        snprintf(key, sizeof key, "%s%s", prefix, name);
        circuits_tensor t;
        if (circuits_cache_get(cache, gname, &t) != CIRCUITS_OK) {
            st.n_tensors++;
            fail("%s: not in the cache", gname);
            continue;
        }
        compare(s, key, &t);
    }
}

/* Every weight the model has, under the name circuits_model_weight_at gives, and no other. */
static void compare_weights(int s, const char *prefix, json_t *weights, const circuits_model *model,
                            const circuits_cache *wg)
{
    compare_points(s, prefix, weights, wg, "");
    CHECK(circuits_cache_count(wg) == json_array_size(weights), "%s: %zu weight gradients, TransformerLens has %zu",
          case_name, circuits_cache_count(wg), json_array_size(weights));
    CHECK(circuits_model_weight_count(model) == json_array_size(weights), "%s: %zu weights, TransformerLens has %zu",
          case_name, circuits_model_weight_count(model), json_array_size(weights));
    for (size_t i = 0; i < circuits_model_weight_count(model); i++) {
        circuits_tensor w;
        circuits_model_weight_at(model, i, &w);
        char key[240];
        snprintf(key, sizeof key, "%s%s", prefix, w.name);
        CHECK(cx_st_find(ref, key) || omitted(key), "%s: weight %s has no TransformerLens gradient", case_name, w.name);
    }
}

/* ---- the edits ---- */
static int zero_head(const circuits_tensor *z, void *u)
{
    int h = *(const int *)u; /* z [batch, pos, head, d_head] */
    for (int64_t b = 0; b < z->shape[0]; b++)
        for (int64_t p = 0; p < z->shape[1]; p++)
            for (int64_t d = 0; d < z->shape[3]; d++)
                z->data[b * z->strides[0] + p * z->strides[1] + h * z->strides[2] + d * z->strides[3]] = 0.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

static int halve(const circuits_tensor *t, void *u)
{
    (void)u; /* a resid gradient [batch, pos, d_model] */
    for (int64_t a = 0; a < t->shape[0]; a++)
        for (int64_t b = 0; b < t->shape[1]; b++)
            for (int64_t c = 0; c < t->shape[2]; c++) t->data[a * t->strides[0] + b * t->strides[1] + c * t->strides[2]] *= 0.5f;
    return CIRCUITS_HOOK_CONTINUE;
}

/* A backward hook keeping a copy of each call's gradient (ln1's per-input firings under
 * use_split_qkv_input), in call order. */
typedef struct firings {
    int n;
    circuits_tensor t[3];
    float *data[3];
} firings;

static int record(const circuits_tensor *g, void *u)
{
    firings *f = u;
    if (f->n >= 3) return -1; /* more firings than TransformerLens's three: CIRCUITS_E_CALLBACK */
    size_t numel = 1;
    for (int d = 0; d < g->ndim; d++) numel *= (size_t)g->shape[d];
    circuits_tensor *t = &f->t[f->n];
    *t = *g;
    f->data[f->n] = t->data = malloc(numel * sizeof(float));
    if (!t->data) return -1;
    int64_t idx[CIRCUITS_MAX_DIMS] = {0}, stride = 1;
    for (int d = g->ndim - 1; d >= 0; d--) { /* copied contiguous */
        t->strides[d] = stride;
        stride *= g->shape[d];
    }
    for (size_t i = 0; i < numel; i++) {
        int64_t off = 0;
        for (int d = 0; d < g->ndim; d++) off += idx[d] * g->strides[d];
        t->data[i] = g->data[off];
        for (int d = g->ndim - 1; d >= 0; d--) {
            if (++idx[d] < g->shape[d]) break;
            idx[d] = 0;
        }
    }
    f->n++;
    return CIRCUITS_HOOK_CONTINUE;
}

/* One gradient run; a failed call counts as one failure of the section and leaves the caches empty. */
static bool backward(circuits_context *ctx, const circuits_backward_options *bo, const int32_t *tokens, int64_t B,
                     int64_t T, const circuits_metric *m, float *value, circuits_cache *cache, circuits_cache *wg,
                     const char *what)
{
    int rc = circuits_context_backward(ctx, bo, tokens, B, T, m, value, NULL, cache, wg);
    tu_checks++;
    if (rc != CIRCUITS_OK) {
        st.n_failed++;
        tu_failures++;
        fprintf(stderr, "FAIL %s: circuits_context_backward -> %d (%s)\n", what, rc, circuits_last_error());
        return false;
    }
    return true;
}

static void run_case(const char *cases_dir, const char *grads_dir, const char *name, json_t *manifest)
{
    memset(&st, 0, sizeof st);
    case_name = name;
    for (int s = 0; s < N_SECTIONS; s++) st.worst[s] = NAN;
    char path[4096];
    info = json_object_get(json_object_get(manifest, "cases"), name);
    snprintf(path, sizeof path, "%s/%s.safetensors", grads_dir, name);
    if (!info || cx_st_open_file(&ref, path)) {
        st.n_failed++;
        tu_failures++;
        fprintf(stderr, "FAIL %s: no gradient reference (%s, manifest entry %s)\n", name, path, info ? "present" : "missing");
        ref = NULL;
        return;
    }
    snprintf(path, sizeof path, "%s/%s/case.json", cases_dir, name);
    json_t *cj = json_load_file(path, 0, NULL);
    if (!cj) exit(2);
    json_t *hooks = json_object_get(cj, "hook_names_in_order");

    circuits_load_options raw;
    circuits_load_options_init(&raw);
    raw.fold_ln = raw.center_writing_weights = raw.center_unembed = raw.fold_value_biases = 0;
    circuits_model *model = NULL;
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL, *wg = NULL;
    snprintf(path, sizeof path, "%s/%s", cases_dir, name);
    CHECK_OK(circuits_model_load(&model, path, &raw));
    circuits_context_options copt;
    circuits_context_options_init(&copt);
    copt.use_attn_result = json_is_true(json_object_get(cj, "use_attn_result"));
    if (model) CHECK_OK(circuits_context_create(&ctx, model, &copt));
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_cache_create(&wg));
    if (!ctx || !cache || !wg) goto out;

    const cx_st_tensor *tt = need("tokens");
    int64_t B = tt->shape[0], T = tt->shape[1];
    int32_t *tokens = ints("tokens"), *answer = ints("answer"), *wrong = ints("wrong");
    float value = 0.0f;
    circuits_backward_options bo;

    /* (a) the mean next-token loss: every hook point and every weight */
    circuits_metric loss;
    circuits_metric_init(&loss);
    loss.kind = CIRCUITS_METRIC_LOSS;
    loss.tokens = tokens;
    circuits_backward_options_init(&bo);
    bo.cache_activations = 0;
    bo.weight_grads = 1;
    if (backward(ctx, &bo, tokens, B, T, &loss, &value, cache, wg, "loss")) {
        compare_value("loss:value", value);
        compare_points(S_LOSS, "loss:grad:", hooks, cache, "_grad");
        CHECK(circuits_cache_count(cache) == json_array_size(hooks), "%s: %zu gradients cached, %zu hook points",
              name, circuits_cache_count(cache), json_array_size(hooks));
        compare_weights(S_WEIGHT, "loss:wgrad:", json_object_get(info, "weights"), model, wg);
    }
    circuits_cache_free(wg);
    wg = NULL;

    /* (b) the logit difference at the last position, mean over the batch */
    circuits_metric diff;
    circuits_metric_init(&diff);
    diff.kind = CIRCUITS_METRIC_LOGIT_DIFF;
    diff.answer = answer;
    diff.wrong = wrong;
    circuits_backward_options_init(&bo);
    bo.cache_activations = 0;
    if (backward(ctx, &bo, tokens, B, T, &diff, &value, cache, NULL, "logit_diff")) {
        compare_value("logit_diff:value", value);
        compare_points(S_DIFF, "logit_diff:grad:", hooks, cache, "_grad");
    }

    /* (c) a head's z zeroed in place by a forward hook (CIRCUITS_EDIT_GRAD_REPLACE: no gradient
     * upstream of the zeros, as PyTorch's act[...] = 0) */
    json_t *zh = json_object_get(info, "zero_head");
    int head = (int)json_integer_value(json_object_get(zh, "head"));
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_hook(ctx, json_string_value(json_object_get(zh, "hook")), zero_head, &head, &id));
    circuits_backward_options_init(&bo);
    bo.cache_activations = 0;
    if (backward(ctx, &bo, tokens, B, T, &loss, &value, cache, NULL, "zero_head")) {
        compare_value("zero_head:value", value);
        compare_points(S_ZERO, "zero_head:grad:", json_object_get(zh, "points"), cache, "_grad");
    }
    circuits_context_clear_hooks(ctx);

    /* (d) a backward hook halving the gradient (TransformerLens dir="bwd" returning grad * 0.5) */
    json_t *hg = json_object_get(info, "halve_grad");
    CHECK_OK(circuits_context_add_backward_hook(ctx, json_string_value(json_object_get(hg, "hook")), halve, NULL, &id));
    circuits_backward_options_init(&bo);
    bo.cache_activations = 0;
    if (backward(ctx, &bo, tokens, B, T, &loss, &value, cache, NULL, "halve_grad")) {
        compare_value("halve_grad:value", value);
        compare_points(S_HALVE, "halve_grad:grad:", json_object_get(hg, "points"), cache, "_grad");
    }
    circuits_context_clear_hooks(ctx);

    /* (e) left padding: the loss over the pairs the mask includes, every hook point */
    if (json_object_get(info, "pad")) {
        int32_t *ptok = ints("pad:tokens"), *mask = ints("pad:mask");
        circuits_run_options ro;
        circuits_run_options_init(&ro);
        ro.attention_mask = mask;
        circuits_metric pl = loss;
        pl.tokens = ptok;
        pl.attention_mask = mask;
        circuits_backward_options_init(&bo);
        bo.cache_activations = 0;
        bo.run = &ro;
        if (backward(ctx, &bo, ptok, B, T, &pl, &value, cache, NULL, "pad")) {
            compare_value("pad:value", value);
            compare_points(S_PAD, "pad:grad:", hooks, cache, "_grad");
        }
        free(ptok);
        free(mask);
    }
    /* (f) use_split_qkv_input: every hook point (q/k/v inputs [batch, pos, heads, d_model]); ln1 fires
     * once per input, each firing's backward hook call gets that input's gradient (in reverse firing
     * order: v, k, q) and the cache keeps the query's */
    json_t *split = json_object_get(info, "split");
    if (split) {
        circuits_context *sctx = NULL;
        circuits_context_options sopt = copt;
        sopt.use_split_qkv_input = 1;
        CHECK_OK(circuits_context_create(&sctx, model, &sopt));
        json_t *multi = json_object_get(split, "per_firing");
        size_t nm = json_array_size(multi);
        firings *rec = calloc(nm ? nm : 1, sizeof *rec);
        for (size_t i = 0; sctx && i < nm; i++)
            CHECK_OK(circuits_context_add_backward_hook(sctx, json_string_value(json_array_get(multi, i)), record, &rec[i],
                                                        NULL));
        circuits_backward_options_init(&bo);
        bo.cache_activations = 0;
        if (sctx && backward(sctx, &bo, tokens, B, T, &loss, &value, cache, NULL, "split_qkv")) {
            compare_value("split:value", value);
            compare_points(S_SPLIT, "split:grad:", json_object_get(split, "hooks"), cache, "_grad");
            for (size_t i = 0; i < nm; i++) {
                const char *hn = json_string_value(json_array_get(multi, i));
                CHECK(rec[i].n == 3, "%s: the backward hook at %s ran %d times, want 3 (q, k, v inputs)", name, hn, rec[i].n);
                for (int j = 0; j < rec[i].n && j < 3; j++) {
                    char key[240];
                    snprintf(key, sizeof key, "split:grad:%s#%d", hn, 2 - j);
                    compare(S_SPLIT, key, &rec[i].t[j]);
                }
            }
        }
        for (size_t i = 0; i < nm; i++)
            for (int j = 0; j < rec[i].n; j++) free(rec[i].data[j]);
        free(rec);
        circuits_context_free(sctx);
    }
    /* (g) the model processed by the default load (TransformerLens's from_pretrained): the loss's
     * gradient at every hook point and every processed weight */
    json_t *proc = json_object_get(info, "processed");
    if (proc) {
        circuits_model *pm = NULL;
        circuits_context *pctx = NULL;
        circuits_cache *pwg = NULL;
        snprintf(path, sizeof path, "%s/%s", cases_dir, name);
        CHECK_OK(circuits_model_load(&pm, path, NULL));
        if (pm) CHECK_OK(circuits_context_create(&pctx, pm, &copt));
        CHECK_OK(circuits_cache_create(&pwg));
        circuits_backward_options_init(&bo);
        bo.cache_activations = 0;
        bo.weight_grads = 1;
        if (pctx && pwg && backward(pctx, &bo, tokens, B, T, &loss, &value, cache, pwg, "processed")) {
            compare_value("processed:value", value);
            compare_points(S_PROC, "processed:grad:", json_object_get(proc, "hooks"), cache, "_grad");
            compare_weights(S_PROC, "processed:wgrad:", json_object_get(proc, "weights"), pm, pwg);
        }
        circuits_cache_free(pwg);
        circuits_context_free(pctx);
        circuits_model_free(pm);
    }
    free(tokens);
    free(answer);
    free(wrong);
out:
    circuits_cache_free(cache);
    circuits_cache_free(wg);
    circuits_context_free(ctx);
    circuits_model_free(model);
    json_decref(cj);
    cx_st_close(ref);
    ref = NULL;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CASES_DIR GRADS_DIR [CASE ...]\n", argv[0]);
        return 2;
    }
    const char *cases_dir = argv[1], *grads_dir = argv[2];
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", grads_dir);
    json_t *manifest = json_load_file(path, 0, NULL);
    if (!manifest) {
        fprintf(stderr, "cannot read %s\n", path);
        return 2;
    }
    char *names[256];
    size_t n = 0;
    if (argc > 3) {
        for (int i = 3; i < argc && n < 256; i++) names[n++] = strdup(argv[i]);
    } else { /* every case directory: one without a reference fails in run_case */
        DIR *d = opendir(cases_dir);
        if (!d) return 2;
        struct dirent *e;
        while ((e = readdir(d)) && n < 256) {
            snprintf(path, sizeof path, "%s/%s/case.json", cases_dir, e->d_name);
            FILE *f = e->d_name[0] != '.' ? fopen(path, "r") : NULL;
            if (f) {
                fclose(f);
                names[n++] = strdup(e->d_name);
            }
        }
        closedir(d);
        qsort(names, n, sizeof *names, cmp_str);
        /* and every reference names a case that exists */
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(manifest, "cases"), k, v) {
            bool found = false;
            for (size_t i = 0; i < n; i++) found = found || strcmp(names[i], k) == 0;
            CHECK(found, "grads/manifest.json has case %s, cases/ does not", k);
        }
    }
    CHECK(n > 0, "no cases");

    printf("max relative error per case and section: max|C - TL| / max(max|TL|, %.0e) over each tensor, limit %.0e;\n"
           "scale>=fl: the worst over the tensors whose scale max|TL| is at least %.0e\n", FLOOR, TOL, FLOOR);
    printf("%-28s", "case");
    for (int s = 0; s < N_SECTIONS; s++) printf(" %10s", section_name[s]);
    printf(" %9s %7s %6s  worst tensor\n", "scale>=fl", "tensors", "failed");
    /* Each case runs in a child process: a case that crashes the library fails with its signal and
     * the others still run. The children report through shared memory (the parent has no threads
     * when it forks: it never calls the library). */
    typedef struct result { double worst, own_small; size_t n_small; int checks, failures; } result;
    result *res = mmap(NULL, sizeof *res, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (res == MAP_FAILED) return 2;
    double worst = 0.0, own_small = 0.0;
    size_t crashed = 0, n_small = 0;
    for (size_t i = 0; i < n; i++) {
        memset(res, 0, sizeof *res);
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) return 2;
        if (pid == 0) {
            tu_checks = tu_failures = 0;
            run_case(cases_dir, grads_dir, names[i], manifest);
            printf("%-28s", names[i]);
            int ws = -1;
            for (int s = 0; s < N_SECTIONS; s++) {
                if (isnan(st.worst[s])) printf(" %10s", "-");
                else printf(" %10.2e", st.worst[s]);
                if (!isnan(st.worst[s]) && (ws < 0 || st.worst[s] > st.worst[ws])) ws = s;
            }
            printf(" %9.2e %7zu %6zu  %s", st.worst_scaled, st.n_tensors, st.n_failed, ws >= 0 ? st.where[ws] : "(no run)");
            if (st.n_nan_skipped) printf(" [%zu NaN reference elements not compared]", st.n_nan_skipped);
            printf("\n");
            res->worst = ws >= 0 ? st.worst[ws] : 0.0;
            res->own_small = st.worst_own_small;
            res->n_small = st.n_small;
            res->checks = tu_checks;
            res->failures = tu_failures;
            fflush(stdout);
            fflush(stderr);
            json_decref(manifest); /* the parent's copies: a leak checker (valgrind) in the child sees none */
            for (size_t k = i; k < n; k++) free(names[k]); /* the parent frees each after its case */
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            crashed++;
            tu_failures++;
            printf("%-28s crashed (%s %d): see the messages above\n", names[i],
                   WIFSIGNALED(status) ? "signal" : "exit", WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            fprintf(stderr, "FAIL %s: the case's run crashed\n", names[i]);
        } else {
            tu_checks += res->checks;
            tu_failures += res->failures;
            if (res->worst > worst) worst = res->worst;
            if (res->own_small > own_small) own_small = res->own_small;
            n_small += res->n_small;
        }
        free(names[i]);
    }
    munmap(res, sizeof *res);
    if (crashed) printf("%zu case(s) crashed\n", crashed);
    printf("worst over every case: %.2e\n", worst);
    printf("tensors below the floor, b_K's aside: %zu, worst max|C - TL| / max|TL| %.2e (informative)\n", n_small,
           own_small);
    json_decref(manifest);
    return tu_finish("grad_reference");
}
