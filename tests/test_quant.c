/* Storage types of weights (lib/model/quant.c, lib/run/qmatmul.c):
 *   1. circuits_dequantize bit for bit against gguf-py's NumPy dequantizer, for every type, on
 *      the committed references (tests/reference/quant/, generate_quant.py): random blocks and
 *      extreme scales (+-65504, subnormals, +-0, +-inf, NaNs with payloads);
 *   2. circuits_dtype_name / circuits_dtype_block against the references' block sizes, and the
 *      refusals of circuits_dequantize and circuits_dtype_block (named checks: docs/errors.md,
 *      "Storage types");
 *   3. cx_qmatmul against cx_matmul_ref on the dequantized weights for every type: M = 1 .. 9,
 *      row_map, r0 / n sub-ranges, bias, accumulate, padded leading dimensions, one and two
 *      threads, and with every allocation failing (the fallback without a tile).
 * Usage: test_quant QUANT_REFERENCE_DIR [-v] */
#include "catalogue.h"

#include <math.h>
#include <stdint.h>

#include "../lib/base/fault.h"
#include "../lib/model/quant.h"
#include "../lib/run/kernels.h"
#include "../lib/run/qkernels.h"
#include "reference_get.h"

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static float frand(void) /* uniform in [-1, 1) */
{
    return (float)((double)rnd() / 2147483648.0 - 1.0);
}

/* ---- 1, 2: the references, names and blocks ---- */

static int n_types;
static int32_t type_ids[64];

static void check_reference(const char *dir, int32_t dtype)
{
    const char *name = circuits_dtype_name(dtype);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    if (cx_st_open_file(&ref, path) != CIRCUITS_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, circuits_last_error());
        exit(2);
    }
    const cx_st_tensor *raw = get("raw"), *values = get("values"), *block = get("block"), *ggml = get("ggml_type");
    int32_t ggml_type;
    int64_t bl[2];
    memcpy(&ggml_type, ggml->data, sizeof ggml_type);
    memcpy(bl, block->data, sizeof bl);
    CHECK(ggml_type == dtype, "%s: the reference is ggml type %d", name, (int)ggml_type);

    int64_t bv = 0;
    size_t bb = 0;
    CHECK_OK(circuits_dtype_block(dtype, &bv, &bb));
    CHECK(bv == bl[0] && (int64_t)bb == bl[1], "%s: block %lld values / %zu bytes, gguf-py says %lld / %lld", name,
          (long long)bv, bb, (long long)bl[0], (long long)bl[1]);
    int64_t only_v = 0;
    size_t only_b = 0;
    CHECK_OK(circuits_dtype_block(dtype, &only_v, NULL));
    CHECK_OK(circuits_dtype_block(dtype, NULL, &only_b));
    CHECK(only_v == bv && only_b == bb, "%s: one output at a time", name);

    size_t n = values->numel;
    float *out = malloc(n * sizeof *out);
    memset(out, 0xA5, n * sizeof *out);
    CHECK_OK(circuits_dequantize(dtype, raw->data, raw->nbytes, out, n));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(out + i, values->data + 4 * i, 4) != 0 && !bad++) first = i;
    uint32_t got = 0, want = 0;
    if (bad) {
        memcpy(&got, out + first, 4);
        memcpy(&want, values->data + 4 * first, 4);
    }
    CHECK(bad == 0, "%s: %zu of %zu values differ from gguf-py; first [%zu] 0x%08x, want 0x%08x", name, bad, n, first,
          got, want);

    /* one block at a time, from an unaligned copy: the same bits (no alignment assumed) */
    uint8_t *shifted = malloc(bb + 1);
    float one[256];
    bad = 0;
    for (size_t b = 0; b < n / (size_t)bv; b++) {
        memcpy(shifted + 1, raw->data + b * bb, bb);
        CHECK_OK(circuits_dequantize(dtype, shifted + 1, bb, one, (size_t)bv));
        bad += memcmp(one, values->data + 4 * b * (size_t)bv, (size_t)bv * 4) != 0;
    }
    CHECK(bad == 0, "%s: %zu blocks differ when dequantized alone", name, bad);
    /* the products' vector dequantizer (tiles): the same values; NaNs may lose their payload */
    if (cx_qk_available()) {
        cx_dtype dt;
        cx_dtype_from_public(dtype, &dt);
        memset(out, 0xA5, n * sizeof *out);
        cx_qk_dequantize(dt, raw->data, 0, (int64_t)n, out);
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            float w;
            memcpy(&w, values->data + 4 * i, 4);
            bad += !(isnan(w) ? isnan(out[i]) : memcmp(out + i, &w, 4) == 0);
        }
        CHECK(bad == 0, "%s: the vector dequantizer differs in %zu of %zu values", name, bad, n);
    }
    free(shifted);
    free(out);
    cx_st_close(ref);
    ref = NULL;
    printf("  %-5s %6zu values bit-identical to gguf-py\n", name, n);
}

