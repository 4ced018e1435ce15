/* AVX2 + FMA + F16C kernels of the products with stored weights (qkernels.h), two kinds:
 *   - block dequantizers for the tiles (cx_qk_dequantize): what model/quant.c's scalar code
 *     does, eight values at a time, with the same fp32 operations in the same order (no
 *     contraction: the library is built as ISO C, -ffp-contract=off), so a tile holds exactly
 *     the dequantized weights (tests/test_quant.c compares them with gguf-py's); types without
 *     one go through cx_dequantize_row;
 *   - fused dequantize-and-dot kernels (cx_qk_dot_rows), one per type, whose weights are the
 *     same exact values computed in registers (see ACC below) and whose sums use FMA. */
#include "qkernels.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)

#include <cpuid.h>
#include <immintrin.h>

#define QK_TARGET __attribute__((target("avx2,fma,f16c")))
#define QK_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

static int switched_off; /* atomics: any thread may ask while a test flips it */

void cx_qk_switch_off(bool off) { __atomic_store_n(&switched_off, off, __ATOMIC_RELAXED); }

bool cx_qk_available(void)
{
    static int have = -1; /* every thread computes the same answer: relaxed is enough */
    if (__atomic_load_n(&switched_off, __ATOMIC_RELAXED)) return false;
    int h = __atomic_load_n(&have, __ATOMIC_RELAXED);
    if (h < 0) {
        __builtin_cpu_init();
        /* F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know
         * "f16c" (a compile error, so the clang fuzz build failed). The ymm state F16C needs
         * saved by the OS is part of the "avx2" check. */
        unsigned a, b, c, d;
        bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        h = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
        __atomic_store_n(&have, h, __ATOMIC_RELAXED);
    }
    return h;
}

/* an fp16 field: F16C's conversion is exact (NaN payloads aside, which no product keeps) */
QK_INLINE float half_of(const uint8_t *p)
{
    return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8));
}

/* 32 bytes to 32 floats, four groups of 8: unsigned (0 .. 255) or signed (-128 .. 127) */
QK_INLINE void bytes_to_f32(__m256i v, __m256 out[4], const bool is_signed)
{
    __m128i part[4] = {_mm256_castsi256_si128(v), _mm_srli_si128(_mm256_castsi256_si128(v), 8),
                       _mm256_extracti128_si256(v, 1), _mm_srli_si128(_mm256_extracti128_si256(v, 1), 8)};
    for (int i = 0; i < 4; i++)
        out[i] = _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(part[i]) : _mm256_cvtepu8_epi32(part[i]));
}

/* Q8_0: x = q * d */
QK_TARGET static void dq_q8_0(const uint8_t *s, float *y)
{
    __m256 d = _mm256_set1_ps(half_of(s)), q[4];
    bytes_to_f32(_mm256_loadu_si256((const __m256i *)(s + 2)), q, true);
    for (int i = 0; i < 4; i++) _mm256_storeu_ps(y + 8 * i, _mm256_mul_ps(q[i], d));
}

/* Q4_0: x = d * (q - 8); low nibbles are values 0..15, high 16..31 */
QK_TARGET static void dq_q4_0(const uint8_t *s, float *y)
{
    __m256 d = _mm256_set1_ps(half_of(s));
    __m128i b = _mm_loadu_si128((const __m128i *)(s + 2)), m = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m), eight), hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight);
    __m256 q[4];
    bytes_to_f32(_mm256_set_m128i(hi, lo), q, true);
    for (int i = 0; i < 4; i++) _mm256_storeu_ps(y + 8 * i, _mm256_mul_ps(d, q[i]));
}

/* dl[j] = d * sc, ml[j] = dmin * m of the 8 sub-blocks of a Q4_K / Q5_K block (the tiles'
 * dequantizers; cx_k4_scale_min's unpacking) */
QK_INLINE void scales_k4(const uint8_t *b, float d, float dmin, float *dl, float *ml)
{
    for (int j = 0; j < 8; j++) {
        int sc, m;
        cx_k4_scale_min(b, j, &sc, &m);
        dl[j] = d * (float)sc;
        ml[j] = dmin * (float)m;
    }
}

