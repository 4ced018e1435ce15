/* The GEMM side of the benchmark: this machine's sgemm rate, measured through the OpenBLAS
 * that libcircuits links, with a given thread count.
 *   bench_gemm THREADS REPS < SPEC
 * SPEC has one GEMM shape per line: "label M N K transB count" — count row-major products
 * C[M,N] = A[M,K] · B (B is [K,N], or [N,K] transposed when transB is 1), each on its own
 * buffers, timed together (a head loop: the attention GEMMs run once per batch row and head).
 * Prints a JSON line describing OpenBLAS, then per shape the median seconds over REPS (after a
 * warm-up) and the rate in GFLOP/s. A large square shape gives the machine's peak. */
#include "bench_util.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    char label[64];
    int m, n, k, trans_b, count;
} gemm_shape;

/* Median seconds of REPS runs of `count` products. */
static double time_shape(const gemm_shape *s, int reps)
{
    size_t a_n = (size_t)s->m * s->k, b_n = (size_t)s->k * s->n, c_n = (size_t)s->m * s->n;
    float *a = malloc(sizeof *a * a_n * s->count), *b = malloc(sizeof *b * b_n * s->count);
    float *c = malloc(sizeof *c * c_n * s->count);
    double *t = malloc(sizeof *t * (size_t)reps), med = -1;
    if (!a || !b || !c || !t) goto out;
    for (size_t i = 0; i < a_n * s->count; i++) a[i] = (float)(i % 251) * 1e-3f;
    for (size_t i = 0; i < b_n * s->count; i++) b[i] = (float)(i % 241) * 1e-3f;
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up (thread pool, page faults) */
        double t0 = bench_now_ms();
        for (int i = 0; i < s->count; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, s->trans_b ? CblasTrans : CblasNoTrans, s->m, s->n, s->k,
                        1.0f, a + a_n * i, s->k, b + b_n * i, s->trans_b ? s->k : s->n, 0.0f, c + c_n * i, s->n);
        if (r >= 0) t[r] = (bench_now_ms() - t0) / 1e3;
    }
    med = bench_median(t, reps);
out:
    free(a), free(b), free(c), free(t);
    return med;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS REPS < SPEC\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]), reps = atoi(argv[2]);
    if (reps < 1) reps = 1;
    if (threads > 0) openblas_set_num_threads(threads);
    printf("{\"what\": \"openblas\", \"corename\": \"%s\", \"config\": \"%s\", \"threads\": %d}\n",
           openblas_get_corename(), openblas_get_config(), openblas_get_num_threads());
    fflush(stdout);
    gemm_shape s;
    while (scanf("%63s %d %d %d %d %d", s.label, &s.m, &s.n, &s.k, &s.trans_b, &s.count) == 6) {
        double sec = time_shape(&s, reps);
        if (sec < 0) {
            fprintf(stderr, "out of memory for %s\n", s.label);
            return 1;
        }
        double gflop = 2.0 * s.m * s.n * (double)s.k * s.count / 1e9;
        printf("{\"what\": \"gemm\", \"label\": \"%s\", \"m\": %d, \"n\": %d, \"k\": %d, \"trans_b\": %d, "
               "\"count\": %d, \"seconds\": %.6f, \"gflop\": %.4f, \"gflops\": %.2f}\n",
               s.label, s.m, s.n, s.k, s.trans_b, s.count, sec, gflop, gflop / sec);
        fflush(stdout);
    }
    return 0;
}
