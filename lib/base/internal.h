/* Internal declarations shared by the files of lib/. Nothing here is public API. */
#ifndef CIRCUITS_INTERNAL_H
#define CIRCUITS_INTERNAL_H

#include "circuits.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CX_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- errors (error.c) ---- */
/* Records `status` and a formatted message as this thread's last error; returns status. */
int cx_fail(int status, const char *fmt, ...) CX_PRINTF(2, 3);

/* ---- size-versioned structs (struct_size.c) ---- */
/* The one size rule (docs/abi.md): `size` must equal a published size of the struct, `versions`
 * (oldest first, the last being this library's sizeof). A struct the library fills (`filled`)
 * may also be larger than every version known here (a newer release's). Else
 * CIRCUITS_E_VERSION naming fn. */
int cx_struct_size_check(uint32_t size, const size_t *versions, size_t n_versions, const char *fn, bool filled);
/* Options the caller passed (src, starting with its uint32_t size) over dst, which holds the
 * defaults: checked by the rule above; dst->size becomes the newest version's. */
int cx_options_copy(void *dst, const void *src, const size_t *versions, size_t n_versions, const char *fn);
#define CX_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- checked allocation (alloc.c): all library allocations go through these ---- */
void *cx_malloc(size_t n);
void *cx_calloc(size_t count, size_t size);
void *cx_realloc(void *p, size_t n);
char *cx_strdup(const char *s);
void cx_free(void *p);
/* a * b with overflow detection; returns false on overflow. */
bool cx_mul_size(size_t a, size_t b, size_t *out);
/* A read-only private mapping of a whole file (MAP_FAILED with errno on failure) and its
 * release: the one place files are mapped, so that tests can fail it too. */
void *cx_mmap_read(size_t size, int fd);
void cx_munmap(void *p, size_t size);
/* Allocations that failed on this thread so far. */
unsigned long cx_alloc_failures(void);


/* ---- model internals (model.c, model_load.c, process.c; the weight tables: arch.h) ---- */
typedef struct cx_layer_weights {
    /* Each points into model->weights; NULL where the architecture has no such weight. */
    const circuits_tensor *ln1_w, *ln1_b;     /* [d_model] */
    const circuits_tensor *W_Q, *W_K, *W_V;   /* [n_heads, d_model, d_head]; K, V: n_key_value_heads */
    const circuits_tensor *b_Q, *b_K, *b_V;   /* [n_heads, d_head]; K, V: n_key_value_heads */
    const circuits_tensor *W_O;               /* [n_heads, d_head, d_model] */
    const circuits_tensor *b_O;               /* [d_model] */
    const circuits_tensor *ln2_w, *ln2_b;     /* [d_model] */
    const circuits_tensor *W_in;              /* [d_model, d_mlp] */
    const circuits_tensor *W_gate;            /* [d_model, d_mlp], gated_mlp only */
    const circuits_tensor *b_in;              /* [d_mlp] */
    const circuits_tensor *W_out;             /* [d_mlp, d_model] */
    const circuits_tensor *b_out;             /* [d_model] */
    const circuits_tensor *mlp_ln_w, *mlp_ln_b; /* [d_mlp], solu_ln with LN only */
    const circuits_tensor *ln1_post_w, *ln2_post_w; /* [d_model], norm_before_and_after with RMS */
} cx_layer_weights;

struct cx_st_set; /* safetensors files (safetensors.h) */

struct circuits_model {
    circuits_config cfg;
    struct cx_st_set *files;     /* mapped safetensors files the views point into */
    circuits_tensor *weights;    /* n_weights views, names owned by the model */
    size_t n_weights;
    void **owned;                /* buffers the model allocated (converted tensors, zeros) */
    uint8_t *exclusive;          /* [n_weights]: 1 if the view's buffer is the model's own and only its own */
    uint8_t *kind;               /* [n_weights]: its cx_weight_kind (arch.h) */
    size_t n_owned, cap_owned;
    const circuits_tensor *W_E, *W_pos, *ln_final_w, *ln_final_b, *W_U, *b_U;
    cx_layer_weights *layers;    /* [n_layers] */
    circuits_tokenizer *tokenizer; /* from the model directory, or NULL */
    /* keep_stored_dtype (model/quant.h): [n_weights] matrices held in their stored dtype, or
     * NULL when every weight is fp32. An entry with data NULL is an fp32 weight; one with data
     * set has weights[i].data NULL: the weight is only readable through its cx_qmat. */
    struct cx_qmat *stored;
    int32_t *row_maps;           /* row maps the cx_qmats share (owned), or NULL */
    float embed_scale;           /* a stored W_E's rows are multiplied by this (Gemma: sqrt(d_model)); 0: 1 */
    bool keep_stored_dtype;      /* the load option, read while loading (cx_stored_make) */
    /* What it was loaded from (model_load.c), recorded in a job's provenance (job/job.c): the
     * files that decide its weights (the config, tl_config.json or config.json, then the weight
     * files; or the GGUF file) and the load options. */
    char **src_files;
    size_t n_src_files;
    char *src_sha256;            /* [n_src_files * 65]: their SHA-256 in hex, each "" until the first
                                  * job of the model hashes it (job.c, under its lock) */
    circuits_load_options load_opts;
};

/* Row-major strides (in elements) of a contiguous tensor of this shape. */
void cx_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);

const circuits_tensor *cx_model_find_weight(const circuits_model *m, const char *name);
/* Points m->layers, m->W_E, ... at the entries of m->weights by their kinds (after it changes). */
void cx_model_link(circuits_model *m);
/* Records p as owned by the model (freed with it); frees p and fails if that fails. */
int cx_model_own(circuits_model *m, void *p);
/* TransformerLens's weight processing (process.c), applied at the end of loading. */
int cx_process_weights(circuits_model *m, const circuits_load_options *o);
/* After a weight was copied out of m's files from p: gives the pages of the stored tensor holding
 * p back to the system if no weight reads it in place any more (model_load.c). */
void cx_model_release_source(circuits_model *m, const void *p);

#endif
