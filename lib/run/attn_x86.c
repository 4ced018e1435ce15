/* Attention's two products for one head (kernels.h cx_attn_scores, cx_attn_mix): AVX-512F
 * kernels, compiled with target attributes and used only when the CPU has them (checked once at
 * run time), else OpenBLAS through cx_matmul_serial.
 *
 * Why not OpenBLAS: the forward's attention runs one product per block of 64 queries with
 * K = d_head = 64 (kq^T) or N = d_head (pattern @ v); at that size OpenBLAS's packing and its
 * zeroing pass over C (beta 0) cost as much as the arithmetic (measured ~60 GFLOP/s of a
 * ~155 GFLOP/s core, SkylakeX kernels). Here v needs no packing at all (its rows are the vectors),
 * and k is transposed once per call in registers.
 *
 * Bits: every element is one FMA chain in a fixed order from +0 (scores: over d ascending; mix:
 * over keys ascending), whatever the block, the rows around it or the call's shape. So a block
 * of a product has the bits of the whole product, and zero pattern entries (the causal mask)
 * add exact zeros: whole rows give the bits of their causal part. */
#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

/* O3 whatever the build's level: the register blocks below must unroll (-O2 keeps them as loops
 * over arrays in memory, measured 2x slower than OpenBLAS) */
#ifdef __clang__ /* no optimize attribute; clang unrolls these at -O2 */
#define AK_OPT
#else
#define AK_OPT optimize("O3")
#endif
#define AK_TARGET __attribute__((target("avx512f"), AK_OPT))
#define AK_INLINE static inline __attribute__((always_inline, target("avx512f"), AK_OPT))

static int switched_off; /* atomics: any thread may ask while a test flips it */

void cx_attn_switch_off(bool off) { __atomic_store_n(&switched_off, off, __ATOMIC_RELAXED); }

static bool available(int64_t dh)
{
    static int have = -1; /* every thread computes the same answer: relaxed is enough */
    if (dh % 16 != 0 || dh > CX_ATTN_MAX_DH || __atomic_load_n(&switched_off, __ATOMIC_RELAXED)) return false;
    int h = __atomic_load_n(&have, __ATOMIC_RELAXED);
    if (h < 0) {
        __builtin_cpu_init();
        h = __builtin_cpu_supports("avx512f");
        __atomic_store_n(&have, h, __ATOMIC_RELAXED);
    }
    return h;
}

/* r[16] rows of 16 -> their transpose, in registers. */
AK_INLINE void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* r[4i + c], 128-bit lane L: column 4L + c of rows 4i .. 4i + 3 */
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int c = 0; c < 4; c++) {
        __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
        __m512 u2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88), u3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
        t[c] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        t[8 + c] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        t[4 + c] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* Keys per panel of the scores kernel, and query rows per register block of both kernels. */
enum { PANEL = 32, SROWS = 8, MROWS = 6 };

/* kp[d][PANEL] = k[j0 + jj][d] for jj < nj (zeros beyond): the panel's keys as columns. */
AK_INLINE void pack_keys(float *kp, const float *k, int64_t ldk, int64_t nj, int64_t dh)
{
    for (int half = 0; half < PANEL / 16; half++)
        for (int64_t d0 = 0; d0 < dh; d0 += 16) {
            __m512 r[16];
            for (int jj = 0; jj < 16; jj++) {
                int64_t j = half * 16 + jj;
                r[jj] = j < nj ? _mm512_loadu_ps(k + j * ldk + d0) : _mm512_setzero_ps();
            }
            transpose16(r);
            for (int dd = 0; dd < 16; dd++) _mm512_storeu_ps(kp + (d0 + dd) * PANEL + half * 16, r[dd]);
        }
}

