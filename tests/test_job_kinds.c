/* The feature-statistics and export job kinds (lib/job/kind_features.c, kind_export.c;
 * docs/jobs.md "Feature statistics", "Export"):
 * - the feature-statistics merge (cx_feature_stats_merge) of pieces of a dataset against one pass
 *   over it all;
 * - a FEATURE_STATS job's output against circuits_context_feature_stats_add over the whole
 *   dataset at once: counts, maxima and every top context identical, means within 1e-6;
 * - an EXPORT job's shards against run_with_cache bit for bit, its index.json;
 * - both kinds' outputs byte-identical for 1 or 2 threads, batch sizes 1, 4 and 8, one process or
 *   two shards merged (unit_rows fixed);
 * - re-merging an export into its directory, and the bad input (docs/errors.md "Job kinds");
 * - every allocation of create, run and merge of both kinds failed in turn (lib/base/fault.h): the
 *   status says so, nothing leaks or is left half-made, and the output is then the same bytes.
 * Usage: test_job_kinds MODEL_DIR SAE_DIR WIDE_MODEL_DIR [-v] (examples/models/tiny-random-gpt2,
 * tests/reference/saes/hf_tiny_random_gpt2, examples/models/mlp-2l). */
#include "catalogue.h"
#include "files.h"

#include "../lib/io/st_save.h"
#include "../lib/job/job.h"
#include "fault.h"
#include "../lib/sae/sae.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { ROWS = 13, T = 11, UNIT = 4 };
static int32_t tokens[ROWS * T];
static circuits_model *g_model;
static circuits_dataset *g_ds;
static const char *g_sae_root;
static char g_root[] = "/tmp/circuits_job_kinds_XXXXXX";

static char *tmp_path(const char *name)
{
    static char bufs[16][600];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, 600, "%s/%s", g_root, name);
    return b;
}

/* ---- the merge of feature statistics ---- */

static void test_merge(circuits_sae *sae)
{
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, g_model, NULL));
    circuits_feature_stats_options o;
    circuits_feature_stats_options_init(&o);
    o.top_k = 6;
    o.skip_positions = 1;
    o.context_left = 3;
    o.context_right = 2;
    circuits_feature_stats *whole = NULL, *all = NULL;
    CHECK_OK(circuits_feature_stats_create(&whole, sae, &o));
    CHECK_OK(circuits_context_feature_stats_add(ctx, whole, tokens, ROWS, T));
    CHECK_OK(cx_feature_stats_make(&all, sae->d_sae, &o, sae->hook_name, sae->arch_name, false, "test"));
    const int64_t cut[] = {0, 1, 5, 9, 13};
    for (int i = 0; i < 4; i++) {
        circuits_feature_stats *piece = NULL;
        CHECK_OK(circuits_feature_stats_create(&piece, sae, &o));
        CHECK_OK(cx_feature_stats_set_row_base(piece, cut[i], "test"));
        CHECK_OK(circuits_context_feature_stats_add(ctx, piece, tokens + cut[i] * T, cut[i + 1] - cut[i], T));
        if (i == 2) { /* rows must follow on: piece 2 before piece 1 is refused, all unchanged */
            circuits_feature_stats *again = NULL;
            CHECK_OK(cx_feature_stats_make(&again, sae->d_sae, &o, "h", "a", false, "test"));
            CHECK_FAILS(cx_feature_stats_merge(again, piece, "test"), CIRCUITS_E_INVALID_ARGUMENT, "must follow on");
            circuits_feature_stats_free(again);
        }
        CHECK_OK(cx_feature_stats_merge(all, piece, "test"));
        circuits_feature_stats_free(piece);
    }
    cx_st_out a[CX_FEATURE_STATS_TENSORS], b[CX_FEATURE_STATS_TENSORS];
    cx_feature_stats_tensors(whole, a);
    cx_feature_stats_tensors(all, b);
    for (int i = 0; i < CX_FEATURE_STATS_TENSORS; i++) {
        size_t n = 1;
        for (int d = 0; d < a[i].ndim; d++) n *= (size_t)a[i].shape[d];
        if (a[i].dtype == CX_DT_F64) { /* act_sum: the pieces' sums added in another order */
            const double *x = a[i].data, *y = b[i].data;
            double worst = 0;
            for (size_t j = 0; j < n; j++) {
                double rel = fabs(x[j] - y[j]) / (fabs(x[j]) > 1e-30 ? fabs(x[j]) : 1);
                worst = rel > worst ? rel : worst;
            }
            CHECK(worst <= 1e-6, "merge: act_sum differs by %g relative", worst);
        } else {
            CHECK(memcmp(a[i].data, b[i].data, n * cx_dtype_size(a[i].dtype)) == 0, "merge: %s differs from one pass",
                  a[i].name);
        }
    }
    /* fired somewhere and the top lists are full: the test has teeth */
    int32_t cnt = 0;
    CHECK_OK(circuits_feature_stats_top(all, 0, NULL, NULL, NULL, NULL, &cnt));
    CHECK(cnt == o.top_k, "latent 0 keeps %d contexts, want %d", cnt, o.top_k);
    circuits_feature_stats_free(whole);
    circuits_feature_stats_free(all);
    circuits_context_free(ctx);
}