/* The same eight at once for the fused kernels, with mins negated: the 12 bytes as three words,
 * every 6-bit field moved into a byte of its own (llama.cpp's kmask shuffle; the same fields as
 * cx_k4_scale_min), widened and scaled as one vector each. Stored so that the kernels broadcast
 * them from memory (a load, no shuffle). */
QK_INLINE void scales_k4_vec(const uint8_t *b, float d, float dmin, float *dl, float *neg_ml)
{
    uint32_t u[4];
    memcpy(u, b, 12);
    const uint32_t k1 = 0x3f3f3f3fu, k2 = 0x0f0f0f0fu, k3 = 0x03030303u;
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    uint32_t mins_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = mins_lo;
    u[0] &= k1;
    __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)u)));
    __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(u + 2))));
    _mm256_storeu_ps(dl, _mm256_mul_ps(_mm256_set1_ps(d), sc));
    _mm256_storeu_ps(neg_ml, _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(_mm256_set1_ps(dmin), mn)));
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
            bytes_to_f32(nib[t], q, false);
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
            bytes_to_f32(v, q, false);
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
            bytes_to_f32(v, q, true);
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

static void dq_q4_1(const uint8_t *s, float *y);
static void dq_q5_0(const uint8_t *s, float *y);
static void dq_q5_1(const uint8_t *s, float *y);

static block_fn block_kernel(cx_dtype dt)
{
    switch (dt) {
    case CX_DT_Q4_1: return dq_q4_1;
    case CX_DT_Q5_0: return dq_q5_0;
    case CX_DT_Q5_1: return dq_q5_1;
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

/* The fused kernels keep four accumulators per input row (FMA latency) and produce each
 * weight vector in registers, exactly the dequantized value: for Q4_K / Q5_K
 * fma(d * sc, q, -(dmin * m)) is the correctly rounded d*sc*q - dmin*m, and d*sc*q is exact in
 * fp32 (an fp16 scale of 11 significant bits times a 6-bit scale times a 5-bit q: at most 22
 * bits), so it equals quant.c's two roundings fl(fl(d*sc*q) - dmin*m); Q6_K's and Q8_0's
 * products are exact likewise (at most 24 and 19 bits). M is a constant after inlining. */
#define ACC(wv, koff, slot)                                                                            \
    _Pragma("GCC unroll 4") for (int m_ = 0; m_ < M; m_++)                                             \
    acc[m_][(slot) % SLOTS(M)] = _mm256_fmadd_ps((wv), _mm256_loadu_ps(x + m_ * ldx + (koff)), acc[m_][(slot) % SLOTS(M)])
/* The stored bytes stream from DRAM in generation (each weight read once per token): asking for
 * the lines PREFETCH_DIST bytes ahead keeps enough misses in flight (measured: without it a
 * thread read Q4_K at a third of the rate llama.cpp's kernel reaches). */
#define PREFETCH_DIST 1536
#define PREFETCH_AHEAD(p, nbytes)                                                                      \
    for (int pf_ = 0; pf_ < (nbytes); pf_ += 64) _mm_prefetch((const char *)(p) + PREFETCH_DIST + pf_, _MM_HINT_T0)
/* accumulators per input row: four hide the FMA latency; with three or four rows, two each
 * keep them all in the sixteen ymm registers */
#define SLOTS(M) ((M) <= 2 ? 4 : 2)

/* Q2_K .. Q6_K and Q8_0 read 32 bytes of quants as eight 32-bit lanes: byte b of lane L is
 * the quant of value 4 L + b of its 32-value group, taken out with shifts and masks (no
 * shuffles). The inputs are permuted to match once per product (cx_qk_permute):
 * xp[32 G + 8 b + L] = x[32 G + 4 L + b]. */
QK_INLINE void dot_q4_k(const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M, __m256 acc[4][4])
{
    const __m256i m15 = _mm256_set1_epi32(0x0f);
    for (int64_t b = 0; b < K / 256; b++, x += 256) {
        const uint8_t *s = row + 144 * b;
        PREFETCH_AHEAD(s, 144);
        float dl[8], nml[8];
        scales_k4_vec(s + 4, half_of(s), half_of(s + 2), dl, nml);
        #pragma GCC unroll 8
        for (int h = 0; h < 4; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(s + 16 + 32 * h));
            __m256 d0 = _mm256_broadcast_ss(dl + 2 * h), m0 = _mm256_broadcast_ss(nml + 2 * h);
            __m256 d1 = _mm256_broadcast_ss(dl + 2 * h + 1), m1 = _mm256_broadcast_ss(nml + 2 * h + 1);
            #pragma GCC unroll 8
            for (int k = 0; k < 4; k++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi32(v, 8 * k), m15);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi32(v, 8 * k + 4), m15);
                __m256 w0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(lo), m0);
                __m256 w1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(hi), m1);
                ACC(w0, 64 * h + 8 * k, k);
                ACC(w1, 64 * h + 32 + 8 * k, k);
            }
        }
    }
}

