/* The thread pool: cx_parallel_for and the public thread-count controls.
 *
 * Why our own pool, and OpenBLAS single-threaded inside it: the forward pass alternates GEMMs
 * with elementwise work (LayerNorm, GELU, softmax, attention per head). With OpenBLAS's pool
 * doing the GEMMs, the elementwise work either runs on one core or needs a second pool — and
 * two pools on two cores steal from each other (OpenBLAS's idle workers spin in sched_yield).
 * One pool that runs everything, OpenBLAS included (each task calls it single-threaded on its
 * slice), cannot oversubscribe. Idle workers spin for a few tens of microseconds (the gap
 * between two loops of a forward pass is usually shorter: a futex wake-up costs more than the
 * loop saves on small shapes), then sleep on a condition variable and use no CPU.
 *
 * Determinism: a loop's chunk boundaries depend only on its size and the configured thread
 * count; which thread runs a chunk (taken from an atomic counter) does not change any result. */
#include "pool.h"

#include <stdint.h>

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define CX_MAX_THREADS 256

typedef struct job {
    cx_task_fn fn;
    void *arg;
    int64_t n, per; /* items, items per chunk */
    int chunks;
    atomic_int next;      /* next chunk to take */
} job;

static struct {
    pthread_mutex_t busy;  /* held by the thread whose loop occupies the pool */
    pthread_mutex_t m;     /* guards everything below */
    pthread_cond_t wake;   /* workers: a new generation (or quit) */
    pthread_cond_t done;   /* the caller: completed == chunks */
    int threads;           /* configured, the caller included; 0 until first use */
    int workers;           /* worker threads running */
    pthread_t tid[CX_MAX_THREADS];
    atomic_ulong generation; /* written under m; read without it by spinning workers */
    atomic_int completed;  /* chunks finished in this generation (written under m) */
    atomic_int active;     /* workers inside the current job (it lives on the caller's stack) */
    bool quit;
    job *current;
} pool = {
    .busy = PTHREAD_MUTEX_INITIALIZER,
    .m = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};

static _Thread_local bool in_pool_task; /* a task that calls cx_parallel_for runs it inline */
static _Thread_local int serial_depth;   /* cx_pool_serial: loops on this thread are one chunk */

void cx_pool_serial(bool on)
{
    serial_depth += on ? 1 : -1;
}

/* Busy-wait budget before sleeping: about 50 us of pause instructions. */
#define SPIN_ITERATIONS 2000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int default_threads(void)
{
    const char *env = getenv("CIRCUITS_NUM_THREADS");
    if (env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (end != env && *end == '\0' && v > 0) return v < CX_MAX_THREADS ? (int)v : CX_MAX_THREADS;
    }
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n < CX_MAX_THREADS ? n : CX_MAX_THREADS;
}

/* Once per process, before the first GEMM: OpenBLAS runs single-threaded inside our tasks. */
static void configure_openblas(void) { openblas_set_num_threads(1); }
static pthread_once_t openblas_once = PTHREAD_ONCE_INIT;

/* Runs chunk c of j: items [c * per, (c + 1) * per) clipped to n. */
static void run_chunk(const job *j, int c)
{
    int64_t b = (int64_t)c * j->per, e = b + j->per;
    if (b > j->n) b = j->n;
    if (e > j->n) e = j->n;
    if (b < e) j->fn(j->arg, b, e);
}

static void run_chunks(job *j)
{
    int c;
    while ((c = atomic_fetch_add(&j->next, 1)) < j->chunks) {
        run_chunk(j, c);
        pthread_mutex_lock(&pool.m);
        ++pool.completed;
        pthread_mutex_unlock(&pool.m);
    }
}

/* arg: the generation current when the worker was created. A worker that reads it itself, once
 * scheduled, may already see the generation of the loop that started it, and sleep through that
 * loop (then its caller runs every chunk alone: one whole circuits_job_run on one thread). */
