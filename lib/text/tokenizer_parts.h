/* tokenizer.json's pipeline components (tokenizer_parts.c) and the small JSON helpers the
 * tokenizer loaders share. Internal. */
#ifndef CIRCUITS_TOKENIZER_PARTS_H
#define CIRCUITS_TOKENIZER_PARTS_H

#include "tokenizer.h"

#include <jansson.h>

bool cx_tj_is_type(json_t *obj, const char *type);
/* The "type" of obj, or "?" ("null" for a JSON null or absent member). */
const char *cx_tj_type_of(json_t *obj);
/* A boolean member: def when absent or null; CIRCUITS_E_FORMAT when not a boolean. */
int cx_tj_flag(json_t *obj, const char *key, int def, int *out, const char *src, const char *what);

/* Each sets the tokenizer's fields from its component (NULL / null: none) and refuses by name
 * (CIRCUITS_E_UNSUPPORTED) what is not implemented. The pre-tokenizer decides byte- or
 * character-level (t->char_level): call it first. The post-processor needs the vocabulary and
 * the added tokens. */
int cx_tj_normalizer(circuits_tokenizer *t, json_t *n, const char *src);
int cx_tj_pre_tokenizer(circuits_tokenizer *t, json_t *p, const char *src);
int cx_tj_decoder(circuits_tokenizer *t, json_t *d, const char *src);
int cx_tj_post_processor(circuits_tokenizer *t, json_t *p, const char *src);

#endif
