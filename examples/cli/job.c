/* circuits job KIND MODEL DATASET --out OUT: a dataset-scale job (docs/jobs.md) in one process,
 * as one shard of many (--shard I/N), or over MPI ranks under mpirun (job_mpi.c); and
 * circuits merge OUT JOBDIR...: the shards' directories into the output. */
#include "job.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void job_usage(void)
{
    printf(
        "usage: circuits job KIND MODEL DATASET --out OUT [OPTIONS]\n"
        "\n"
        "Runs one kind of work over every row of a token dataset, in units of --unit-rows rows that\n"
        "are checkpointed in a job directory as they finish: a stopped or killed job rerun with the\n"
        "same command resumes where it stopped, and the output has the same bits for any number of\n"
        "threads, batch sizes, shards or MPI ranks. Under mpirun the units are dealt over the ranks;\n"
        "rank 0 checkpoints and writes OUT (docs/scale-out.md).\n"
        "\n"
        "KIND:\n"
        "  mean       the mean of each --hooks point over the rows\n"
        "  features   an SAE's feature statistics (--sae DIR)\n"
        "  export     the --hooks points' activations, a safetensors shard per unit (OUT a directory)\n"
        "  patch      per row, a patching grid (--patch) of the row into its --corrupted row; --metric\n"
        "  ablate     per row, the --metric with each head's hook_z ablated in turn (--ablation)\n"
        "DATASET: .npy or .safetensors token ids [rows, pos], or text (.txt, .jsonl) cut into rows.\n"
        "\n"
        "  --out OUT           the output file (a directory for export)\n"
        "  --dir JOBDIR        the job directory (default OUT.job; OUT.job.I-of-N with --shard)\n"
        "  --hooks H1,H2       mean, export: hook names or patterns (blocks.*.hook_resid_post)\n"
        "  --unit-rows N       rows per unit (default 16; part of the job's record)\n"
        "  --seed S            recorded with the job (default 0)\n"
        "  --batch N           rows per forward pass (default 8; never changes a bit)\n"
        "  --threads N         threads (per rank under mpirun; default: the CPUs, shared by the ranks)\n"
        "  --shard I/N         compute only the units u with u %% N == I into JOBDIR; no output\n"
        "                      (then 'circuits merge OUT JOBDIR...')\n"
        "  --progress          show the progress even when stderr is not a terminal (as lines)\n"
        "dataset:\n"
        "  --tensor NAME       .safetensors: the token tensor (default tokens)\n"
        "  --seq-len N         text: tokens per row, BOS included (default 128)\n"
        "  --column NAME       .jsonl: the text field (default text)\n"
        "  --no-bos            text: rows do not start with BOS\n"
        "  --max-rows N        at most N rows\n"
        "  --corrupted F --answer F --wrong F --position F\n"
        "                      per-row columns from .npy files (patch, ablate)\n"
        "kinds:\n"
        "  --patch KIND        resid_pre (default), resid_mid, resid_post, attn_out, mlp_out,\n"
        "                      z_by_pos, q_by_pos, k_by_pos, v_by_pos, pattern_by_pos, pattern_dest_src,\n"
        "                      z, q, k, v, pattern (every position at once)\n"
        "  --metric KIND       logit_diff (default), logit, prob, log_prob, loss, token_loss\n"
        "  --ablation KIND     zero (default) or mean (--means FILE: a mean job's output with hook_z)\n"
        "  --sae DIR           features: an SAELens directory\n"
        "  --top-k N --left N --right N --threshold X --skip-positions N\n"
        "                      features: as 'circuits sae-stats'\n"
        "  --no-processing --no-mmap   as the other commands\n");
}

static void merge_usage(void)
{
    printf("usage: circuits merge OUT JOBDIR...\n"
           "\n"
           "Reduces the units of one or more job directories (the shards of 'circuits job --shard',\n"
           "on a shared filesystem or copied together) in unit order and writes OUT: the same bits as\n"
           "the job run in one process. The directories must hold the same job (its record: model,\n"
           "library and hook-semantics versions, dataset, options) and together every unit.\n");
}

static const struct {
    const char *name;
    int32_t kind;
} KINDS[] = {{"mean", CIRCUITS_JOB_MEAN_ACTIVATIONS},
             {"features", CIRCUITS_JOB_FEATURE_STATS},
             {"export", CIRCUITS_JOB_EXPORT},
             {"patch", CIRCUITS_JOB_PATCH_SWEEP},
             {"ablate", CIRCUITS_JOB_ABLATION_SWEEP}};