QK_INLINE void dot_q5_k(const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M, __m256 acc[4][4])
{
    const __m256i m15 = _mm256_set1_epi32(0x0f), one = _mm256_set1_epi32(1);
    for (int64_t b = 0; b < K / 256; b++, x += 256) {
        const uint8_t *s = row + 176 * b;
        PREFETCH_AHEAD(s, 176);
        float dl[8], nml[8];
        scales_k4_vec(s + 4, half_of(s), half_of(s + 2), dl, nml);
        __m256i qh = _mm256_loadu_si256((const __m256i *)(s + 16));
        #pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(s + 48 + 32 * (j / 2)));
            __m256 vd = _mm256_broadcast_ss(dl + j), vm = _mm256_broadcast_ss(nml + j);
            #pragma GCC unroll 8
            for (int k = 0; k < 4; k++) {
                __m256i q = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(8 * k + 4 * (j % 2))), m15);
                __m256i hb = _mm256_and_si256(_mm256_srl_epi32(qh, _mm_cvtsi32_si128(8 * k + j)), one);
                q = _mm256_or_si256(q, _mm256_slli_epi32(hb, 4));
                __m256 w = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(q), vm);
                ACC(w, 32 * j + 8 * k, k);
            }
        }
    }
}

QK_INLINE void dot_q6_k(const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M, __m256 acc[4][4])
{
    const __m256i m15 = _mm256_set1_epi32(0x0f), m3 = _mm256_set1_epi32(3), off = _mm256_set1_epi32(32);
    for (int64_t b = 0; b < K / 256; b++, x += 256) {
        const uint8_t *s = row + 210 * b;
        PREFETCH_AHEAD(s, 210);
        const int8_t *sc = (const int8_t *)(s + 192);
        float d = half_of(s + 208);
        #pragma GCC unroll 8
        for (int h = 0; h < 2; h++) {
            __m256i qh = _mm256_loadu_si256((const __m256i *)(s + 128 + 32 * h));
            #pragma GCC unroll 8
            for (int t = 0; t < 4; t++) {
                __m256i ql = _mm256_loadu_si256((const __m256i *)(s + 64 * h + 32 * (t % 2)));
                int g = 8 * h + 2 * t; /* lanes 0..3 hold values 0..15 of the group: scale g; 4..7: g + 1 */
                __m256 vd = _mm256_set_m128(_mm_set1_ps(d * (float)sc[g + 1]), _mm_set1_ps(d * (float)sc[g]));
                #pragma GCC unroll 8
                for (int k = 0; k < 4; k++) {
                    __m256i lo = _mm256_and_si256(_mm256_srl_epi32(ql, _mm_cvtsi32_si128(8 * k + 4 * (t / 2))), m15);
                    __m256i hi = _mm256_and_si256(_mm256_srl_epi32(qh, _mm_cvtsi32_si128(8 * k + 2 * t)), m3);
                    __m256i q = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), off);
                    __m256 w = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(q));
                    ACC(w, 128 * h + 32 * t + 8 * k, k);
                }
            }
        }
    }
}

QK_INLINE void dot_q8_0(const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M, __m256 acc[4][4])
{
    for (int64_t b = 0; b < K / 32; b++, x += 32) {
        const uint8_t *s = row + 34 * b;
        if (b % 2 == 0) PREFETCH_AHEAD(s, 68);
        __m256 d = _mm256_set1_ps(half_of(s));
        __m256i v = _mm256_loadu_si256((const __m256i *)(s + 2));
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_srai_epi32(_mm256_slli_epi32(v, 24 - 8 * k), 24);
            __m256 w = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
            ACC(w, 8 * k, k);
        }
    }
}

