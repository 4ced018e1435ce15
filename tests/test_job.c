/* The job engine (lib/job/job.c, reduce.c) with the mean-activations kind (kind_mean.c;
 * docs/jobs.md): the merged means against circuits_context_mean_activations; the output file's
 * bytes identical across thread counts, batch sizes, shards (separate directories and one shared)
 * and circuits_job_compute + _store; resume after deleted and damaged units, and after a stop
 * from the progress callback (whole units only, no temporary files); provenance refused for
 * another model, dataset, hooks or unit_rows and a tampered job.json; store and merge refusing
 * foreign, mislabelled, missing and conflicting units; every allocation of create, run and merge
 * failed in turn (the fault-injection objects: lib/base/fault.h) leaving no leak and no partial
 * file. Named checks: docs/errors.md "Dataset-scale jobs".
 * Usage: test_job EXAMPLES_MODELS_DIR [-v] */
#include "catalogue.h"
#include "files.h"
#include "fault.h"

#include "../lib/io/safetensors.h"

#include <dirent.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { ROWS = 23, T = 11, UNIT = 5, N_UNITS = 5 }; /* T: not a multiple of OpenBLAS kernels' row unrolls (2, 12), where batches line rows up alike */
static char g_root[] = "/tmp/circuits_job_XXXXXX";
static circuits_model *M, *M2; /* tiny-random-gpt2; attn-only-2l (another model) */
static circuits_dataset *DS;
static int32_t tokens[ROWS * T];
static const char *const HOOKS[] = {"blocks.*.attn.hook_z", "resid_pre0", "blocks.1.hook_mlp_out",
                                    "ln_final.hook_normalized"};

/* ---- files ---- */

static const char *path_of(const char *name)
{
    static char buf[64][600];
    static int next;
    char *p = buf[next++ % 64];
    snprintf(p, 600, "%s/%s", g_root, name);
    return p;
}

static const char *unit_file(const char *dir, int u)
{
    static char buf[4][700];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 700, "%s/units/u%09d.safetensors", dir, u);
    return p;
}

/* Files in dir/units: unit files, and anything else (temporary files left behind). */
static void count_units(const char *dir, int *units, int *other)
{
    char p[700];
    snprintf(p, sizeof p, "%s/units", dir);
    *units = *other = 0;
    DIR *d = opendir(p);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t l = strlen(e->d_name);
        if (l == 22 && e->d_name[0] == 'u' && strcmp(e->d_name + 10, ".safetensors") == 0) ++*units;
        else ++*other;
    }
    closedir(d);
}

/* Entries under dir, recursively (a failed call must leave none it made). */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        n++;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) n += entries(p);
    }
    closedir(d);
    return n;
}

/* ---- jobs ---- */

typedef struct spec {
    const circuits_model *model;
    const circuits_dataset *ds;
    const char *const *hooks;
    size_t n_hooks;
    int64_t unit_rows, batch;
    int32_t shard, shards;
    circuits_job_progress_fn progress;
    void *progress_data;
} spec;

static spec base_spec(void)
{
    return (spec){M, DS, HOOKS, 4, UNIT, 8, 0, 1, NULL, NULL};
}

static int make(const spec *s, const char *dir, circuits_job **job)
{
    circuits_job_options o;
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_MEAN_ACTIVATIONS;
    o.hooks = s->hooks;
    o.n_hooks = s->n_hooks;
    o.unit_rows = s->unit_rows;
    o.batch_size = s->batch;
    o.shard_index = s->shard;
    o.shard_count = s->shards;
    o.progress = s->progress;
    o.progress_data = s->progress_data;
    return circuits_job_create(job, s->model, s->ds, &o, dir);
}

/* create + run + free into dir; the status of the first failure. */
static int run_dir(const spec *s, const char *dir)
{
    circuits_job *job = NULL;
    int rc = make(s, dir, &job);
    if (!rc) rc = circuits_job_run(job);
    circuits_job_free(job);
    return rc;
}

static int merge1(const char *dir, const char *out)
{
    const char *dirs[] = {dir};
    return circuits_job_merge(dirs, 1, out);
}

/* ---- the means against circuits_context_mean_activations ---- */