static const struct {
    const char *name;
    int32_t kind;
} PATCHES[] = {{"resid_pre", CIRCUITS_PATCH_RESID_PRE},
               {"resid_mid", CIRCUITS_PATCH_RESID_MID},
               {"resid_post", CIRCUITS_PATCH_RESID_POST},
               {"attn_out", CIRCUITS_PATCH_ATTN_OUT},
               {"mlp_out", CIRCUITS_PATCH_MLP_OUT},
               {"z_by_pos", CIRCUITS_PATCH_HEAD_Z_BY_POS},
               {"q_by_pos", CIRCUITS_PATCH_HEAD_Q_BY_POS},
               {"k_by_pos", CIRCUITS_PATCH_HEAD_K_BY_POS},
               {"v_by_pos", CIRCUITS_PATCH_HEAD_V_BY_POS},
               {"pattern_by_pos", CIRCUITS_PATCH_HEAD_PATTERN_BY_POS},
               {"pattern_dest_src", CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC},
               {"z", CIRCUITS_PATCH_HEAD_Z_ALL_POS},
               {"q", CIRCUITS_PATCH_HEAD_Q_ALL_POS},
               {"k", CIRCUITS_PATCH_HEAD_K_ALL_POS},
               {"v", CIRCUITS_PATCH_HEAD_V_ALL_POS},
               {"pattern", CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS}};

static const struct {
    const char *name;
    int32_t kind;
} METRICS[] = {{"logit_diff", CIRCUITS_METRIC_LOGIT_DIFF}, {"logit", CIRCUITS_METRIC_LOGIT},
               {"prob", CIRCUITS_METRIC_PROB},             {"log_prob", CIRCUITS_METRIC_LOG_PROB},
               {"loss", CIRCUITS_METRIC_LOSS},             {"token_loss", CIRCUITS_METRIC_TOKEN_LOSS}};

static const char *const COLUMN_OPTS[4] = {"--corrupted", "--answer", "--wrong", "--position"};
static const char *const COLUMN_NAMES[4] = {"corrupted", "answer", "wrong", "position"};

/* A name from one of the tables above: *kind, or a usage error listing the choices. */
#define LOOKUP(table, opt, v, out)                                                                         \
    do {                                                                                                   \
        size_t i_;                                                                                         \
        for (i_ = 0; i_ < sizeof table / sizeof table[0]; i_++)                                            \
            if (strcmp(v, table[i_].name) == 0) break;                                                     \
        if (i_ == sizeof table / sizeof table[0]) {                                                        \
            char list_[512] = "";                                                                          \
            for (size_t j_ = 0; j_ < sizeof table / sizeof table[0]; j_++) {                              \
                if (j_) strncat(list_, ", ", sizeof list_ - strlen(list_) - 1);                            \
                strncat(list_, table[j_].name, sizeof list_ - strlen(list_) - 1);                          \
            }                                                                                              \
            return usage_error("%s: no such kind '%s' (one of: %s)", opt, v, list_);                       \
        }                                                                                                  \
        out = table[i_].kind;                                                                              \
    } while (0)

/* "I/N" with 0 <= I < N. */
static int parse_shard(const char *s, int32_t *index, int32_t *count)
{
    const char *slash = strchr(s, '/');
    char head[32];
    long long i, n;
    if (!slash || (size_t)(slash - s) >= sizeof head)
        return usage_error("--shard: '%s' is not I/N (this process's shard of N, counted from 0)", s);
    memcpy(head, s, (size_t)(slash - s));
    head[slash - s] = '\0';
    if (parse_int("--shard", head, 0, 1 << 20, &i) || parse_int("--shard", slash + 1, 1, 1 << 20, &n))
        return EXIT_USAGE;
    if (i >= n) return usage_error("--shard %s: the shard index must be below the count (0 .. %lld)", s, n - 1);
    *index = (int32_t)i;
    *count = (int32_t)n;
    return 0;
}

/* --hooks "a,b": split into a->hooks (appending to earlier --hooks; each value's copy kept in
 * a->hook_bufs until free_args). */
