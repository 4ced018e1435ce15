/* SAELens's inference encode / decode, cut into the pieces between which its hook points fire
 * (sae.h), in SAELens 6.54.12's order and float32 arithmetic:
 *
 *   process_sae_in: [hook_sae_input] -> input normalization -> - b_dec (apply_b_dec_to_input;
 *                   transcoders never)                                            cx_sae_input
 *   h = x W_enc + b_enc (gated: x (W_enc * exp(r_mag)) + b_mag)  [hook_sae_acts_pre]  cx_sae_pre
 *   activation: relu / (h > threshold) * relu(h) / (x W_enc + b_gate > 0) * relu(h) /
 *               topk of h (times |W_dec row| with rescale_acts_by_decoder_norm)
 *                                                               [hook_sae_acts_post]  cx_sae_post
 *   acts W_dec + b_dec (topk rescale: acts * (1 / |W_dec row|) first)  [hook_sae_recons]
 *                                                                                   cx_sae_decode
 *   output normalization undone (SAEs only: SAELens's transcoders do not), + x_raw W_skip^T
 *   (skip transcoders: SkipTranscoder.forward adds the skip to decode's result, from the raw
 *   input x, not the hooked or normalized one)                                     cx_sae_output
 *
 * None allocates: they run inside a forward pass on the run memory. TopK's selection works in
 * place in the output row (a min-heap of the k largest keys in its first k floats, then the row
 * rewritten from pre). The GEMMs go through cx_matmul (split over the pool); the row loops through
 * cx_parallel_for. The decoder skips zero activations when few are nonzero (topk, trained
 * SAEs): a row's output is then b_dec plus the nonzero latents' W_dec rows, the same sum as the
 * GEMM's in another order. */
#include "kernels.h"
#include "pool.h"
#include "sae.h"

#include <math.h>
#include <string.h>

typedef struct row_job {
    const circuits_sae *s;
    const float *x, *pre, *post, *coeff;
    float *out, *coeff_out;
} row_job;

/* ---- input ---- */

static void input_rows(void *arg, int64_t begin, int64_t end)
{
    const row_job *j = arg;
    const circuits_sae *s = j->s;
    int64_t D = s->d_in;
    float *x = j->out, *coeff = j->coeff_out;
    bool sub = s->apply_b_dec_to_input && !s->transcoder;
    for (int64_t r = begin; r < end; r++) {
        float *row = x + r * D;
        if (s->norm == CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE) {
            /* x_norm_coeff = d_in ** 0.5 / x.norm(dim=-1) */
            double a = 0;
            for (int64_t i = 0; i < D; i++) a += (double)row[i] * row[i];
            float c = (float)sqrt((double)D) / (float)sqrt(a);
            for (int64_t i = 0; i < D; i++) row[i] *= c;
            coeff[2 * r] = c;
            coeff[2 * r + 1] = 0;
        } else if (s->norm == CIRCUITS_SAE_NORM_LAYER_NORM) {
            /* mu = mean; x - mu; std = x.std() (unbiased: divided by D - 1); x / (std + 1e-5) */
            double a = 0;
            for (int64_t i = 0; i < D; i++) a += row[i];
            float mu = (float)(a / (double)D);
            double v = 0;
            for (int64_t i = 0; i < D; i++) {
                row[i] -= mu;
                v += (double)row[i] * row[i];
            }
            float sd = (float)sqrt(v / (double)(D - 1)), den = sd + 1e-5f;
            for (int64_t i = 0; i < D; i++) row[i] /= den;
            coeff[2 * r] = mu;
            coeff[2 * r + 1] = sd;
        }
        if (sub)
            for (int64_t i = 0; i < D; i++) row[i] -= s->b_dec[i];
    }
}

int cx_sae_input(const circuits_sae *s, float *x, int64_t n, float *coeff)
{
    bool per_row = s->norm == CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE || s->norm == CIRCUITS_SAE_NORM_LAYER_NORM;
    if (per_row && !coeff) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "cx_sae_input: coeff is NULL");
    if (!per_row && !(s->apply_b_dec_to_input && !s->transcoder)) return CIRCUITS_OK;
    row_job j = {.s = s, .out = x, .coeff_out = coeff};
    cx_parallel_for(n, cx_rows_align(s->d_in), input_rows, &j);
    return CIRCUITS_OK;
}