/* ---- running jobs ---- */

typedef struct variant {
    int threads;
    int64_t batch;
    int shards;
    const char *tag;
} variant;

static const variant variants[] = {
    {1, 8, 1, "t1_b8_s1"}, {2, 1, 1, "t2_b1_s1"}, {2, 4, 2, "t2_b4_s2"}, {1, 4, 2, "t1_b4_s2"},
};

/* Runs the job opts describes as variant v (its own directories under tag) and merges it into
 * out; the provenance into prov (malloc'd). */
static int run_variant(const circuits_job_options *base, const variant *v, const char *tag, const char *out,
                       char **prov)
{
    circuits_set_num_threads(v->threads);
    char dirs[2][600];
    const char *d[2];
    int rc = CIRCUITS_OK;
    for (int s = 0; s < v->shards && !rc; s++) {
        circuits_job_options o = *base;
        o.batch_size = v->batch;
        o.shard_index = s;
        o.shard_count = v->shards;
        snprintf(dirs[s], sizeof dirs[s], "%s/%s_%s_shard%d", g_root, tag, v->tag, s);
        d[s] = dirs[s];
        circuits_job *job = NULL;
        rc = circuits_job_create(&job, g_model, g_ds, &o, dirs[s]);
        if (!rc) rc = circuits_job_run(job);
        if (!rc && prov && s == 0) *prov = strdup(circuits_job_provenance(job));
        circuits_job_free(job);
    }
    if (!rc) rc = circuits_job_merge(d, (size_t)v->shards, out);
    if (rc) fprintf(stderr, "  %s %s: %s\n", tag, v->tag, circuits_last_error());
    circuits_set_num_threads(0);
    return rc;
}

/* The metadata of a safetensors file (NULL if none). */
static json_t *metadata_of(const char *path)
{
    cx_st_set *set = NULL;
    json_t *md = NULL;
    if (cx_st_open(&set, path, CX_ST_READ) == 0) cx_st_metadata(&set->maps[0], &md, "test");
    cx_st_close(set);
    return md;
}