static void test_references(const char *dir)
{
    for (int32_t d = -2; d < 64; d++)
        if (circuits_dtype_name(d)) type_ids[n_types++] = d;
    CHECK(n_types == 13, "%d named dtypes", n_types);
    CHECK(strcmp(circuits_dtype_name(CIRCUITS_DTYPE_Q4_K), "Q4_K") == 0, "Q4_K's name");
    CHECK(strcmp(circuits_dtype_name(CIRCUITS_DTYPE_BF16), "BF16") == 0, "BF16's name");
    CHECK(circuits_dtype_name(4) == NULL && circuits_dtype_name(-1) == NULL && circuits_dtype_name(INT32_MAX) == NULL,
          "numbers that are not dtypes have no name");
    for (int t = 0; t < n_types; t++) check_reference(dir, type_ids[t]);
}

static void test_refusals(void)
{
    uint8_t src[144] = {0};
    float dst[256];
    CALL_FAILS("dtype_block_unknown", circuits_dtype_block(4, NULL, NULL), CIRCUITS_E_DTYPE,
               "4 is not a circuits_dtype");
    CALL_FAILS("dequantize_unknown_dtype", circuits_dequantize(4, src, 18, dst, 32), CIRCUITS_E_DTYPE,
               "4 is not a circuits_dtype");
    CALL_FAILS("dequantize_negative_dtype", circuits_dequantize(-1, src, 4, dst, 1), CIRCUITS_E_DTYPE,
               "-1 is not a circuits_dtype");
    CALL_FAILS("dequantize_partial_block", circuits_dequantize(CIRCUITS_DTYPE_Q4_K, src, 144, dst, 100),
               CIRCUITS_E_SHAPE, "100 values are not whole Q4_K blocks of 256");
    CALL_FAILS("dequantize_n_huge", circuits_dequantize(CIRCUITS_DTYPE_F32, src, 4, dst, SIZE_MAX),
               CIRCUITS_E_SHAPE, "are not whole F32 blocks of 1");
    CALL_FAILS("dequantize_src_bytes_short", circuits_dequantize(CIRCUITS_DTYPE_Q8_0, src, 33, dst, 32),
               CIRCUITS_E_SHAPE, "32 Q8_0 values take 34 bytes, not 33");
    CALL_FAILS("dequantize_src_bytes_long", circuits_dequantize(CIRCUITS_DTYPE_Q4_K, src, 144, dst, 512),
               CIRCUITS_E_SHAPE, "512 Q4_K values take 288 bytes, not 144");
    CALL_FAILS("dequantize_src_null", circuits_dequantize(CIRCUITS_DTYPE_Q4_0, NULL, 18, dst, 32),
               CIRCUITS_E_INVALID_ARGUMENT, "src or dst is NULL");
    CALL_FAILS("dequantize_dst_null", circuits_dequantize(CIRCUITS_DTYPE_F16, src, 4, NULL, 2),
               CIRCUITS_E_INVALID_ARGUMENT, "src or dst is NULL");
    /* nothing to do is fine, NULL or not */
    CHECK_OK(circuits_dequantize(CIRCUITS_DTYPE_Q6_K, NULL, 0, NULL, 0));
}

/* ---- 3: products ---- */

/* A random block of dt whose values are finite and of moderate size (random bytes; blocks
 * whose fp16 scales came out huge, infinite or NaN are drawn again). */
