/* AVX2 + FMA + F16C kernels of the products with stored weights (qkernels.h). Each dequantizer
 * does what model/quant.c's scalar one does, eight values at a time, with the same fp32
 * operations in the same order (d * sc first, then * q, then - m; no contraction: the library
 * is built as ISO C, -ffp-contract=off), so a tile holds exactly the dequantized weights. Types
 * without a vector dequantizer here go through cx_dequantize_row block by block. */
#include "qkernels.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#define QK_TARGET __attribute__((target("avx2,fma,f16c")))
#define QK_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

bool cx_qk_available(void)
{
    static int have = -1; /* benign race: every thread computes the same answer */
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return have;
}

/* an fp16 field: F16C's conversion is exact (NaN payloads aside, which no product keeps) */
QK_INLINE float half_of(const uint8_t *p)
{
    return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
}

/* 32 bytes (values 0 .. 255 or, signed, -128 .. 127) to 32 floats: four groups of 8 */
QK_INLINE void u8_to_f32(__m256i v, __m256 out[4])
{
    __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

QK_INLINE void i8_to_f32(__m256i v, __m256 out[4])
{
    __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}

/* Q8_0: x = q * d */
QK_TARGET static void dq_q8_0(const uint8_t *s, float *y)
{
    __m256 d = _mm256_set1_ps(half_of(s)), q[4];
    i8_to_f32(_mm256_loadu_si256((const __m256i *)(s + 2)), q);
    for (int i = 0; i < 4; i++) _mm256_storeu_ps(y + 8 * i, _mm256_mul_ps(q[i], d));
}

/* Q4_0: x = d * (q - 8); low nibbles are values 0..15, high 16..31 */
QK_TARGET static void dq_q4_0(const uint8_t *s, float *y)
{
    __m256 d = _mm256_set1_ps(half_of(s));
    __m128i b = _mm_loadu_si128((const __m128i *)(s + 2)), m = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m), eight), hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight);
    __m256 q[4];
    i8_to_f32(_mm256_set_m128i(hi, lo), q);
    for (int i = 0; i < 4; i++) _mm256_storeu_ps(y + 8 * i, _mm256_mul_ps(d, q[i]));
}

/* The 6-bit scales and mins of Q4_K / Q5_K (as quant.c's scale_min_k4). */
static void scales_k4(const uint8_t *b, float d, float dmin, float *dl, float *ml)
{
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) {
            sc = b[j] & 63;
            m = b[j + 4] & 63;
        } else {
            sc = (b[j + 4] & 0x0f) | ((b[j - 4] >> 2) & 0x30);
            m = (b[j + 4] >> 4) | ((b[j] >> 2) & 0x30);
        }
        dl[j] = d * (float)sc;
        ml[j] = dmin * (float)m;
    }
}

/* Q4_K: x = (d * sc) * q - (dmin * m); sub-block 2h + s is nibble s of qs[32 h .. 32 h + 31] */
QK_TARGET static void dq_q4_k(const uint8_t *s, float *y)
{
    float dl[8], ml[8];
    scales_k4(s + 4, half_of(s), half_of(s + 2), dl, ml);
    const __m256i mask = _mm256_set1_epi8(0x0f);
    for (int h = 0; h < 4; h++) {
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + 16 + 32 * h));
        __m256i nib[2] = {_mm256_and_si256(b, mask), _mm256_and_si256(_mm256_srli_epi16(b, 4), mask)};
        for (int t = 0; t < 2; t++) {
            int j = 2 * h + t;
            __m256 q[4], vd = _mm256_set1_ps(dl[j]), vm = _mm256_set1_ps(ml[j]);
            u8_to_f32(nib[t], q);
            for (int i = 0; i < 4; i++) _mm256_storeu_ps(y + 32 * j + 8 * i, _mm256_sub_ps(_mm256_mul_ps(vd, q[i]), vm));
        }
    }
}

/* Q5_K: Q4_K's nibbles plus bit j of qh[l] as the fifth bit of value 32 j + l */
QK_TARGET static void dq_q5_k(const uint8_t *s, float *y)
{
    float dl[8], ml[8];
    scales_k4(s + 4, half_of(s), half_of(s + 2), dl, ml);
    const __m256i mask = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256i qh = _mm256_loadu_si256((const __m256i *)(s + 16));
    for (int h = 0; h < 4; h++) {
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + 48 + 32 * h));
        __m256i nib[2] = {_mm256_and_si256(b, mask), _mm256_and_si256(_mm256_srli_epi16(b, 4), mask)};
        for (int t = 0; t < 2; t++) {
            int j = 2 * h + t;
            __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j)), one);
            __m256i v = _mm256_or_si256(nib[t], _mm256_slli_epi16(hb, 4));
            __m256 q[4], vd = _mm256_set1_ps(dl[j]), vm = _mm256_set1_ps(ml[j]);
            u8_to_f32(v, q);
            for (int i = 0; i < 4; i++) _mm256_storeu_ps(y + 32 * j + 8 * i, _mm256_sub_ps(_mm256_mul_ps(vd, q[i]), vm));
        }
    }
}

/* Q6_K: x = (d * sc) * (q - 32); values 128 h + 32 t + l: low bits nibble t / 2 of
 * ql[64 h + 32 (t % 2) + l], high bits 2t.. of qh[32 h + l]; one scale per 16 values */