/* ---- encoder ---- */

int cx_sae_pre(const circuits_sae *s, const float *x, int64_t n, float *pre)
{
    bool gated = s->arch == CIRCUITS_SAE_GATED;
    cx_matmul(pre, s->d_sae, x, s->d_in, n, s->d_in, s->d_sae, gated ? s->W_enc_mag : s->W_enc, s->d_sae, 1,
              gated ? s->b_mag : s->b_enc, false);
    return CIRCUITS_OK;
}

/* torch.relu: NaN stays NaN */
static inline float relu(float v) { return v < 0.0f ? 0.0f : v; }

/* topk's selection key: torch.topk orders NaN above everything */
static inline float topk_key(float v) { return isnan(v) ? INFINITY : v; }

/* Min-heap of k floats (h[0] the smallest): restores the heap below i. */
static inline void sift_down(float *h, int64_t k, int64_t i)
{
    float v = h[i];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= k) break;
        if (c + 1 < k && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}
/* One row of topk: post = relu of the k largest of h = pre (* norm), 0 elsewhere. Called with
 * norm NULL or not, each call specialized when inlined. */
static inline void topk_row(const float *pre, const float *norm, float *post, int64_t D, int64_t k)
{
#define H(i) (norm ? pre[i] * norm[i] : pre[i])
    if (k >= D) {
        for (int64_t i = 0; i < D; i++) post[i] = relu(H(i));
        return;
    }
    if (k == 0) {
        memset(post, 0, (size_t)D * sizeof *post);
        return;
    }
    /* the k-th largest key t: a min-heap of the k largest seen, kept in post[0..k) (post is
     * rewritten below from pre); most values fail the one comparison with its root (a NaN
     * passes it: torch.topk ranks NaN above everything) */
    for (int64_t i = 0; i < k; i++) post[i] = topk_key(H(i));
    for (int64_t i = k / 2 - 1; i >= 0; i--) sift_down(post, k, i);
    for (int64_t i = k; i < D; i++) {
        float v = H(i);
        if (!(v <= post[0])) {
            post[0] = topk_key(v);
            sift_down(post, k, 0);
        }
    }
    float t = post[0];
    /* keys above t are kept, and of those equal to t the first ones by index up to k */
    int64_t above = 0, equal = 0;
    for (int64_t i = 0; i < D; i++) {
        float h = H(i), key = topk_key(h);
        above += key > t;
        equal += key == t;
        post[i] = key >= t ? relu(h) : 0.0f;
    }
    for (int64_t i = D - 1, drop = above + equal - k; i >= 0 && drop > 0; i--)
        if (topk_key(H(i)) == t) {
            post[i] = 0.0f;
            drop--;
        }
#undef H
}

static void post_rows(void *arg, int64_t begin, int64_t end)
{
    const row_job *jb = arg;
    const circuits_sae *s = jb->s;
    int64_t D = s->d_sae;
    for (int64_t r = begin; r < end; r++) {
        const float *pre = jb->pre + r * D;
        float *post = jb->out + r * D;
        switch (s->arch) {
        case CIRCUITS_SAE_STANDARD:
            for (int64_t i = 0; i < D; i++) post[i] = relu(pre[i]);
            break;
        case CIRCUITS_SAE_JUMPRELU:
            for (int64_t i = 0; i < D; i++) post[i] = relu(pre[i]) * (pre[i] > s->threshold[i] ? 1.0f : 0.0f);
            break;
        case CIRCUITS_SAE_GATED: /* post holds the gate's pre-activation */
            for (int64_t i = 0; i < D; i++) post[i] = (post[i] > 0.0f ? 1.0f : 0.0f) * relu(pre[i]);
            break;
        case CIRCUITS_SAE_TOPK:
            if (s->rescale_acts_by_decoder_norm) topk_row(pre, s->W_dec_norm, post, D, s->k);
            else topk_row(pre, NULL, post, D, s->k);
            break;
        default: break;
        }
    }
}