/* Q2_K and Q3_K, in 32-bit lanes like Q6_K: value 128 h + 32 t + l is bits 2t.. of qs[32 h + l]
 * (Q3_K: minus 4 unless bit 4h + t of hmask[l] is set); one scale per 16 values, so lanes 0..3
 * take the group's first and 4..7 its second. Q2_K: fma(d*sc, q, -(dmin*m)) rounds once as
 * fl(fl(d*sc*q) - dmin*m) (d*sc*q exact: 11 + 4 + 2 bits); Q3_K: (d*sc)*q exact. */
QK_INLINE __m256 pair_scales(const float *v, int g)
{
    return _mm256_set_m128(_mm_broadcast_ss(v + g + 1), _mm_broadcast_ss(v + g));
}

QK_INLINE void dot_q2_k(const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M, __m256 acc[4][4])
{
    const __m256i m3 = _mm256_set1_epi32(3);
    for (int64_t b = 0; b < K / 256; b++, x += 256) {
        const uint8_t *s = row + 84 * b;
        PREFETCH_AHEAD(s, 84);
        float d = half_of(s + 80), dmin = half_of(s + 82), dl[16], nml[16];
        for (int g = 0; g < 16; g++) {
            dl[g] = d * (float)(s[g] & 0x0f);
            nml[g] = -(dmin * (float)(s[g] >> 4));
        }
        #pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(s + 16 + 32 * h));
            #pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                int g = 8 * h + 2 * t;
                __m256 vd = pair_scales(dl, g), vm = pair_scales(nml, g);
                #pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    __m256i q = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(8 * k + 2 * t)), m3);
                    ACC(_mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(q), vm), 128 * h + 32 * t + 8 * k, k);
                }
            }
        }
    }
}

QK_INLINE void dot_q3_k(const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M, __m256 acc[4][4])
{
    const __m256i m3 = _mm256_set1_epi32(3), one = _mm256_set1_epi32(1);
    for (int64_t b = 0; b < K / 256; b++, x += 256) {
        const uint8_t *s = row + 110 * b, *sc = s + 96;
        PREFETCH_AHEAD(s, 110);
        float d = half_of(s + 108), dl[16];
        for (int g = 0; g < 16; g++) {
            int lo = (sc[g % 8] >> (4 * (g / 8))) & 0x0f, hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
            dl[g] = d * (float)((int8_t)(lo | hi << 4) - 32);
        }
        __m256i hm = _mm256_loadu_si256((const __m256i *)s);
        #pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(s + 32 + 32 * h));
            #pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                __m256 vd = pair_scales(dl, 8 * h + 2 * t);
                #pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    __m256i q = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(8 * k + 2 * t)), m3);
                    __m256i hb = _mm256_and_si256(_mm256_srl_epi32(hm, _mm_cvtsi32_si128(8 * k + 4 * h + t)), one);
                    q = _mm256_sub_epi32(q, _mm256_slli_epi32(_mm256_xor_si256(hb, one), 2));
                    ACC(_mm256_mul_ps(vd, _mm256_cvtepi32_ps(q)), 128 * h + 32 * t + 8 * k, k);
                }
            }
        }
    }
}

/* Q4_0, Q4_1, Q5_0, Q5_1: 32 values per block in natural order (value l < 16: low nibble of
 * qs[l], value 16 + l: its high nibble; Q5: bit i of the 32-bit qh is value i's fifth bit).
 * Each weight is quant.c's value: d * (q - 8) or d * (q - 16) (exact products), and for
 * Q4_1 / Q5_1 fma(d, q, m), which rounds once as fl(d*q + m) does since d*q is exact (11 + 5
 * bits); infinite and NaN scales give what the scalar code gives. w[i] = values 8i ..
 * 8i + 7. Shared by the fused kernel and the tiles' block dequantizers. */
