/* llama.cpp's control vectors: reading and writing its GGUF layout.
 *
 * What llama.cpp does (read from its source, not assumed):
 *   - tools/cvector-generator writes general.architecture = "controlvector",
 *     controlvector.model_hint = the model's architecture, controlvector.layer_count (i32) = the
 *     number of tensors, and 1-D F32 tensors "direction.1" .. "direction.{n_layers-1}" of n_embd.
 *   - common/common.cpp (common_control_vector_load_one) refuses a tensor not named direction.N,
 *     N = 0, a type other than F32, more than one dimension and differing lengths; it puts
 *     direction.N at offset n_embd * (N - 1) of a flat buffer.
 *   - src/llama-adapter.cpp (llama_adapter_cvec::apply) gives block il (1 <= il < n_layer) the
 *     slice at n_embd * (il - 1), i.e. direction.il, and apply_to adds it to the block's output
 *     (l_out, after the MLP's residual addition): blocks.{N}.hook_resid_post here. Block 0 never
 *     has one; a direction.N with N >= n_layer is never applied.
 * So directions[l] (l = 1 .. n_layers-1) <-> direction.l, and row 0 has no place in a file. (The
 * generator computes direction.N from block N-1's output: applied by llama.cpp, a vector it made
 * lands one block later than where it was measured. We apply a file as llama.cpp does.)
 *
 * Reading goes through the one GGUF parser (io/gguf.h, bounds-checked); writing is a small
 * writer of exactly this layout (GGUF v3, alignment 32) into memory, then a temporary file
 * renamed over path, so that a failure leaves no file behind. */
#include "gguf.h"
#include "st_save.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CV_ARCH "controlvector"

/* N of a tensor named "direction.N" (decimal, no sign, no leading zero), or -1. */
static int64_t direction_index(const char *name)
{
    static const char prefix[] = "direction.";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0) return -1;
    const char *s = name + sizeof prefix - 1;
    if (!*s || (s[0] == '0' && s[1])) return -1;
    int64_t n = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || n > (INT32_MAX - 9) / 10) return -1;
        n = n * 10 + (*s - '0');
    }
    return n;
}

/* Checks the file's tensors against the model's shape and copies them into dirs. */
static int read_directions(const char *path, const cx_gguf *g, const cx_st_set *set, int32_t n_layers,
                           int64_t d_model, float *dirs, bool *seen)
{
    const char *fn = "circuits_control_vector_load";
    const cx_gguf_kv *arch = cx_gguf_find(g, "general.architecture");
    const char *s = NULL;
    size_t n = 0;
    if (!arch) return cx_fail(CIRCUITS_E_FORMAT, "%s: %s is not a control vector (no general.architecture)", fn, path);
    int rc = cx_gguf_kv_string(g, arch, &s, &n);
    if (rc) return rc;
    if (n != strlen(CV_ARCH) || memcmp(s, CV_ARCH, n) != 0)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s is not a control vector (general.architecture is '%.*s', not '%s')",
                       fn, path, (int)(n > 64 ? 64 : n), s, CV_ARCH);
    for (size_t i = 0; i < set->n_tensors; i++) {
        const cx_st_tensor *t = &set->tensors[i];
        int64_t N = direction_index(t->name);
        if (N < 0)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: tensor '%s' is not named direction.N (N = 1, 2, ...)", fn, path,
                           t->name);
        if (N == 0)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: direction.0: layer index 0 (llama.cpp numbers them from 1)", fn,
                           path);
        if (t->dtype != CX_DT_F32)
            return cx_fail(CIRCUITS_E_DTYPE, "%s: %s: %s is %s; control vectors are F32", fn, path, t->name,
                           cx_dtype_name(t->dtype));
        if (t->ndim != 1 || t->shape[0] != d_model)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: %s: %s has %d dimensions and %zu values; the model's d_model is %lld", fn,
                           path, t->name, t->ndim, t->numel, (long long)d_model);
        if (N >= n_layers)
            return cx_fail(CIRCUITS_E_RANGE,
                           "%s: %s: %s would be added after block %lld; the model has blocks 0 .. %d", fn, path,
                           t->name, (long long)N, n_layers - 1);
        if (seen[N]) return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: layer %lld has two directions", fn, path, (long long)N);
        seen[N] = true;
        float *row = dirs + N * d_model;
        memcpy(row, t->data, (size_t)d_model * sizeof(float));
        for (int64_t j = 0; j < d_model; j++)
            if (!isfinite(row[j]))
                return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: %s[%lld] is not finite", fn, path, t->name, (long long)j);
    }
    return CIRCUITS_OK;
}

