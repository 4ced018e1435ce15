/* Job kinds patch_sweep and ablation_sweep (lib/job/kind_sweep.c, docs/jobs.md): on the bundled
 * attention-only model with an induction dataset (each clean row six distinct letters repeated, its
 * corrupted row the same second half after six other letters), every row's grid equals the
 * public function on that row alone, bit for bit (circuits_context_activation_patch on the
 * clean row's cache; circuits_context_run_ablated on one head, for every head, though the kind
 * batches a block's heads), and so do its clean / corrupted /
 * baseline metrics; the reduction's mean and normalised grids equal this test's own computation;
 * the output file is byte-identical for every unit size and thread count. Then through the
 * engine (circuits_job_create / run / merge): the same tensors as the units run directly, and the
 * same output bytes for 1 or 2 threads, batch sizes 1 / 3 / 8 and two shards merged; a mean
 * ablation reading a mean-activations job's output. And the refusals (docs/errors.md, "Patching
 * and ablation sweeps (jobs)"). */
#define TESTUTIL_API_HELPERS
#include "catalogue.h"
#include "files.h"
#include "job.h"
#include "pool.h"
#include "st_save.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

enum { ROWS = 5, T = 12, HALF = 6 };

static circuits_model *M;
static circuits_config C;
static char g_root[] = "/tmp/test_job_sweeps_XXXXXX";
static const char *PROV = "{\"test\":\"sweeps\"}";

/* ---- the dataset: a circuits_dataset made by hand (the kinds read only its struct) ---- */

typedef struct test_ds {
    circuits_dataset ds;
    cx_ds_column cols[5];
    int32_t tokens[ROWS * T], corrupted[ROWS * T], answer[ROWS], wrong[ROWS], position[ROWS];
} test_ds;

/* Row r: clean = A A, corrupted = B A (A, B: twelve distinct letters); read at p in 9 .. 11 (the
 * second A's letter A[p - 6]): the clean row's induction answer is the letter after A[p - 6] in
 * the first half, A[(p - 5) % 6], the wrong one the corrupted first half's there, B[(p - 5) % 6]. */
static void make_ds(test_ds *t)
{
    memset(t, 0, sizeof *t);
    uint64_t s = 12345;
    for (int r = 0; r < ROWS; r++) {
        int32_t a[HALF], b[HALF];
        bool used[26] = {false};
        for (int i = 0; i < 2 * HALF; i++) { /* 12 distinct letters: A's and B's */
            int32_t x;
            do {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                x = (int32_t)((s >> 33) % 26);
            } while (used[x]);
            used[x] = true;
            (i < HALF ? a : b)[i % HALF] = 'a' + x;
        }
        for (int i = 0; i < HALF; i++) {
            t->tokens[r * T + i] = t->tokens[r * T + HALF + i] = t->corrupted[r * T + HALF + i] = a[i];
            t->corrupted[r * T + i] = b[i];
        }
        int p = 9 + r % 3;
        t->position[r] = p;
        t->answer[r] = t->tokens[r * T + (p - 5) % HALF];
        t->wrong[r] = t->corrupted[r * T + (p - 5) % HALF];
    }
    t->ds.n_rows = ROWS;
    t->ds.pos = T;
    t->ds.cols = t->cols;
    t->cols[0] = (cx_ds_column){(char *)"tokens", t->tokens, T};
    t->cols[1] = (cx_ds_column){(char *)"corrupted", t->corrupted, T};
    t->cols[2] = (cx_ds_column){(char *)"answer", t->answer, 1};
    t->cols[3] = (cx_ds_column){(char *)"wrong", t->wrong, 1};
    t->cols[4] = (cx_ds_column){(char *)"position", t->position, 1};
    t->ds.n_cols = 5;
}

/* The test's own metric of row r (from the arrays, not the kind's code). */
static void row_metric(const test_ds *t, int32_t kind, int r, int64_t *p, circuits_metric *m)
{
    circuits_metric_init(m);
    m->kind = kind;
    m->answer = &t->answer[r];
    m->wrong = &t->wrong[r];
    *p = t->position[r];
    if (kind != CIRCUITS_METRIC_LOSS && t->ds.n_cols == 5) m->positions = p; /* else the default */
    m->tokens = &t->tokens[r * T]; /* the clean row's labels in every run */
}

static void job_init(circuits_job *job, const test_ds *t, int32_t kind, int32_t metric)
{
    memset(job, 0, sizeof *job);
    job->model = M;
    job->ds = &t->ds;
    job->o.size = sizeof job->o;
    job->o.kind = kind;
    job->o.metric_kind = metric;
    job->o.unit_rows = 2;
    job->o.batch_size = 8;
    job->o.shard_count = 1;
}

/* ---- units and the reduction through the vtable ---- */

/* Every unit of `unit_rows` rows on a fresh context each, written as the engine writes unit
 * files; then the reduction into out. */