static void test_features_job(void)
{
    circuits_feature_stats_options fo;
    circuits_feature_stats_options_init(&fo);
    fo.top_k = 5;
    fo.skip_positions = 1;
    fo.context_left = 3;
    fo.context_right = 2;
    char sae_dir[600];
    snprintf(sae_dir, sizeof sae_dir, "%s/standard", g_sae_root);
    /* the reference: one pass over the whole dataset */
    circuits_sae *sae = NULL;
    circuits_context *ctx = NULL;
    circuits_feature_stats *ref = NULL;
    CHECK_OK(circuits_sae_load(&sae, sae_dir));
    CHECK_OK(circuits_context_create(&ctx, g_model, NULL));
    CHECK_OK(circuits_feature_stats_create(&ref, sae, &fo));
    CHECK_OK(circuits_context_feature_stats_add(ctx, ref, tokens, ROWS, T));
    const char *ref_path = tmp_path("features_ref.safetensors");
    CHECK_OK(circuits_feature_stats_save(ref, ref_path));
    circuits_feature_stats_free(ref);
    circuits_context_free(ctx);
    circuits_sae_free(sae);

    circuits_job_options o;
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_FEATURE_STATS;
    o.sae_path = sae_dir;
    o.feature_stats = &fo;
    o.unit_rows = UNIT;
    char first[600] = "";
    for (size_t v = 0; v < CX_COUNT(variants); v++) {
        char out[600];
        snprintf(out, sizeof out, "%s/features_%s.safetensors", g_root, variants[v].tag);
        char *prov = NULL;
        if (run_variant(&o, &variants[v], "features", out, &prov)) {
            CHECK(0, "feature_stats job %s failed", variants[v].tag);
            continue;
        }
        if (!first[0]) {
            snprintf(first, sizeof first, "%s", out);
            /* against the one pass: every tensor but act_sum bit for bit, act_sum within 1e-6 */
            cx_st_set *a = NULL, *b = NULL;
            CHECK_OK(cx_st_open(&a, ref_path, CX_ST_READ));
            CHECK_OK(cx_st_open(&b, out, CX_ST_READ));
            CHECK(a && b && a->n_tensors == b->n_tensors, "the job's file has other tensors than the reference");
            for (size_t i = 0; a && b && i < a->n_tensors; i++) {
                const cx_st_tensor *x = &a->tensors[i], *y = cx_st_find(b, x->name);
                CHECK(y && y->nbytes == x->nbytes && y->dtype == x->dtype, "tensor %s differs in shape", x->name);
                if (!y || y->nbytes != x->nbytes) continue;
                if (x->dtype == CX_DT_F64) {
                    double worst = 0;
                    for (size_t j = 0; j < x->numel; j++) {
                        double p, q;
                        memcpy(&p, x->data + 8 * j, 8);
                        memcpy(&q, y->data + 8 * j, 8);
                        double rel = fabs(p - q) / (fabs(p) > 1e-30 ? fabs(p) : 1);
                        worst = rel > worst ? rel : worst;
                    }
                    CHECK(worst <= 1e-6, "act_sum differs from one pass by %g relative", worst);
                } else {
                    CHECK(memcmp(x->data, y->data, x->nbytes) == 0, "%s differs from one pass", x->name);
                }
            }
            cx_st_close(a);
            cx_st_close(b);
            /* the metadata: the one pass's, and the provenance */
            json_t *ma = metadata_of(ref_path), *mb = metadata_of(out);
            CHECK(ma && mb, "metadata missing");
            const char *key;
            json_t *val;
            json_object_foreach(ma, key, val) {
                json_t *w = json_object_get(mb, key);
                CHECK(w && json_equal(val, w), "metadata %s differs from circuits_feature_stats_save's", key);
            }
            json_t *pj = json_object_get(mb, "circuits_job");
            CHECK(json_is_string(pj) && prov && strcmp(json_string_value(pj), prov) == 0,
                  "metadata circuits_job is not the job's provenance");
            CHECK(json_object_size(mb) == json_object_size(ma) + 1, "metadata has keys beyond the save's + circuits_job");
            /* the provenance records the SAE and the options */
            json_t *p = prov ? json_loads(prov, 0, NULL) : NULL, *job = json_object_get(p, "job");
            json_t *files = json_object_get(json_object_get(job, "sae"), "files");
            CHECK(json_is_string(json_object_get(files, "cfg.json")) &&
                      json_is_string(json_object_get(files, "sae_weights.safetensors")) &&
                      strlen(json_string_value(json_object_get(files, "cfg.json"))) == 64,
                  "the provenance lacks the SAE files' digests");
            const char *names[] = {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"};
            for (int i = 0; i < 3; i++) {
                char path[700], hex[65] = "";
                snprintf(path, sizeof path, "%s/%s", sae_dir, names[i]);
                CHECK_OK(cx_sha256_file(path, hex, "test"));
                json_t *got = json_object_get(files, names[i]);
                CHECK(json_is_string(got) && strcmp(json_string_value(got), hex) == 0,
                      "the provenance's digest of %s is not its SHA-256", names[i]);
            }
            CHECK(json_object_size(files) == 3, "the provenance digests files the SAE directory lacks");
            CHECK(json_is_string(json_object_get(json_object_get(job, "sae"), "hook_name")) &&
                      strcmp(json_string_value(json_object_get(json_object_get(job, "sae"), "hook_name")),
                             "blocks.1.hook_resid_pre") == 0,
                  "the provenance lacks the SAE's hook");
            CHECK(json_integer_value(json_object_get(json_object_get(job, "feature_stats"), "top_k")) == 5 &&
                      json_integer_value(json_object_get(json_object_get(job, "feature_stats"), "skip_positions")) == 1,
                  "the provenance lacks the options");
            json_decref(p);
            json_decref(ma);
            json_decref(mb);
            /* circuits_feature_stats_load reads it */
            circuits_feature_stats *back = NULL;
            CHECK_OK(circuits_feature_stats_load(&back, out));
            circuits_feature_stats_free(back);
        } else {
            CHECK(same_bytes(first, out), "feature_stats output of %s differs from %s's", variants[v].tag,
                  variants[0].tag);
        }
        free(prov);
    }
}

/* ---- export ---- */

static const char *const export_hooks[] = {"hook_embed", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post",
                                           "ln_final.hook_normalized"};

/* run_with_cache of each row alone: ref[i] [ROWS, ...] for export_hooks[i], its shape (batch ROWS). */
typedef struct export_ref {
    float *ref[4];
    size_t row[4];
    circuits_tensor t[4]; /* one row's descriptor (data NULL) */
} export_ref;

/* Checks an export directory against the rows' caches; returns the shard count. */
static int64_t check_export(const char *out, const export_ref *er, int64_t unit_rows, const char *prov)
{
    char path[700];
    snprintf(path, sizeof path, "%s/index.json", out);
    json_error_t err;
    json_t *idx = json_load_file(path, 0, &err);
    CHECK(idx != NULL, "%s: %s", path, err.text);
    if (!idx) return 0;
    CHECK(json_integer_value(json_object_get(idx, "n_rows")) == ROWS, "index n_rows");
    CHECK(json_integer_value(json_object_get(idx, "pos")) == T, "index pos");
    json_t *pj = prov ? json_loads(prov, 0, NULL) : NULL;
    CHECK(pj && json_equal(pj, json_object_get(idx, "circuits_job")), "index circuits_job is not the provenance");
    json_decref(pj);
    json_t *hooks = json_object_get(idx, "hooks"), *shapes = json_object_get(idx, "shapes");
    CHECK(json_array_size(hooks) == CX_COUNT(export_hooks), "index hooks");
    for (size_t i = 0; i < CX_COUNT(export_hooks) && i < json_array_size(hooks); i++) {
        CHECK(strcmp(json_string_value(json_array_get(hooks, i)), export_hooks[i]) == 0, "index hooks[%zu]", i);
        circuits_tensor t = er->t[i];
        json_t *sh = json_object_get(shapes, export_hooks[i]);
        bool ok = (int)json_array_size(sh) == t.ndim - 1;
        for (int d = 1; ok && d < t.ndim; d++) ok = json_integer_value(json_array_get(sh, d - 1)) == t.shape[d];
        CHECK(ok, "index shapes[%s]", export_hooks[i]);
    }
    json_t *shards = json_object_get(idx, "shards");
    int64_t n_units = (ROWS + unit_rows - 1) / unit_rows;
    CHECK((int64_t)json_array_size(shards) == n_units, "index has %zu shards, want %lld", json_array_size(shards),
          (long long)n_units);
    for (int64_t u = 0; u < n_units && u < (int64_t)json_array_size(shards); u++) {
        json_t *s = json_array_get(shards, (size_t)u);
        int64_t row0 = u * unit_rows, n = ROWS - row0 < unit_rows ? ROWS - row0 : unit_rows;
        char want[64];
        snprintf(want, sizeof want, "activations-%06lld.safetensors", (long long)u);
        CHECK(strcmp(json_string_value(json_object_get(s, "file")), want) == 0, "shard %lld file", (long long)u);
        CHECK(json_integer_value(json_object_get(s, "first_row")) == row0 &&
                  json_integer_value(json_object_get(s, "rows")) == n,
              "shard %lld rows", (long long)u);
        snprintf(path, sizeof path, "%s/%s", out, want);
        cx_st_set *set = NULL;
        CHECK_OK(cx_st_open(&set, path, CX_ST_READ));
        if (!set) continue;
        CHECK(set->n_tensors == 2 + CX_COUNT(export_hooks), "shard %lld holds %zu tensors", (long long)u, set->n_tensors);
        const cx_st_tensor *rows = cx_st_find(set, "rows"), *toks = cx_st_find(set, "tokens");
        CHECK(rows && rows->dtype == CX_DT_I64 && rows->numel == (size_t)n, "shard rows");
        for (int64_t i = 0; rows && i < n; i++) {
            int64_t r;
            memcpy(&r, rows->data + 8 * i, 8);
            CHECK(r == row0 + i, "shard %lld rows[%lld] = %lld", (long long)u, (long long)i, (long long)r);
        }
        CHECK(toks && toks->dtype == CX_DT_I32 && toks->ndim == 2 && toks->shape[1] == T &&
                  memcmp(toks->data, tokens + row0 * T, (size_t)(n * T) * 4) == 0,
              "shard %lld tokens", (long long)u);
        for (size_t i = 0; i < CX_COUNT(export_hooks); i++) {
            const cx_st_tensor *x = cx_st_find(set, export_hooks[i]);
            size_t row = er->row[i];
            CHECK(x && x->dtype == CX_DT_F32 && x->shape[0] == n && x->numel == row * (size_t)n &&
                      memcmp(x->data, er->ref[i] + (size_t)row0 * row, row * (size_t)n * 4) == 0,
                  "shard %lld %s differs from run_with_cache", (long long)u, export_hooks[i]);
        }
        json_t *md = metadata_of(path);
        CHECK(prov && json_is_string(json_object_get(md, "circuits_job")) &&
                  strcmp(json_string_value(json_object_get(md, "circuits_job")), prov) == 0,
              "shard %lld lacks the provenance", (long long)u);
        json_decref(md);
        cx_st_close(set);
    }
    json_decref(idx);
    return n_units;
}

/* No directory an export merge builds beside its out, or moves aside, is left. */
static void nothing_beside(void)
{
    DIR *d = opendir(g_root);
    struct dirent *e;
    while (d && (e = readdir(d)))
        CHECK(!strstr(e->d_name, ".partial-") && !strstr(e->d_name, ".old-"), "%s left behind", e->d_name);
    if (d) closedir(d);
}

static void test_export_job(void)
{
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_context_create(&ctx, g_model, NULL));
    CHECK_OK(circuits_cache_create(&cache));
    export_ref er;
    memset(&er, 0, sizeof er);
    for (int64_t r = 0; r < ROWS; r++) { /* each row alone: the bits a row has in any batch size */
        CHECK_OK(circuits_context_run_with_cache(ctx, tokens + r * T, 1, T, export_hooks, CX_COUNT(export_hooks), cache,
                                                 NULL, NULL, NULL));
        for (size_t i = 0; i < CX_COUNT(export_hooks); i++) {
            circuits_tensor t;
            CHECK_OK(circuits_cache_get(cache, export_hooks[i], &t));
            er.row[i] = (size_t)t.strides[0];
            if (!er.ref[i]) er.ref[i] = malloc(er.row[i] * ROWS * sizeof(float));
            memcpy(er.ref[i] + (size_t)r * er.row[i], t.data, er.row[i] * sizeof(float));
            er.t[i] = t;
            er.t[i].data = NULL;
        }
    }
    circuits_job_options o;
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_EXPORT;
    o.hooks = export_hooks;
    o.n_hooks = CX_COUNT(export_hooks);
    o.unit_rows = UNIT;
    char first[600] = "";
    for (size_t v = 0; v < CX_COUNT(variants); v++) {
        char out[600];
        snprintf(out, sizeof out, "%s/export_%s", g_root, variants[v].tag);
        char *prov = NULL;
        if (run_variant(&o, &variants[v], "export", out, &prov)) {
            CHECK(0, "export job %s failed", variants[v].tag);
            continue;
        }
        int64_t n_units = check_export(out, &er, UNIT, prov);
        if (!first[0]) {
            snprintf(first, sizeof first, "%s", out);
        } else {
            for (int64_t u = 0; u < n_units; u++) {
                char a[700], b[700];
                snprintf(a, sizeof a, "%s/activations-%06lld.safetensors", first, (long long)u);
                snprintf(b, sizeof b, "%s/activations-%06lld.safetensors", out, (long long)u);
                CHECK(same_bytes(a, b), "export shard %lld of %s differs from %s's", (long long)u, variants[v].tag,
                      variants[0].tag);
            }
            char a[700], b[700];
            snprintf(a, sizeof a, "%s/index.json", first);
            snprintf(b, sizeof b, "%s/index.json", out);
            CHECK(same_bytes(a, b), "index.json of %s differs", variants[v].tag);
        }
        free(prov);
    }
    /* the shards are the unit files hard-linked (same filesystem) ... */
    struct stat sb;
    CHECK(stat(tmp_path("export_t1_b8_s1/activations-000000.safetensors"), &sb) == 0 && sb.st_nlink == 2,
          "a shard on the job directory's filesystem is not a hard link of its unit file");
    /* ... or copied from another filesystem: a job directory in /dev/shm (tmpfs) */
    char shm[] = "/dev/shm/circuits_job_kinds_XXXXXX";
    struct stat a_st, b_st;
    if (mkdtemp(shm) && stat(shm, &a_st) == 0 && stat(g_root, &b_st) == 0 && a_st.st_dev != b_st.st_dev) {
        char jdir[700];
        snprintf(jdir, sizeof jdir, "%s/job", shm);
        circuits_job *job = NULL;
        CHECK_OK(circuits_job_create(&job, g_model, g_ds, &o, jdir));
        CHECK_OK(circuits_job_run(job));
        circuits_job_free(job);
        const char *dirs[] = {jdir};
        const char *out = tmp_path("export_copied");
        CHECK_OK(circuits_job_merge(dirs, 1, out));
        for (int64_t u = 0; u < (ROWS + UNIT - 1) / UNIT; u++) {
            char x[700], y[700];
            snprintf(x, sizeof x, "%s/activations-%06lld.safetensors", out, (long long)u);
            snprintf(y, sizeof y, "%s/activations-%06lld.safetensors", first, (long long)u);
            CHECK(same_bytes(x, y) && stat(x, &sb) == 0 && sb.st_nlink == 1, "copied shard %lld", (long long)u);
        }
    } else {
        printf("test_job_kinds: NOTE: /dev/shm is not another filesystem here: the copy of shards is not tested\n");
    }
    rm_rf(shm);
    /* a merge into an existing export replaces it whole: 4 shards, then 2 (unit_rows 8) */
    circuits_job_options o8 = o;
    o8.unit_rows = 8;
    char *prov = NULL;
    const char *out = tmp_path("export_t1_b8_s1");
    CHECK(run_variant(&o8, &variants[0], "export8", out, &prov) == 0, "re-merge failed");
    CHECK(check_export(out, &er, 8, prov) == 2, "re-merged export");
    CHECK(access(tmp_path("export_t1_b8_s1/activations-000002.safetensors"), F_OK) != 0,
          "a shard of the old export is left in the new one");
    free(prov);
    nothing_beside(); /* the directory built beside and swapped in, the old one removed */
    for (size_t i = 0; i < CX_COUNT(export_hooks); i++) free(er.ref[i]);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
}