static void random_block(cx_dtype dt, uint8_t *b, int64_t bv, size_t bb)
{
    float v[256];
    for (;;) {
        for (size_t i = 0; i < bb; i++) b[i] = (uint8_t)rnd();
        if (dt == CX_DT_F32) { /* random bits are rarely moderate: draw values */
            float f = frand() * 4.0f;
            memcpy(b, &f, 4);
        }
        cx_dequantize_row(dt, b, v, bv);
        bool ok = true, nonzero = false;
        for (int64_t i = 0; i < bv; i++) {
            ok &= isfinite(v[i]) && fabsf(v[i]) < 1e3f && (v[i] == 0.0f || fabsf(v[i]) > 1e-6f);
            nonzero |= v[i] != 0.0f;
        }
        if (ok && nonzero) return;
    }
}

#define SENTINEL 4321.25f

/* out = cx_qmatmul(...) against the fp32 product of the dequantized rows. Bound: any fp32
 * summation of K products (in any order, with or without FMA) is within (K + 2) u of the exact
 * sum in units of |init| + sum |x w| (u = 2^-24; +2 for the init and the final rounding). */
static double check_product(const cx_qmat *W, const float *Wf, int64_t M, int64_t r0, int64_t n, bool use_bias,
                            bool accumulate, int64_t pad)
{
    int64_t K = W->cols, ldi = K + pad, ldo = n + pad;
    float *in = malloc((size_t)(M * ldi) * sizeof *in), *bias = malloc((size_t)n * sizeof *bias);
    float *out = malloc((size_t)(M * ldo) * sizeof *out), *want = malloc((size_t)(M * ldo) * sizeof *want);
    float *prev = malloc((size_t)(M * ldo) * sizeof *prev), *Wg = malloc((size_t)(n * K) * sizeof *Wg);
    for (int64_t i = 0; i < M * ldi; i++) in[i] = frand();
    for (int64_t j = 0; j < n; j++) bias[j] = frand() * 10.0f;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < ldo; j++) prev[i * ldo + j] = j < n ? frand() * 10.0f : SENTINEL;
    for (int64_t j = 0; j < n; j++) { /* the logical rows r0 .. r0 + n - 1, through the map */
        int64_t sr = W->row_map ? W->row_map[r0 + j] : r0 + j;
        memcpy(Wg + j * K, Wf + sr * K, (size_t)K * sizeof *Wg);
    }
    memcpy(out, prev, (size_t)(M * ldo) * sizeof *out);
    memcpy(want, prev, (size_t)(M * ldo) * sizeof *want);
    cx_qmatmul(out, ldo, in, ldi, M, W, r0, n, use_bias ? bias : NULL, accumulate);
    cx_matmul_ref(want, ldo, in, ldi, M, K, n, Wg, 1, K, use_bias ? bias : NULL, accumulate);
    double worst = 0.0;
    bool pad_ok = true;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < n; j++) {
            double mag = fabs(accumulate ? prev[i * ldo + j] : use_bias ? bias[j] : 0.0);
            for (int64_t k = 0; k < K; k++) mag += fabs((double)in[i * ldi + k] * Wg[j * K + k]);
            double err = fabs((double)out[i * ldo + j] - want[i * ldo + j]) / (mag > 0 ? mag : 1.0);
            if (!(err <= worst)) worst = err; /* NaN sticks */
        }
        for (int64_t j = n; j < ldo; j++) pad_ok &= out[i * ldo + j] == SENTINEL;
    }
    CHECK(pad_ok, "%s M=%lld: the padding of out was written", circuits_dtype_name(cx_dtype_public(W->dtype)), (long long)M);
    free(in), free(bias), free(out), free(want), free(prev), free(Wg);
    return worst;
}

