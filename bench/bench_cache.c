/* Times circuits_context_run_with_cache caching every hook point, REPS times into one cache,
 * per shape: the first run (the cache's block is allocated and page-faulted) and the later ones
 * (refills), in wall-clock ms, and the page faults and system CPU time of the refills (which do
 * not depend on how busy the machine is). Prints one JSON object per shape.
 * Usage: bench_cache MODEL_DIR REPS B:T [B:T ...] */
#include <circuits.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR REPS B:T [B:T ...]\n", argv[0]);
        return 2;
    }
    int reps = atoi(argv[2]);
    if (reps < 2) reps = 2;
    circuits_model *m;
    circuits_context *ctx;
    circuits_config c = {.size = sizeof c};
    if (circuits_model_load(&m, argv[1], NULL) || circuits_context_create(&ctx, m, NULL) ||
        circuits_model_config(m, &c)) {
        fprintf(stderr, "%s\n", circuits_last_error());
        return 1;
    }
    for (int a = 3; a < argc; a++) {
        long long B, T;
        if (sscanf(argv[a], "%lld:%lld", &B, &T) != 2) return 2;
        int32_t *tok = malloc((size_t)(B * T) * sizeof *tok);
        for (long long i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 7919) % c.d_vocab);
        circuits_cache *cache;
        if (circuits_cache_create(&cache)) return 1;
        if (circuits_context_forward(ctx, tok, B, T, NULL, NULL, NULL)) return 1; /* scratch sized */
        double *ms = malloc((size_t)reps * sizeof *ms), total = 0, sys_ms = 0;
        long faults = 0;
        for (int r = 0; r < reps; r++) {
            struct rusage u0, u1;
            getrusage(RUSAGE_SELF, &u0);
            double t0 = now_ms();
            if (circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, NULL, NULL, NULL)) {
                fprintf(stderr, "%s\n", circuits_last_error());
                return 1;
            }
            ms[r] = now_ms() - t0;
            getrusage(RUSAGE_SELF, &u1);
            total += ms[r];
            if (r > 0) { /* the refills */
                faults += u1.ru_minflt - u0.ru_minflt;
                sys_ms += (u1.ru_stime.tv_sec - u0.ru_stime.tv_sec) * 1e3 + (u1.ru_stime.tv_usec - u0.ru_stime.tv_usec) / 1e3;
            }
        }
        double first = ms[0];
        qsort(ms + 1, (size_t)(reps - 1), sizeof *ms, cmp);
        printf("{\"batch\": %lld, \"pos\": %lld, \"cache_mib\": %.1f, \"reps\": %d, \"first_ms\": %.1f, "
               "\"later_median_ms\": %.1f, \"later_min_ms\": %.1f, \"total_ms\": %.1f, "
               "\"page_faults_per_refill\": %ld, \"sys_ms_per_refill\": %.1f}\n",
               B, T, circuits_cache_nbytes(cache) / 1048576.0, reps, first, ms[1 + (reps - 1) / 2], ms[1], total,
               faults / (reps - 1), sys_ms / (reps - 1));
        circuits_cache_free(cache);
        free(ms);
        free(tok);
    }
    circuits_context_free(ctx);
    circuits_model_free(m);
    return 0;
}
