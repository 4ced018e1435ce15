/* Dataset-scale jobs (docs/jobs.md; the distributed side: docs/scale-out.md).
 *
 * File map:
 *   io/dataset.c     circuits_dataset: token rows and per-row columns (.npy, .safetensors, text)
 *   io/dataset_text.c  text datasets (.txt, .jsonl) tokenized in a stream; io/npy.c: .npy parsing
 *   base/digest.c    SHA-256 (OpenSSL's libcrypto: the model files' and datasets' digests)
 *   job/job.c        the engine: options, provenance, the job directory, units on the pool,
 *                    circuits_job_run / _compute / _store
 *   job/reduce.c     circuits_job_merge: unit files read back in unit order (cx_job_reader)
 *   job/kind_mean.c, kind_features.c, kind_export.c, kind_sweep.c: one file per job kind
 *
 * The rule every part keeps: a unit's result depends only on the unit's rows and the recorded
 * options (never on the thread count, the batch size, the rank or the shard): each unit runs on
 * one thread with the pool's serial mode (cx_pool_serial), its rows in forward batches whose
 * per-row results do not depend on the batch (checked by tests/test_job.c). The reduction reads
 * unit files in unit order: a fixed tree, so the bits of every output are fixed.
 *
 * The job directory:
 *   <dir>/job.json                     the provenance (canonical JSON, circuits_job_provenance)
 *   <dir>/units/u000000012.safetensors unit 12's result: the kind's tensors, metadata
 *                                      {"circuits_job": <provenance>, "unit": "12"}; written
 *                                      beside and renamed (a killed job leaves whole units only) */
#ifndef CIRCUITS_JOB_H
#define CIRCUITS_JOB_H

#include "context.h"
#include "safetensors.h"

#include <jansson.h>

/* ---- datasets (io/dataset.c) ---- */
typedef struct cx_ds_column {
    char *name;
    int32_t *values;  /* [n_rows, width] */
    int64_t width;
} cx_ds_column;

struct circuits_dataset {
    int64_t n_rows, pos;
    cx_ds_column *cols; /* cols[0] is "tokens" [n_rows, pos] */
    size_t n_cols;
};

/* The column `name` or NULL. */
const cx_ds_column *cx_dataset_find(const circuits_dataset *ds, const char *name);

/* ---- digests (base/digest.c) ---- */
typedef struct cx_sha256 cx_sha256; /* incremental */
int cx_sha256_new(cx_sha256 **out);
int cx_sha256_update(cx_sha256 *h, const void *data, size_t n);
/* 64 hex digits and a NUL into hex[65]; frees h. */
int cx_sha256_final(cx_sha256 *h, char *hex);
void cx_sha256_free(cx_sha256 *h);
/* The digest of a whole file (read in chunks). fn names the public function in messages. */
int cx_sha256_file(const char *path, char *hex, const char *fn);

/* ---- a unit's result: named tensors, owned ---- */
typedef struct cx_job_tensor {
    char *name;
    cx_dtype dtype; /* F32, F64, I32, I64 */
    int ndim;
    int64_t shape[CX_ST_MAX_DIMS];
    void *data;     /* cx_malloc'd */
} cx_job_tensor;

typedef struct cx_job_result {
    cx_job_tensor *t;
    size_t n, cap;
} cx_job_result;

/* Appends a tensor of the given shape, zero-filled; *data (may be NULL) its buffer. */
int cx_job_result_add(cx_job_result *r, const char *name, cx_dtype dtype, int ndim, const int64_t *shape,
                      void **data);
void cx_job_result_clear(cx_job_result *r);

/* ---- the engine's view of a job (job.c) ---- */
struct cx_job_kind;

struct circuits_job {
    const circuits_model *model;
    const circuits_dataset *ds;
    circuits_job_options o;          /* copied; hooks copied below */
    char **hooks;                    /* resolved full hook names, in model order */
    size_t n_hooks;
    const struct cx_job_kind *kind;
    void *kstate;                    /* the kind's state (prepare / release) */
    char *dir;                       /* NULL: compute only */
    char *provenance;                /* canonical JSON */
    int64_t n_units;
    uint8_t *done;                   /* [n_units] checkpointed in dir */
    const char *fn;                  /* the public function computing now (run, compute), for messages */
};

/* Rows of unit u: [*row0, *row0 + *n). */
void cx_job_unit_rows(const circuits_job *job, int64_t u, int64_t *row0, int64_t *n);

/* ---- merging (reduce.c): unit files read back in unit order ---- */
typedef struct cx_job_reader {
    json_t *prov;                    /* the parsed provenance (borrowed) */
    const char *prov_text;
    int64_t n_units, n_rows, pos, unit_rows;
    char **unit_paths;               /* [n_units] where each unit's file is */
} cx_job_reader;

/* Opens unit u's file (validated; its provenance and index checked): *out, closed by cx_st_close. */
int cx_job_reader_open(const cx_job_reader *r, int64_t u, cx_st_set **out, const char *fn);

/* ---- records (job.c) ---- */
/* The first field at which two provenance records differ ("job.unit_rows": a top-level key, one
 * level further down when both are objects) into out. */
void cx_job_prov_diff(const char *a, size_t na, const char *b, size_t nb, char *out, size_t n);
/* A unit image's metadata must carry provenance prov and unit index u: else CIRCUITS_E_PROVENANCE
 * naming map->path and the first differing field. */
int cx_job_check_unit(const cx_st_map *map, const char *prov, int64_t u, const char *fn);
/* Reads a job.json whole (at most 64 MiB) as *set's one image *map (freed by cx_st_close). */
int cx_job_read_small(const char *path, cx_st_set **set, const cx_st_map **map, const char *fn);

/* ---- one job kind (kind_*.c) ---- */
typedef struct cx_job_kind {
    const char *name; /* "mean_activations", as the provenance records it */
    /* Checks job->o against the model and dataset (specific errors naming the option), resolves
     * what it needs into job->kstate, and adds the kind's recorded parameters to params (the
     * provenance's "job" object). On failure it leaves nothing behind: release is called only
     * for a job whose prepare succeeded (when the job is freed). */
    int (*prepare)(circuits_job *job, json_t *params);
    void (*release)(circuits_job *job);
    /* One unit: rows [row0, row0 + n) with ctx, a context of the job's model private to this
     * thread (no hooks registered; the kind may register and must remove its own), batches of
     * job->o.batch_size rows; the pool in serial mode. Units run concurrently: job is shared
     * (read-only, but for the kind's own thread-safe use of kstate). */
    int (*unit)(circuits_job *job, circuits_context *ctx, int64_t row0, int64_t n, cx_job_result *res);
    /* The reduction: every unit through r in unit order, the result written to out (a file
     * through cx_st_write with the provenance as metadata key "circuits_job", or a directory). */
    int (*reduce)(const cx_job_reader *r, const char *out);
} cx_job_kind;

extern const cx_job_kind cx_job_mean, cx_job_features, cx_job_export, cx_job_patch_sweep, cx_job_ablation_sweep;

/* The kind named in a provenance ("mean_activations"), or NULL. */
const cx_job_kind *cx_job_kind_by_name(const char *name);

#endif