static int run_job(const cx_job_kind *k, circuits_job *job, int64_t unit_rows, const char *tag, const char *out)
{
    int64_t n_units = (ROWS + unit_rows - 1) / unit_rows;
    char paths[ROWS][512];
    char *pp[ROWS];
    int rc = CIRCUITS_OK;
    for (int64_t u = 0; u < n_units && !rc; u++) {
        int64_t row0 = u * unit_rows, n = ROWS - row0 < unit_rows ? ROWS - row0 : unit_rows;
        circuits_context *ctx;
        if ((rc = circuits_context_create(&ctx, M, NULL))) break;
        cx_job_result res = {0};
        cx_pool_serial(true); /* as the engine runs a unit (job.c one_unit) */
        rc = k->unit(job, ctx, row0, n, &res);
        cx_pool_serial(false);
        circuits_context_free(ctx);
        snprintf(paths[u], sizeof paths[u], "%s/%s_u%lld.safetensors", g_root, tag, (long long)u);
        pp[u] = paths[u];
        if (!rc) {
            cx_st_out o[8];
            for (size_t i = 0; i < res.n; i++) {
                o[i] = (cx_st_out){.name = res.t[i].name, .dtype = res.t[i].dtype, .ndim = res.t[i].ndim,
                                   .data = res.t[i].data};
                memcpy(o[i].shape, res.t[i].shape, sizeof o[i].shape);
            }
            char unit[32];
            snprintf(unit, sizeof unit, "%lld", (long long)u);
            const char *meta[4] = {"circuits_job", PROV, "unit", unit};
            rc = cx_st_write(paths[u], o, res.n, meta, 2, "test");
        }
        cx_job_result_clear(&res);
    }
    if (rc) return rc;
    cx_job_reader r = {.prov_text = PROV, .n_units = n_units, .n_rows = ROWS, .pos = T, .unit_rows = unit_rows,
                       .unit_paths = pp};
    rc = k->reduce(&r, out);
    for (int64_t u = 0; u < n_units; u++) unlink(paths[u]);
    return rc;
}

static const float *tensor(const cx_st_set *s, const char *name, int ndim, const int64_t *shape)
{
    const cx_st_tensor *t = cx_st_find(s, name);
    CHECK(t != NULL, "output has no '%s'", name);
    if (!t) return NULL;
    bool ok = t->dtype == CX_DT_F32 && t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    CHECK(ok, "'%s' has the wrong dtype or shape", name);
    return ok ? (const float *)t->data : NULL;
}

/* The file's metadata "circuits_job" is the provenance. */
static void check_meta(const cx_st_set *s)
{
    json_t *md = NULL;
    CHECK_OK(cx_st_metadata(&s->maps[0], &md, "test"));
    const char *p = json_string_value(json_object_get(md, "circuits_job"));
    CHECK(p && strcmp(p, PROV) == 0, "metadata circuits_job is '%s'", p ? p : "(none)");
    json_decref(md);
}

/* The mean over rows in double, rows in order (the documented reduction), of x [ROWS, per]. */
static void mean_rows(const float *x, size_t per, double *out)
{
    for (size_t i = 0; i < per; i++) {
        out[i] = 0.0;
        for (int r = 0; r < ROWS; r++) out[i] += x[(size_t)r * per + i];
        out[i] /= ROWS;
    }
}

/* The same output for unit sizes 1, 2, 5 (one unit) and 1 or 2 threads. */
static void check_invariance(const cx_job_kind *k, circuits_job *job, const char *ref)
{
    static const int64_t sizes[] = {1, 2, 5};
    for (int threads = 1; threads <= 2; threads++) {
        circuits_set_num_threads(threads);
        for (size_t i = 0; i < CX_COUNT(sizes); i++) {
            char out[512];
            snprintf(out, sizeof out, "%s/inv.safetensors", g_root);
            CHECK_OK(run_job(k, job, sizes[i], "inv", out));
            CHECK(same_bytes(ref, out), "%s: unit_rows %lld, %d threads: the output differs", k->name,
                  (long long)sizes[i], threads);
            unlink(out);
        }
    }
    circuits_set_num_threads(0);
}

/* ---- patching sweep ---- */

static const char *patch_hook(int32_t kind)
{
    switch (kind) {
    case CIRCUITS_PATCH_RESID_PRE: return "blocks.%d.hook_resid_pre";
    case CIRCUITS_PATCH_ATTN_OUT: return "blocks.%d.hook_attn_out";
    case CIRCUITS_PATCH_HEAD_Z_BY_POS:
    case CIRCUITS_PATCH_HEAD_Z_ALL_POS: return "blocks.%d.attn.hook_z";
    case CIRCUITS_PATCH_HEAD_V_ALL_POS: return "blocks.%d.attn.hook_v";
    default: return "blocks.%d.attn.hook_pattern";
    }
}

