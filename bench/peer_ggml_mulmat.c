/* The peer of bench_qmatmul: llama.cpp's own matrix product (ggml_mul_mat on the CPU backend,
 * the ggml that llama-cpp-python built) on the same shapes: out[M, N] = in[M, K] @ W[N, K]^T,
 * W in a stored type, K = 4096. Not part of the meson build (llama.cpp is not a dependency);
 * build it against an unpacked llama-cpp-python sdist and its installed libraries:
 *   L=/opt/refenv/lib/python3.11/site-packages/llama_cpp/lib
 *   I=/work/llama_sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/include
 *   cc -O2 -o /tmp/peer_ggml_mulmat bench/peer_ggml_mulmat.c -Ibench -I$I -L$L -lggml -lggml-base -lggml-cpu \
 *      -Wl,-rpath,$L -lm
 *   /tmp/peer_ggml_mulmat THREADS REPS [DTYPE ...] [-M 1,128,512] [-N 4096,11008] [-copies C]
 *   (qbench_args.h)
 * Weights are random floats quantized by ggml_quantize_chunk. A plain ggml context: no
 * repacked weight layouts (llama.cpp's CPU "extra" buffer types, which a model loaded by
 * llama.cpp may use for Q4_0/Q4_K/IQ4_NL), so this is llama.cpp's generic path. -copies C: one
 * graph of C products, each with its own copy of W (as bench_qmatmul's -copies; time per
 * product). Prints the
 * median and the fastest ms of one product per dtype, N, M. */
#include <ggml-cpu.h>
#include <ggml.h>

#include <strings.h>

#include "bench_util.h"
#include "qbench_args.h"

int main(int argc, char **argv)
{
    qbench_args A;
    if (!qbench_parse(argc, argv, &A)) return 2;
    int threads = A.threads, reps = A.reps, copies = A.copies, n_names = A.n_names, n_m = A.n_m, n_n = A.n_n;
    const char **names = A.names;
    const int64_t *Ms = A.Ms, *Ns = A.Ns, K = 4096;
    ggml_cpu_init();
    printf("# peer_ggml_mulmat (llama.cpp ggml_mul_mat): %d threads, K = %lld, median of %d, %d copies of W\n",
           threads, (long long)K, reps, copies);
    printf("%-5s %6s %4s %10s %10s\n", "dtype", "N", "M", "ggml ms", "ggml min");
    for (int t = 0; t < n_names; t++) {
        enum ggml_type type = GGML_TYPE_COUNT;
        for (int i = 0; i < GGML_TYPE_COUNT; i++) {
            const char *tn = ggml_type_name((enum ggml_type)i);
            if (tn && strcasecmp(tn, names[t]) == 0) type = (enum ggml_type)i;
        }
        if (type == GGML_TYPE_COUNT) {
            fprintf(stderr, "unknown type %s\n", names[t]);
            return 2;
        }
        for (int ni = 0; ni < n_n; ni++) {
            int64_t N = Ns[ni];
            for (int mi = 0; mi < n_m; mi++) {
                int64_t M = Ms[mi];
                size_t wbytes = ggml_row_size(type, K) * (size_t)N;
                size_t mem = wbytes * (size_t)copies + (size_t)(M * K + M * N * copies) * 4 * 2 + ((size_t)64 << 20);
                struct ggml_init_params ip = {.mem_size = mem, .mem_buffer = NULL, .no_alloc = false};
                struct ggml_context *ctx = ggml_init(ip);
                struct ggml_tensor *W = ggml_new_tensor_2d(ctx, type, K, N);
                struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, M);
                float *src = malloc((size_t)K * 64 * sizeof *src);
                uint64_t s = 88172645463325252ull;
                for (int64_t i = 0; i < K * 64; i++) {
                    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                    src[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
                }
                for (int64_t r = 0; r < N; r += 64) /* rows in chunks of 64, same floats each chunk */
                    ggml_quantize_chunk(type, src, (char *)W->data + (size_t)r * ggml_row_size(type, K), 0,
                                        N - r < 64 ? N - r : 64, K, NULL);
                float *xd = x->data;
                for (int64_t i = 0; i < M * K; i++) xd[i] = src[i % (K * 64)];
                free(src);
                struct ggml_cgraph *gf = ggml_new_graph(ctx);
                for (int c = 0; c < copies; c++) {
                    struct ggml_tensor *Wc = W;
                    if (c) {
                        Wc = ggml_new_tensor_2d(ctx, type, K, N);
                        memcpy(Wc->data, W->data, wbytes);
                    }
                    ggml_build_forward_expand(gf, ggml_mul_mat(ctx, Wc, x));
                }
                double *tm = malloc((size_t)reps * sizeof *tm);
                for (int r = -1; r < reps; r++) {
                    double t0 = bench_now_ms();
                    ggml_graph_compute_with_ctx(ctx, gf, threads);
                    if (r >= 0) tm[r] = (bench_now_ms() - t0) / copies;
                }
                double med = bench_median(tm, reps); /* sorts tm */
                printf("%-5s %6lld %4lld %10.3f %10.3f\n", names[t], (long long)N, (long long)M, med, tm[0]);
                fflush(stdout);
                free(tm);
                ggml_free(ctx);
            }
        }
    }
    return 0;
}
