/* Model configs: Hugging Face GPT-2 config.json and TransformerLens HookedTransformerConfig JSON. */
#ifndef CIRCUITS_CONFIG_H
#define CIRCUITS_CONFIG_H

#include "internal.h"

#include <jansson.h>

typedef struct cx_hf_extra {
    bool tie_word_embeddings; /* W_U is wte transposed unless lm_head.weight is given */
    uint32_t absent;          /* bit k: weight kind k is not stored (the config says so: no
                                 attention_bias, ...): zeros, as TransformerLens fills them */
} cx_hf_extra;

/* Each reads a JSON file at path and fills cfg (cfg->size is set). */
int cx_config_load_hf(const char *path, circuits_config *cfg, cx_hf_extra *extra);
int cx_config_load_tl(const char *path, circuits_config *cfg);
/* The same from a buffer of len bytes (path names it in messages); buf NULL reads the file. */
int cx_config_parse_hf(const char *path, const char *buf, size_t len, circuits_config *cfg, cx_hf_extra *extra);
int cx_config_parse_tl(const char *path, const char *buf, size_t len, circuits_config *cfg);

/* ---- shared by the config parsers (config.c, config_hf.c) ---- */

/* Largest accepted dimension: generous for real models, small enough that products of a few
 * of them cannot overflow 64 bits. */
#define CX_MAX_DIM (1 << 24)
#define CX_MAX_LAYERS 4096

/* A JSON object being read (root) and the file it came from (path, for messages). */
typedef struct cx_jcfg {
    json_t *root;
    const char *path;
} cx_jcfg;

/* Parses a file (buf NULL) or a buffer of len bytes into c->root, a JSON object. */
int cx_jcfg_open(const char *path, const char *buf, size_t len, cx_jcfg *c);
/* A field that is absent or JSON null. */
bool cx_jcfg_absent(const cx_jcfg *c, const char *key);
/* Typed, range-checked fields; absent or null gives the default (or E_CONFIG when required). */
int cx_jcfg_int(const cx_jcfg *c, const char *key, bool required, int64_t dflt, int64_t lo, int64_t hi,
                int32_t *out);
int cx_jcfg_bool(const cx_jcfg *c, const char *key, bool dflt, bool *out);
int cx_jcfg_num(const cx_jcfg *c, const char *key, double dflt, double *out);
/* v (read from field key) as the float the config stores: refused by name when fp32 cannot hold
 * it (overflows to inf, or a nonzero value underflows to 0), which would make NaN of the forward. */
int cx_jcfg_float(const cx_jcfg *c, const char *key, double v, float *out);
/* The circuits_local_attn pattern of per-layer local flags counted as seen[layer parity][local],
 * or -1 when local and global layers mix in another pattern. */
int cx_local_attn_pattern(const unsigned seen[2][2]);
int cx_jcfg_str(const cx_jcfg *c, const char *key, const char **out); /* NULL when absent */
/* An activation name (TL act_fn, HF activation_function / hidden_act) into *out. */
int cx_jcfg_act_fn(const cx_jcfg *c, const char *key, const char *s, int32_t *out);
/* Checks every format shares once the fields are read (n_heads * d_head not too large). */
int cx_jcfg_check_sizes(const cx_jcfg *c, const circuits_config *cfg);

/* The Hugging Face families other than GPT-2 (config_hf.c): c holds config.json, whose
 * model_type is model_type. Fills cfg (already zeroed, size set) and extra. */
int cx_config_parse_hf_family(const cx_jcfg *c, const char *model_type, circuits_config *cfg, cx_hf_extra *extra);

/* GGUF (io/config_gguf.c): from a parsed header (io/gguf.h) and its tensors (the vocabulary is
 * token_embd.weight's rows); extra->tie_word_embeddings when there is no output.weight. */
struct cx_gguf;
struct cx_st_set;
int cx_config_from_gguf(const struct cx_gguf *g, const struct cx_st_set *set, circuits_config *cfg,
                        cx_hf_extra *extra);

#endif
