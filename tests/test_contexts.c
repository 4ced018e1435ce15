/* The public API's documented contract (include/circuits.h), part 6 of 6: one model, four
 * contexts, four threads, with hooks, caches and failures of each thread's own; results equal
 * the single-threaded run and error messages stay per thread.
 * Shared helpers: tests/testutil.h (TESTUTIL_API_HELPERS).
 * Usage: test_contexts CASES_DIR   (tests/reference/cases) */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

#include <pthread.h>

/* ---------------------------------------------------------------------------------------- */
/* threads: one model, four contexts, four threads                                           */
/* ---------------------------------------------------------------------------------------- */

#define N_THREADS 4
#define N_ITERS 20
#define TB 2
#define TT 6

typedef struct job {
    int id;
    const circuits_model *model;
    circuits_context *ctx;
    int32_t tokens[TB * TT];
    bool edit, count;
    const float *ref; /* [TB, TT, V] expected logits */
    size_t nlogits;
    /* results */
    double max_diff;
    int errors;       /* unexpected return codes */
    int msg_errors;   /* error messages that were not this thread's own */
    long hook_calls, runs;
    char first_error[256];
} job;

static void job_hooks(job *j, circuits_context *ctx)
{
    if (j->edit && circuits_context_add_hook(ctx, "blocks.*.hook_resid_pre", hook_edit, NULL, NULL)) j->errors++;
    if (j->count && circuits_context_add_hook(ctx, "*", hook_count, &j->hook_calls, NULL)) j->errors++;
}

static void *job_run(void *p)
{
    job *j = p;
    float *lg = malloc(j->nlogits * sizeof *lg);
    circuits_cache *cache = NULL;
    if (!lg || circuits_cache_create(&cache)) {
        j->errors++;
        free(lg);
        return NULL;
    }
    job_hooks(j, j->ctx);
    for (int it = 0; it < N_ITERS; it++) {
        int rc;
        if (it % 7 == 3) {
            /* a failure of this thread's own, with its own message */
            int32_t bad[TT];
            memcpy(bad, j->tokens, sizeof bad);
            bad[2] = 100000 + j->id;
            rc = circuits_context_forward(j->ctx, bad, 1, TT, lg, NULL, NULL);
            char own[32];
            snprintf(own, sizeof own, "%d", 100000 + j->id);
            if (rc != CIRCUITS_E_RANGE) j->errors++;
            if (!strstr(circuits_last_error(), own)) j->msg_errors++;
            continue;
        }
        if (it % 5 == 4)
            rc = circuits_context_run_with_cache(j->ctx, j->tokens, TB, TT, (const char *const[]){"pattern0", "resid_post1"},
                                                 2, cache, lg, NULL, NULL);
        else
            rc = circuits_context_forward(j->ctx, j->tokens, TB, TT, lg, NULL, NULL);
        if (rc) {
            if (!j->errors) snprintf(j->first_error, sizeof j->first_error, "%s", circuits_last_error());
            j->errors++;
            continue;
        }
        j->runs++;
        double d = max_abs_diff(lg, j->ref, j->nlogits);
        if (d > j->max_diff) j->max_diff = d;
    }
    circuits_cache_free(cache);
    free(lg);
    return NULL;
}

static void test_threads(void)
{
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_config c = config_of(m);
    size_t nl = (size_t)TB * TT * (size_t)c.d_vocab_out;
    job jobs[N_THREADS];
    float *refs[N_THREADS];
    circuits_context *ref_ctx = make_ctx(m, 0);
    for (int i = 0; i < N_THREADS; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->id = i;
        j->model = m;
        j->edit = i % 2 == 1;
        j->count = i >= 2;
        make_tokens(j->tokens, TB * TT, c.d_vocab, 100 + (uint32_t)i);
        j->nlogits = nl;
        refs[i] = malloc(nl * sizeof *refs[i]);
        /* the single-threaded result with the same hooks */
        long dummy = 0;
        if (j->edit) CHECK_OK(circuits_context_add_hook(ref_ctx, "blocks.*.hook_resid_pre", hook_edit, NULL, NULL));
        if (j->count) CHECK_OK(circuits_context_add_hook(ref_ctx, "*", hook_count, &dummy, NULL));
        CHECK_OK(circuits_context_forward(ref_ctx, j->tokens, TB, TT, refs[i], NULL, NULL));
        circuits_context_clear_hooks(ref_ctx);
        j->ref = refs[i];
        j->ctx = make_ctx(m, 0);
    }
    /* the edit does change the result (so the comparison tests it) */
    float *plain = malloc(nl * sizeof *plain);
    CHECK_OK(circuits_context_forward(ref_ctx, jobs[1].tokens, TB, TT, plain, NULL, NULL));
    CHECK(max_abs_diff(plain, refs[1], nl) > 1e-3, "the threads' edit hook has no effect");
    free(plain);
    circuits_context_free(ref_ctx);

    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) CHECK(pthread_create(&th[i], NULL, job_run, &jobs[i]) == 0, "pthread_create %d", i);
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    size_t np = circuits_context_hook_point_count(jobs[0].ctx);
    for (int i = 0; i < N_THREADS; i++) {
        job *j = &jobs[i];
        CHECK(j->errors == 0, "thread %d: %d unexpected failures (%s)", i, j->errors, j->first_error);
        CHECK(j->msg_errors == 0, "thread %d: %d error messages were not its own", i, j->msg_errors);
        CHECK(j->runs == N_ITERS - 3, "thread %d: %ld successful runs", i, j->runs);
        CHECK(j->max_diff <= 1e-6, "thread %d: logits differ from the single-threaded run by %g", i, j->max_diff);
        if (j->count)
            CHECK(j->hook_calls == j->runs * (long)np, "thread %d: %ld hook calls for %ld runs of %zu points", i,
                  j->hook_calls, j->runs, np);
        circuits_context_free(j->ctx);
        free(refs[i]);
    }
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    tu_cases_arg(argc, argv);
    test_threads();
    return tu_finish("test_contexts");
}