static void check_patch(const test_ds *t, int32_t kind, int32_t metric, const char *kind_name, const char *metric_name)
{
    circuits_job job;
    job_init(&job, t, CIRCUITS_JOB_PATCH_SWEEP, metric);
    job.o.patch_kind = kind;
    json_t *params = json_object();
    CHECK_OK(cx_job_patch_sweep.prepare(&job, params));
    if (!job.kstate) {
        json_decref(params);
        return;
    }
    const char *pk = json_string_value(json_object_get(params, "patch_kind"));
    const char *mk = json_string_value(json_object_get(params, "metric"));
    CHECK(pk && strcmp(pk, kind_name) == 0, "params patch_kind '%s', want '%s'", pk ? pk : "", kind_name);
    CHECK(mk && strcmp(mk, metric_name) == 0, "params metric '%s', want '%s'", mk ? mk : "", metric_name);
    CHECK(json_integer_value(json_object_get(params, "patch_incremental")) == 1 &&
              json_is_integer(json_object_get(params, "patch_cells_per_run")),
          "params record the patch options");
    json_decref(params);

    char out[512];
    snprintf(out, sizeof out, "%s/patch_%d_%d.safetensors", g_root, kind, metric);
    CHECK_OK(run_job(&cx_job_patch_sweep, &job, 2, "patch", out));
    cx_st_set *s = NULL;
    CHECK_OK(cx_st_open(&s, out, CX_ST_READ));
    if (!s) {
        cx_job_patch_sweep.release(&job);
        return;
    }
    check_meta(s);
    int64_t gs[5] = {ROWS};
    int32_t nd;
    CHECK_OK(circuits_patch_grid_shape(M, kind, T, gs + 1, &nd));
    size_t cells = 1;
    for (int d = 1; d <= nd; d++) cells *= (size_t)gs[d];
    int64_t rows = ROWS;
    const float *grid = tensor(s, "grid", nd + 1, gs), *clean_m = tensor(s, "clean_metric", 1, &rows),
                *corr_m = tensor(s, "corrupted_metric", 1, &rows), *mean = tensor(s, "mean_grid", nd, gs + 1),
                *norm = tensor(s, "normalized_mean_grid", nd, gs + 1);
    if (!grid || !clean_m || !corr_m || !mean || !norm) {
        cx_st_close(s);
        cx_job_patch_sweep.release(&job);
        return;
    }
    /* each row against the public function on that row alone */
    circuits_context *ctx = make_ctx(M, 0);
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    float *want = malloc(cells * sizeof(float)), *logits = malloc((size_t)T * C.d_vocab_out * sizeof(float));
    for (int r = 0; r < ROWS; r++) {
        int64_t p;
        circuits_metric m;
        row_metric(t, metric, r, &p, &m);
        char names[4][64];
        const char *filter[4];
        for (int l = 0; l < C.n_layers; l++) {
            snprintf(names[l], sizeof names[l], patch_hook(kind), l);
            filter[l] = names[l];
        }
        CHECK_OK(circuits_context_run_with_cache(ctx, &t->tokens[r * T], 1, T, filter, (size_t)C.n_layers, cache,
                                                 NULL, NULL, NULL));
        const float *clean[4];
        for (int l = 0; l < C.n_layers; l++) {
            circuits_tensor ct;
            CHECK_OK(circuits_cache_get(cache, names[l], &ct));
            clean[l] = ct.data;
        }
        CHECK_OK(circuits_context_activation_patch(ctx, kind, &t->corrupted[r * T], 1, T, clean, &m, NULL, want));
        CHECK(memcmp(want, grid + (size_t)r * cells, cells * sizeof(float)) == 0,
              "%s / %s: row %d's grid differs from circuits_context_activation_patch on the row", kind_name,
              metric_name, r);
        float v;
        CHECK_OK(circuits_context_forward(ctx, &t->tokens[r * T], 1, T, logits, NULL, NULL));
        CHECK_OK(circuits_metric_eval(&m, logits, 1, T, C.d_vocab_out, &v));
        CHECK(memcmp(&v, &clean_m[r], sizeof v) == 0, "%s: row %d clean metric %.9g, the plain run's %.9g", kind_name,
              r, clean_m[r], v);
        CHECK_OK(circuits_context_forward(ctx, &t->corrupted[r * T], 1, T, logits, NULL, NULL));
        CHECK_OK(circuits_metric_eval(&m, logits, 1, T, C.d_vocab_out, &v));
        CHECK(memcmp(&v, &corr_m[r], sizeof v) == 0, "%s: row %d corrupted metric %.9g, the plain run's %.9g",
              kind_name, r, corr_m[r], v);
        if (metric == CIRCUITS_METRIC_LOGIT_DIFF) /* the model's induction heads read the clean row only */
            CHECK(clean_m[r] > corr_m[r] + 1.0f, "row %d: clean logit diff %g not above the corrupted %g", r,
                  clean_m[r], corr_m[r]);
    }
    /* the mean and normalised grids: this test's own computation of the documented formulas */
    double *md = malloc(cells * sizeof(double)), mc, mk2;
    mean_rows(grid, cells, md);
    mean_rows(clean_m, 1, &mc);
    mean_rows(corr_m, 1, &mk2);
    bool mean_ok = true, norm_ok = true;
    for (size_t i = 0; i < cells; i++) {
        float wm = (float)md[i], wn = (float)((md[i] - mk2) / (mc - mk2));
        mean_ok = mean_ok && memcmp(&wm, &mean[i], sizeof wm) == 0;
        norm_ok = norm_ok && (memcmp(&wn, &norm[i], sizeof wn) == 0);
    }
    CHECK(mean_ok, "%s: mean_grid differs from the mean over rows in double", kind_name);
    CHECK(norm_ok, "%s: normalized_mean_grid differs from (mean - corrupted) / (clean - corrupted)", kind_name);
    free(md);
    free(want);
    free(logits);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    if (kind == CIRCUITS_PATCH_RESID_PRE && metric == CIRCUITS_METRIC_LOGIT_DIFF)
        check_invariance(&cx_job_patch_sweep, &job, out);
    cx_st_close(s);
    unlink(out);
    cx_job_patch_sweep.release(&job);
    CHECK(job.kstate == NULL, "release clears kstate");
}