QK_TARGET static void dq_q6_k(const uint8_t *s, float *y)
{
    const int8_t *sc = (const int8_t *)(s + 192);
    float d = half_of(s + 208);
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    for (int h = 0; h < 2; h++) {
        __m256i qh = _mm256_loadu_si256((const __m256i *)(s + 128 + 32 * h));
        for (int t = 0; t < 4; t++) {
            __m256i ql = _mm256_loadu_si256((const __m256i *)(s + 64 * h + 32 * (t % 2)));
            __m256i lo = _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (t / 2))), m4);
            __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * t)), m2);
            __m256i v = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), off);
            __m256 q[4];
            i8_to_f32(v, q);
            int g = 8 * h + 2 * t;
            __m256 d0 = _mm256_set1_ps(d * (float)sc[g]), d1 = _mm256_set1_ps(d * (float)sc[g + 1]);
            float *o = y + 128 * h + 32 * t;
            _mm256_storeu_ps(o, _mm256_mul_ps(d0, q[0]));
            _mm256_storeu_ps(o + 8, _mm256_mul_ps(d0, q[1]));
            _mm256_storeu_ps(o + 16, _mm256_mul_ps(d1, q[2]));
            _mm256_storeu_ps(o + 24, _mm256_mul_ps(d1, q[3]));
        }
    }
}

typedef void (*block_fn)(const uint8_t *s, float *y);

static block_fn block_kernel(cx_dtype dt)
{
    switch (dt) {
    case CX_DT_Q8_0: return dq_q8_0;
    case CX_DT_Q4_0: return dq_q4_0;
    case CX_DT_Q4_K: return dq_q4_k;
    case CX_DT_Q5_K: return dq_q5_k;
    case CX_DT_Q6_K: return dq_q6_k;
    default: return NULL;
    }
}

QK_TARGET void cx_qk_dequantize(cx_dtype dt, const uint8_t *row, int64_t k0, int64_t len, float *dst)
{
    int64_t i = 0;
    switch (dt) {
    case CX_DT_F32: memcpy(dst, row + 4 * k0, (size_t)len * sizeof *dst); return;
    case CX_DT_F16:
        for (; i + 8 <= len; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * (k0 + i)))));
        break;
    case CX_DT_BF16:
        for (; i + 8 <= len; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * (k0 + i))));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
        break;
    default: {
        int64_t bv;
        size_t bb;
        cx_dtype_blocks(dt, &bv, &bb);
        block_fn f = block_kernel(dt);
        const uint8_t *s = row + (size_t)(k0 / bv) * bb;
        if (f)
            for (; i < len; i += bv, s += bb) f(s, dst + i);
        else
            cx_dequantize_row(dt, s, dst, len);
        return;
    }
    }
    if (i < len) /* F16 / BF16 tail */
        cx_dequantize_row(dt, row + 2 * (k0 + i), dst + i, len - i);
}

QK_INLINE float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The dot products of one row with M (a constant after inlining) inputs: each chunk is
 * dequantized into w[] (L1), then every input multiplies it (two accumulators each). */
QK_INLINE void dot_rows_m(cx_dtype dt, const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M,
                          float *sums)
{
    float w[CX_QCHUNK] __attribute__((aligned(32)));
    __m256 acc[4][2];
    float tail[4] = {0, 0, 0, 0};
    for (int m = 0; m < M; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    for (int64_t k0 = 0; k0 < K; k0 += CX_QCHUNK) {
        int64_t len = K - k0 < CX_QCHUNK ? K - k0 : CX_QCHUNK, k = 0;
        cx_qk_dequantize(dt, row, k0, len, w);
        for (; k + 16 <= len; k += 16) {
            __m256 w0 = _mm256_load_ps(w + k), w1 = _mm256_load_ps(w + k + 8);
            for (int m = 0; m < M; m++) {
                const float *xm = x + m * ldx + k0 + k;
                acc[m][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xm), acc[m][0]);
                acc[m][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xm + 8), acc[m][1]);
            }
        }
        for (; k < len; k++)
            for (int m = 0; m < M; m++) tail[m] += w[k] * x[m * ldx + k0 + k];
    }
    for (int m = 0; m < M; m++) sums[m] = hsum(_mm256_add_ps(acc[m][0], acc[m][1])) + tail[m];
}

QK_TARGET void cx_qk_dot_rows(cx_dtype dt, const uint8_t *row, int64_t K, const float *x, int64_t ldx, int M,
                              float *sums)
{
    switch (M) {
    case 1: dot_rows_m(dt, row, K, x, ldx, 1, sums); break;
    case 2: dot_rows_m(dt, row, K, x, ldx, 2, sums); break;
    case 3: dot_rows_m(dt, row, K, x, ldx, 3, sums); break;
    default: dot_rows_m(dt, row, K, x, ldx, 4, sums); break;
    }
}

#else /* not x86-64 GCC / Clang: the portable path only */

bool cx_qk_available(void) { return false; }

void cx_qk_dequantize(cx_dtype dt, const uint8_t *row, int64_t k0, int64_t len, float *dst)
{
    int64_t bv;
    size_t bb;
    cx_dtype_blocks(dt, &bv, &bb);
    cx_dequantize_row(dt, row + (size_t)(k0 / bv) * bb, dst, len);
}

void cx_qk_dot_rows(cx_dtype dt, const uint8_t *row, int64_t K, const float *x, int64_t ldx, int M, float *sums)
{
    float w[CX_QCHUNK];
    for (int m = 0; m < M; m++) sums[m] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += CX_QCHUNK) {
        int64_t len = K - k0 < CX_QCHUNK ? K - k0 : CX_QCHUNK;
        cx_qk_dequantize(dt, row, k0, len, w);
        for (int m = 0; m < M; m++)
            for (int64_t k = 0; k < len; k++) sums[m] += w[k] * x[m * ldx + k0 + k];
    }
}

#endif
