/* `circuits job` under mpirun (built with MPI only; docs/scale-out.md). The library knows nothing
 * of MPI: every rank opens the model and the dataset and makes the job (rank 0 with the job
 * directory, the others with none); rank 0 lists the units not yet checkpointed and broadcasts
 * them. Rank 0 computes the missing units u with u % ranks == 0 with circuits_job_run (the
 * engine's own scheduler and checkpoints, as in one process), and between its units (in the
 * progress callback) receives and checkpoints what the others sent (circuits_job_store). The
 * other missing units are dealt round-robin over ranks 1 .. R-1, which compute them with
 * circuits_job_compute (their thread pool inside the rank) and send each unit's bytes to rank 0
 * (non-blocking, a bounded number in flight). Rank 0 merges once every unit is in.
 *
 * Messages: one per unit, tag TAG_UNIT, an 8-byte unit index then the unit file's image. A
 * failure before the units start is agreed on by every rank (an allreduce) and ends them all
 * with status 1; a failure during the units (a rank cannot compute or send, rank 0 cannot store)
 * is reported with its rank and ends the job with MPI_Abort: the units rank 0 stored stay
 * checkpointed, and the same command resumes. */
#include "job.h"

#include <mpi.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { TAG_UNIT = 1, MAX_OUTSTANDING = 4 };

typedef struct mpi_state {
    int rank, size;
    circuits_job *job;
    /* senders: bounded outstanding non-blocking sends */
    MPI_Request req[MAX_OUTSTANDING];
    unsigned char *buf[MAX_OUTSTANDING];
    /* rank 0: units checkpointed so far, of all; a receive buffer */
    int64_t stored, own_reported; /* own_reported: rank 0's own units done, as last reported */
    unsigned char *rbuf;
    size_t rcap;
    progress bar;
} mpi_state;

static void die(mpi_state *s, const char *what)
{
    fflush(stdout);
    fprintf(stderr, "circuits job: rank %d of %d: %s; stopping every rank (the checkpointed units stay: the same "
                    "command resumes)\n",
            s->rank, s->size, what);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* Threads per rank without --threads: the CPUs this rank may use when it is bound to some,
 * else the machine's CPUs shared evenly by the ranks on this node. */
static int default_threads(void)
{
    MPI_Comm node;
    int local = 1;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    cpu_set_t set;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)online;
    if (online > 0 && mine < online) return mine > 0 ? mine : 1; /* bound by mpirun */
    int n = (int)(online / (local > 0 ? local : 1));
    return n > 0 ? n : 1;
}

/* Rank 0: checkpoints one received message. */
static void store_message(mpi_state *s, const unsigned char *msg, int n, int from)
{
    int64_t unit;
    char what[512];
    if (n < (int)sizeof unit) {
        snprintf(what, sizeof what, "a message of %d bytes from rank %d is not a unit", n, from);
        die(s, what);
    }
    memcpy(&unit, msg, sizeof unit);
    if (circuits_job_store(s->job, unit, msg + sizeof unit, (size_t)n - sizeof unit) != CIRCUITS_OK) {
        snprintf(what, sizeof what, "cannot checkpoint unit %lld from rank %d: %s", (long long)unit, from,
                 circuits_last_error());
        die(s, what);
    }
    progress_set(&s->bar, ++s->stored);
}