/* Corrupted rows equal to the clean ones: clean - corrupted = 0, the normalised grid NaN. */
static void check_zero_denominator(void)
{
    static test_ds t;
    make_ds(&t);
    memcpy(t.corrupted, t.tokens, sizeof t.tokens);
    circuits_job job;
    job_init(&job, &t, CIRCUITS_JOB_PATCH_SWEEP, CIRCUITS_METRIC_LOGIT_DIFF);
    job.o.patch_kind = CIRCUITS_PATCH_HEAD_Z_ALL_POS;
    json_t *params = json_object();
    CHECK_OK(cx_job_patch_sweep.prepare(&job, params));
    json_decref(params);
    if (!job.kstate) return;
    char out[512];
    snprintf(out, sizeof out, "%s/zero_den.safetensors", g_root);
    CHECK_OK(run_job(&cx_job_patch_sweep, &job, 2, "zd", out));
    cx_st_set *s = NULL;
    CHECK_OK(cx_st_open(&s, out, CX_ST_READ));
    int64_t shape[2] = {C.n_layers, C.n_heads};
    const float *norm = s ? tensor(s, "normalized_mean_grid", 2, shape) : NULL;
    bool all_nan = norm != NULL;
    for (int i = 0; norm && i < C.n_layers * C.n_heads; i++) all_nan = all_nan && isnan(norm[i]);
    CHECK(all_nan, "clean == corrupted: the normalised grid is NaN everywhere");
    cx_st_close(s);
    unlink(out);
    cx_job_patch_sweep.release(&job);
}

/* ---- ablation sweep ---- */

