/* Storage types of weights (quant.h): the block table and dequantization. Each dequantizer
 * follows gguf-py's NumPy code (gguf/quants.py) operation for operation, in fp32, so the result
 * is bit-identical to it (tests/test_quant.c, references from tests/reference/generate_quant.py).
 * Block layouts are ggml's (ggml-common.h); the fp16 fields are IEEE half, little-endian. */
#include "quant.h"

#include <math.h>
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

/* Where NumPy adds or subtracts two float32 arrays and both hold a NaN, the result is the first
 * operand's NaN; a C compiler may swap the operands of +, so the first operand is picked
 * explicitly (a is always a product here, hence already a quiet NaN, as the hardware's result
 * would be). */
static inline float add_f(float a, float b) { return a != a ? a : a + b; }
static inline float sub_f(float a, float b) { return a != a ? a : a - b; }

/* Q8_0: d (f16), 32 int8; x = q * d */
static void dq_q8_0(const uint8_t *s, float *y)
{
    float d = half(s);
    for (int i = 0; i < 32; i++) y[i] = (float)(int8_t)s[2 + i] * d;
}

/* Q4_0: d (f16), 16 bytes; values 0..15 are the low nibbles, 16..31 the high; x = d * (q - 8) */
static void dq_q4_0(const uint8_t *s, float *y)
{
    float d = half(s);
    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)((s[2 + i] & 0x0f) - 8);
        y[i + 16] = d * (float)((s[2 + i] >> 4) - 8);
    }
}

/* Q4_1: d, m (f16), 16 bytes of nibbles as Q4_0; x = (d * q) + m */
static void dq_q4_1(const uint8_t *s, float *y)
{
    float d = half(s), m = half(s + 2);
    for (int i = 0; i < 16; i++) {
        y[i] = add_f(d * (float)(s[4 + i] & 0x0f), m);
        y[i + 16] = add_f(d * (float)(s[4 + i] >> 4), m);
    }
}

/* Q5_0: d (f16), qh (uint32 little-endian: bit i is the fifth bit of value i), 16 bytes of
 * nibbles as Q4_0; x = d * (q - 16) */
static void dq_q5_0(const uint8_t *s, float *y)
{
    float d = half(s);
    uint32_t qh = (uint32_t)s[2] | (uint32_t)s[3] << 8 | (uint32_t)s[4] << 16 | (uint32_t)s[5] << 24;
    for (int i = 0; i < 16; i++) {
        int lo = (s[6 + i] & 0x0f) | (int)((qh >> i) & 1) << 4, hi = (s[6 + i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
        y[i] = d * (float)(lo - 16);
        y[i + 16] = d * (float)(hi - 16);
    }
}

/* Q5_1: d, m (f16), qh as Q5_0, 16 bytes of nibbles; x = (d * q) + m */
static void dq_q5_1(const uint8_t *s, float *y)
{
    float d = half(s), m = half(s + 2);
    uint32_t qh = (uint32_t)s[4] | (uint32_t)s[5] << 8 | (uint32_t)s[6] << 16 | (uint32_t)s[7] << 24;
    for (int i = 0; i < 16; i++) {
        int lo = (s[8 + i] & 0x0f) | (int)((qh >> i) & 1) << 4, hi = (s[8 + i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
        y[i] = add_f(d * (float)lo, m);
        y[i + 16] = add_f(d * (float)hi, m);
    }
}

/* Q2_K: 16 scale bytes (low nibble scale, high nibble min, one per 16 values), 64 bytes of 2-bit
 * values, d, dmin (f16). Value 128 h + 32 s + l is bits 2s..2s+1 of qs[32 h + l];
 * x = (d * sc) * q - (dmin * m) */
static void dq_q2_k(const uint8_t *s, float *y)
{
    const uint8_t *sc = s, *qs = s + 16;
    float d = half(s + 80), dmin = half(s + 82);
    for (int g = 0; g < 16; g++) {
        float dl = d * (float)(sc[g] & 0x0f), ml = dmin * (float)(sc[g] >> 4);
        for (int k = 0; k < 16; k++) {
            int i = 16 * g + k, h = i / 128, sh = (i / 32) % 4, l = i % 32;
            y[i] = sub_f(dl * (float)((qs[32 * h + l] >> (2 * sh)) & 3), ml);
        }
    }
}

/* Q3_K: hmask (32 bytes: bit b of hmask[l] belongs to value 32 b + l; set means no -4 offset),
 * 64 bytes of 2-bit values as Q2_K, 12 bytes of 6-bit scales, d (f16).
 * Scale j: low 4 bits from byte j % 8 (shifted by 4 (j / 8)), high 2 bits from byte 8 + j % 4
 * (shifted by 2 (j / 4)); minus 32. x = (d * scale) * (q - 4 (1 - hbit)) */
static void dq_q3_k(const uint8_t *s, float *y)
{
    const uint8_t *hm = s, *qs = s + 32, *sc = s + 96;
    float d = half(s + 108);
    for (int g = 0; g < 16; g++) {
        int lo = (sc[g % 8] >> (4 * (g / 8))) & 0x0f, hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
        float dl = d * (float)((int8_t)(lo | hi << 4) - 32);
        for (int k = 0; k < 16; k++) {
            int i = 16 * g + k, h = i / 128, sh = (i / 32) % 4, l = i % 32;
            int ql = (qs[32 * h + l] >> (2 * sh)) & 3, qh = ((hm[i % 32] >> (i / 32)) & 1) ^ 1;
            y[i] = dl * (float)(ql - (qh << 2));
        }
    }
}

/* Q4_K: d, dmin (f16), 12 scale bytes, 128 bytes of nibbles qs. Value 64 h + 32 s + l is nibble s
 * of qs[32 h + l], in sub-block 2 h + s; x = (d * sc) * q - (dmin * m).
 * Q5_K: the same with qh (32 bytes between the scales and qs): bit j of qh[l] is the fifth bit
 * of value 32 j + l. qh is NULL for Q4_K. */
static void dq_k4(const uint8_t *s, const uint8_t *qh, const uint8_t *qs, float *y)
{
    float d = half(s), dmin = half(s + 2);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        cx_k4_scale_min(s + 4, j, &sc, &m);
        float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t *q = qs + 32 * (j / 2);
        int sh = 4 * (j % 2);
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> sh) & 0x0f) | (qh ? ((qh[l] >> j) & 1) << 4 : 0);
            y[32 * j + l] = sub_f(dl * (float)v, ml);
        }
    }
}