static void check_means(const char *out, const char *prov)
{
    json_error_t err;
    json_t *root = json_loads(prov, 0, &err);
    json_t *hooks = json_object_get(json_object_get(root, "job"), "hooks");
    size_t nh = json_array_size(hooks);
    /* the selection, in the model's order: hook_z of every block, then the rest */
    CHECK(nh == 5 + 3, "hooks resolved: %zu", nh);
    CHECK(nh && strcmp(json_string_value(json_array_get(hooks, 0)), "hook_embed") != 0, "order");
    cx_st_set *set = NULL;
    CHECK_OK(cx_st_open(&set, out, CX_ST_READ));
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, M, NULL));
    for (size_t i = 0; set && ctx && i < nh; i++) {
        const char *h = json_string_value(json_array_get(hooks, i));
        const cx_st_tensor *t = cx_st_find(set, h);
        CHECK(t && t->dtype == CX_DT_F32, "%s: no F32 tensor", h);
        if (!t) continue;
        float *want = malloc(t->numel * sizeof *want);
        float *const means[] = {want};
        const char *const names[] = {h};
        CHECK_OK(circuits_context_mean_activations(ctx, names, 1, tokens, ROWS, T, 4, means));
        /* to rounding, relative to the largest mean: the job runs each row's products alone
         * (kernels.h cx_gemm_per_sequence), mean_activations one product over each batch, and
         * OpenBLAS's bits depend on a row's place in a product (3e-5 of single means, 1e-6 of
         * the largest, on its Haswell kernels) */
        double worst = 0, mag = 0, top = 0;
        for (size_t j = 0; j < t->numel; j++) top = fmax(top, fabs(want[j]));
        for (size_t j = 0; j < t->numel; j++) {
            float got;
            memcpy(&got, t->data + 4 * j, 4);
            mag += fabs(got);
            double d = fabs((double)got - want[j]) / top;
            if (d > worst) worst = d;
        }
        CHECK(worst < 1e-5, "%s: error %g of the largest mean against circuits_context_mean_activations", h, worst);
        CHECK(mag > 0, "%s: every mean is 0", h);
        if (strstr(h, "hook_z")) CHECK(t->ndim == 3 && t->shape[0] == T && t->shape[1] == 4, "%s: shape", h);
        free(want);
    }
    circuits_context_free(ctx);
    cx_st_close(set);
    json_decref(root);
}

/* ---- progress callbacks ---- */

typedef struct prog {
    int64_t first, last, total, calls, stop_at;
} prog;

static int on_progress(int64_t done, int64_t total, void *u)
{
    prog *p = u;
    if (p->calls++ == 0) p->first = done;
    p->last = done;
    p->total = total;
    return p->stop_at >= 0 && done >= p->stop_at;
}

/* ---- compute + store ---- */

typedef struct collected {
    unsigned char *img[N_UNITS];
    size_t n[N_UNITS];
    int64_t order[N_UNITS];
    int calls, fail_at;
} collected;

static int on_unit(int64_t unit, const void *bytes, size_t n, void *u)
{
    collected *c = u;
    if (c->calls == c->fail_at) return 7;
    c->order[c->calls++] = unit;
    c->img[unit] = malloc(n);
    memcpy(c->img[unit], bytes, n);
    c->n[unit] = n;
    return 0;
}

/* ---- the tests ---- */

static const char *g_base;     /* the baseline: one process, 1 thread, batch 8 */
static const char *g_base_dir;
static char *g_prov;

static void test_baseline(void)
{
    circuits_set_num_threads(1);
    g_base_dir = strdup(path_of("base"));
    g_base = strdup(path_of("base.safetensors"));
    spec s = base_spec();
    prog p = {.stop_at = -1};
    s.progress = on_progress;
    s.progress_data = &p;
    circuits_job *job = NULL;
    CHECK_OK(make(&s, g_base_dir, &job));
    int64_t n_units = 0, n_done = 1, n_mine = 0;
    CHECK_OK(circuits_job_status(job, &n_units, &n_done, &n_mine));
    CHECK(n_units == N_UNITS && n_done == 0 && n_mine == N_UNITS, "status %lld %lld %lld", (long long)n_units,
          (long long)n_done, (long long)n_mine);
    CHECK_OK(circuits_job_run(job));
    CHECK(p.first == 0 && p.last == N_UNITS && p.total == N_UNITS, "progress %lld..%lld of %lld",
          (long long)p.first, (long long)p.last, (long long)p.total);
    CHECK_OK(circuits_job_status(job, &n_units, &n_done, &n_mine));
    CHECK(n_done == N_UNITS, "done %lld", (long long)n_done);
    g_prov = strdup(circuits_job_provenance(job));
    circuits_job_free(job);
    CHECK_OK(merge1(g_base_dir, g_base));
    check_means(g_base, g_prov);
    /* job.json is the provenance, and so is every unit's and the output's metadata */
    char p1[700];
    snprintf(p1, sizeof p1, "%s/job.json", g_base_dir);
    size_t n;
    unsigned char *j = slurp(p1, &n);
    CHECK(j && n == strlen(g_prov) && memcmp(j, g_prov, n) == 0, "job.json is the provenance");
    free(j);
    CHECK(strstr(g_prov, "\"format\":\"circuits-job\"") && strstr(g_prov, "\"hook_semantics\":1") &&
              strstr(g_prov, "\"library\":\"" CIRCUITS_VERSION_STRING "\"") && strstr(g_prov, "\"sha256\"") &&
              strstr(g_prov, "\"unit_rows\":5") && !strstr(g_prov, "batch"),
          "provenance fields: %s", g_prov);
}