static void *worker_main(void *arg)
{
    in_pool_task = true;
    pthread_mutex_lock(&pool.m);
    unsigned long seen = (unsigned long)(uintptr_t)arg;
    for (;;) {
        pthread_mutex_unlock(&pool.m);
        for (int i = 0; i < SPIN_ITERATIONS && atomic_load_explicit(&pool.generation, memory_order_acquire) == seen; i++)
            cpu_relax();
        pthread_mutex_lock(&pool.m);
        while (!pool.quit && pool.generation == seen) pthread_cond_wait(&pool.wake, &pool.m);
        if (pool.quit) break;
        seen = pool.generation;
        job *j = pool.current;
        if (!j) continue; /* woke after that job finished */
        pool.active++;
        pthread_mutex_unlock(&pool.m);
        run_chunks(j);
        pthread_mutex_lock(&pool.m);
        pool.active--;
        pthread_cond_signal(&pool.done);
    }
    pthread_mutex_unlock(&pool.m);
    return NULL;
}

/* With pool.busy held. Starts threads - 1 workers; fewer if the system refuses threads (the
 * caller then runs more chunks itself: slower, never wrong). */
static void start_workers(void)
{
    pthread_mutex_lock(&pool.m);
    if (pool.threads == 0) pool.threads = default_threads();
    pool.quit = false;
    while (pool.workers < pool.threads - 1) {
        if (pthread_create(&pool.tid[pool.workers], NULL, worker_main, (void *)(uintptr_t)pool.generation) != 0) break;
        pool.workers++;
    }
    pthread_mutex_unlock(&pool.m);
}

/* With pool.busy held. */
static void stop_workers(void)
{
    pthread_mutex_lock(&pool.m);
    pool.quit = true;
    pthread_cond_broadcast(&pool.wake);
    int n = pool.workers;
    pool.workers = 0;
    pthread_mutex_unlock(&pool.m);
    for (int i = 0; i < n; i++) pthread_join(pool.tid[i], NULL);
}

/* The configured number of threads (the caller included); the default on first use. */
static int pool_threads(void)
{
    pthread_mutex_lock(&pool.m);
    if (pool.threads == 0) pool.threads = default_threads();
    int n = pool.threads;
    pthread_mutex_unlock(&pool.m);
    return n;
}

void cx_parallel_for(int64_t n, int64_t align, cx_task_fn fn, void *arg)
{
    if (n <= 0) return;
    pthread_once(&openblas_once, configure_openblas);
    if (align < 1) align = 1;
    int chunks = serial_depth > 0 ? 1 : pool_threads();
    int64_t units = (n + align - 1) / align; /* chunks hold whole multiples of align */
    if (units < chunks) chunks = (int)units;
    job j = {.fn = fn, .arg = arg, .n = n, .per = (units + chunks - 1) / chunks * align, .chunks = chunks};
    atomic_init(&j.next, 0);
    if (chunks == 1 || in_pool_task || pthread_mutex_trylock(&pool.busy) != 0) {
        bool was = in_pool_task;
        in_pool_task = true; /* nested loops inside fn run inline too */
        for (int c = 0; c < chunks; c++) run_chunk(&j, c);
        in_pool_task = was;
        return;
    }
    if (pool.workers == 0) start_workers();
    pthread_mutex_lock(&pool.m);
    pool.current = &j;
    pool.completed = 0;
    pool.generation++;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.m);
    in_pool_task = true;
    run_chunks(&j);
    in_pool_task = false;
    for (int i = 0; i < SPIN_ITERATIONS && (atomic_load(&pool.completed) < chunks || atomic_load(&pool.active) > 0); i++)
        cpu_relax();
    pthread_mutex_lock(&pool.m);
    while (pool.completed < chunks || pool.active > 0) pthread_cond_wait(&pool.done, &pool.m);
    pool.current = NULL;
    pthread_mutex_unlock(&pool.m);
    pthread_mutex_unlock(&pool.busy);
}

void circuits_set_num_threads(int n)
{
    pthread_once(&openblas_once, configure_openblas);
    pthread_mutex_lock(&pool.busy); /* waits for a loop in flight */
    stop_workers();
    pthread_mutex_lock(&pool.m);
    pool.threads = n > 0 ? (n < CX_MAX_THREADS ? n : CX_MAX_THREADS) : default_threads();
    pthread_mutex_unlock(&pool.m);
    pthread_mutex_unlock(&pool.busy); /* workers start with the next loop */
}

int circuits_get_num_threads(void) { return pool_threads(); }

/* When the library is unloaded (dlclose) its workers must not outlive its code. */
__attribute__((destructor)) static void pool_shutdown(void)
{
    if (pthread_mutex_trylock(&pool.busy) != 0) return; /* a loop in flight: exiting anyway */
    stop_workers();
    pthread_mutex_unlock(&pool.busy);
}