static void sha256_hex(const char *path, char *hex)
{
    size_t n;
    unsigned char *b = slurp(path, &n), md[32];
    unsigned int len = 0;
    EVP_Digest(b, n, md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", md[i]);
    free(b);
}

/* The mean of every block's hook_z over the dataset, written as a mean-activations job writes it. */
static void write_means(const test_ds *t, const char *path, float **means)
{
    circuits_context *ctx = make_ctx(M, 0);
    char names[4][64];
    const char *hooks[4];
    size_t row = (size_t)T * C.n_heads * C.d_head;
    cx_st_out o[4];
    for (int l = 0; l < C.n_layers; l++) {
        snprintf(names[l], sizeof names[l], "blocks.%d.attn.hook_z", l);
        hooks[l] = names[l];
        means[l] = malloc(row * sizeof(float));
        o[l] = (cx_st_out){.name = names[l], .dtype = CX_DT_F32, .ndim = 3, .shape = {T, C.n_heads, C.d_head},
                           .data = means[l]};
    }
    CHECK_OK(circuits_context_mean_activations(ctx, hooks, (size_t)C.n_layers, t->tokens, ROWS, T, 4, means));
    const char *meta[2] = {"circuits_job", PROV};
    CHECK_OK(cx_st_write(path, o, (size_t)C.n_layers, meta, 1, "test"));
    circuits_context_free(ctx);
}

static void check_ablation(const test_ds *t, int32_t akind, int32_t metric)
{
    circuits_job job;
    job_init(&job, t, CIRCUITS_JOB_ABLATION_SWEEP, metric);
    job.o.ablation_kind = akind;
    char means_path[512];
    float *means[4] = {0};
    if (akind == CIRCUITS_ABLATE_MEAN) {
        snprintf(means_path, sizeof means_path, "%s/means.safetensors", g_root);
        write_means(t, means_path, means);
        job.o.ablation_means = means_path;
    }
    json_t *params = json_object();
    CHECK_OK(cx_job_ablation_sweep.prepare(&job, params));
    const char *ak = json_string_value(json_object_get(params, "ablation_kind"));
    CHECK(ak && strcmp(ak, akind == CIRCUITS_ABLATE_ZERO ? "zero" : "mean") == 0, "params ablation_kind '%s'",
          ak ? ak : "");
    if (akind == CIRCUITS_ABLATE_MEAN) {
        char hex[65];
        sha256_hex(means_path, hex);
        const char *got = json_string_value(json_object_get(params, "ablation_means_sha256"));
        CHECK(got && strcmp(got, hex) == 0, "params ablation_means_sha256 '%s', want '%s'", got ? got : "", hex);
    } else {
        CHECK(json_object_get(params, "ablation_means_sha256") == NULL, "ZERO records no means digest");
    }
    json_decref(params);
    if (!job.kstate) {
        for (int l = 0; l < 4; l++) free(means[l]);
        return;
    }
    char out[512];
    snprintf(out, sizeof out, "%s/ablation_%d_%d.safetensors", g_root, akind, metric);
    CHECK_OK(run_job(&cx_job_ablation_sweep, &job, 2, "abl", out));
    cx_st_set *s = NULL;
    CHECK_OK(cx_st_open(&s, out, CX_ST_READ));
    int64_t gs[3] = {ROWS, C.n_layers, C.n_heads}, rows = ROWS;
    const float *grid = s ? tensor(s, "grid", 3, gs) : NULL, *base = s ? tensor(s, "baseline_metric", 1, &rows) : NULL,
                *mean = s ? tensor(s, "mean_grid", 2, gs + 1) : NULL;
    if (s) check_meta(s);
    if (grid && base && mean) {
        circuits_context *ctx = make_ctx(M, 0);
        float *logits = malloc((size_t)T * C.d_vocab_out * sizeof(float));
        for (int r = 0; r < ROWS; r++) {
            int64_t p;
            circuits_metric m;
            row_metric(t, metric, r, &p, &m);
            float v;
            CHECK_OK(circuits_context_forward(ctx, &t->tokens[r * T], 1, T, logits, NULL, NULL));
            CHECK_OK(circuits_metric_eval(&m, logits, 1, T, C.d_vocab_out, &v));
            CHECK(memcmp(&v, &base[r], sizeof v) == 0, "row %d baseline %.9g, the plain run's %.9g", r, base[r], v);
            for (int l = 0; l < C.n_layers; l++)
                for (int h = 0; h < C.n_heads; h++) {
                    char name[64];
                    snprintf(name, sizeof name, "blocks.%d.attn.hook_z", l);
                    circuits_ablation a;
                    circuits_ablation_init(&a);
                    a.kind = akind;
                    a.hook = name;
                    a.head = h;
                    a.values = means[l];
                    CHECK_OK(circuits_context_run_ablated(ctx, &a, 1, &t->tokens[r * T], 1, T, logits, NULL));
                    CHECK_OK(circuits_metric_eval(&m, logits, 1, T, C.d_vocab_out, &v));
                    /* to rounding: the sweep computes the logits at the metric's position only,
                     * run_ablated at every position, and OpenBLAS's bits for a row depend on
                     * its place in the product (kernels.c "products") */
                    float got = grid[((size_t)r * C.n_layers + l) * C.n_heads + h];
                    CHECK(fabsf(v - got) <= 1e-5f * fmaxf(1.0f, fabsf(v)), "row %d head %d.%d: %.9g, run_ablated's %.9g",
                          r, l, h, got, v);
                }
        }
        size_t per = (size_t)C.n_layers * C.n_heads;
        double md[64];
        mean_rows(grid, per, md);
        bool ok = true;
        for (size_t i = 0; i < per; i++) {
            float w = (float)md[i];
            ok = ok && memcmp(&w, &mean[i], sizeof w) == 0;
        }
        CHECK(ok, "ablation mean_grid differs from the mean over rows in double");
        /* the induction heads are in layer 1: ablating one of them lowers the logit difference */
        if (metric == CIRCUITS_METRIC_LOGIT_DIFF && akind == CIRCUITS_ABLATE_ZERO) {
            float lowest = INFINITY;
            for (int h = 0; h < C.n_heads; h++) lowest = fminf(lowest, mean[C.n_heads + h]);
            double b = 0;
            for (int r = 0; r < ROWS; r++) b += base[r];
            CHECK(lowest < b / ROWS - 1.0, "no layer-1 head's ablation lowers the logit difference (%g vs %g)",
                  lowest, b / ROWS);
        }
        free(logits);
        circuits_context_free(ctx);
        if (akind == CIRCUITS_ABLATE_ZERO) check_invariance(&cx_job_ablation_sweep, &job, out);
    }
    cx_st_close(s);
    unlink(out);
    if (akind == CIRCUITS_ABLATE_MEAN) unlink(means_path);
    for (int l = 0; l < 4; l++) free(means[l]);
    cx_job_ablation_sweep.release(&job);
}

/* ---- through the engine: circuits_job_create / run / merge ---- */

/* The dataset through the public API: tokens and the four columns of t. */
static circuits_dataset *public_ds(const test_ds *t, bool position)
{
    circuits_dataset *ds = NULL;
    CHECK_OK(circuits_dataset_from_tokens(&ds, t->tokens, ROWS, T));
    if (!ds) return NULL;
    CHECK_OK(circuits_dataset_set_column(ds, "corrupted", t->corrupted, ROWS, T));
    CHECK_OK(circuits_dataset_set_column(ds, "answer", t->answer, ROWS, 1));
    CHECK_OK(circuits_dataset_set_column(ds, "wrong", t->wrong, ROWS, 1));
    if (position) CHECK_OK(circuits_dataset_set_column(ds, "position", t->position, ROWS, 1));
    return ds;
}

/* create + run into dir (shard i of n), then free. */
static int engine_run(const circuits_dataset *ds, const circuits_job_options *base, int64_t unit_rows,
                      int64_t batch, int32_t shard, int32_t shards, const char *dir)
{
    circuits_job_options o = *base;
    o.unit_rows = unit_rows;
    o.batch_size = batch;
    o.shard_index = shard;
    o.shard_count = shards;
    circuits_job *job = NULL;
    int rc = circuits_job_create(&job, M, ds, &o, dir);
    if (!rc) rc = circuits_job_run(job);
    circuits_job_free(job);
    return rc;
}

/* The same tensors (names, shapes, bytes) in two output files; metadata aside. */
static bool same_tensors(const char *a, const char *b)
{
    cx_st_set *x = NULL, *y = NULL;
    bool same = cx_st_open(&x, a, CX_ST_READ) == 0 && cx_st_open(&y, b, CX_ST_READ) == 0 && x->n_tensors == y->n_tensors;
    for (size_t i = 0; same && i < x->n_tensors; i++) {
        const cx_st_tensor *u = &x->tensors[i], *v = cx_st_find(y, u->name);
        same = v && u->dtype == v->dtype && u->ndim == v->ndim && u->nbytes == v->nbytes &&
               memcmp(u->shape, v->shape, sizeof u->shape) == 0 && memcmp(u->data, v->data, u->nbytes) == 0;
    }
    cx_st_close(x);
    cx_st_close(y);
    return same;
}

/* One job kind end to end: the output of one process (unit_rows 2, batch 8, default threads)
 * has the tensors of the kind's units run directly (vtable), and its bytes are the same for
 * 1 / 2 threads, batch sizes 1 and 3, and two shards merged; unit_rows 5 the same tensors (its
 * provenance records unit_rows). */
static void check_engine(const circuits_dataset *ds, const circuits_job_options *o, const char *direct,
                         const char *what)
{
    char dir[600], out[600], other[600], dir2[600];
    snprintf(dir, sizeof dir, "%s/%s_job", g_root, what);
    snprintf(out, sizeof out, "%s/%s_out.safetensors", g_root, what);
    CHECK_OK(engine_run(ds, o, 2, 8, 0, 1, dir));
    const char *dirs[2] = {dir, dir2};
    CHECK_OK(circuits_job_merge(dirs, 1, out));
    CHECK(same_tensors(out, direct), "%s: the engine's output differs from the units run directly", what);
    rm_rf(dir);
    snprintf(other, sizeof other, "%s/%s_other.safetensors", g_root, what);
    static const struct { int threads; int64_t batch; } runs[] = {{1, 1}, {2, 3}, {1, 3}, {2, 1}};
    for (size_t i = 0; i < CX_COUNT(runs); i++) {
        circuits_set_num_threads(runs[i].threads);
        CHECK_OK(engine_run(ds, o, 2, runs[i].batch, 0, 1, dir));
        CHECK_OK(circuits_job_merge(dirs, 1, other));
        CHECK(same_bytes(out, other), "%s: %d threads, batch %lld: another output", what, runs[i].threads,
              (long long)runs[i].batch);
        rm_rf(dir);
        unlink(other);
    }
    circuits_set_num_threads(0);
    snprintf(dir2, sizeof dir2, "%s/%s_job2", g_root, what);
    CHECK_OK(engine_run(ds, o, 2, 8, 0, 2, dir));
    CHECK_OK(engine_run(ds, o, 2, 8, 1, 2, dir2));
    CHECK_OK(circuits_job_merge(dirs, 2, other));
    CHECK(same_bytes(out, other), "%s: two shards merged: another output", what);
    rm_rf(dir);
    rm_rf(dir2);
    unlink(other);
    CHECK_OK(engine_run(ds, o, 5, 8, 0, 1, dir));
    CHECK_OK(circuits_job_merge(dirs, 1, other));
    CHECK(same_tensors(out, other), "%s: unit_rows 5: other tensors", what);
    rm_rf(dir);
    unlink(other);
    unlink(out);
}

static void check_engine_jobs(const test_ds *t)
{
    circuits_dataset *ds = public_ds(t, true);
    if (!ds) return;
    /* patching: resid_pre with the logit difference, against the vtable's units */
    circuits_job job;
    job_init(&job, t, CIRCUITS_JOB_PATCH_SWEEP, CIRCUITS_METRIC_LOGIT_DIFF);
    json_t *params = json_object();
    CHECK_OK(cx_job_patch_sweep.prepare(&job, params));
    json_decref(params);
    char direct[600];
    snprintf(direct, sizeof direct, "%s/direct.safetensors", g_root);
    CHECK_OK(run_job(&cx_job_patch_sweep, &job, 2, "direct", direct));
    cx_job_patch_sweep.release(&job);
    circuits_job_options o;
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_PATCH_SWEEP;
    o.patch_kind = CIRCUITS_PATCH_RESID_PRE;
    check_engine(ds, &o, direct, "patch");
    /* the provenance records the sweep's parameters by name */
    circuits_job *pj = NULL;
    CHECK_OK(circuits_job_create(&pj, M, ds, &o, NULL));
    const char *prov = pj ? circuits_job_provenance(pj) : "";
    CHECK(strstr(prov, "\"patch_kind\":\"resid_pre\"") && strstr(prov, "\"metric\":\"logit_diff\"") &&
              strstr(prov, "\"kind\":\"patch_sweep\""),
          "provenance: %s", prov);
    circuits_job_free(pj);
    unlink(direct);

    /* mean ablation from a mean-activations job's own output file */
    char mdir[600], means[600];
    snprintf(mdir, sizeof mdir, "%s/means_job", g_root);
    snprintf(means, sizeof means, "%s/means.safetensors", g_root);
    const char *hooks[] = {"blocks.*.attn.hook_z"};
    circuits_job_options mo;
    circuits_job_options_init(&mo);
    mo.kind = CIRCUITS_JOB_MEAN_ACTIVATIONS;
    mo.hooks = hooks;
    mo.n_hooks = 1;
    CHECK_OK(engine_run(ds, &mo, 2, 8, 0, 1, mdir));
    const char *md[1] = {mdir};
    CHECK_OK(circuits_job_merge(md, 1, means));
    rm_rf(mdir);
    job_init(&job, t, CIRCUITS_JOB_ABLATION_SWEEP, CIRCUITS_METRIC_LOGIT_DIFF);
    job.o.ablation_kind = CIRCUITS_ABLATE_MEAN;
    job.o.ablation_means = means;
    params = json_object();
    CHECK_OK(cx_job_ablation_sweep.prepare(&job, params));
    json_decref(params);
    if (job.kstate) {
        CHECK_OK(run_job(&cx_job_ablation_sweep, &job, 2, "direct", direct));
        cx_job_ablation_sweep.release(&job);
        circuits_job_options_init(&o);
        o.kind = CIRCUITS_JOB_ABLATION_SWEEP;
        o.ablation_kind = CIRCUITS_ABLATE_MEAN;
        o.ablation_means = means;
        check_engine(ds, &o, direct, "ablation");
        unlink(direct);
    }
    unlink(means);
    circuits_dataset_free(ds);
}

/* ---- refusals ---- */

/* circuits_job_create of the sweep on t's dataset (no directory); a failure leaves no job. */
static int try_create(const test_ds *t, const circuits_job_options *o)
{
    circuits_job *job = NULL;
    int rc = circuits_job_create(&job, M, &t->ds, o, NULL);
    if (rc) CHECK(job == NULL, "a failed create leaves no job");
    circuits_job_free(job);
    return rc;
}

/* A means file of every block's hook_z: dtype, position count and blocks as given. */
static void write_bad_means(const char *path, cx_dtype dt, int64_t pos, int n_blocks)
{
    static double buf[4 * 64 * 32];
    memset(buf, 0, sizeof buf);
    char names[4][64];
    cx_st_out o[4];
    for (int l = 0; l < n_blocks; l++) {
        snprintf(names[l], sizeof names[l], "blocks.%d.attn.hook_z", l);
        o[l] = (cx_st_out){.name = names[l], .dtype = dt, .ndim = 3, .shape = {pos, C.n_heads, C.d_head}, .data = buf};
    }
    CHECK_OK(cx_st_write(path, o, (size_t)n_blocks, NULL, 0, "test"));
}

static void check_refusals(void)
{
    static test_ds t;
    make_ds(&t);
    circuits_job_options o;
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_PATCH_SWEEP;
    o.patch_kind = 16;
    CALL_FAILS("job_sweep_patch_kind", try_create(&t, &o), CIRCUITS_E_INVALID_ARGUMENT,
               "patch_kind 16 is no circuits_patch_kind");
    o.patch_kind = CIRCUITS_PATCH_RESID_PRE;
    const char *hooks[] = {"blocks.0.hook_resid_pre"};
    o.hooks = hooks;
    o.n_hooks = 1;
    CALL_FAILS("job_sweep_hooks", try_create(&t, &o), CIRCUITS_E_INVALID_ARGUMENT,
               "hooks (n_hooks 1) are not read by a patching sweep");
    o.hooks = NULL;
    o.n_hooks = 0;
    o.patch_kind = CIRCUITS_PATCH_RESID_MID;
    CALL_FAILS("job_sweep_patch_no_hook", try_create(&t, &o), CIRCUITS_E_NOT_FOUND,
               "patch_kind resid_mid: this model has no hook point 'blocks.0.hook_resid_mid'");
    o.patch_kind = CIRCUITS_PATCH_RESID_PRE;
    t.cols[1].name = (char *)"corrupt";
    CALL_FAILS("job_sweep_no_corrupted", try_create(&t, &o), CIRCUITS_E_NOT_FOUND, "column \"corrupted\"");
    t.cols[1].name = (char *)"corrupted";
    t.cols[1].width = T - 1;
    CALL_FAILS("job_sweep_corrupted_width", try_create(&t, &o), CIRCUITS_E_SHAPE,
               "\"corrupted\" is [5, 11]; its tokens are [5, 12]");
    t.cols[1].width = T;
    t.corrupted[T + 3] = 256;
    CALL_FAILS("job_sweep_corrupted_range", try_create(&t, &o), CIRCUITS_E_RANGE,
               "\"corrupted\"[1, 3] = 256 is outside d_vocab = 256");
    make_ds(&t);
    o.metric_kind = CIRCUITS_METRIC_CALLBACK;
    CALL_FAILS("job_sweep_metric_callback", try_create(&t, &o), CIRCUITS_E_UNSUPPORTED, "cannot record a callback");
    o.metric_kind = CIRCUITS_METRIC_HOOK_LINEAR;
    CALL_FAILS("job_sweep_metric_hook_linear", try_create(&t, &o), CIRCUITS_E_UNSUPPORTED, "metric_kind HOOK_LINEAR");
    o.metric_kind = 42;
    CALL_FAILS("job_sweep_metric_kind", try_create(&t, &o), CIRCUITS_E_INVALID_ARGUMENT,
               "metric_kind 42 is no circuits_metric_kind");
    o.metric_kind = CIRCUITS_METRIC_LOGIT_DIFF;
    t.cols[2].name = (char *)"answers";
    CALL_FAILS("job_sweep_no_answer", try_create(&t, &o), CIRCUITS_E_NOT_FOUND, "column \"answer\"");
    t.cols[2].name = (char *)"answer";
    t.cols[3].name = (char *)"wrongs";
    CALL_FAILS("job_sweep_no_wrong", try_create(&t, &o), CIRCUITS_E_NOT_FOUND, "column \"wrong\"");
    t.cols[3].name = (char *)"wrong";
    t.cols[4].width = 2;
    CALL_FAILS("job_sweep_column_width", try_create(&t, &o), CIRCUITS_E_SHAPE, "\"position\" is [5, 2]");
    t.cols[4].width = 1;
    t.answer[1] = 300;
    CALL_FAILS("job_sweep_answer_range", try_create(&t, &o), CIRCUITS_E_RANGE, "answer[1] = 300");
    make_ds(&t);
    t.position[2] = T;
    CALL_FAILS("job_sweep_position_range", try_create(&t, &o), CIRCUITS_E_RANGE, "positions[2] = 12");
    make_ds(&t);
    o.metric_kind = CIRCUITS_METRIC_TOKEN_LOSS;
    CALL_FAILS("job_sweep_token_loss_last", try_create(&t, &o), CIRCUITS_E_RANGE, "the TOKEN_LOSS metric needs a next");

    o.kind = CIRCUITS_JOB_ABLATION_SWEEP;
    o.metric_kind = CIRCUITS_METRIC_LOGIT_DIFF;
    o.ablation_kind = CIRCUITS_ABLATE_RESAMPLE;
    CALL_FAILS("job_ablation_resample", try_create(&t, &o), CIRCUITS_E_UNSUPPORTED, "ablation_kind RESAMPLE");
    o.ablation_kind = 7;
    CALL_FAILS("job_ablation_kind", try_create(&t, &o), CIRCUITS_E_INVALID_ARGUMENT,
               "ablation_kind 7 is no circuits_ablation_kind");
    o.ablation_kind = CIRCUITS_ABLATE_MEAN;
    CALL_FAILS("job_ablation_means_null", try_create(&t, &o), CIRCUITS_E_INVALID_ARGUMENT,
               "ablation_kind MEAN needs ablation_means");
    char path[1024];
    snprintf(path, sizeof path, "%s/bad_means.safetensors", g_root);
    o.ablation_kind = CIRCUITS_ABLATE_ZERO;
    o.ablation_means = path;
    CALL_FAILS("job_ablation_means_with_zero", try_create(&t, &o), CIRCUITS_E_INVALID_ARGUMENT,
               "ablation_means is set but ablation_kind is ZERO");
    o.ablation_kind = CIRCUITS_ABLATE_MEAN;
    CALL_FAILS("job_ablation_means_no_file", try_create(&t, &o), CIRCUITS_E_IO, "ablation_means: cannot open");
    write_bad_means(path, CX_DT_F32, T, 1);
    CALL_FAILS("job_ablation_means_no_tensor", try_create(&t, &o), CIRCUITS_E_NOT_FOUND,
               "has no tensor 'blocks.1.attn.hook_z'");
    write_bad_means(path, CX_DT_F64, T, C.n_layers);
    CALL_FAILS("job_ablation_means_dtype", try_create(&t, &o), CIRCUITS_E_DTYPE, "'blocks.0.attn.hook_z' is F64");
    write_bad_means(path, CX_DT_F32, T - 1, C.n_layers);
    CALL_FAILS("job_ablation_means_shape", try_create(&t, &o), CIRCUITS_E_SHAPE,
               "'blocks.0.attn.hook_z' is not [pos 12, n_heads 4, d_head 32]");
    unlink(path);

    /* a unit file that carries the job's record but not the kind's tensors (damaged, or written
     * by a program of its own): unit 1 of a patching job rewritten with an ablation's tensors */
    o = (circuits_job_options){0};
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_PATCH_SWEEP;
    o.unit_rows = 2;
    char dir[512], out[512];
    snprintf(dir, sizeof dir, "%s/damaged_job", g_root);
    snprintf(out, sizeof out, "%s/merged.safetensors", g_root);
    circuits_job *job = NULL;
    CHECK_OK(circuits_job_create(&job, M, &t.ds, &o, dir));
    if (job) {
        CHECK_OK(circuits_job_run(job));
        float x[2] = {0};
        cx_st_out u = {.name = "baseline_metric", .dtype = CX_DT_F32, .ndim = 1, .shape = {2}, .data = x};
        const char *meta[4] = {"circuits_job", circuits_job_provenance(job), "unit", "1"};
        snprintf(path, sizeof path, "%s/units/u%09d.safetensors", dir, 1);
        CHECK_OK(cx_st_write(path, &u, 1, meta, 2, "test"));
        const char *dirs[1] = {dir};
        CALL_FAILS("job_sweep_unit_tensors", circuits_job_merge(dirs, 1, out), CIRCUITS_E_FORMAT,
                   "has no F32 tensor 'grid' of 2 rows");
        CHECK(access(out, F_OK) != 0, "a failed merge leaves no output file");
        circuits_job_free(job);
    }
    rm_rf(dir);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s ATTN_ONLY_2L_DIR [-v]\n", argv[0]);
        return 2;
    }
    cat_verbose = argc > 2 && strcmp(argv[2], "-v") == 0;
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = g_root;
    CHECK_OK(circuits_model_load(&M, argv[1], NULL));
    if (!M) return tu_finish("test_job_sweeps");
    C = (circuits_config){.size = sizeof C};
    CHECK_OK(circuits_model_config(M, &C));
    static test_ds t;
    make_ds(&t);

    check_patch(&t, CIRCUITS_PATCH_RESID_PRE, CIRCUITS_METRIC_LOGIT_DIFF, "resid_pre", "logit_diff");
    check_patch(&t, CIRCUITS_PATCH_HEAD_Z_BY_POS, CIRCUITS_METRIC_PROB, "head_z_by_pos", "prob");
    check_patch(&t, CIRCUITS_PATCH_HEAD_V_ALL_POS, CIRCUITS_METRIC_LOSS, "head_v_all_pos", "loss");
    static test_ds nopos; /* TOKEN_LOSS reads a next token: the default position, before the last */
    make_ds(&nopos);
    nopos.ds.n_cols = 4;
    check_patch(&nopos, CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC, CIRCUITS_METRIC_TOKEN_LOSS, "head_pattern_dest_src",
                "token_loss");
    check_patch(&t, CIRCUITS_PATCH_ATTN_OUT, CIRCUITS_METRIC_LOG_PROB, "attn_out", "log_prob");
    check_zero_denominator();
    check_ablation(&t, CIRCUITS_ABLATE_ZERO, CIRCUITS_METRIC_LOGIT_DIFF);
    check_ablation(&t, CIRCUITS_ABLATE_MEAN, CIRCUITS_METRIC_LOGIT);
    check_ablation(&t, CIRCUITS_ABLATE_ZERO, CIRCUITS_METRIC_LOSS);         /* logits of every position */
    check_ablation(&nopos, CIRCUITS_ABLATE_MEAN, CIRCUITS_METRIC_TOKEN_LOSS);
    check_engine_jobs(&t);
    check_refusals();

    circuits_model_free(M);
    rmdir(g_root);
    return tu_finish("test_job_sweeps");
}
