/* Sparse autoencoders and transcoders as SAELens saves them (circuits_sae), their arithmetic
 * in SAELens's order (so that each hook_sae_* point sees what SAELens's sees), and splicing them
 * into a context's runs (HookedSAETransformer). Files: sae_load.c (cfg.json and safetensors,
 * validated as hostile), sae_math.c (encode / decode pieces), splice.c (attach / detach, the hook
 * points an attachment adds, and the splice a run performs in place of the replaced point),
 * features.c (feature statistics over a dataset). */
#ifndef CIRCUITS_SAE_H
#define CIRCUITS_SAE_H

#include "internal.h"

struct circuits_sae {
    int32_t arch;                  /* circuits_sae_arch */
    char *arch_name;               /* as cfg.json spells it */
    bool transcoder, skip;         /* reads hook_name, writes hook_name_out; skip: W_skip */
    int64_t d_in, d_sae, d_out;    /* d_out = d_in for an SAE */
    bool apply_b_dec_to_input;
    int32_t norm;                  /* circuits_sae_norm */
    bool reshape_hook_z;
    int32_t k;                     /* topk */
    bool rescale_acts_by_decoder_norm;
    char *hook_name, *hook_name_out; /* hook_name_out == hook_name (same string) for an SAE */
    int32_t hook_layer;
    /* fp32, owned; NULL where the architecture has none */
    float *W_enc;                  /* [d_in, d_sae] */
    float *W_dec;                  /* [d_sae, d_out] */
    float *b_enc, *b_dec;          /* [d_sae], [d_out] */
    float *b_gate, *b_mag, *r_mag; /* gated: [d_sae] each */
    float *W_enc_mag;              /* gated: W_enc * exp(r_mag), made at load */
    float *threshold;              /* jumprelu: [d_sae] */
    float *W_skip;                 /* skip transcoders: [d_out, d_in] */
    float *W_dec_norm;             /* topk with rescale_acts_by_decoder_norm: [d_sae] */
    float *log_sparsity;           /* [d_sae] from the sparsity file, or NULL */
};

/* The pieces of SAELens's encode / decode, in its order. n rows; every buffer row-major. A hook
 * fires between each step, so each is separate.
 *
 * cx_sae_input: x [n, d_in] (the value hook_sae_input left) in place -> the encoder's input:
 *   the input normalization (constant_norm_rescale / layer_norm, which store their per-row factors
 *   in coeff [2n]; coeff may be NULL when s->norm needs none), then - b_dec if
 *   apply_b_dec_to_input.
 * cx_sae_pre: pre [n, d_sae] = what hook_sae_acts_pre sees, from the encoder's input x.
 * cx_sae_post: post [n, d_sae] = the activation of pre (gated reads x again for the gate path;
 *   topk keeps k per row). pre is not written.
 * cx_sae_decode: out [n, d_out] = post W_dec + b_dec (topk with rescale: as SAELens), what
 *   hook_sae_recons sees.
 * cx_sae_output: out [n, d_out] in place: the output normalization undone with coeff (SAEs only:
 *   SAELens's Transcoder.decode does not undo it), then skip transcoders add x_raw W_skip^T
 *   (x_raw [n, d_in]: the input as hook_name gave it, neither hooked nor normalized, as
 *   SkipTranscoder.forward reads its x). Note: SAELens 6.54.12's HookedSAETransformer splices
 *   encode + decode only, leaving W_skip out (docs/saes.md "Architectures").
 * None of them allocates; coeff may be NULL only when s->norm needs no per-row factors. */
int cx_sae_input(const circuits_sae *s, float *x, int64_t n, float *coeff);
int cx_sae_pre(const circuits_sae *s, const float *x, int64_t n, float *pre);
int cx_sae_post(const circuits_sae *s, const float *x, const float *pre, int64_t n, float *post);
int cx_sae_decode(const circuits_sae *s, const float *post, int64_t n, float *out);
int cx_sae_output(const circuits_sae *s, float *out, int64_t n, const float *coeff, const float *x_raw);

/* True if decode needs the input rows: an SAE's per-row normalization (undone on the output;
 * SAELens's transcoders normalize their input only) or a skip connection. */
static inline bool cx_sae_needs_input(const circuits_sae *s)
{
    return (!s->transcoder &&
            (s->norm == CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE || s->norm == CIRCUITS_SAE_NORM_LAYER_NORM)) ||
           s->skip;
}

/* ---- attachments (splice.c) ---- */

/* One SAE attached to a context (circuits_context_add_sae). */
typedef struct cx_sae_attach {
    const circuits_sae *sae;
    bool error_term;
    int32_t in_layer, out_layer;   /* the input and output points' blocks (-1 outside) */
    int32_t in_kind, out_kind;     /* cx_hook_kind of hook_name and hook_name_out */
} cx_sae_attach;

/* True if the attachment reads another point than it writes (a transcoder with hook_name_out
 * != hook_name): its input is captured where it fires. A transcoder whose hook_name_out is its
 * hook_name (or absent) reads the point it replaces, as SAELens's wrapper does then. */
static inline bool cx_sae_captures(const cx_sae_attach *a)
{
    return a->sae->transcoder && (a->in_layer != a->out_layer || a->in_kind != a->out_kind);
}

#endif