/* Rewrites unit file `path` with tensor `name`'s element `at` (int64) set to v, the metadata kept:
 * a unit from elsewhere that carries the right provenance but wrong contents. */
static void tamper_i64(const char *path, const char *name, size_t at, int64_t v)
{
    cx_st_set *set = NULL;
    json_t *md = NULL;
    CHECK_OK(cx_st_open(&set, path, CX_ST_READ));
    if (!set) return;
    CHECK_OK(cx_st_metadata(&set->maps[0], &md, "test"));
    cx_st_out t[32];
    void *copies[32] = {0};
    size_t n = set->n_tensors < 32 ? set->n_tensors : 32;
    for (size_t i = 0; i < n; i++) {
        const cx_st_tensor *x = &set->tensors[i];
        copies[i] = malloc(x->nbytes ? x->nbytes : 1);
        memcpy(copies[i], x->data, x->nbytes);
        if (strcmp(x->name, name) == 0) memcpy((char *)copies[i] + 8 * at, &v, 8);
        t[i] = (cx_st_out){x->name, x->dtype, x->ndim, {0}, copies[i]};
        memcpy(t[i].shape, x->shape, sizeof t[i].shape);
    }
    const char *meta[4] = {"circuits_job", json_string_value(json_object_get(md, "circuits_job")), "unit",
                           json_string_value(json_object_get(md, "unit"))};
    CHECK_OK(cx_st_write(path, t, n, meta, 2, "test"));
    cx_st_close(set); /* after: the names are its */
    for (size_t i = 0; i < n; i++) free(copies[i]);
    json_decref(md);
}

