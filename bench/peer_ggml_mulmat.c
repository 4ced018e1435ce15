/* The peer of bench_qmatmul: llama.cpp's own matrix product (ggml_mul_mat on the CPU backend,
 * the ggml that llama-cpp-python built) on the same shapes: out[M, N] = in[M, K] @ W[N, K]^T,
 * W in a stored type, K = 4096. Not part of the meson build (llama.cpp is not a dependency);
 * build it against an unpacked llama-cpp-python sdist and its installed libraries:
 *   L=/opt/refenv/lib/python3.11/site-packages/llama_cpp/lib
 *   I=/work/llama_sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/ggml/include
 *   cc -O2 -o /tmp/peer_ggml_mulmat bench/peer_ggml_mulmat.c -I$I -L$L -lggml -lggml-base -lggml-cpu \
 *      -Wl,-rpath,$L -lm
 *   /tmp/peer_ggml_mulmat THREADS REPS [DTYPE ...] [-M 1,128,512] [-N 4096,11008] [-copies C]
 * Weights are random floats quantized by ggml_quantize_chunk. A plain ggml context: no
 * repacked weight layouts (llama.cpp's CPU "extra" buffer types, which a model loaded by
 * llama.cpp may use for Q4_0/Q4_K/IQ4_NL), so this is llama.cpp's generic path. -copies C: one
 * graph of C products, each with its own copy of W (as bench_qmatmul's -copies; time per
 * product). Prints the
 * median and the fastest ms of one product per dtype, N, M. */
#include <ggml-cpu.h>
#include <ggml.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void parse_list(const char *s, int64_t *v, int *n)
{
    *n = 0;
    while (*s && *n < 16) {
        v[(*n)++] = strtoll(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s THREADS REPS [DTYPE ...] [-M m1,m2] [-N n1,n2]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]), reps = atoi(argv[2]);
    const char *names[16];
    int n_names = 0, n_m = 3, n_n = 2, copies = 1;
    int64_t Ms[16] = {1, 128, 512}, Ns[16] = {4096, 11008};
    const int64_t K = 4096;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "-M") == 0 && i + 1 < argc) parse_list(argv[++i], Ms, &n_m);
        else if (strcmp(argv[i], "-N") == 0 && i + 1 < argc) parse_list(argv[++i], Ns, &n_n);
        else if (strcmp(argv[i], "-copies") == 0 && i + 1 < argc) copies = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (n_names < 16) names[n_names++] = argv[i];
    }
    if (!n_names) {
        static const char *def[] = {"Q4_K", "Q8_0", "F16", "BF16"};
        for (int i = 0; i < 4; i++) names[n_names++] = def[i];
    }
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
                    double t0 = now_ms();
                    ggml_graph_compute_with_ctx(ctx, gf, threads);
                    if (r >= 0) tm[r] = (now_ms() - t0) / copies;
                }
                qsort(tm, (size_t)reps, sizeof *tm, cmp);
                double med = reps % 2 ? tm[reps / 2] : 0.5 * (tm[reps / 2 - 1] + tm[reps / 2]);
                printf("%-5s %6lld %4lld %10.3f %10.3f\n", names[t], (long long)N, (long long)M, med, tm[0]);
                fflush(stdout);
                free(tm);
                ggml_free(ctx);
            }
        }
    }
    return 0;
}