static void test_invariance(void)
{
    /* threads x batch sizes: the same output bytes (and unit files) */
    const int threads[] = {1, 2};
    const int64_t batches[] = {1, 3, 8};
    for (int ti = 0; ti < 2; ti++)
        for (int bi = 0; bi < 3; bi++) {
            circuits_set_num_threads(threads[ti]);
            char name[64];
            snprintf(name, sizeof name, "t%d_b%lld", threads[ti], (long long)batches[bi]);
            const char *dir = path_of(name);
            char out[700];
            snprintf(out, sizeof out, "%s.safetensors", dir);
            spec s = base_spec();
            s.batch = batches[bi];
            CHECK_OK(run_dir(&s, dir));
            CHECK_OK(merge1(dir, out));
            CHECK(same_bytes(out, g_base), "%s: output differs from the baseline", name);
            for (int u = 0; u < N_UNITS; u++)
                CHECK(same_bytes(unit_file(dir, u), unit_file(g_base_dir, u)), "%s: unit %d differs", name, u);
        }
    /* shards 2 and 3 in separate directories, merged; and 2 shards sharing one directory */
    circuits_set_num_threads(2);
    for (int32_t count = 2; count <= 3; count++) {
        const char *dirs[3];
        char names[3][64];
        for (int32_t i = 0; i < count; i++) {
            snprintf(names[i], sizeof names[i], "shard%d_of%d", i, count);
            dirs[i] = strdup(path_of(names[i]));
            spec s = base_spec();
            s.shard = i;
            s.shards = count;
            s.batch = 3;
            CHECK_OK(run_dir(&s, dirs[i]));
            int units, other;
            count_units(dirs[i], &units, &other);
            CHECK(units == (N_UNITS - i + count - 1) / count && other == 0, "shard %d/%d holds %d units", i, count,
                  units);
        }
        char out[64];
        snprintf(out, sizeof out, "shards%d.safetensors", count);
        CHECK_OK(circuits_job_merge(dirs, (size_t)count, path_of(out)));
        CHECK(same_bytes(path_of(out), g_base), "%d shards: output differs", count);
        for (int32_t i = 0; i < count; i++) free((void *)dirs[i]);
    }
    const char *shared = path_of("shared");
    for (int32_t i = 0; i < 2; i++) {
        spec s = base_spec();
        s.shard = i;
        s.shards = 2;
        CHECK_OK(run_dir(&s, shared));
    }
    CHECK_OK(merge1(shared, path_of("shared.safetensors")));
    CHECK(same_bytes(path_of("shared.safetensors"), g_base), "2 shards in one directory: output differs");
    circuits_set_num_threads(1);
}