/* ---- every allocation failed in turn ---- */

/* Entries of g_root whose name holds `part` (a directory an export merge builds beside out). */
static int count_beside(const char *part)
{
    int n = 0;
    DIR *d = opendir(g_root);
    struct dirent *e;
    while (d && (e = readdir(d))) n += strstr(e->d_name, part) != NULL;
    if (d) closedir(d);
    return n;
}

/* create, run and merge of the job o describes, each allocation of each failed in turn: the
 * status says so, nothing leaks, nothing half-made is left, and the job then gives `want`. */
static void fault_kind(const circuits_job_options *o, const char *tag, const char *want, bool is_dir)
{
    char dir[700], out[700];
    snprintf(dir, sizeof dir, "%s/fault_%s", g_root, tag);
    snprintf(out, sizeof out, "%s/fault_%s_out%s", g_root, tag, is_dir ? "" : ".safetensors");
    long k;
    for (k = 0;; k++) {
        long live = cx_live_allocations();
        circuits_job *job = NULL;
        cx_fault_fail_after(k, true);
        int rc = circuits_job_create(&job, g_model, g_ds, o, dir);
        cx_fault_disarm();
        if (rc == CIRCUITS_OK) {
            circuits_job_free(job);
            break;
        }
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "%s create, allocation %ld: %d (%s)", tag, k, rc, circuits_last_error());
        CHECK(cx_live_allocations() == live, "%s create, allocation %ld: %ld leaked", tag, k, cx_live_allocations() - live);
    }
    printf("%s circuits_job_create: %ld allocation sites\n", tag, k);
    for (k = 0;; k++) {
        rm_rf(dir);
        circuits_job *job = NULL;
        CHECK_OK(circuits_job_create(&job, g_model, g_ds, o, dir));
        long live = cx_live_allocations();
        cx_fault_fail_after(k, true);
        int rc = circuits_job_run(job);
        cx_fault_disarm();
        CHECK(cx_live_allocations() == live, "%s run, allocation %ld: %ld leaked", tag, k, cx_live_allocations() - live);
        if (rc) CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "%s run, allocation %ld: %d (%s)", tag, k, rc, circuits_last_error());
        if (rc) CHECK_OK(circuits_job_run(job)); /* the resume finishes it */
        circuits_job_free(job);
        if (rc == CIRCUITS_OK) break;
    }
    printf("%s circuits_job_run: %ld allocation sites\n", tag, k);
    const char *dirs[] = {dir};
    for (k = 0;; k++) {
        long live = cx_live_allocations();
        cx_fault_fail_after(k, true);
        int rc = circuits_job_merge(dirs, 1, out);
        cx_fault_disarm();
        if (rc == CIRCUITS_OK) break;
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "%s merge, allocation %ld: %d (%s)", tag, k, rc, circuits_last_error());
        CHECK(cx_live_allocations() == live, "%s merge, allocation %ld: %ld leaked", tag, k, cx_live_allocations() - live);
        CHECK(access(out, F_OK) != 0 && count_beside(".partial-") == 0, "%s merge, allocation %ld: left a partial output",
              tag, k);
    }
    printf("%s circuits_job_merge: %ld allocation sites\n", tag, k);
    char a[800], b[800];
    snprintf(a, sizeof a, "%s%s", out, is_dir ? "/activations-000001.safetensors" : "");
    snprintf(b, sizeof b, "%s%s", want, is_dir ? "/activations-000001.safetensors" : "");
    CHECK(same_bytes(a, b), "%s: the output after the failures differs", tag);
}

