/* Products with weights kept in a stored dtype (lib/run/qmatmul.c) against the fp32 product of
 * the same weights dequantized (cx_matmul: the pool's split single-threaded sgemms), on
 * Llama-7B-like shapes: out[M, N] = in[M, K] @ W[N, K]^T with K = 4096, N = 4096 and 11008.
 *   bench_qmatmul THREADS REPS [DTYPE ...] [-M m1,m2,...] [-N n1,n2,...] [-copies C]
 * (qbench_args.h; DTYPE as circuits_dtype_name names it). The two products of a shape alternate within each repetition (the machine is
 * shared: both see the same load), and each time is the median over REPS after a warm-up.
 * Prints one line per dtype, N and M: ms of the stored-dtype product, ms of fp32 sgemm, their
 * ratio, the same for the fastest repetition of each (robust on a loaded machine: other work
 * only adds time), and the largest difference between the two relative to sum |x w| (they must agree to fp32
 * rounding). -copies C: the stored-dtype product cycles through C copies of W (each its own
 * memory), so that with C copies larger than the last-level cache every product reads its
 * weights from DRAM as generation does (a model's layers are read once per token); the time
 * is per product. Not a test: bench/README.md records its numbers. */
#include "bench_util.h"
#include "qbench_args.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "circuits.h"
#include "kernels.h"
#include "quant.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

/* A pool of blocks with finite values of moderate size (random bytes, drawn again while a
 * value is not), tiled over the matrix: realistic scales without the cost of drawing
 * millions of blocks. */
static void fill_matrix(cx_dtype dt, uint8_t *data, size_t bytes)
{
    int64_t bv;
    size_t bb;
    cx_dtype_blocks(dt, &bv, &bb);
    enum { POOL = 997 };
    uint8_t *pool = malloc(POOL * bb);
    float v[256];
    for (int p = 0; p < POOL; p++) {
        uint8_t *b = pool + (size_t)p * bb;
        for (;;) {
            for (size_t i = 0; i < bb; i++) b[i] = (uint8_t)rnd();
            if (dt == CX_DT_F32) {
                float f = (float)rnd() / 4294967296.0f - 0.5f;
                memcpy(b, &f, 4);
            }
            cx_dequantize_row(dt, b, v, bv);
            bool ok = true;
            for (int64_t i = 0; i < bv; i++) ok &= isfinite(v[i]) && fabsf(v[i]) < 1e2f && (v[i] == 0 || fabsf(v[i]) > 1e-6f);
            if (ok) break;
        }
    }
    for (size_t off = 0, p = 0; off < bytes; off += bb, p = (p + 1) % POOL) memcpy(data + off, pool + p * bb, bb);
    free(pool);
}

int main(int argc, char **argv)
{
    qbench_args A;
    if (!qbench_parse(argc, argv, &A)) return 2;
    int threads = A.threads, reps = A.reps, copies = A.copies, n_names = A.n_names, n_m = A.n_m, n_n = A.n_n;
    const char **names = A.names;
    const int64_t *Ms = A.Ms, *Ns = A.Ns, K = 4096;
    circuits_set_num_threads(threads);
    printf("# bench_qmatmul: %d threads, K = %lld, median of %d, %d copies of W\n", circuits_get_num_threads(),
           (long long)K, reps, copies);
    printf("%-5s %6s %4s %10s %10s %6s %10s %10s %6s %9s\n", "dtype", "N", "M", "q ms", "f32 ms", "ratio", "q min",
           "f32 min", "ratio", "max err");
    int64_t maxM = 0;
    for (int i = 0; i < n_m; i++) maxM = Ms[i] > maxM ? Ms[i] : maxM;
    float *in = malloc((size_t)(maxM * K) * sizeof *in);
    for (int64_t i = 0; i < maxM * K; i++) in[i] = (float)rnd() / 2147483648.0f - 1.0f;
    for (int t = 0; t < n_names; t++) {
        int32_t pub = -1;
        for (int32_t d = 0; d < 64; d++)
            if (circuits_dtype_name(d) && strcmp(circuits_dtype_name(d), names[t]) == 0) pub = d;
        cx_dtype dt;
        if (!cx_dtype_from_public(pub, &dt)) {
            fprintf(stderr, "unknown dtype %s\n", names[t]);
            return 2;
        }
        for (int ni = 0; ni < n_n; ni++) {
            int64_t N = Ns[ni];
            size_t row_bytes;
            cx_dtype_row_bytes(dt, K, &row_bytes);
            uint8_t *data = malloc((size_t)N * row_bytes * (size_t)copies);
            float *Wf = malloc((size_t)(N * K) * sizeof *Wf);
            fill_matrix(dt, data, (size_t)N * row_bytes);
            for (int c = 1; c < copies; c++) memcpy(data + (size_t)c * N * row_bytes, data, (size_t)N * row_bytes);
            circuits_dequantize(pub, data, (size_t)N * row_bytes, Wf, (size_t)(N * K));
            cx_qmat W = {.dtype = dt, .rows = N, .cols = K, .data = data, .row_bytes = row_bytes, .row_map = NULL};
            for (int mi = 0; mi < n_m; mi++) {
                int64_t M = Ms[mi];
                float *oq = malloc((size_t)(M * N) * sizeof *oq), *of = malloc((size_t)(M * N) * sizeof *of);
                double *tq = malloc((size_t)reps * sizeof *tq), *tf = malloc((size_t)reps * sizeof *tf);
                for (int r = -1; r < reps; r++) {
                    double t0 = bench_now_ms();
                    for (int c = 0; c < copies; c++) {
                        cx_qmat Wc = W;
                        Wc.data = data + (size_t)c * N * row_bytes;
                        cx_qmatmul(oq, N, in, K, M, &Wc, 0, N, NULL, false);
                    }
                    double t1 = bench_now_ms();
                    cx_matmul(of, N, in, K, M, K, N, Wf, 1, K, NULL, false);
                    double t2 = bench_now_ms();
                    if (r >= 0) tq[r] = (t1 - t0) / copies, tf[r] = t2 - t1;
                }
                double err = 0.0;
                for (int64_t i = 0; i < M; i += M > 8 ? M / 8 : 1)
                    for (int64_t j = 0; j < N; j += 7) {
                        double mag = 0.0;
                        for (int64_t k = 0; k < K; k++) mag += fabs((double)in[i * K + k] * Wf[j * K + k]);
                        double e = fabs((double)oq[i * N + j] - of[i * N + j]) / (mag > 0 ? mag : 1);
                        if (!(e <= err)) err = e;
                    }
                double mq = bench_median(tq, reps), mf = bench_median(tf, reps); /* sorts them */
                printf("%-5s %6lld %4lld %10.3f %10.3f %6.2f %10.3f %10.3f %6.2f %9.2e\n", names[t], (long long)N,
                       (long long)M, mq, mf, mq / mf, tq[0], tf[0], tq[0] / tf[0], err);
                fflush(stdout);
                free(oq), free(of), free(tq), free(tf);
            }
            free(data);
            free(Wf);
        }
    }
    free(in);
    return 0;
}