static void test_qmatmul_dtype(cx_dtype dt)
{
    int64_t bv;
    size_t bb;
    cx_dtype_blocks(dt, &bv, &bb);
    /* 150 rows: tiles of 64 leave a part; K: F16 / BF16 / F32 with a tail after 32-value steps */
    const int64_t R = 150, K = bv == 256 ? 768 : bv == 32 ? 320 : 333;
    size_t row_bytes;
    cx_dtype_row_bytes(dt, K, &row_bytes);
    uint8_t *data = malloc((size_t)R * row_bytes);
    float *Wf = malloc((size_t)(R * K) * sizeof *Wf);
    for (int64_t r = 0; r < R; r++)
        for (int64_t b = 0; b < K / bv; b++) random_block(dt, data + (size_t)r * row_bytes + (size_t)b * bb, bv, bb);
    CHECK_OK(circuits_dequantize(cx_dtype_public(dt), data, (size_t)R * row_bytes, Wf, (size_t)(R * K)));
    int32_t map[150];
    for (int64_t r = 0; r < R; r++) map[r] = (int32_t)((r * 37 + 11) % R); /* 37 is prime to 150 */
    cx_qmat plain = {.dtype = dt, .rows = R, .cols = K, .data = data, .row_bytes = row_bytes, .row_map = NULL};
    cx_qmat mapped = plain;
    mapped.row_map = map;

    const double bound = (double)(K + 2) * 0x1p-24;
    double worst = 0.0;
    /* M <= 8: the fused kernels (four rows at a time, 5 = 4 + 1); more: tiles and sgemm. Each
     * with the CPU's kernels and with the portable path (the kernels switched off). */
    static const int64_t Ms[] = {1, 2, 3, 4, 5, 8, 9, 12};
    for (int pass = 0; pass < 4; pass++) {
        int threads = 1 + pass % 2;
        circuits_set_num_threads(threads);
        cx_qk_switch_off(pass >= 2);
        for (size_t mi = 0; mi < CX_COUNT(Ms); mi++) {
            int64_t M = Ms[mi];
            double e[] = {
                check_product(&plain, Wf, M, 0, R, false, false, 0),
                check_product(&plain, Wf, M, 0, R, true, false, 3),
                check_product(&mapped, Wf, M, 0, R, true, false, 0),
                check_product(&mapped, Wf, M, 7, 65, false, true, 5),
                check_product(&plain, Wf, M, 70, 1, true, false, 0),
                check_product(&plain, Wf, M, 1, 129, true, true, 1),
            };
            for (size_t k = 0; k < CX_COUNT(e); k++) {
                CHECK(e[k] <= bound, "%s M=%lld case %zu threads %d%s: error %.3g of sum |x w|, bound %.3g",
                      circuits_dtype_name(cx_dtype_public(dt)), (long long)M, k, threads, pass >= 2 ? " portable" : "",
                      e[k], bound);
                if (!(e[k] <= worst)) worst = e[k];
            }
        }
    }
    cx_qk_switch_off(false);
    /* every allocation failing: the fused path without its permuted inputs, and tiles, fall
     * back to the path without scratch */
    circuits_set_num_threads(2);
    cx_fault_fail_after(0, false);
    double ef[] = {
        check_product(&mapped, Wf, 1, 3, 140, true, false, 2),
        check_product(&plain, Wf, 12, 0, R, false, true, 0),
    };
    long injected = cx_fault_injected();
    cx_fault_disarm();
    CHECK(injected > 0, "%s: no allocation was failed", circuits_dtype_name(cx_dtype_public(dt)));
    for (size_t k = 0; k < CX_COUNT(ef); k++)
        CHECK(ef[k] <= bound, "%s without scratch, case %zu: error %.3g of sum |x w|, bound %.3g", circuits_dtype_name(cx_dtype_public(dt)),
              k, ef[k], bound);
    printf("  %-5s cx_qmatmul within %.2g of sum |x w| (bound %.2g)\n", circuits_dtype_name(cx_dtype_public(dt)), worst, bound);

    /* embedding rows through the map */
    float row[768];
    cx_qmat_row(&mapped, 5, row);
    CHECK(memcmp(row, Wf + map[5] * K, (size_t)K * sizeof *row) == 0, "%s: cx_qmat_row", circuits_dtype_name(cx_dtype_public(dt)));
    free(data);
    free(Wf);
}

static void test_qmatmul(void)
{
    for (int t = 0; t < n_types; t++) {
        cx_dtype dt;
        CHECK(cx_dtype_from_public(type_ids[t], &dt), "dtype %d", (int)type_ids[t]);
        test_qmatmul_dtype(dt);
    }
    circuits_set_num_threads(0);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0) cat_verbose = 1;
        else dir = argv[i];
    }
    if (!dir) {
        fprintf(stderr, "usage: %s QUANT_REFERENCE_DIR [-v]\n", argv[0]);
        return 2;
    }
    test_references(dir);
    test_refusals();
    test_qmatmul();
    return tu_finish("test_quant");
}
