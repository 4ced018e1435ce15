/* Model configs: Hugging Face GPT-2 config.json and TransformerLens HookedTransformerConfig JSON. */
#ifndef CIRCUITS_CONFIG_H
#define CIRCUITS_CONFIG_H

#include "internal.h"

typedef struct cx_hf_extra {
    bool tie_word_embeddings; /* W_U is wte transposed unless lm_head.weight is given */
} cx_hf_extra;

/* Each reads a JSON file at path and fills cfg (cfg->size is set). */
int cx_config_load_hf(const char *path, circuits_config *cfg, cx_hf_extra *extra);
int cx_config_load_tl(const char *path, circuits_config *cfg);
/* The same from a buffer of len bytes (path names it in messages); buf NULL reads the file. */
int cx_config_parse_hf(const char *path, const char *buf, size_t len, circuits_config *cfg, cx_hf_extra *extra);
int cx_config_parse_tl(const char *path, const char *buf, size_t len, circuits_config *cfg);

#endif