static void test_faults(void)
{
    char sae_dir[600];
    snprintf(sae_dir, sizeof sae_dir, "%s/standard", g_sae_root);
    circuits_feature_stats_options fo;
    circuits_feature_stats_options_init(&fo);
    fo.top_k = 5;
    fo.skip_positions = 1;
    fo.context_left = 3;
    fo.context_right = 2;
    circuits_job_options o;
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_FEATURE_STATS;
    o.sae_path = sae_dir;
    o.feature_stats = &fo;
    o.unit_rows = UNIT;
    fault_kind(&o, "features", tmp_path("features_t1_b8_s1.safetensors"), false);
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_EXPORT;
    o.hooks = export_hooks;
    o.n_hooks = CX_COUNT(export_hooks);
    o.unit_rows = UNIT;
    fault_kind(&o, "export", tmp_path("export_t2_b1_s1"), true);
}

/* ---- bad input ---- */

static int create_fails(const circuits_job_options *o, const circuits_model *m)
{
    circuits_job *job = NULL;
    int rc = circuits_job_create(&job, m, g_ds, o, NULL);
    circuits_job_free(job);
    return rc;
}

static void test_bad_input(const char *wide_dir)
{
    char sae_dir[600];
    snprintf(sae_dir, sizeof sae_dir, "%s/standard", g_sae_root);
    circuits_job_options o;
    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_FEATURE_STATS;
    CALL_FAILS("job_features_no_sae", create_fails(&o, g_model), CIRCUITS_E_INVALID_ARGUMENT,
               "a FEATURE_STATS job needs sae_path");
    o.sae_path = tmp_path("no_such_sae");
    CALL_FAILS("job_features_sae_missing", create_fails(&o, g_model), CIRCUITS_E_IO, "circuits_job_create: sae_path: ");
    o.sae_path = sae_dir;
    circuits_feature_stats_options fo;
    circuits_feature_stats_options_init(&fo);
    fo.top_k = -1;
    o.feature_stats = &fo;
    CALL_FAILS("job_features_bad_options", create_fails(&o, g_model), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_job_create: top_k -1 is not in 0 .. 4096");
    o.feature_stats = NULL;
    circuits_model *wide = NULL;
    circuits_dataset *small = NULL; /* token ids within its vocabulary of 256 */
    int32_t few[2 * T];
    for (int i = 0; i < 2 * T; i++) few[i] = tokens[i] % 256;
    CHECK_OK(circuits_model_load(&wide, wide_dir, NULL));
    CHECK_OK(circuits_dataset_from_tokens(&small, few, 2, T));
    circuits_dataset *keep = g_ds;
    g_ds = small;
    CALL_FAILS("job_features_sae_width", create_fails(&o, wide), CIRCUITS_E_SHAPE, "the SAE reads 32 values per token");
    g_ds = keep;
    circuits_dataset_free(small);
    circuits_model_free(wide);

    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_EXPORT;
    CALL_FAILS("job_export_no_hooks", create_fails(&o, g_model), CIRCUITS_E_INVALID_ARGUMENT,
               "an EXPORT job needs hooks");
    const char *none[] = {"blocks.9.*"};
    o.hooks = none;
    o.n_hooks = 1;
    CALL_FAILS("job_export_hook_none", create_fails(&o, g_model), CIRCUITS_E_NOT_FOUND, "blocks.9.*");

    /* merges into an out that is a file, or a directory holding other files */
    o.hooks = export_hooks;
    o.n_hooks = 1;
    o.unit_rows = 8;
    const char *dir = tmp_path("bad_export_job");
    circuits_job *job = NULL;
    CHECK_OK(circuits_job_create(&job, g_model, g_ds, &o, dir));
    CHECK_OK(circuits_job_run(job));
    circuits_job_free(job);
    const char *dirs[] = {dir};
    const char *file = tmp_path("export_file");
    FILE *f = fopen(file, "w");
    if (f) fclose(f);
    CALL_FAILS("job_export_out_file", circuits_job_merge(dirs, 1, file), CIRCUITS_E_INVALID_ARGUMENT,
               "exists and is not a directory");
    const char *other = tmp_path("export_other");
    mkdir(other, 0700);
    f = fopen(tmp_path("export_other/notes.txt"), "w");
    if (f) fclose(f);
    CALL_FAILS("job_export_out_foreign", circuits_job_merge(dirs, 1, other), CIRCUITS_E_INVALID_ARGUMENT,
               "holds 'notes.txt', which no export writes");
    CHECK(access(tmp_path("export_other/notes.txt"), F_OK) == 0, "the refused directory was touched");
    /* unit files with the job's provenance but wrong contents */
    CHECK_OK(circuits_job_merge(dirs, 1, tmp_path("export_good")));
    tamper_i64(tmp_path("bad_export_job/units/u000000001.safetensors"), "rows", 0, 3);
    CALL_FAILS("job_export_unit_rows", circuits_job_merge(dirs, 1, tmp_path("export_good")), CIRCUITS_E_FORMAT,
               "rows[0] is 3, not row 8 of unit 1");
    CHECK(access(tmp_path("export_good/index.json"), F_OK) == 0, "a failed merge removed the export it would replace");
    nothing_beside();

    circuits_job_options_init(&o);
    o.kind = CIRCUITS_JOB_FEATURE_STATS;
    o.sae_path = sae_dir;
    o.unit_rows = 8;
    const char *fdir = tmp_path("bad_features_job");
    CHECK_OK(circuits_job_create(&job, g_model, g_ds, &o, fdir));
    CHECK_OK(circuits_job_run(job));
    circuits_job_free(job);
    const char *fdirs[] = {fdir};
    tamper_i64(tmp_path("bad_features_job/units/u000000001.safetensors"), "top_rows", 0, 2);
    CALL_FAILS("job_features_unit_rows", circuits_job_merge(fdirs, 1, tmp_path("features_bad.safetensors")),
               CIRCUITS_E_FORMAT, "top context 0 of latent 0 is at row 2");
    CHECK(access(tmp_path("features_bad.safetensors"), F_OK) != 0, "a failed merge left an output");
    tamper_i64(tmp_path("bad_features_job/units/u000000001.safetensors"), "n_tokens", 0, 1);
    CALL_FAILS("job_features_unit_tokens", circuits_job_merge(fdirs, 1, tmp_path("features_bad.safetensors")),
               CIRCUITS_E_FORMAT, "unit 1 holds 5 rows and 1 tokens, not 5 and 55");
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR SAE_DIR WIDE_MODEL_DIR [-v] [--faults]\n", argv[0]);
        return 2;
    }
    /* --faults: the failure injection too (meson suite failure_injection, which valgrind skips:
     * thousands of jobs; ASan + LeakSanitizer check them) */
    bool faults = false;
    for (int i = 4; i < argc; i++) {
        cat_verbose |= strcmp(argv[i], "-v") == 0;
        faults |= strcmp(argv[i], "--faults") == 0;
    }
    g_sae_root = argv[2];
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = g_root;
    CHECK_OK(circuits_model_load(&g_model, argv[1], NULL));
    if (!g_model) return 1;
    uint64_t s = 12345;
    for (int i = 0; i < ROWS * T; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((s >> 33) % 1000);
    }
    char sae_dir[600];
    snprintf(sae_dir, sizeof sae_dir, "%s/standard", g_sae_root);
    circuits_sae *sae = NULL;
    CHECK_OK(circuits_sae_load(&sae, sae_dir));
    if (sae) test_merge(sae);
    circuits_sae_free(sae);
    CHECK_OK(circuits_dataset_from_tokens(&g_ds, tokens, ROWS, T));
    if (g_ds) {
        test_features_job();
        test_export_job();
        test_bad_input(argv[3]);
        if (faults) test_faults();
    }
    circuits_dataset_free(g_ds);
    circuits_model_free(g_model);
    rm_rf(g_root);
    return tu_finish("test_job_kinds");
}