QK_INLINE void q45_weights(const uint8_t *s, const int five, const int with_min, __m256 w[4])
{
    const __m256i m15 = _mm256_set1_epi32(0x0f), one = _mm256_set1_epi32(1);
    __m256 vd = _mm256_set1_ps(half_of(s)), vm = _mm256_set1_ps(with_min ? half_of(s + 2) : 0.0f);
    const __m256i off = _mm256_set1_epi32(with_min ? 0 : five ? 16 : 8);
    const uint8_t *q = s + 2 + (with_min ? 2 : 0) + (five ? 4 : 0);
    __m256i hv = _mm256_setzero_si256();
    if (five) {
        uint32_t qh;
        memcpy(&qh, s + 2 + (with_min ? 2 : 0), 4);
        hv = _mm256_set1_epi32((int)qh);
    }
    #pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * h)));
        __m256i lo = _mm256_and_si256(v, m15), hi = _mm256_srli_epi32(v, 4);
        if (five) {
            __m256i ilo = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            ilo = _mm256_add_epi32(ilo, _mm256_set1_epi32(8 * h));
            __m256i ihi = _mm256_add_epi32(ilo, _mm256_set1_epi32(16));
            lo = _mm256_or_si256(lo, _mm256_slli_epi32(_mm256_and_si256(_mm256_srlv_epi32(hv, ilo), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi32(_mm256_and_si256(_mm256_srlv_epi32(hv, ihi), one), 4));
        }
        lo = _mm256_sub_epi32(lo, off);
        hi = _mm256_sub_epi32(hi, off);
        if (with_min) {
            w[h] = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(lo), vm);
            w[2 + h] = _mm256_fmadd_ps(vd, _mm256_cvtepi32_ps(hi), vm);
        } else {
            w[h] = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(lo));
            w[2 + h] = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(hi));
        }
    }
}

QK_INLINE void dot_q45(const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M, __m256 acc[4][4],
                       const int five, const int with_min)
{
    const size_t bytes = 18 + 2 * (size_t)with_min + 4 * (size_t)five;
    for (int64_t b = 0; b < K / 32; b++, x += 32) {
        const uint8_t *s = row + bytes * (size_t)b;
        if (b % 4 == 0) PREFETCH_AHEAD(s, 64);
        __m256 w[4];
        q45_weights(s, five, with_min, w);
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) ACC(w[i], 8 * i, i);
    }
}

QK_INLINE void store_q45(const uint8_t *s, float *y, const int five, const int with_min)
{
    __m256 w[4];
    q45_weights(s, five, with_min, w);
    for (int i = 0; i < 4; i++) _mm256_storeu_ps(y + 8 * i, w[i]);
}

QK_TARGET static void dq_q4_1(const uint8_t *s, float *y) { store_q45(s, y, 0, 1); }
QK_TARGET static void dq_q5_0(const uint8_t *s, float *y) { store_q45(s, y, 1, 0); }
QK_TARGET static void dq_q5_1(const uint8_t *s, float *y) { store_q45(s, y, 1, 1); }

bool cx_qk_permuted(cx_dtype dt)
{
    return dt == CX_DT_Q2_K || dt == CX_DT_Q3_K || dt == CX_DT_Q4_K || dt == CX_DT_Q5_K || dt == CX_DT_Q6_K ||
           dt == CX_DT_Q8_0;
}

void cx_qk_permute(const float *x, int64_t ldx, int64_t M, int64_t K, float *xp)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t g = 0; g < K; g += 32)
            for (int b = 0; b < 4; b++)
                for (int l = 0; l < 8; l++) xp[m * K + g + 8 * b + l] = x[m * ldx + g + 4 * l + b];
}

/* F16 / BF16 / F32: 32 values per step, the rest (K % 32) through the scalar dequantizer */
QK_INLINE int64_t dot_plain(cx_dtype dt, const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M,
                            __m256 acc[4][4])
{
    int64_t k = 0;
    for (; k + 32 <= K; k += 32)
        #pragma GCC unroll 8
        for (int i = 0; i < 4; i++) {
            int64_t kk = k + 8 * i;
            __m256 w;
            if (dt == CX_DT_F16) {
                w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * kk)));
            } else if (dt == CX_DT_BF16) {
                __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * kk)));
                w = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            } else {
                w = _mm256_loadu_ps((const float *)(const void *)(row + 4 * kk));
            }
            ACC(w, kk, i);
        }
    return k;
}

/* A type without a kernel of its own (none now; kept so that a new type is right before it is
 * fast): each 256-value chunk dequantized into L1 first. */