/* Rank 0: receives the units waiting (or, with `block`, one at least). */
static void drain(mpi_state *s, bool block)
{
    for (;;) {
        MPI_Status st;
        int flag = 0, n = 0;
        if (block) {
            MPI_Probe(MPI_ANY_SOURCE, TAG_UNIT, MPI_COMM_WORLD, &st);
            flag = 1;
            block = false;
        } else {
            MPI_Iprobe(MPI_ANY_SOURCE, TAG_UNIT, MPI_COMM_WORLD, &flag, &st);
        }
        if (!flag) return;
        MPI_Get_count(&st, MPI_BYTE, &n);
        if ((size_t)n > s->rcap) {
            unsigned char *b = realloc(s->rbuf, (size_t)n);
            if (!b) die(s, "out of memory receiving a unit");
            s->rbuf = b;
            s->rcap = (size_t)n;
        }
        MPI_Recv(s->rbuf, n, MPI_BYTE, st.MPI_SOURCE, TAG_UNIT, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        store_message(s, s->rbuf, n, st.MPI_SOURCE);
    }
}

/* Rank 0's circuits_job_run progress: after each of its own units, take in what has arrived. */
static int rank0_progress(int64_t done, int64_t total, void *user)
{
    (void)total;
    mpi_state *s = user;
    s->stored += done - s->own_reported;
    s->own_reported = done;
    progress_set(&s->bar, s->stored);
    drain(s, false);
    return 0;
}

/* circuits_job_compute's callback on ranks > 0: the unit goes to rank 0. */
static int on_unit(int64_t unit, const void *bytes, size_t n_bytes, void *user)
{
    mpi_state *s = user;
    char what[512];
    if (n_bytes > (size_t)INT32_MAX - sizeof unit) {
        snprintf(what, sizeof what, "unit %lld is %zu bytes, more than one MPI message carries: use fewer --unit-rows",
                 (long long)unit, n_bytes);
        die(s, what);
    }
    int slot, flag;
    MPI_Testany(MAX_OUTSTANDING, s->req, &slot, &flag, MPI_STATUS_IGNORE);
    slot = -1;
    for (int i = 0; i < MAX_OUTSTANDING && slot < 0; i++)
        if (s->req[i] == MPI_REQUEST_NULL) slot = i;
    if (slot < 0) MPI_Waitany(MAX_OUTSTANDING, s->req, &slot, MPI_STATUS_IGNORE);
    free(s->buf[slot]);
    s->buf[slot] = malloc(sizeof unit + n_bytes);
    if (!s->buf[slot]) die(s, "out of memory sending a unit");
    memcpy(s->buf[slot], &unit, sizeof unit);
    memcpy(s->buf[slot] + sizeof unit, bytes, n_bytes);
    MPI_Isend(s->buf[slot], (int)(sizeof unit + n_bytes), MPI_BYTE, 0, TAG_UNIT, MPI_COMM_WORLD, &s->req[slot]);
    return 0;
}

/* Every rank's status agreed on (a collective): 0 when every rank's is 0. The failing rank has
 * printed its message, with its rank. */
static int agree(int rc)
{
    int all = 0;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return all;
}

int job_mpi_run(job_args *a)
{
    mpi_state s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < MAX_OUTSTANDING; i++) s.req[i] = MPI_REQUEST_NULL;
    MPI_Init(NULL, NULL);
    MPI_Comm_rank(MPI_COMM_WORLD, &s.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &s.size);
    char label[48];
    snprintf(label, sizeof label, "job: rank %d of %d", s.rank, s.size);
    if (s.size > 1) cli_cmd = label; /* every message names its rank */
    circuits_set_num_threads(a->threads ? (int)a->threads : default_threads());

    if (s.rank == 0) { /* rank 0's own share: units u % R == 0, through the engine's scheduler */
        a->o.shard_index = 0;
        a->o.shard_count = s.size;
        a->o.progress = rank0_progress;
        a->o.progress_data = &s;
    }
    job_inputs in;
    int64_t *units = NULL, n_missing = 0, n_units = 0, n_done = 0, n_mine = 0;
    char *prov0 = NULL;
    int rc = job_open_inputs(a, &in);
    int st = rc ? CIRCUITS_OK : circuits_job_create(&s.job, in.m, in.ds, &a->o, s.rank == 0 ? a->dir : NULL);
    if (st != CIRCUITS_OK)
        rc = s.rank == 0 ? failure("cannot start the job in '%s': %s%s", a->dir, circuits_last_error(), job_hint(st))
                         : failure("cannot make the job: %s", circuits_last_error());
    if ((rc = agree(rc))) goto done;

    /* the same job everywhere: rank 0's provenance against each rank's (model files, dataset) */
    const char *prov = circuits_job_provenance(s.job);
    int plen = (int)strlen(prov) + 1;
    MPI_Bcast(&plen, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!(prov0 = malloc((size_t)plen))) rc = failure("out of memory");
    if ((rc = agree(rc))) goto done;
    if (s.rank == 0) memcpy(prov0, prov, (size_t)plen);
    MPI_Bcast(prov0, plen, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (strcmp(prov0, prov) != 0)
        rc = failure("this rank's job differs from rank 0's (another model file, dataset or library): its record "
                     "is %s; rank 0's is %s",
                     prov, prov0);
    if ((rc = agree(rc))) goto done;

    /* the units not yet checkpointed, from rank 0 */
    circuits_job_status(s.job, &n_units, &n_done, &n_mine);
    if (s.rank == 0) {
        if (!(units = malloc(sizeof *units * (size_t)(n_units ? n_units : 1)))) rc = failure("out of memory");
        for (int64_t u = 0; !rc && u < n_units; u++) {
            int32_t d = 0;
            circuits_job_unit_done(s.job, u, &d);
            if (!d) units[n_missing++] = u;
        }
    }
    if ((rc = agree(rc))) goto done;
    MPI_Bcast(&n_missing, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (s.rank != 0 && !(units = malloc(sizeof *units * (size_t)(n_missing ? n_missing : 1))))
        rc = failure("out of memory");
    if ((rc = agree(rc))) goto done;
    MPI_Bcast(units, (int)n_missing, MPI_INT64_T, 0, MPI_COMM_WORLD);

    /* ranks > 0: the missing units u % R != 0, dealt round-robin over ranks 1 .. R-1 (in place) */
    size_t mine = 0;
    int64_t others = 0;
    for (int64_t i = 0; i < n_missing; i++) {
        if (units[i] % s.size == 0) continue;
        if (s.rank > 0 && others % (s.size - 1) == s.rank - 1) units[mine++] = units[i];
        others++;
    }
    if (s.rank == 0) {
        s.stored = n_units - n_missing;
        for (int64_t u = 0; u < n_units; u += s.size) {
            int32_t d = 0;
            circuits_job_unit_done(s.job, u, &d);
            s.own_reported += d;
        }
        job_print_resumed("", s.stored, n_units);
        fflush(stdout);
        progress_begin(&s.bar, "job", n_units);
        progress_counted(&s.bar, "units", s.stored, a->progress);
    }
    MPI_Barrier(MPI_COMM_WORLD); /* the units' time starts when every rank is ready */
    double t0 = cli_now(), c0 = cli_cpu_now(), cpu = 0;
    if (s.rank == 0 && circuits_job_run(s.job) != CIRCUITS_OK) {
        char what[1024];
        snprintf(what, sizeof what, "%s", circuits_last_error());
        die(&s, what);
    }
    /* ranks > 0: waves of a few units per thread, each unit sent as it is handed over */
    size_t wave = (size_t)circuits_get_num_threads() * 2;
    for (size_t i = 0; i < mine; i += wave) {
        size_t n = mine - i < wave ? mine - i : wave;
        if (circuits_job_compute(s.job, units + i, n, on_unit, &s) != CIRCUITS_OK) {
            char what[1024];
            snprintf(what, sizeof what, "units %lld ..: %s", (long long)units[i], circuits_last_error());
            die(&s, what);
        }
    }
    if (s.rank == 0) while (s.stored < n_units) drain(&s, true);
    else MPI_Waitall(MAX_OUTSTANDING, s.req, MPI_STATUSES_IGNORE);
    double my_cpu = cli_cpu_now() - c0; /* the units' CPU time of every rank, summed on rank 0 */
    MPI_Reduce(&my_cpu, &cpu, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (s.rank == 0) {
        progress_end(&s.bar);
        printf("computed: %lld units on %d ranks in %.3f s (CPU %.3f s)\n", (long long)n_missing, s.size,
               cli_now() - t0, cpu);
        const char *dirs[1] = {a->dir};
        if ((st = circuits_job_merge(dirs, 1, a->out)) != CIRCUITS_OK)
            rc = failure("cannot merge '%s' into '%s': %s%s", a->dir, a->out, circuits_last_error(), job_hint(st));
        else printf("wrote %s (%lld units)\n", a->out, (long long)n_units);
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD); /* every rank exits with rank 0's status */
done:
    for (int i = 0; i < MAX_OUTSTANDING; i++) free(s.buf[i]);
    free(s.rbuf);
    free(units);
    free(prov0);
    circuits_job_free(s.job);
    job_close_inputs(&in);
    fflush(stdout);
    MPI_Finalize();
    return rc;
}