int circuits_control_vector_load(const char *path, int32_t n_layers, int64_t d_model, float *directions)
{
    const char *fn = "circuits_control_vector_load";
    if (!path || !directions) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: path and directions must not be NULL", fn);
    size_t total;
    size_t bytes;
    if (n_layers < 1 || d_model < 1 || !cx_mul_size((size_t)n_layers, (size_t)d_model, &total) ||
        !cx_mul_size(total, sizeof(float), &bytes))
        return cx_fail(CIRCUITS_E_SHAPE, "%s: n_layers %d and d_model %lld must be at least 1", fn, n_layers,
                       (long long)d_model);
    cx_st_set *set;
    cx_gguf g;
    int rc = cx_gguf_open(&set, &g, path, CX_ST_READ);
    if (rc) return rc;
    float *dirs = cx_calloc(total, sizeof(float));
    bool *seen = cx_calloc((size_t)n_layers, sizeof(bool));
    rc = dirs && seen ? read_directions(path, &g, set, n_layers, d_model, dirs, seen)
                      : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    if (!rc) memcpy(directions, dirs, bytes); /* nothing written before everything was checked */
    cx_free(seen);
    cx_free(dirs);
    cx_gguf_free(&g);
    cx_st_close(set);
    return rc;
}

/* ---- writing ---- */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

static void put(wbuf *w, const void *src, size_t n) /* into a buffer sized beforehand */
{
    memcpy(w->p + w->len, src, n);
    w->len += n;
}
static void put_u32(wbuf *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(w, b, 4);
}
static void put_u64(wbuf *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}
static void put_str(wbuf *w, const char *s)
{
    size_t n = strlen(s);
    put_u64(w, n);
    put(w, s, n);
}
static void put_pad(wbuf *w, size_t align)
{
    while (w->len % align) w->p[w->len++] = 0;
}

/* Writes the image to path through a temporary file in the same directory. */
int circuits_control_vector_save(const char *path, const float *directions, int32_t n_layers, int64_t d_model,
                                 const char *model_hint)
{
    const char *fn = "circuits_control_vector_save";
    if (!path || !directions)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: path and directions must not be NULL", fn);
    size_t total, row_bytes;
    if (n_layers < 2 || d_model < 1 || d_model > INT32_MAX || !cx_mul_size((size_t)n_layers, (size_t)d_model, &total) ||
        !cx_mul_size((size_t)d_model, sizeof(float), &row_bytes))
        return cx_fail(CIRCUITS_E_SHAPE,
                       "%s: n_layers %d (at least 2: block 0 has no control vector) and d_model %lld (at least 1)",
                       fn, n_layers, (long long)d_model);
    for (size_t i = 0; i < total; i++)
        if (!isfinite(directions[i]))
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: directions[%lld, %lld] is not finite", fn,
                           (long long)(i / (size_t)d_model), (long long)(i % (size_t)d_model));
    for (int64_t j = 0; j < d_model; j++)
        if (directions[j] != 0.0f)
            return cx_fail(CIRCUITS_E_RANGE,
                           "%s: directions[0] is not zero: llama.cpp adds direction.N after block N >= 1, never after "
                           "block 0", fn);
    if (model_hint && strlen(model_hint) > 4096)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: model_hint is longer than 4096 bytes", fn);
    int32_t n_dirs = n_layers - 1;
    /* sizes: header + kv + tensor infos (names of at most 21 bytes), padding, data */
    size_t head = 4 + 4 + 8 + 8;
    head += 8 + strlen("general.architecture") + 4 + 8 + strlen(CV_ARCH);
    if (model_hint) head += 8 + strlen(CV_ARCH ".model_hint") + 4 + 8 + strlen(model_hint);
    head += 8 + strlen(CV_ARCH ".layer_count") + 4 + 4;
    head += (size_t)n_dirs * (8 + 21 + 4 + 8 + 4 + 8);
    size_t padded_row = (row_bytes + 31) / 32 * 32, data;
    if (!cx_mul_size(padded_row, (size_t)n_dirs, &data) || data > SIZE_MAX - head - 64)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: %d directions of %lld floats are too large", fn, n_dirs,
                       (long long)d_model);
    wbuf w = {cx_malloc(head + 32 + data), 0, head + 32 + data};
    if (!w.p) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    put(&w, "GGUF", 4);
    put_u32(&w, 3);
    put_u64(&w, (uint64_t)n_dirs);
    put_u64(&w, model_hint ? 3 : 2);
    put_str(&w, "general.architecture");
    put_u32(&w, CX_GT_STRING);
    put_str(&w, CV_ARCH);
    if (model_hint) {
        put_str(&w, CV_ARCH ".model_hint");
        put_u32(&w, CX_GT_STRING);
        put_str(&w, model_hint);
    }
    put_str(&w, CV_ARCH ".layer_count");
    put_u32(&w, CX_GT_I32);
    put_u32(&w, (uint32_t)n_dirs);
    for (int32_t N = 1; N < n_layers; N++) {
        char name[32];
        snprintf(name, sizeof name, "direction.%d", N);
        put_str(&w, name);
        put_u32(&w, 1);
        put_u64(&w, (uint64_t)d_model);
        put_u32(&w, 0); /* GGML_TYPE_F32 */
        put_u64(&w, (uint64_t)(N - 1) * padded_row);
    }
    put_pad(&w, 32);
    for (int32_t N = 1; N < n_layers; N++) {
        const float *row = directions + (size_t)N * (size_t)d_model;
        for (int64_t j = 0; j < d_model; j++) {
            uint32_t u;
            memcpy(&u, &row[j], 4);
            put_u32(&w, u);
        }
        put_pad(&w, 32);
    }
    int rc = cx_write_atomic(path, w.p, w.len, fn);
    cx_free(w.p);
    return rc;
}