static void test_compute_store(void)
{
    circuits_set_num_threads(2);
    spec s = base_spec();
    s.batch = 2;
    circuits_job *job = NULL;
    CHECK_OK(make(&s, NULL, &job)); /* a rank's job: no directory */
    const int64_t units[] = {3, 0, 4, 1, 2};
    collected c = {.fail_at = -1};
    CHECK_OK(circuits_job_compute(job, units, 5, on_unit, &c));
    CHECK(c.calls == 5 && memcmp(c.order, units, sizeof units) == 0, "on_unit in the order of units");
    for (int u = 0; u < N_UNITS; u++) {
        size_t n;
        unsigned char *f = slurp(unit_file(g_base_dir, u), &n);
        CHECK(f && c.img[u] && n == c.n[u] && memcmp(f, c.img[u], n) == 0, "unit %d: computed bytes differ from the file", u);
        free(f);
    }
    CALL_FAILS("job_store_no_dir", circuits_job_store(job, 0, c.img[0], c.n[0]), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_job_store: the job has no directory");
    collected c2 = {.fail_at = 1};
    CALL_FAILS("job_compute_callback", circuits_job_compute(job, units, 5, on_unit, &c2), CIRCUITS_E_CALLBACK,
               "on_unit returned 7 for unit 0");
    for (int u = 0; u < N_UNITS; u++) free(c2.img[u]);
    const int64_t bad_units[] = {0, 5};
    CALL_FAILS("job_compute_unit_range", circuits_job_compute(job, bad_units, 2, on_unit, &c2), CIRCUITS_E_RANGE,
               "units[1] = 5 is not in [0, 5)");
    circuits_job_free(job);

    /* the units stored into a directory by "rank 0": merged, the baseline's bytes */
    const char *dir = path_of("stored");
    CHECK_OK(make(&s, dir, &job));
    CALL_FAILS("job_store_wrong_unit", circuits_job_store(job, 1, c.img[2], c.n[2]), CIRCUITS_E_PROVENANCE,
               "holds unit 2, not unit 1");
    CALL_FAILS("job_store_garbage", circuits_job_store(job, 1, "not a safetensors image", 23), CIRCUITS_E_FORMAT,
               "circuits_job_store: unit 1's bytes");
    CALL_FAILS("job_store_range", circuits_job_store(job, 5, c.img[0], c.n[0]), CIRCUITS_E_RANGE,
               "unit 5 is not in [0, 5)");
    int32_t done = 1;
    CHECK_OK(circuits_job_unit_done(job, 1, &done));
    CHECK(done == 0, "a refused store leaves the unit not done");
    for (int u = 0; u < N_UNITS; u++) CHECK_OK(circuits_job_store(job, u, c.img[u], c.n[u]));
    CHECK_OK(circuits_job_unit_done(job, 1, &done));
    CHECK(done == 1, "stored");
    CALL_FAILS("job_unit_done_range", circuits_job_unit_done(job, -1, &done), CIRCUITS_E_RANGE, "unit -1 is not in [0, 5)");
    circuits_job_free(job);
    CHECK_OK(merge1(dir, path_of("stored.safetensors")));
    CHECK(same_bytes(path_of("stored.safetensors"), g_base), "stored units: output differs");

    /* a unit of another job (unit_rows 4) refused by this one */
    spec o = base_spec();
    o.unit_rows = 4;
    CHECK_OK(make(&o, NULL, &job));
    collected c3 = {.fail_at = -1};
    const int64_t u0[] = {0};
    CHECK_OK(circuits_job_compute(job, u0, 1, on_unit, &c3));
    circuits_job_free(job);
    CHECK_OK(make(&s, dir, &job));
    CALL_FAILS("job_store_foreign", circuits_job_store(job, 0, c3.img[0], c3.n[0]), CIRCUITS_E_PROVENANCE,
               "was made by another job (its provenance differs at \"job.unit_rows\")");
    circuits_job_free(job);
    free(c3.img[0]);
    for (int u = 0; u < N_UNITS; u++) free(c.img[u]);
    circuits_set_num_threads(1);
}

static void test_resume(void)
{
    const char *dir = path_of("resume");
    spec s = base_spec();
    CHECK_OK(run_dir(&s, dir));
    struct stat st0;
    stat(unit_file(dir, 0), &st0);
    remove(unit_file(dir, 1));
    remove(unit_file(dir, 3));
    /* unit 4 damaged (cut short): not done, computed again and replaced */
    size_t n;
    unsigned char *p = slurp(unit_file(dir, 4), &n);
    spit(unit_file(dir, 4), p, n / 2);
    free(p);
    circuits_job *job = NULL;
    prog pr = {.stop_at = -1};
    s.progress = on_progress;
    s.progress_data = &pr;
    CHECK_OK(make(&s, dir, &job));
    int64_t n_units, n_done, n_mine;
    CHECK_OK(circuits_job_status(job, &n_units, &n_done, &n_mine));
    CHECK(n_done == 2, "resume: %lld units done before, want 2 (1 and 3 deleted, 4 damaged)", (long long)n_done);
    CHECK_OK(circuits_job_run(job));
    CHECK(pr.first == 2 && pr.last == 5, "progress from %lld to %lld", (long long)pr.first, (long long)pr.last);
    CHECK_OK(circuits_job_status(job, &n_units, &n_done, &n_mine));
    CHECK(n_done == N_UNITS, "resume: %lld units done after", (long long)n_done);
    circuits_job_free(job);
    struct stat st1;
    stat(unit_file(dir, 0), &st1);
    CHECK(st0.st_ino == st1.st_ino, "unit 0 was computed again (its file replaced)");
    CHECK_OK(merge1(dir, path_of("resume.safetensors")));
    CHECK(same_bytes(path_of("resume.safetensors"), g_base), "resumed: output differs");

    /* a stop from the progress callback: whole units only, then a resume */
    for (int threads = 1; threads <= 2; threads++) {
        circuits_set_num_threads(threads);
        char name[32];
        snprintf(name, sizeof name, "stopped%d", threads);
        const char *sd = path_of(name);
        prog ps = {.stop_at = 2};
        spec t = base_spec();
        t.progress = on_progress;
        t.progress_data = &ps;
        CHECK_OK(make(&t, sd, &job));
        if (threads == 1)
            CALL_FAILS("job_run_stopped", circuits_job_run(job), CIRCUITS_E_STOPPED,
                       "circuits_job_run: stopped by the progress callback with 2 of 5 units done");
        int rc2 = threads == 1 ? CIRCUITS_E_STOPPED : circuits_job_run(job);
        /* on two threads the other one may finish every unit left before the calling thread
         * reports the second: then the job is done and says so */
        if (rc2 != CIRCUITS_OK)
            CHECK(rc2 == CIRCUITS_E_STOPPED && strstr(circuits_last_error(), "stopped by the progress callback"),
                  "two threads: %d (%s)", rc2, circuits_last_error());
        circuits_job_free(job);
        int units, other;
        count_units(sd, &units, &other);
        CHECK(units >= 2 && (rc2 ? units < N_UNITS : units == N_UNITS) && other == 0, "stopped: %d units, %d other files",
              units, other);
        t.progress = NULL;
        CHECK_OK(make(&t, sd, &job));
        CHECK_OK(circuits_job_status(job, &n_units, &n_done, &n_mine));
        CHECK(n_done == units, "every unit file of the stopped run is whole: %lld of %d", (long long)n_done, units);
        CHECK_OK(circuits_job_run(job));
        circuits_job_free(job);
        CHECK_OK(merge1(sd, path_of("stopped.safetensors")));
        CHECK(same_bytes(path_of("stopped.safetensors"), g_base), "stopped and resumed: output differs");
    }
    circuits_set_num_threads(1);
}

static void test_provenance(void)
{
    circuits_job *job = NULL;
    /* execution options change nothing recorded */
    spec s = base_spec();
    s.batch = 1;
    s.shard = 1;
    s.shards = 3;
    CHECK_OK(make(&s, g_base_dir, &job));
    CHECK(job && strcmp(circuits_job_provenance(job), g_prov) == 0, "batch and shard are not recorded");
    circuits_job_free(job);
    /* reordered and repeated names select the same points: the same record */
    const char *const again[] = {"ln_final.hook_normalized", "blocks.1.hook_mlp_out", "blocks.0.hook_resid_pre",
                                 "blocks.*.attn.hook_z", "z2"};
    s = base_spec();
    s.hooks = again;
    s.n_hooks = 5;
    CHECK_OK(make(&s, g_base_dir, &job));
    CHECK(job && strcmp(circuits_job_provenance(job), g_prov) == 0, "names resolved and ordered by the model");
    circuits_job_free(job);

    s = base_spec();
    s.model = M2;
    const char *const r0[] = {"resid_pre0"};
    s.hooks = r0;
    s.n_hooks = 1;
    CALL_FAILS("job_resume_other_model", make(&s, g_base_dir, &job), CIRCUITS_E_PROVENANCE,
               "holds another job (its job.json differs at \"job.hooks\")");
    spec m = base_spec();
    m.hooks = r0;
    m.n_hooks = 1;
    CHECK_OK(run_dir(&m, path_of("r0")));
    CHECK_FAILS(make(&s, path_of("r0"), &job), CIRCUITS_E_PROVENANCE, "differs at \"model.files\"");
    s = base_spec();
    s.hooks = r0;
    s.n_hooks = 1;
    circuits_dataset *other = NULL;
    int32_t t2[ROWS * T];
    memcpy(t2, tokens, sizeof t2);
    t2[7] ^= 1;
    CHECK_OK(circuits_dataset_from_tokens(&other, t2, ROWS, T));
    s.ds = other;
    CALL_FAILS("job_resume_other_dataset", make(&s, path_of("r0"), &job), CIRCUITS_E_PROVENANCE,
               "differs at \"dataset.sha256\"");
    s = base_spec();
    s.unit_rows = 4;
    CALL_FAILS("job_resume_other_unit_rows", make(&s, g_base_dir, &job), CIRCUITS_E_PROVENANCE,
               "differs at \"job.unit_rows\"");
    CHECK(job == NULL, "*out NULL after a refusal");
    /* nothing of the refused job was written: the directory is still the baseline's job */
    s = base_spec();
    CHECK_OK(make(&s, g_base_dir, &job));
    circuits_job_free(job);
    /* a tampered job.json */
    const char *td = path_of("tampered");
    CHECK_OK(run_dir(&m, td));
    char jp[700];
    snprintf(jp, sizeof jp, "%s/job.json", td);
    size_t n;
    char *j = (char *)slurp(jp, &n);
    char *at = strstr(j, "\"unit_rows\":5");
    if (at) at[12] = '6';
    spit(jp, j, n);
    free(j);
    CALL_FAILS("job_resume_tampered", make(&m, td, &job), CIRCUITS_E_PROVENANCE,
               "differs at \"job.unit_rows\"): use another directory");
    /* a unit file whose record differs (copied from another job) is not done there */
    const char *const z0[] = {"blocks.0.attn.hook_z"};
    spec zs = base_spec();
    zs.hooks = z0;
    zs.n_hooks = 1;
    CHECK_OK(run_dir(&zs, path_of("z0")));
    const char *mix = path_of("mixed");
    CHECK_OK(run_dir(&m, mix));
    size_t un;
    unsigned char *u = slurp(unit_file(path_of("z0"), 2), &un);
    spit(unit_file(mix, 2), u, un);
    free(u);
    CHECK_OK(make(&m, mix, &job));
    int64_t n_units, n_done, n_mine;
    CHECK_OK(circuits_job_status(job, &n_units, &n_done, &n_mine));
    CHECK(n_done == N_UNITS - 1, "a foreign unit file counts as not done (%lld)", (long long)n_done);
    circuits_job_free(job);
    CALL_FAILS("job_merge_foreign_unit", merge1(mix, path_of("mixed.safetensors")), CIRCUITS_E_PROVENANCE,
               "was made by another job (its provenance differs at \"job.hooks\")");
    CHECK(access(path_of("mixed.safetensors"), F_OK) != 0, "a refused merge writes no output");
    circuits_dataset_free(other);
}

static void test_merge_refusals(void)
{
    const char *a = path_of("ma"), *b = path_of("mb"), *c = path_of("mc");
    spec s = base_spec();
    CHECK_OK(run_dir(&s, a));
    CHECK_OK(run_dir(&s, b));
    remove(unit_file(a, 3));
    remove(unit_file(b, 3));
    const char *ab[] = {a, b};
    CALL_FAILS("job_merge_missing_unit", circuits_job_merge(ab, 2, path_of("m.safetensors")), CIRCUITS_E_NOT_FOUND,
               "unit 3 (rows 15 .. 19) is in none of the 2 directories");
    CHECK(access(path_of("m.safetensors"), F_OK) != 0, "a refused merge writes no output");
    /* the same unit in two directories with other bytes */
    size_t n;
    unsigned char *u = slurp(unit_file(g_base_dir, 3), &n);
    spit(unit_file(a, 3), u, n);
    free(u);
    u = slurp(unit_file(g_base_dir, 2), &n);
    spit(unit_file(b, 3), u, n);
    free(u);
    CALL_FAILS("job_merge_conflict", circuits_job_merge(ab, 2, path_of("m.safetensors")), CIRCUITS_E_PROVENANCE,
               "unit 3 differs between");
    u = slurp(unit_file(g_base_dir, 3), &n);
    spit(unit_file(b, 3), u, n);
    free(u);
    CHECK_OK(circuits_job_merge(ab, 2, path_of("m.safetensors")));
    CHECK(same_bytes(path_of("m.safetensors"), g_base), "merged with duplicates: output differs");
    /* directories of different jobs */
    spec o = base_spec();
    o.unit_rows = 7;
    CHECK_OK(run_dir(&o, c));
    const char *ac[] = {a, c};
    CALL_FAILS("job_merge_differing_dirs", circuits_job_merge(ac, 2, path_of("m2.safetensors")), CIRCUITS_E_PROVENANCE,
               "hold different jobs (their job.json differ at \"job.unit_rows\")");
    /* a unit file renamed to another index */
    u = slurp(unit_file(g_base_dir, 1), &n);
    spit(unit_file(a, 0), u, n);
    free(u);
    CALL_FAILS("job_merge_mislabelled_unit", merge1(a, path_of("m3.safetensors")), CIRCUITS_E_PROVENANCE,
               "holds unit 1, not unit 0");
    const char *none[] = {path_of("nonexistent")};
    CALL_FAILS("job_merge_not_a_job", circuits_job_merge(none, 1, path_of("m4.safetensors")), CIRCUITS_E_IO,
               "is not a job directory");
    CALL_FAILS("job_merge_null", circuits_job_merge(NULL, 1, "x"), CIRCUITS_E_INVALID_ARGUMENT,
               "dirs and out must not be NULL");
    /* a job.json that is not a record */
    const char *bad = path_of("badrec");
    mkdir(bad, 0700);
    char jp[700];
    snprintf(jp, sizeof jp, "%s/job.json", bad);
    spit(jp, "{\"format\":\"something\"}", 22);
    const char *bd[] = {bad};
    CALL_FAILS("job_merge_bad_record", circuits_job_merge(bd, 1, path_of("m5.safetensors")), CIRCUITS_E_FORMAT,
               "is not a circuits job record");
}

static void test_bad_options(void)
{
    circuits_job *job = NULL;
    circuits_job_options o;
    circuits_job_options_init(&o);
    CHECK(o.unit_rows == 16 && o.batch_size == 8 && o.shard_count == 1 && o.shard_index == 0 &&
              o.kind == CIRCUITS_JOB_MEAN_ACTIVATIONS && o.size == sizeof o,
          "defaults");
    o.hooks = HOOKS;
    o.n_hooks = 1;
    CALL_FAILS("job_create_null", circuits_job_create(NULL, M, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_job_create: out is NULL");
    CALL_FAILS("job_create_null_model", circuits_job_create(&job, NULL, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "model and ds must not be NULL");
    o.size = 12;
    CALL_FAILS("job_options_size", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_VERSION,
               "circuits_job_create: options size 12");
    o.size = sizeof o;
    o.kind = 9;
    CALL_FAILS("job_kind_unknown", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "kind 9 is not a circuits_job_kind");
    o.kind = 0;
    o.unit_rows = 0;
    CALL_FAILS("job_unit_rows", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "unit_rows 0 must be at least 1");
    o.unit_rows = 16;
    o.batch_size = -2;
    CALL_FAILS("job_batch_size", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "batch_size -2 must be at least 1");
    o.batch_size = 8;
    o.shard_index = 3;
    o.shard_count = 3;
    CALL_FAILS("job_shard", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "shard_index 3 of shard_count 3");
    o.shard_index = 0;
    o.shard_count = 1;
    o.hooks = NULL;
    CALL_FAILS("job_hooks_null", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "hooks is NULL with n_hooks 1");
    const char *const nul[] = {"resid_pre0", NULL};
    o.hooks = nul;
    o.n_hooks = 2;
    CALL_FAILS("job_hook_null", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "hooks[1] is NULL");
    const char *const none[] = {"resid_pre0", "blocks.*.hook_nothing"};
    o.hooks = none;
    CALL_FAILS("job_hook_unknown", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_NOT_FOUND,
               "circuits_job_create: hooks[1]: pattern 'blocks.*.hook_nothing' matches no hook point");
    o.n_hooks = 0;
    CALL_FAILS("job_mean_no_hooks", circuits_job_create(&job, M, DS, &o, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "a mean_activations job needs hooks");
    o.hooks = HOOKS;
    o.n_hooks = 1;
    /* token ids outside the vocabulary, rows longer than n_ctx */
    int32_t bad[2 * 3] = {1, 2, 3, 4, 1000, 6};
    circuits_dataset *ds = NULL;
    CHECK_OK(circuits_dataset_from_tokens(&ds, bad, 2, 3));
    CALL_FAILS("job_token_range", circuits_job_create(&job, M, ds, &o, NULL), CIRCUITS_E_RANGE,
               "token 1000 at row 1, position 1 is outside the model's vocabulary [0, 1000)");
    circuits_dataset_free(ds);
    int32_t *longrow = calloc(513, sizeof *longrow);
    CHECK_OK(circuits_dataset_from_tokens(&ds, longrow, 1, 513));
    CALL_FAILS("job_rows_too_long", circuits_job_create(&job, M, ds, &o, NULL), CIRCUITS_E_RANGE,
               "rows have 513 positions, more than the model's n_ctx 512");
    circuits_dataset_free(ds);
    free(longrow);
    /* a directory that is a file */
    spit(path_of("afile"), "x", 1);
    CALL_FAILS("job_dir_is_file", circuits_job_create(&job, M, DS, &o, path_of("afile")), CIRCUITS_E_IO,
               "/afile: it exists and is not a directory");
    CALL_FAILS("job_dir_no_parent", circuits_job_create(&job, M, DS, &o, path_of("no/such")), CIRCUITS_E_IO,
               "No such file or directory");
    CHECK(job == NULL, "*out NULL");
    CALL_FAILS("job_run_null", circuits_job_run(NULL), CIRCUITS_E_INVALID_ARGUMENT, "circuits_job_run: job is NULL");
    CHECK_OK(circuits_job_create(&job, M, DS, &o, NULL));
    CALL_FAILS("job_run_no_dir", circuits_job_run(job), CIRCUITS_E_INVALID_ARGUMENT,
               "the job has no directory (created with dir NULL)");
    CHECK(circuits_job_provenance(NULL) == NULL, "provenance of NULL");
    CALL_FAILS("job_status_null", circuits_job_status(NULL, NULL, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_job_status: job is NULL");
    circuits_job_free(job);
    circuits_job_free(NULL);
    circuits_job_options_init(NULL);
}

/* ---- every allocation failed in turn ---- */

static void test_faults(void)
{
    spec s = base_spec();
    s.n_hooks = 2;
    /* create (a new directory) */
    const char *dir = path_of("fault");
    long k;
    for (k = 0;; k++) {
        long live = cx_live_allocations();
        circuits_job *job = (circuits_job *)&k;
        cx_fault_fail_after(k, true);
        int rc = make(&s, dir, &job);
        cx_fault_disarm();
        if (rc == CIRCUITS_OK) {
            circuits_job_free(job);
            break;
        }
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "create, allocation %ld: %d (%s)", k, rc, circuits_last_error());
        CHECK(job == NULL, "create, allocation %ld: *out not NULL", k);
        CHECK(cx_live_allocations() == live, "create, allocation %ld: %ld allocations leaked", k,
              cx_live_allocations() - live);
        CHECK(access(dir, F_OK) != 0, "create, allocation %ld: left %s behind", k, dir);
    }
    CHECK(k > 10, "create passed %ld allocation sites", k);
    printf("circuits_job_create: %ld allocation sites\n", k);
    /* run: a failed run leaves whole units only; the next run finishes the job */
    long sites = 0;
    for (k = 0;; k++) {
        rm_rf(dir);
        circuits_job *job = NULL;
        CHECK_OK(make(&s, dir, &job));
        long live = cx_live_allocations();
        cx_fault_fail_after(k, true);
        int rc = circuits_job_run(job);
        cx_fault_disarm();
        int units, other;
        count_units(dir, &units, &other);
        CHECK(other == 0, "run, allocation %ld: %d other files in units/", k, other);
        CHECK(cx_live_allocations() == live, "run, allocation %ld: %ld allocations leaked", k,
              cx_live_allocations() - live);
        circuits_job_free(job);
        if (rc == CIRCUITS_OK) break;
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "run, allocation %ld: %d (%s)", k, rc, circuits_last_error());
        sites++;
        if (k % 7 == 0) { /* a resume after the failure gives the same units */
            CHECK_OK(run_dir(&s, dir));
            CHECK(same_bytes(unit_file(dir, 4), unit_file(path_of("fault_ref"), 4)) || k == 0, "resumed unit");
        }
    }
    printf("circuits_job_run: %ld allocation sites\n", sites);
    /* merge */
    const char *out = path_of("fault.safetensors");
    for (k = 0;; k++) {
        long live = cx_live_allocations();
        cx_fault_fail_after(k, true);
        int rc = merge1(g_base_dir, out);
        cx_fault_disarm();
        if (rc == CIRCUITS_OK) break;
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "merge, allocation %ld: %d (%s)", k, rc, circuits_last_error());
        CHECK(cx_live_allocations() == live, "merge, allocation %ld: %ld allocations leaked", k,
              cx_live_allocations() - live);
        CHECK(access(out, F_OK) != 0, "merge, allocation %ld: left %s", k, out);
        CHECK(entries(g_root) >= 0, "listing");
    }
    printf("circuits_job_merge: %ld allocation sites\n", k);
    CHECK(same_bytes(out, g_base), "merge after the failures: output differs");
}

/* A model kept quantized (Q4_0 GGUF, keep_stored_dtype): its products dequantize tiles through
 * their own path (run/qmatmul.c), a sequence at a time in per-sequence mode as well: the same
 * output bytes for batch sizes 1, 3, 8 and 1 or 2 threads. */
static void test_quantized(const char *models_dir)
{
    char p[700];
    snprintf(p, sizeof p, "%s/../../tests/reference/gguf/llama/Q4_0.gguf", models_dir);
    circuits_load_options lo;
    circuits_load_options_init(&lo);
    lo.keep_stored_dtype = 1;
    lo.fold_ln = 0; /* it would rewrite the quantized matrices */
    lo.center_writing_weights = 0;
    lo.center_unembed = 0;
    lo.fold_value_biases = 0;
    circuits_model *q = NULL;
    CHECK_OK(circuits_model_load(&q, p, &lo));
    if (!q) return;
    circuits_config c;
    CHECK_OK(circuits_model_config(q, &c));
    int32_t qt[ROWS * T];
    for (int i = 0; i < ROWS * T; i++) qt[i] = tokens[i] % c.d_vocab;
    circuits_dataset *ds = NULL;
    CHECK_OK(circuits_dataset_from_tokens(&ds, qt, ROWS, T));
    static const char *const qh[] = {"blocks.*.hook_resid_post", "blocks.0.attn.hook_z"};
    char first[700] = "";
    const int64_t batches[] = {1, 3, 8};
    for (int ti = 1; ti <= 2; ti++)
        for (int bi = 0; bi < 3 && ds; bi++) {
            circuits_set_num_threads(ti);
            spec s = {q, ds, qh, 2, UNIT, batches[bi], 0, 1, NULL, NULL};
            char name[64], out[700];
            snprintf(name, sizeof name, "q4_t%d_b%lld", ti, (long long)batches[bi]);
            const char *dir = path_of(name);
            snprintf(out, sizeof out, "%s.safetensors", dir);
            CHECK_OK(run_dir(&s, dir));
            CHECK_OK(merge1(dir, out));
            if (!first[0]) snprintf(first, sizeof first, "%s", out);
            else CHECK(same_bytes(out, first), "Q4_0 %s: output differs from threads 1, batch 1", name);
        }
    circuits_set_num_threads(2);
    circuits_dataset_free(ds);
    circuits_model_free(q);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s EXAMPLES_MODELS_DIR [-v] [--faults]\n", argv[0]);
        return 2;
    }
    /* --faults: the failure injection too (meson suite failure_injection, which valgrind skips:
     * thousands of jobs; ASan + LeakSanitizer check them) */
    bool faults = false;
    for (int i = 2; i < argc; i++) {
        cat_verbose |= strcmp(argv[i], "-v") == 0;
        faults |= strcmp(argv[i], "--faults") == 0;
    }
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = g_root;
    char p[600];
    snprintf(p, sizeof p, "%s/tiny-random-gpt2", argv[1]);
    CHECK_OK(circuits_model_load(&M, p, NULL));
    snprintf(p, sizeof p, "%s/attn-only-2l", argv[1]);
    CHECK_OK(circuits_model_load(&M2, p, NULL));
    uint64_t x = 12345;
    for (int i = 0; i < ROWS * T; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((x >> 33) % 256);
    }
    CHECK_OK(circuits_dataset_from_tokens(&DS, tokens, ROWS, T));
    if (!M || !M2 || !DS) return tu_finish("test_job");
    test_baseline();
    test_invariance();
    test_compute_store();
    test_resume();
    test_provenance();
    test_merge_refusals();
    test_bad_options();
    test_quantized(argv[1]);
    if (faults) {
        spec s = base_spec();
        s.n_hooks = 2;
        CHECK_OK(run_dir(&s, path_of("fault_ref")));
        test_faults();
    }
    circuits_dataset_free(DS);
    circuits_model_free(M);
    circuits_model_free(M2);
    rm_rf(g_root);
    return tu_finish("test_job");
}
