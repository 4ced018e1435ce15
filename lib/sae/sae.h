/* Sparse autoencoders and transcoders as SAELens saves them (circuits_sae), their arithmetic
 * in SAELens's order (so that each hook_sae_* point sees what SAELens's sees), and splicing them
 * into a context's runs (HookedSAETransformer). Files: sae_load.c (cfg.json and safetensors,
 * validated as hostile), sae_math.c (encode / decode pieces), splice.c (attach / detach, the hook
 * points an attachment adds, and the splice a run performs in place of the replaced point),
 * features.c (feature statistics over a dataset). */
#ifndef CIRCUITS_SAE_H
#define CIRCUITS_SAE_H

#include "internal.h"
#include "st_save.h"

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

/* ---- feature statistics (features.c): the pieces a dataset job (lib/job/kind_features.c) builds on ---- */

/* The tensors of the feature statistics file, in its order (docs/saes.md "Feature statistics file"). */
enum { CX_FEATURE_STATS_TENSORS = 8 };

/* opts (NULL: the defaults) copied by its size into *o and checked, as create does. */
int cx_feature_stats_options_resolve(circuits_feature_stats_options *o, const circuits_feature_stats_options *opts,
                                     const char *fn);
/* Empty statistics with no SAE (nothing can be added to them: they are merged into) for d_sae
 * latents of an SAE at hook_name, options o (checked). */
int cx_feature_stats_make(circuits_feature_stats **out, int64_t d_sae, const circuits_feature_stats_options *o,
                          const char *hook_name, const char *architecture, bool transcoder, const char *fn);
/* Rows added from now on are numbered from row0 (before any row is added): a job unit's rows
 * carry their numbers in the dataset. */
int cx_feature_stats_set_row_base(circuits_feature_stats *st, int64_t row0, const char *fn);
/* The SAE's point in ctx as an add checks it: the model's own, as wide as the SAE reads. */
int cx_feature_stats_check_point(const circuits_context *ctx, const circuits_sae *s, const char *fn);
/* The statistics as the file's tensors t[CX_FEATURE_STATS_TENSORS] (pointing into st). */
void cx_feature_stats_tensors(const circuits_feature_stats *st, cx_st_out *t);
/* Reads the file's tensors from set (each with exactly the dtype and shape st's dimensions
 * imply; marked used) into st, made empty with those dimensions, with n_tokens and n_rows rows
 * numbered from row_base; then checks the contents as a load does. */
int cx_feature_stats_read(circuits_feature_stats *st, const cx_st_set *set, const char *path, int64_t n_tokens,
                          int64_t n_rows, int64_t row_base, const char *fn);
/* Adds src, whose rows follow dst's, to dst: counts and sums added, maxima, and the top contexts
 * merged in their total order (value, then row, position): exactly those one pass over dst's
 * rows and then src's would keep. The sums are added in another order than one pass's. */
int cx_feature_stats_merge(circuits_feature_stats *dst, const circuits_feature_stats *src, const char *fn);
/* circuits_feature_stats_save's file with the metadata pairs extra[0 .. 2 n_extra) added. */
int cx_feature_stats_write(const circuits_feature_stats *st, const char *path, const char *const *extra,
                           size_t n_extra, const char *fn);

#endif