static int add_hooks(job_args *a, const char *v)
{
    size_t have = a->n_hooks, cap = have + 2;
    for (const char *p = v; *p; p++) cap += *p == ',';
    const char **h = realloc(a->hooks, cap * sizeof *h);
    if (h) a->hooks = h;
    char **bufs = realloc(a->hook_bufs, (a->n_hook_bufs + 1) * sizeof *bufs);
    if (bufs) a->hook_bufs = bufs;
    char *buf = h && bufs ? strdup(v) : NULL;
    if (!buf) return failure("out of memory");
    a->hook_bufs[a->n_hook_bufs++] = buf;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) a->hooks[a->n_hooks++] = tok;
    if (a->n_hooks == have) return usage_error("--hooks: '%s' names no hook point", v);
    return 0;
}

static void free_args(job_args *a)
{
    for (size_t i = 0; i < a->n_hook_bufs; i++) free(a->hook_bufs[i]);
    free(a->hook_bufs);
    free(a->hooks);
    free(a->dir_owned);
}

static int parse_job_args(int argc, char **argv, job_args *a)
{
    circuits_job_options_init(&a->o);
    circuits_feature_stats_options_init(&a->fs);
    a->seq_len = 128;
    bool have_patch = false, have_metric = false, have_ablation = false, have_sae_opt = false;
    args g = {argc, argv, 1};
    for (; g.i < argc; g.i++) {
        const char *v;
        long long n;
        double x;
        int r;
        if (is_help(argv[g.i])) return job_usage(), -1;
        if ((r = common_opt(&g, &a->c, false))) {
            if (r < 0) return EXIT_USAGE;
            if (a->c.json) return usage_error("--json is not an option of job");
        } else if ((r = opt_value(&g, "--out", &v)) || (r = opt_value(&g, "-o", &v))) {
            if (r < 0) return EXIT_USAGE;
            a->out = v;
        } else if ((r = opt_value(&g, "--dir", &v))) {
            if (r < 0) return EXIT_USAGE;
            a->dir = v;
        } else if ((r = opt_value(&g, "--hooks", &v))) {
            if (r < 0) return EXIT_USAGE;
            if ((r = add_hooks(a, v))) return r;
        } else if ((r = opt_value(&g, "--unit-rows", &v))) {
            if (r < 0 || parse_int("--unit-rows", v, 1, 1 << 24, &n)) return EXIT_USAGE;
            a->o.unit_rows = n;
        } else if ((r = opt_value(&g, "--batch", &v))) {
            if (r < 0 || parse_int("--batch", v, 1, 1 << 20, &n)) return EXIT_USAGE;
            a->o.batch_size = n;
        } else if ((r = opt_value(&g, "--threads", &v))) {
            if (r < 0 || parse_int("--threads", v, 1, 4096, &a->threads)) return EXIT_USAGE;
        } else if ((r = opt_value(&g, "--shard", &v))) {
            if (r < 0 || parse_shard(v, &a->o.shard_index, &a->o.shard_count)) return EXIT_USAGE;
        } else if ((r = opt_value(&g, "--seed", &v))) {
            if (r < 0 || parse_int("--seed", v, 0, (long long)(~0ULL >> 1), &n)) return EXIT_USAGE;
            a->o.seed = (uint64_t)n;
        } else if ((r = opt_value(&g, "--tensor", &v))) {
            if (r < 0) return EXIT_USAGE;
            a->tensor = v;
        } else if ((r = opt_value(&g, "--column", &v))) {
            if (r < 0) return EXIT_USAGE;
            a->text_column = v;
        } else if ((r = opt_value(&g, "--seq-len", &v))) {
            if (r < 0 || parse_int("--seq-len", v, 2, 1 << 20, &a->seq_len)) return EXIT_USAGE;
        } else if ((r = opt_value(&g, "--max-rows", &v))) {
            if (r < 0 || parse_int("--max-rows", v, 1, (long long)(~0ULL >> 2), &a->max_rows)) return EXIT_USAGE;
        } else if ((r = opt_flag(&g, "--no-bos"))) {
            if (r < 0) return EXIT_USAGE;
            a->no_bos = true;
        } else if ((r = opt_flag(&g, "--progress"))) {
            if (r < 0) return EXIT_USAGE;
            a->progress = true;
        } else if ((r = opt_value(&g, "--patch", &v))) {
            if (r < 0) return EXIT_USAGE;
            LOOKUP(PATCHES, "--patch", v, a->o.patch_kind);
            have_patch = true;
        } else if ((r = opt_value(&g, "--metric", &v))) {
            if (r < 0) return EXIT_USAGE;
            LOOKUP(METRICS, "--metric", v, a->o.metric_kind);
            have_metric = true;
        } else if ((r = opt_value(&g, "--ablation", &v))) {
            if (r < 0) return EXIT_USAGE;
            if (strcmp(v, "zero") == 0) a->o.ablation_kind = CIRCUITS_ABLATE_ZERO;
            else if (strcmp(v, "mean") == 0) a->o.ablation_kind = CIRCUITS_ABLATE_MEAN;
            else return usage_error("--ablation: no such kind '%s' (zero or mean)", v);
            have_ablation = true;
        } else if ((r = opt_value(&g, "--means", &v))) {
            if (r < 0) return EXIT_USAGE;
            a->o.ablation_means = v;
        } else if ((r = opt_value(&g, "--sae", &v))) {
            if (r < 0) return EXIT_USAGE;
            a->o.sae_path = v;
        } else if ((r = opt_value(&g, "--top-k", &v))) {
            if (r < 0 || parse_int("--top-k", v, 0, 4096, &n)) return EXIT_USAGE;
            a->fs.top_k = (int32_t)n, have_sae_opt = true;
        } else if ((r = opt_value(&g, "--left", &v))) {
            if (r < 0 || parse_int("--left", v, 0, 4096, &n)) return EXIT_USAGE;
            a->fs.context_left = (int32_t)n, have_sae_opt = true;
        } else if ((r = opt_value(&g, "--right", &v))) {
            if (r < 0 || parse_int("--right", v, 0, 4096, &n)) return EXIT_USAGE;
            a->fs.context_right = (int32_t)n, have_sae_opt = true;
        } else if ((r = opt_value(&g, "--skip-positions", &v))) {
            if (r < 0 || parse_int("--skip-positions", v, 0, 1 << 30, &n)) return EXIT_USAGE;
            a->fs.skip_positions = (int32_t)n, have_sae_opt = true;
        } else if ((r = opt_value(&g, "--threshold", &v))) {
            if (r < 0 || parse_float("--threshold", v, -1e30, 1e30, &x)) return EXIT_USAGE;
            a->fs.threshold = (float)x, have_sae_opt = true;
        } else {
            bool col = false;
            for (int k = 0; k < 4 && !col; k++)
                if ((r = opt_value(&g, COLUMN_OPTS[k], &v))) {
                    if (r < 0) return EXIT_USAGE;
                    a->columns[k] = v;
                    col = true;
                }
            if (col) continue;
            if (argv[g.i][0] == '-' && argv[g.i][1]) return usage_error("unknown option '%s'", argv[g.i]);
            if (!a->kind_name) a->kind_name = argv[g.i];
            else if (!a->c.model) a->c.model = argv[g.i];
            else if (!a->dataset) a->dataset = argv[g.i];
            else return usage_error("unexpected argument '%s'", argv[g.i]);
        }
    }
    if (!a->kind_name || !a->c.model || !a->dataset) return usage_error("needs KIND, MODEL and DATASET");
    LOOKUP(KINDS, "KIND", a->kind_name, a->o.kind);
    if (!a->out && a->o.shard_count <= 1) return usage_error("needs --out OUT (the output; or --shard I/N --dir JOBDIR)");
    int32_t k = a->o.kind;
    /* options of another kind are a mistake, not something to ignore */
    if (a->n_hooks && k != CIRCUITS_JOB_MEAN_ACTIVATIONS && k != CIRCUITS_JOB_EXPORT)
        return usage_error("--hooks is for the mean and export kinds");
    if (!a->n_hooks && (k == CIRCUITS_JOB_MEAN_ACTIVATIONS || k == CIRCUITS_JOB_EXPORT))
        return usage_error("%s needs --hooks (hook names or patterns)", a->kind_name);
    if (have_patch && k != CIRCUITS_JOB_PATCH_SWEEP) return usage_error("--patch is for the patch kind");
    if (have_metric && k != CIRCUITS_JOB_PATCH_SWEEP && k != CIRCUITS_JOB_ABLATION_SWEEP)
        return usage_error("--metric is for the patch and ablate kinds");
    if ((have_ablation || a->o.ablation_means) && k != CIRCUITS_JOB_ABLATION_SWEEP)
        return usage_error("--ablation and --means are for the ablate kind");
    if (a->o.ablation_kind == CIRCUITS_ABLATE_MEAN && !a->o.ablation_means)
        return usage_error("--ablation mean needs --means FILE (a mean job's output holding hook_z)");
    if (a->o.ablation_means && a->o.ablation_kind != CIRCUITS_ABLATE_MEAN)
        return usage_error("--means is for --ablation mean");
    if ((a->o.sae_path || have_sae_opt) && k != CIRCUITS_JOB_FEATURE_STATS)
        return usage_error("--sae and the statistics options are for the features kind");
    if (k == CIRCUITS_JOB_FEATURE_STATS && !a->o.sae_path) return usage_error("features needs --sae DIR");
    if (k == CIRCUITS_JOB_FEATURE_STATS) a->o.feature_stats = &a->fs;
    a->o.hooks = a->hooks;
    a->o.n_hooks = a->n_hooks;
    if (!a->dir) {
        size_t n = strlen(a->out ? a->out : "") + 48;
        if (!a->out) return usage_error("--shard without --out needs --dir JOBDIR");
        if (!(a->dir_owned = malloc(n))) return failure("out of memory");
        if (a->o.shard_count > 1)
            snprintf(a->dir_owned, n, "%s.job.%d-of-%d", a->out, (int)a->o.shard_index, (int)a->o.shard_count);
        else snprintf(a->dir_owned, n, "%s.job", a->out);
        a->dir = a->dir_owned;
    }
    return 0;
}

