/* `circuits job` and `circuits merge` (job.c) and the MPI driver (job_mpi.c, built with MPI
 * only): what the two share. docs/cli.md "job", docs/scale-out.md. */
#ifndef CIRCUITS_CLI_JOB_H
#define CIRCUITS_CLI_JOB_H

#include "cli.h"

/* The command line of `circuits job`, parsed (every rank parses the same one). */
typedef struct job_args {
    common c;                 /* MODEL, --no-processing, --no-mmap */
    const char *kind_name;    /* KIND as given */
    const char *dataset;      /* DATASET */
    const char *out;          /* --out */
    const char *dir;          /* --dir, or OUT.job (OUT.job.I-of-N with --shard) */
    char *dir_owned;          /* the default dir, malloc'ed */
    const char **hooks;       /* --hooks, split at commas (into hook_bufs) */
    char **hook_bufs;         /* one copy of each --hooks value */
    size_t n_hook_bufs;
    size_t n_hooks;
    const char *columns[4];   /* --corrupted, --answer, --wrong, --position: files */
    const char *tensor;       /* --tensor: the token tensor of a .safetensors dataset */
    const char *text_column;  /* --column: the text field of a .jsonl dataset */
    long long seq_len, max_rows, threads;
    bool no_bos, progress;
    circuits_job_options o;   /* the job's options (progress set by the runner) */
    circuits_feature_stats_options fs;
} job_args;

/* The model and the dataset of a job, opened. */
typedef struct job_inputs {
    circuits_model *m;
    circuits_config cfg;
    circuits_dataset *ds;
} job_inputs;

/* Loads the model and the dataset (and its columns); 0 or EXIT_FAIL with a message. */
int job_open_inputs(const job_args *a, job_inputs *in);
void job_close_inputs(job_inputs *in);

/* "mpirun started this process": Open MPI, MPICH/PMI or PMIx variables, read before any MPI call
 * (without them MPI is never initialised). */
bool job_under_mpirun(void);

/* A hint after a library error of this status ("" for most). */
const char *job_hint(int status);

/* The "resumed: K of N units already done" line. */
void job_print_resumed(const char *who, int64_t done, int64_t total);

#ifdef CIRCUITS_HAVE_MPI
/* Runs the job over the MPI ranks (job_mpi.c): every rank calls it; rank 0 checkpoints and
 * merges. Returns the exit status (the same on every rank). */
int job_mpi_run(job_args *a);
#endif

#endif