int cx_sae_post(const circuits_sae *s, const float *x, const float *pre, int64_t n, float *post)
{
    if (s->arch == CIRCUITS_SAE_GATED) /* the gate: x W_enc + b_gate */
        cx_matmul(post, s->d_sae, x, s->d_in, n, s->d_in, s->d_sae, s->W_enc, s->d_sae, 1, s->b_gate, false);
    row_job j = {.s = s, .pre = pre, .out = post};
    cx_parallel_for(n, cx_rows_align(s->d_sae), post_rows, &j);
    return CIRCUITS_OK;
}

/* ---- decoder ---- */

/* o += v w (distinct arrays: vectorized) */
static inline void axpy(float *restrict o, float v, const float *restrict w, int64_t n)
{
    for (int64_t i = 0; i < n; i++) o[i] += v * w[i];
}

/* out rows = b_dec + sum over the row's nonzero activations of act * W_dec[latent] (topk's
 * rescale: act * (1 / |W_dec[latent]|), as SAELens's act_times_W_dec). */
static void sparse_decode_rows(void *arg, int64_t begin, int64_t end)
{
    const row_job *jb = arg;
    const circuits_sae *s = jb->s;
    int64_t ds = s->d_sae, D = s->d_out;
    const float *norm = s->arch == CIRCUITS_SAE_TOPK && s->rescale_acts_by_decoder_norm ? s->W_dec_norm : NULL;
    for (int64_t r = begin; r < end; r++) {
        const float *a = jb->post + r * ds;
        float *o = jb->out + r * D;
        memset(o, 0, (size_t)D * sizeof *o);
        for (int64_t l = 0; l < ds; l++) {
            if (a[l] == 0.0f) continue;
            axpy(o, norm ? a[l] * (1.0f / norm[l]) : a[l], s->W_dec + l * D, D);
        }
        axpy(o, 1.0f, s->b_dec, D);
    }
}

int cx_sae_decode(const circuits_sae *s, const float *post, int64_t n, float *out)
{
    if (n <= 0) return CIRCUITS_OK;
    bool rescale = s->arch == CIRCUITS_SAE_TOPK && s->rescale_acts_by_decoder_norm;
    bool sparse = rescale;
    if (!sparse) {
        /* density: below 1 in 16 the row loop beats the GEMM (topk keeps k of d_sae) */
        int64_t nz = 0, total = n * s->d_sae;
        for (int64_t i = 0; i < total && nz * 16 < total; i++) nz += post[i] != 0.0f;
        sparse = nz * 16 < total;
    }
    row_job j = {.s = s, .post = post, .out = out};
    if (sparse) cx_parallel_for(n, cx_rows_align(s->d_out * 8), sparse_decode_rows, &j);
    else cx_matmul(out, s->d_out, post, s->d_sae, n, s->d_sae, s->d_out, s->W_dec, s->d_out, 1, s->b_dec, false);
    return CIRCUITS_OK;
}

/* ---- output ---- */

static void output_rows(void *arg, int64_t begin, int64_t end)
{
    const row_job *j = arg;
    const circuits_sae *s = j->s;
    int64_t D = s->d_out;
    for (int64_t r = begin; r < end; r++) {
        float *o = j->out + r * D;
        float a = j->coeff[2 * r], b = j->coeff[2 * r + 1];
        if (s->norm == CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE)
            for (int64_t i = 0; i < D; i++) o[i] /= a;
        else
            for (int64_t i = 0; i < D; i++) o[i] = o[i] * b + a;
    }
}

int cx_sae_output(const circuits_sae *s, float *out, int64_t n, const float *coeff, const float *x_raw)
{
    if (n <= 0) return CIRCUITS_OK;
    if (!s->transcoder && (s->norm == CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE || s->norm == CIRCUITS_SAE_NORM_LAYER_NORM)) {
        if (!coeff) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "cx_sae_output: coeff is NULL");
        row_job j = {.s = s, .coeff = coeff, .out = out};
        cx_parallel_for(n, cx_rows_align(s->d_out), output_rows, &j);
    }
    if (s->skip) {
        if (!x_raw) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "cx_sae_output: x_raw is NULL");
        /* out += x_raw [n, d_in] @ W_skip^T: W [d_in, d_out] with element [k][m] at W_skip[m * d_in + k] */
        cx_matmul(out, s->d_out, x_raw, s->d_in, n, s->d_in, s->d_out, s->W_skip, 1, s->d_in, NULL, true);
    }
    return CIRCUITS_OK;
}