int job_open_inputs(const job_args *a, job_inputs *in)
{
    memset(in, 0, sizeof *in);
    int rc = load_model(&a->c, &in->m, &in->cfg);
    if (rc) return rc;
    circuits_dataset_options d;
    circuits_dataset_options_init(&d);
    d.tensor = a->tensor;
    d.column = a->text_column;
    d.seq_len = a->seq_len;
    d.prepend_bos = !a->no_bos;
    d.max_rows = a->max_rows;
    d.tokenizer = circuits_model_tokenizer(in->m);
    if (circuits_dataset_open(&in->ds, a->dataset, &d) != CIRCUITS_OK) {
        rc = failure("cannot open the dataset '%s': %s", a->dataset, circuits_last_error());
        job_close_inputs(in);
        return rc;
    }
    for (int k = 0; k < 4; k++)
        if (a->columns[k] && circuits_dataset_load_column(in->ds, COLUMN_NAMES[k], a->columns[k], NULL) != CIRCUITS_OK) {
            rc = failure("%s '%s': %s", COLUMN_OPTS[k], a->columns[k], circuits_last_error());
            job_close_inputs(in);
            return rc;
        }
    return 0;
}

void job_close_inputs(job_inputs *in)
{
    circuits_dataset_free(in->ds);
    circuits_model_free(in->m);
    memset(in, 0, sizeof *in);
}