QK_INLINE void dot_chunked(cx_dtype dt, const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M,
                           __m256 acc[4][4])
{
    float w[CX_QCHUNK] __attribute__((aligned(32)));
    for (int64_t k0 = 0; k0 < K; k0 += CX_QCHUNK) { /* K is whole blocks of 32 or 256 */
        int64_t len = K - k0 < CX_QCHUNK ? K - k0 : CX_QCHUNK;
        cx_qk_dequantize(dt, row, k0, len, w);
        for (int64_t k = 0; k < len; k += 32)
            #pragma GCC unroll 8
            for (int i = 0; i < 4; i++) ACC(_mm256_load_ps(w + k + 8 * i), k0 + k + 8 * i, i);
    }
}

QK_INLINE void dot_rows_m(cx_dtype dt, const uint8_t *row, int64_t K, const float *x, int64_t ldx, const int M,
                          float *sums)
{
    __m256 acc[4][4];
    #pragma GCC unroll 8
    for (int m = 0; m < M; m++)
        #pragma GCC unroll 8
        for (int i = 0; i < 4; i++) acc[m][i] = _mm256_setzero_ps();
    int64_t done = K;
    switch (dt) {
    case CX_DT_Q4_K: dot_q4_k(row, K, x, ldx, M, acc); break;
    case CX_DT_Q5_K: dot_q5_k(row, K, x, ldx, M, acc); break;
    case CX_DT_Q6_K: dot_q6_k(row, K, x, ldx, M, acc); break;
    case CX_DT_Q8_0: dot_q8_0(row, K, x, ldx, M, acc); break;
    case CX_DT_Q2_K: dot_q2_k(row, K, x, ldx, M, acc); break;
    case CX_DT_Q3_K: dot_q3_k(row, K, x, ldx, M, acc); break;
    case CX_DT_Q4_0: dot_q45(row, K, x, ldx, M, acc, 0, 0); break;
    case CX_DT_Q4_1: dot_q45(row, K, x, ldx, M, acc, 0, 1); break;
    case CX_DT_Q5_0: dot_q45(row, K, x, ldx, M, acc, 1, 0); break;
    case CX_DT_Q5_1: dot_q45(row, K, x, ldx, M, acc, 1, 1); break;
    case CX_DT_F16:
    case CX_DT_BF16:
    case CX_DT_F32: done = dot_plain(dt, row, K, x, ldx, M, acc); break;
    default: dot_chunked(dt, row, K, x, ldx, M, acc); break;
    }
    #pragma GCC unroll 8
    for (int m = 0; m < M; m++) {
        __m256 a = _mm256_add_ps(acc[m][0], acc[m][1]);
        if (SLOTS(M) == 4) a = _mm256_add_ps(a, _mm256_add_ps(acc[m][2], acc[m][3]));
        sums[m] = hsum(a);
    }
    if (done < K) { /* the plain types' last K % 32 values */
        float w[32];
        cx_dequantize_row(dt, row + (size_t)done * (dt == CX_DT_F32 ? 4 : 2), w, K - done);
        #pragma GCC unroll 8
        for (int m = 0; m < M; m++)
            for (int64_t k = done; k < K; k++) sums[m] += w[k - done] * x[m * ldx + k];
    }
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

void cx_qk_switch_off(bool off) { (void)off; }

bool cx_qk_permuted(cx_dtype dt)
{
    (void)dt;
    return false;
}

void cx_qk_permute(const float *x, int64_t ldx, int64_t M, int64_t K, float *xp)
{
    (void)x, (void)ldx, (void)M, (void)K, (void)xp;
}

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
    #pragma GCC unroll 8
    for (int m = 0; m < M; m++) sums[m] = 0.0f;
    for (int64_t k0 = 0; k0 < K; k0 += CX_QCHUNK) {
        int64_t len = K - k0 < CX_QCHUNK ? K - k0 : CX_QCHUNK;
        cx_qk_dequantize(dt, row, k0, len, w);
        #pragma GCC unroll 8
        for (int m = 0; m < M; m++)
            for (int64_t k = 0; k < len; k++) sums[m] += w[k] * x[m * ldx + k0 + k];
    }
}

#endif