/* S[R rows, nj <= PANEL keys] = q[R rows] . panel, each element over d ascending. */
AK_INLINE void scores_block(float *S, int64_t lds, const float *q, int64_t ldq, const float *kp, int64_t nj,
                            int64_t dh, const int R)
{
    __m512 acc[SROWS][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t d = 0; d < dh; d++) {
        __m512 b0 = _mm512_loadu_ps(kp + d * PANEL), b1 = _mm512_loadu_ps(kp + d * PANEL + 16);
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(q[r * ldq + d]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    __mmask16 m0 = nj >= 16 ? 0xFFFF : (__mmask16)((1u << nj) - 1);
    __mmask16 m1 = nj >= 32 ? 0xFFFF : nj <= 16 ? 0 : (__mmask16)((1u << (nj - 16)) - 1);
    for (int r = 0; r < R; r++) {
        _mm512_mask_storeu_ps(S + r * lds, m0, acc[r][0]);
        _mm512_mask_storeu_ps(S + r * lds + 16, m1, acc[r][1]);
    }
}

AK_TARGET static void scores_avx512(float *S, int64_t lds, const float *q, int64_t ldq, const float *k, int64_t ldk,
                                    int64_t M, int64_t N, int64_t dh, int64_t diag)
{
    float kp[CX_ATTN_MAX_DH * PANEL] __attribute__((aligned(64)));
    for (int64_t j0 = 0; j0 < N; j0 += PANEL) {
        int64_t nj = N - j0 < PANEL ? N - j0 : PANEL;
        pack_keys(kp, k + j0 * ldk, ldk, nj, dh);
        int64_t i = j0 - diag > 0 ? j0 - diag : 0; /* the first row that sees a key of the panel */
        for (; i + SROWS <= M; i += SROWS) scores_block(S + i * lds + j0, lds, q + i * ldq, ldq, kp, nj, dh, SROWS);
        switch (M - i) { /* constant row counts: the blocks unroll */
        case 7: scores_block(S + i * lds + j0, lds, q + i * ldq, ldq, kp, nj, dh, 7); break;
        case 6: scores_block(S + i * lds + j0, lds, q + i * ldq, ldq, kp, nj, dh, 6); break;
        case 5: scores_block(S + i * lds + j0, lds, q + i * ldq, ldq, kp, nj, dh, 5); break;
        case 4: scores_block(S + i * lds + j0, lds, q + i * ldq, ldq, kp, nj, dh, 4); break;
        case 3: scores_block(S + i * lds + j0, lds, q + i * ldq, ldq, kp, nj, dh, 3); break;
        case 2: scores_block(S + i * lds + j0, lds, q + i * ldq, ldq, kp, nj, dh, 2); break;
        case 1: scores_block(S + i * lds + j0, lds, q + i * ldq, ldq, kp, nj, dh, 1); break;
        default: break;
        }
    }
}

/* z[R rows, 16 * nz columns] (+)= p[R rows, N] . v[N, those columns], each element over keys
 * ascending: from +0 (first), else continuing the chain z holds (the same floats: the same bits
 * as one pass). */
AK_INLINE void mix_block(float *z, int64_t ldz, const float *p, int64_t ldp, const float *v, int64_t ldv, int64_t N,
                         const int R, const int nz, bool first)
{
    __m512 acc[MROWS][4];
    for (int r = 0; r < R; r++)
        for (int x = 0; x < nz; x++) acc[r][x] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(z + r * ldz + 16 * x);
    for (int64_t j = 0; j < N; j++) {
        __m512 b[4];
        for (int x = 0; x < nz; x++) b[x] = _mm512_loadu_ps(v + j * ldv + 16 * x);
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(p[r * ldp + j]);
            for (int x = 0; x < nz; x++) acc[r][x] = _mm512_fmadd_ps(a, b[x], acc[r][x]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int x = 0; x < nz; x++) _mm512_storeu_ps(z + r * ldz + 16 * x, acc[r][x]);
}

/* Keys per pass over the rows: their v rows (strided in memory) stay in L1 across the row
 * blocks (one pass over all keys per row block measured 20 % slower at 1024 keys). */
enum { MIX_KEYS = 128 };

#define MIX_ROWS(NZ)                                                                                    \
    do {                                                                                                \
        for (int64_t j0 = 0; j0 < N; j0 += MIX_KEYS) {                                                  \
            int64_t nj = N - j0 < MIX_KEYS ? N - j0 : MIX_KEYS;                                         \
            const float *pj = p + j0, *vj = v + j0 * ldv + c;                                           \
            bool first = j0 == 0;                                                                       \
            int64_t i = j0 - diag > 0 ? j0 - diag : 0; /* rows that see none of these keys: done */     \
            for (; i + MROWS <= M; i += MROWS)                                                          \
                mix_block(z + i * ldz + c, ldz, pj + i * ldp, ldp, vj, ldv, nj, MROWS, NZ, first);      \
            switch (M - i) {                                                                            \
            case 5: mix_block(z + i * ldz + c, ldz, pj + i * ldp, ldp, vj, ldv, nj, 5, NZ, first); break; \
            case 4: mix_block(z + i * ldz + c, ldz, pj + i * ldp, ldp, vj, ldv, nj, 4, NZ, first); break; \
            case 3: mix_block(z + i * ldz + c, ldz, pj + i * ldp, ldp, vj, ldv, nj, 3, NZ, first); break; \
            case 2: mix_block(z + i * ldz + c, ldz, pj + i * ldp, ldp, vj, ldv, nj, 2, NZ, first); break; \
            case 1: mix_block(z + i * ldz + c, ldz, pj + i * ldp, ldp, vj, ldv, nj, 1, NZ, first); break; \
            default: break;                                                                             \
            }                                                                                           \
        }                                                                                               \
    } while (0)

AK_TARGET static void mix_avx512(float *z, int64_t ldz, const float *p, int64_t ldp, const float *v, int64_t ldv,
                                 int64_t M, int64_t N, int64_t dh, int64_t diag)
{
    for (int64_t c = 0; c < dh; c += 64) {
        switch ((dh - c) >= 64 ? 4 : (int)((dh - c) / 16)) {
        case 4: MIX_ROWS(4); break;
        case 3: MIX_ROWS(3); break;
        case 2: MIX_ROWS(2); break;
        default: MIX_ROWS(1); break;
        }
    }
}

#else

void cx_attn_switch_off(bool off) { (void)off; }
static bool available(int64_t dh) { (void)dh; return false; }
static void scores_avx512(float *S, int64_t lds, const float *q, int64_t ldq, const float *k, int64_t ldk, int64_t M,
                          int64_t N, int64_t dh, int64_t diag)
{
    (void)S, (void)lds, (void)q, (void)ldq, (void)k, (void)ldk, (void)M, (void)N, (void)dh, (void)diag;
}
static void mix_avx512(float *z, int64_t ldz, const float *p, int64_t ldp, const float *v, int64_t ldv, int64_t M,
                       int64_t N, int64_t dh, int64_t diag)
{
    (void)z, (void)ldz, (void)p, (void)ldp, (void)v, (void)ldv, (void)M, (void)N, (void)dh, (void)diag;
}

#endif

bool cx_attn_kernels(int64_t dh) { return available(dh); }

void cx_attn_scores(float *S, int64_t lds, const float *q, int64_t ldq, const float *k, int64_t ldk, int64_t M,
                    int64_t N, int64_t dh, int64_t diag)
{
    if (M <= 0 || N <= 0) return;
    if (available(dh)) scores_avx512(S, lds, q, ldq, k, ldk, M, N, dh, diag < 0 ? 0 : diag);
    else cx_matmul_serial(S, lds, q, ldq, M, dh, N, k, 1, ldk);
}

void cx_attn_mix(float *z, int64_t ldz, const float *p, int64_t ldp, const float *v, int64_t ldv, int64_t M,
                 int64_t N, int64_t dh, int64_t diag)
{
    if (M <= 0) return;
    if (N <= 0) { /* an empty sum (no key seen) */
        for (int64_t i = 0; i < M; i++)
            for (int64_t c = 0; c < dh; c++) z[i * ldz + c] = 0.0f;
        return;
    }
    if (available(dh)) mix_avx512(z, ldz, p, ldp, v, ldv, M, N, dh, diag < 0 ? 0 : diag);
    else cx_matmul_serial(z, ldz, p, ldp, M, N, dh, v, ldv, 1);
}