bool job_under_mpirun(void)
{
    static const char *const VARS[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"};
    for (size_t i = 0; i < sizeof VARS / sizeof VARS[0]; i++)
        if (getenv(VARS[i])) return true;
    return false;
}

const char *job_hint(int status)
{
    if (status != CIRCUITS_E_PROVENANCE) return "";
    return " (CIRCUITS_E_PROVENANCE: the records disagree; another model, dataset, library or recorded option "
           "makes another job: give it another --dir, or delete the old directory to start over)";
}

void job_print_resumed(const char *who, int64_t done, int64_t total)
{
    printf("%sresumed: %lld of %lld units already done\n", who, (long long)done, (long long)total);
}

/* ---- one process (or one shard) ---- */

/* SIGINT / SIGTERM: finish the units in flight, then stop (they stay checkpointed). */
static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

typedef struct local_progress {
    progress bar;
    int64_t base;
} local_progress;

static int local_step(int64_t done, int64_t total, void *user)
{
    local_progress *lp = user;
    lp->bar.total = total > 0 ? total : 1;
    progress_set(&lp->bar, done);
    return g_stop ? 1 : 0;
}

static int run_local(job_args *a)
{
    job_inputs in;
    circuits_job *job = NULL;
    int rc = job_open_inputs(a, &in);
    if (rc) return rc;
    if (a->threads) circuits_set_num_threads((int)a->threads);
    local_progress lp;
    a->o.progress = local_step;
    a->o.progress_data = &lp;
    int st = circuits_job_create(&job, in.m, in.ds, &a->o, a->dir);
    if (st != CIRCUITS_OK) {
        rc = failure("cannot start the job in '%s': %s%s", a->dir, circuits_last_error(), job_hint(st));
        goto done;
    }
    int64_t n_units = 0, n_done = 0, n_mine = 0, mine_done = 0;
    circuits_job_status(job, &n_units, &n_done, &n_mine);
    bool sharded = a->o.shard_count > 1;
    for (int64_t u = a->o.shard_index; sharded && u < n_units; u += a->o.shard_count) {
        int32_t d = 0;
        circuits_job_unit_done(job, u, &d);
        mine_done += d;
    }
    if (!sharded) mine_done = n_done;
    char who[64] = "";
    if (sharded) snprintf(who, sizeof who, "shard %d/%d: ", (int)a->o.shard_index, (int)a->o.shard_count);
    job_print_resumed(who, mine_done, n_mine);
    fflush(stdout);
    progress_begin(&lp.bar, "job", n_mine);
    progress_counted(&lp.bar, "units", mine_done, a->progress);
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    double t0 = cli_now(), c0 = cli_cpu_now();
    int jr = circuits_job_run(job);
    double secs = cli_now() - t0, cpu = cli_cpu_now() - c0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    progress_end(&lp.bar);
    if (jr == CIRCUITS_E_STOPPED && g_stop) {
        circuits_job_status(job, &n_units, &n_done, &n_mine);
        rc = failure("stopped by a signal: %lld of %lld units checkpointed in '%s'; the same command resumes",
                     (long long)n_done, (long long)n_units, a->dir);
        goto done;
    }
    if (jr != CIRCUITS_OK) {
        rc = failure("%s", circuits_last_error());
        goto done;
    }
    printf("%scomputed: %lld units in %.3f s (CPU %.3f s)\n", who, (long long)(n_mine - mine_done), secs, cpu);
    if (sharded) {
        printf("%sdone in '%s'; when every shard is done: circuits merge OUT DIR...\n", who, a->dir);
        goto done;
    }
    const char *dirs[1] = {a->dir};
    if ((st = circuits_job_merge(dirs, 1, a->out)) != CIRCUITS_OK) {
        rc = failure("cannot merge '%s' into '%s': %s%s", a->dir, a->out, circuits_last_error(), job_hint(st));
        goto done;
    }
    printf("wrote %s (%lld units)\n", a->out, (long long)n_units);
done:
    circuits_job_free(job);
    job_close_inputs(&in);
    return rc;
}

int cmd_job(int argc, char **argv)
{
    job_args a;
    memset(&a, 0, sizeof a);
    int rc = parse_job_args(argc, argv, &a);
    if (rc) {
        free_args(&a);
        return rc < 0 ? 0 : rc;
    }
    if (job_under_mpirun()) {
#ifdef CIRCUITS_HAVE_MPI
        if (a.o.shard_count > 1) rc = usage_error("--shard splits a job without MPI: under mpirun, leave it out");
        else rc = job_mpi_run(&a);
#else
        rc = failure("started by mpirun, but this circuits was built without MPI (meson setup -Dmpi=enabled, "
                     "needs an MPI such as Open MPI); every rank would run the whole job. Without MPI: --shard I/N "
                     "and 'circuits merge'");
#endif
    } else {
        rc = run_local(&a);
    }
    free_args(&a);
    return rc;
}

int cmd_merge(int argc, char **argv)
{
    const char *out = NULL;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    size_t n = 0;
    int rc = 0;
    if (!dirs) return failure("out of memory");
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            merge_usage();
            goto done;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            rc = usage_error("unknown option '%s'", argv[i]);
            goto done;
        }
        if (!out) out = argv[i];
        else dirs[n++] = argv[i];
    }
    if (!out || n == 0) {
        rc = usage_error("needs OUT and at least one JOBDIR");
        goto done;
    }
    int st = circuits_job_merge(dirs, n, out);
    if (st != CIRCUITS_OK) {
        rc = failure("cannot merge into '%s': %s%s", out, circuits_last_error(),
                     st == CIRCUITS_E_PROVENANCE ? " (CIRCUITS_E_PROVENANCE: the directories hold different jobs)" : "");
        goto done;
    }
    printf("wrote %s (from %zu job director%s)\n", out, n, n == 1 ? "y" : "ies");
done:
    free(dirs);
    return rc;
}