static void dq_q4_k(const uint8_t *s, float *y) { dq_k4(s, NULL, s + 16, y); }
static void dq_q5_k(const uint8_t *s, float *y) { dq_k4(s, s + 16, s + 48, y); }

/* Q6_K: ql (128 bytes), qh (64), 16 int8 scales, d (f16). Value 128 h + 64 s + l (l < 64) has low
 * bits nibble s of ql[64 h + l]; value 128 h + 32 t + l (l < 32) has high bits 2t..2t+1 of
 * qh[32 h + l]; x = (d * scale) * (q - 32), one scale per 16 values */
static void dq_q6_k(const uint8_t *s, float *y)
{
    const uint8_t *ql = s, *qh = s + 128;
    const int8_t *sc = (const int8_t *)(s + 192);
    float d = half(s + 208);
    for (int g = 0; g < 16; g++) {
        float dl = d * (float)sc[g];
        for (int k = 0; k < 16; k++) {
            int i = 16 * g + k, h = i / 128, r = i % 128;
            int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f, hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
            y[i] = dl * (float)((int8_t)(lo | hi << 4) - 32);
        }
    }
}

typedef void (*dq_block_fn)(const uint8_t *s, float *y);

void cx_dequantize_row(cx_dtype dt, const void *src, float *dst, int64_t n)
{
    const uint8_t *s = src;
    dq_block_fn f;
    switch (dt) {
    case CX_DT_F32: dq_f32(s, dst, n); return;
    case CX_DT_F16: dq_f16(s, dst, n); return;
    case CX_DT_BF16: dq_bf16(s, dst, n); return;
    case CX_DT_Q8_0: f = dq_q8_0; break;
    case CX_DT_Q4_0: f = dq_q4_0; break;
    case CX_DT_Q4_1: f = dq_q4_1; break;
    case CX_DT_Q5_0: f = dq_q5_0; break;
    case CX_DT_Q5_1: f = dq_q5_1; break;
    case CX_DT_Q2_K: f = dq_q2_k; break;
    case CX_DT_Q3_K: f = dq_q3_k; break;
    case CX_DT_Q4_K: f = dq_q4_k; break;
    case CX_DT_Q5_K: f = dq_q5_k; break;
    case CX_DT_Q6_K: f = dq_q6_k; break;
    default:
        /* Every caller checked dt with cx_dtype_blocks first; anything else is a bug in the
         * library: NaN makes it loud instead of plausible zeros. */
        for (int64_t i = 0; i < n; i++) dst[i] = NAN;
        return;
    }
    int64_t bv = 1;
    size_t bb = 0;
    cx_dtype_blocks(dt, &bv, &bb);
    for (int64_t b = 0; b < n / bv; b++) f(s + (size_t)b * bb, dst + b * bv);
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
    int64_t bv = 1;
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
