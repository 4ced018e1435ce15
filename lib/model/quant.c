/* Storage types of weights (quant.h): the block table and dequantization. Each dequantizer
 * follows gguf-py's NumPy code (gguf/quants.py) operation for operation, in fp32, so the result
 * is bit-identical to it (tests/test_quant.c, references from tests/reference/generate_quant.py).
 * Block layouts are ggml's (ggml-common.h); the fp16 fields are IEEE half, little-endian. */
#include "quant.h"

#include <string.h>

static const struct {
    cx_dtype dt;
    int32_t pub;
    int64_t values;
    size_t bytes;
} types[] = {
    {CX_DT_F32, CIRCUITS_DTYPE_F32, 1, 4},       {CX_DT_F16, CIRCUITS_DTYPE_F16, 1, 2},
    {CX_DT_BF16, CIRCUITS_DTYPE_BF16, 1, 2},     {CX_DT_Q4_0, CIRCUITS_DTYPE_Q4_0, 32, 18},
    {CX_DT_Q4_1, CIRCUITS_DTYPE_Q4_1, 32, 20},   {CX_DT_Q5_0, CIRCUITS_DTYPE_Q5_0, 32, 22},
    {CX_DT_Q5_1, CIRCUITS_DTYPE_Q5_1, 32, 24},   {CX_DT_Q8_0, CIRCUITS_DTYPE_Q8_0, 32, 34},
    {CX_DT_Q2_K, CIRCUITS_DTYPE_Q2_K, 256, 84},  {CX_DT_Q3_K, CIRCUITS_DTYPE_Q3_K, 256, 110},
    {CX_DT_Q4_K, CIRCUITS_DTYPE_Q4_K, 256, 144}, {CX_DT_Q5_K, CIRCUITS_DTYPE_Q5_K, 256, 176},
    {CX_DT_Q6_K, CIRCUITS_DTYPE_Q6_K, 256, 210},
};

static int find(cx_dtype dt)
{
    for (size_t i = 0; i < CX_COUNT(types); i++)
        if (types[i].dt == dt) return (int)i;
    return -1;
}

int32_t cx_dtype_public(cx_dtype dt)
{
    int i = find(dt);
    return i < 0 ? -1 : types[i].pub;
}

bool cx_dtype_from_public(int32_t dtype, cx_dtype *out)
{
    for (size_t i = 0; i < CX_COUNT(types); i++)
        if (types[i].pub == dtype) {
            *out = types[i].dt;
            return true;
        }
    return false;
}

bool cx_dtype_blocks(cx_dtype dt, int64_t *block_values, size_t *block_bytes)
{
    int i = find(dt);
    if (i < 0) return false;
    if (block_values) *block_values = types[i].values;
    if (block_bytes) *block_bytes = types[i].bytes;
    return true;
}

bool cx_dtype_row_bytes(cx_dtype dt, int64_t n, size_t *bytes)
{
    int i = find(dt);
    if (i < 0 || n < 0 || n % types[i].values) return false;
    return cx_mul_size((size_t)(n / types[i].values), types[i].bytes, bytes);
}

/* IEEE half to float, exactly (numpy's float16 -> float32). */
static float half(const uint8_t *p)
{
    uint16_t h = (uint16_t)(p[0] | p[1] << 8);
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13; /* inf, NaN (payload kept) */
    } else if (exp) {
        bits = sign | (exp + 112) << 23 | man << 13;
    } else if (man) { /* subnormal: normalize */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        bits = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ffu) << 13;
    } else {
        bits = sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static void dq_f32(const uint8_t *s, float *y, int64_t n) { memcpy(y, s, (size_t)n * sizeof *y); }

static void dq_f16(const uint8_t *s, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = half(s + 2 * i);
}

static void dq_bf16(const uint8_t *s, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)(s[2 * i] | s[2 * i + 1] << 8) << 16;
        memcpy(&y[i], &bits, 4);
    }
}

/* Q8_0: d (f16), 32 int8; x = q * d */
static void dq_q8_0(const uint8_t *s, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, s += 34, y += 32) {
        float d = half(s);
        for (int i = 0; i < 32; i++) y[i] = (float)(int8_t)s[2 + i] * d;
    }
}

/* Q4_0: d (f16), 16 bytes; values 0..15 are the low nibbles, 16..31 the high; x = d * (q - 8) */
static void dq_q4_0(const uint8_t *s, float *y, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++, s += 18, y += 32) {
        float d = half(s);
        for (int i = 0; i < 16; i++) {
            y[i] = d * (float)((s[2 + i] & 0x0f) - 8);
            y[i + 16] = d * (float)((s[2 + i] >> 4) - 8);
        }
    }
}

void cx_dequantize_row(cx_dtype dt, const void *src, float *dst, int64_t n)
{
    const uint8_t *s = src;
    switch (dt) {
    case CX_DT_F32: dq_f32(s, dst, n); break;
    case CX_DT_F16: dq_f16(s, dst, n); break;
    case CX_DT_BF16: dq_bf16(s, dst, n); break;
    case CX_DT_Q8_0: dq_q8_0(s, dst, n); break;
    case CX_DT_Q4_0: dq_q4_0(s, dst, n); break;
    /* WIP(helper quant): Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K */
    default: memset(dst, 0, (size_t)n * sizeof *dst); break;
    }
}

void cx_qmat_row(const cx_qmat *W, int64_t r, float *dst)
{
    int64_t sr = W->row_map ? W->row_map[r] : r;
    cx_dequantize_row(W->dtype, W->data + (size_t)sr * W->row_bytes, dst, W->cols);
}

/* ---- public ---- */

const char *circuits_dtype_name(int32_t dtype)
{
    static const char *const names[] = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                                        "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"};
    _Static_assert(CX_COUNT(names) == CX_COUNT(types), "one name per type");
    for (size_t i = 0; i < CX_COUNT(types); i++)
        if (types[i].pub == dtype) return names[i];
    return NULL;
}

int circuits_dtype_block(int32_t dtype, int64_t *block_values, size_t *block_bytes)
{
    cx_dtype dt;
    if (!cx_dtype_from_public(dtype, &dt))
        return cx_fail(CIRCUITS_E_DTYPE, "circuits_dtype_block: %d is not a circuits_dtype", (int)dtype);
    cx_dtype_blocks(dt, block_values, block_bytes);
    return CIRCUITS_OK;
}

int circuits_dequantize(int32_t dtype, const void *src, size_t src_bytes, float *dst, size_t n)
{
    cx_dtype dt;
    if (!cx_dtype_from_public(dtype, &dt))
        return cx_fail(CIRCUITS_E_DTYPE, "circuits_dequantize: %d is not a circuits_dtype", (int)dtype);
    if ((!src || !dst) && n)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_dequantize: src or dst is NULL");
    int64_t bv;
    size_t need;
    cx_dtype_blocks(dt, &bv, NULL);
    if (n > (size_t)INT64_MAX || !cx_dtype_row_bytes(dt, (int64_t)n, &need))
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_dequantize: %zu values are not whole %s blocks of %lld", n,
                       circuits_dtype_name(dtype), (long long)bv);
    if (src_bytes != need)
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_dequantize: %zu %s values take %zu bytes, not %zu", n,
                       circuits_dtype_name(dtype), need, src_bytes);
    if (n) cx_dequantize_row(dt, src, dst, (int64_t)n);
    return CIRCUITS_OK;
}
