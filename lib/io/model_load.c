/* Loading a model directory (config, safetensors) or a GGUF file (config_gguf.c, gguf.c), and
 * the mapping from stored tensors to TransformerLens-named weight views (which weights, their
 * names and where each format stores them: the tables of arch.c).
 *
 * Every weight is a strided view (circuits_tensor) with TL's shape. Where the stored tensor is
 * F32, 4-byte aligned and the view is just a re-striding of it (HF GPT-2's fused c_attn split
 * into heads, the tied W_U = wte transposed, TL-layout tensors), the view points into the
 * read-only file mapping and nothing is copied. F16/BF16 (or misaligned) tensors are
 * converted once into an owned, contiguous fp32 buffer, as are views computed from the stored
 * values (Gemma's norm weights + 1, its scaled embedding) and GPT-NeoX's interleaved q/k/v
 * biases (biases are read contiguous). A GGUF tensor of a quantized type is dequantized
 * (model/quant.h) and a llama.cpp-permuted q/k tensor put back in Hugging Face's row order in a
 * temporary fp32 copy first, from which the view is gathered the same way. */
#include "arch.h"
#include "config.h"
#include "gguf.h"
#include "quant.h"
#include "safetensors.h"
#include "stored.h"
#include "tokenizer.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Where a TL weight comes from: a stored tensor and a strided view into it. */
typedef struct source_view {
    char src[256];          /* stored tensor name */
    int src_ndim;
    int64_t src_shape[2];   /* the stored shape the config implies */
    int64_t offset;         /* in elements */
    int64_t strides[4];     /* of the TL-shaped view, in elements of the stored tensor */
    char alt[256];          /* another stored name of the tensor ("" if none) */
    int transform;          /* XF_*: computed from the stored values (then always a copy) */
    bool unpermute;         /* rows stored in llama.cpp's q/k permutation (CX_MAP_*_PERMUTED) */
} source_view;

/* XF_CONTIGUOUS: a plain copy, for views the rest of the library must see contiguous (biases are
 * read as [n, d_head] rows back to back: NeoX's interleaved q/k/v bias is gathered) */
enum { XF_NONE, XF_PLUS_ONE, XF_SCALE_SQRT_D_MODEL, XF_CONTIGUOUS };

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* ---- where each TL weight is stored ---- */

/* TransformerLens layout: stored under its own name, contiguous. */
static void tl_source(const cx_weight_entry *w, source_view *v)
{
    snprintf(v->src, sizeof v->src, "%s", w->name);
    v->src_ndim = -1; /* the stored shape must equal the TL shape */
    v->offset = 0;
    cx_contiguous_strides(w->ndim, w->shape, v->strides);
}

/* TransformerLens builds GroupedQueryAttention, whose state dict names K and V attn._W_K,
 * _W_V, _b_K, _b_V, whenever n_key_value_heads is set, also when it equals n_heads (then the
 * table in arch.c says attn.W_K, and the weight keeps that name: nothing is grouped): the
 * other spelling, stored into v->src if found. */
static cx_st_tensor *tl_grouped_name(circuits_model *m, source_view *v)
{
    char alt[sizeof v->src];
    const char *dot = strrchr(v->src, '.');
    if (!dot || dot[1] == '_' || strlen(v->src) + 2 > sizeof alt) return NULL;
    snprintf(alt, sizeof alt, "%.*s._%s", (int)(dot - v->src), v->src, dot + 1);
    cx_st_tensor *t = cx_st_find(m->files, alt);
    if (t) memcpy(v->src, alt, sizeof alt);
    return t;
}

/* Where architecture a stores w (its table in arch.c) and the TL-shaped view into it; `strip`:
 * the file stores names without a->prefix; `untied`: a tied kind's own tensor is present.
 * Returns false for a kind the architecture does not store (zeros: GPT-2's b_U). */
static bool arch_source(const cx_arch *a, const circuits_config *c, bool strip, bool untied,
                        const cx_weight_entry *w, source_view *v)
{
    const cx_weight_source *s = &a->sources[w->kind];
    if (s->map == CX_MAP_ABSENT || s->map == CX_MAP_NEVER) return false;
    const char *fmt = s->tied && !untied ? s->tied : s->name;
    size_t np = strlen(a->prefix);
    if (strip && strncmp(fmt, a->prefix, np) == 0) fmt += np;
    cx_weight_format(v->src, sizeof v->src, fmt, w->layer);
    v->alt[0] = '\0';
    if (s->alt && fmt == s->name) cx_weight_format(v->alt, sizeof v->alt, s->alt, w->layer);
    int64_t D = c->d_model, dh = c->d_head, n = w->shape[0];
    v->offset = 0;
    v->transform = s->map == CX_MAP_NORM_PLUS1 ? XF_PLUS_ONE : s->map == CX_MAP_EMBED_SCALED ? XF_SCALE_SQRT_D_MODEL : XF_NONE;
    v->unpermute = s->map == CX_MAP_PROJ_HEADS_PERMUTED || s->map == CX_MAP_BIAS_HEADS_PERMUTED;
    int64_t fused_rows = ((int64_t)c->n_heads + 2 * (int64_t)c->n_key_value_heads) * dh;
    /* where part p of a fused [Q; K; V] starts: Q has n_heads heads, K and V n_key_value_heads */
    int64_t part_row = s->part == 0 ? 0 : s->part == 1 ? (int64_t)c->n_heads * dh
                                                       : ((int64_t)c->n_heads + c->n_key_value_heads) * dh;
    switch (s->map) {
    case CX_MAP_FUSED_PROJ_HEADS:
        if (w->ndim == 3) { /* rows part_row + i·dh + h of [(n + 2 n_kv)·h, m] */
            v->offset = part_row * D;
            v->src_ndim = 2;
            v->src_shape[0] = fused_rows;
            v->src_shape[1] = D;
            v->strides[0] = dh * D;
            v->strides[1] = 1;
            v->strides[2] = D;
        } else {
            v->offset = part_row;
            v->src_ndim = 1;
            v->src_shape[0] = fused_rows;
            v->strides[0] = dh;
            v->strides[1] = 1;
        }
        break;
    case CX_MAP_PROJ_HEADS:
    case CX_MAP_PROJ_HEADS_PERMUTED:
        /* nn.Linear [(n h), m] -> [n, m, h]: element (i, m, h) at (i·dh + h)·D + m */
        v->src_ndim = 2;
        v->src_shape[0] = n * dh;
        v->src_shape[1] = D;
        v->strides[0] = dh * D;
        v->strides[1] = 1;
        v->strides[2] = D;
        break;
    case CX_MAP_BIAS_HEADS:
    case CX_MAP_BIAS_HEADS_PERMUTED:
        v->src_ndim = 1;
        v->src_shape[0] = n * dh;
        v->strides[0] = dh;
        v->strides[1] = 1;
        break;
    case CX_MAP_OUT_HEADS:
        /* o_proj [m, (n h)] -> [n, h, m]: element (i, h, m) at m·n·dh + i·dh + h */
        v->src_ndim = 2;
        v->src_shape[0] = D;
        v->src_shape[1] = n * dh;
        v->strides[0] = dh;
        v->strides[1] = 1;
        v->strides[2] = n * dh;
        break;
    case CX_MAP_NEOX_QKV:
        /* query_key_value [(i qkv h), m]: head i's part p starts at row (3i + p)·dh */
        v->offset = s->part * dh * (w->ndim == 3 ? D : 1);
        if (w->ndim == 3) {
            v->src_ndim = 2;
            v->src_shape[0] = 3 * n * dh;
            v->src_shape[1] = D;
            v->strides[0] = 3 * dh * D;
            v->strides[1] = 1;
            v->strides[2] = D;
        } else {
            v->src_ndim = 1;
            v->src_shape[0] = 3 * n * dh;
            v->strides[0] = 3 * dh;
            v->strides[1] = 1;
            v->transform = XF_CONTIGUOUS;
        }
        break;
    case CX_MAP_SAME:
    case CX_MAP_NORM_PLUS1:
    case CX_MAP_EMBED_SCALED:
        v->src_ndim = w->ndim;
        memcpy(v->src_shape, w->shape, sizeof v->src_shape);
        cx_contiguous_strides(w->ndim, w->shape, v->strides);
        break;
    case CX_MAP_TRANSPOSE:
        /* W_U [d_model, d_vocab] is lm_head.weight (or the tied wte) [d_vocab, d_model] transposed */
        v->src_ndim = 2;
        v->src_shape[0] = w->shape[1];
        v->src_shape[1] = w->shape[0];
        v->strides[0] = 1;
        v->strides[1] = w->shape[0];
        break;
    case CX_MAP_QKV:
        /* c_attn.weight [D, 3D] = [Q | K | V], each "m (i h) -> i m h": head i owns columns
         * i*dh .. i*dh+dh-1 of its third; c_attn.bias [3D] likewise */
        v->offset = s->part * D;
        if (w->ndim == 3) {
            v->src_ndim = 2;
            v->src_shape[0] = D;
            v->src_shape[1] = 3 * D;
            v->strides[0] = dh;
            v->strides[1] = 3 * D;
            v->strides[2] = 1;
        } else {
            v->src_ndim = 1;
            v->src_shape[0] = 3 * D;
            v->strides[0] = dh;
            v->strides[1] = 1;
        }
        break;
    case CX_MAP_HEADS:
        /* c_proj.weight [(i h), D] -> [i, h, D]: already head-major */
        v->src_ndim = 2;
        v->src_shape[0] = D;
        v->src_shape[1] = D;
        v->strides[0] = dh * D;
        v->strides[1] = D;
        v->strides[2] = 1;
        break;
    default:
        return false;
    }
    return true;
}

/* ---- giving back the file pages a loaded model does not read ----
 * A weight copied out of the mapping (converted at load, or rewritten by processing) leaves its
 * stored tensor's pages resident unless told otherwise: the mapped file would stay in RSS next
 * to the copies. Each tensor is released once no weight reads it in place any more, so a load's
 * peak is the copies plus the tensor being copied; a last sweep gives back the rest (headers,
 * norms folded away, tensors nothing reads). */

/* Whether a weight of m reads t in place: a zero-copy fp32 view, or a weight kept in its stored
 * dtype (every such view starts inside its tensor). */
static bool tensor_read(const circuits_model *m, const cx_st_tensor *t)
{
    const unsigned char *lo = t->data, *hi = t->data + t->nbytes;
    for (size_t i = 0; i < m->n_weights; i++) {
        const unsigned char *p = m->stored && m->stored[i].data ? m->stored[i].data
                                 : m->exclusive[i]             ? NULL
                                                               : (const unsigned char *)m->weights[i].data;
        if (p && p >= lo && p < hi) return true;
    }
    return false;
}

static void release_if_unread(circuits_model *m, const cx_st_tensor *t)
{
    if (t && !tensor_read(m, t)) cx_st_release(m->files, t->data, t->nbytes);
}

void cx_model_release_source(circuits_model *m, const void *p)
{
    const unsigned char *b = p;
    for (size_t i = 0; m->files && i < m->files->n_tensors; i++) {
        const cx_st_tensor *t = &m->files->tensors[i];
        if (b >= t->data && b < t->data + t->nbytes) {
            release_if_unread(m, t);
            return;
        }
    }
}

/* Every byte of every mapped image outside the tensors m reads in place. */
static void release_unread(circuits_model *m)
{
    cx_st_set *set = m->files;
    for (size_t i = 0; i < set->n_tensors; i++) set->tensors[i].live = tensor_read(m, &set->tensors[i]);
    for (size_t k = 0; k < set->n_maps; k++) {
        const unsigned char *at = set->maps[k].base, *end = at + set->maps[k].size;
        while (at && at < end) { /* the gap before the next live tensor */
            const cx_st_tensor *next = NULL;
            for (size_t i = 0; i < set->n_tensors; i++) {
                const cx_st_tensor *t = &set->tensors[i];
                if (t->live && t->data + t->nbytes > at && t->data < end && (!next || t->data < next->data)) next = t;
            }
            const unsigned char *stop = next ? (next->data > at ? next->data : at) : end;
            cx_st_release(set, at, (size_t)(stop - at));
            at = next ? next->data + next->nbytes : end;
        }
    }
}

/* ---- building one view ---- */

/* The stored tensor t as fp32 in a new buffer (*out): quantized GGUF types dequantized row by
 * row (model/quant.h), and the rows of a llama.cpp-permuted q/k tensor (the entries of a bias)
 * put back in Hugging Face's order. */
static int stage_fp32(const cx_st_tensor *t, const source_view *v, int64_t d_head, float **out)
{
    int64_t cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    size_t row_bytes = 0;
    if (!cx_dtype_row_bytes(t->dtype, cols, &row_bytes) || t->numel == 0) /* gguf.c checked both */
        return cx_fail(CIRCUITS_E_DTYPE, "%s: tensor '%s' cannot be read as fp32", t->file, t->name);
    int64_t rows = (int64_t)(t->numel / (size_t)cols);
    float *buf = cx_malloc(t->numel * sizeof *buf);
    if (!buf) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory converting '%s' to fp32", t->name);
    for (int64_t r = 0; r < rows; r++) cx_dequantize_row(t->dtype, t->data + (size_t)r * row_bytes, buf + r * cols, cols);
    if (v->unpermute) {
        /* a 2-D weight permutes rows of cols values, a bias single entries */
        int64_t unit = t->ndim == 1 ? 1 : cols, units = (int64_t)t->numel / unit;
        float *back = cx_malloc(t->numel * sizeof *back);
        if (!back) {
            cx_free(buf);
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory converting '%s' to fp32", t->name);
        }
        for (int64_t r = 0; r < units; r++)
            memcpy(back + r * unit, buf + cx_permuted_row(r, d_head) * unit, (size_t)unit * sizeof *back);
        cx_free(buf);
        buf = back;
    }
    *out = buf;
    return CIRCUITS_OK;
}

/* The stored tensor's shape is the one the config implies for the view. */
static int check_shape(const cx_weight_entry *w, const source_view *v, const cx_st_tensor *t)
{
    char got[96], want[96];
    const int64_t *src_shape = v->src_ndim < 0 ? w->shape : v->src_shape;
    int src_ndim = v->src_ndim < 0 ? w->ndim : v->src_ndim;
    bool same = t->ndim == src_ndim;
    for (int i = 0; same && i < src_ndim; i++) same = t->shape[i] == src_shape[i];
    if (same) return CIRCUITS_OK;
    shape_str(got, sizeof got, t->ndim, t->shape);
    shape_str(want, sizeof want, src_ndim, src_shape);
    return cx_fail(CIRCUITS_E_SHAPE, "%s: tensor '%s' has shape %s, but the config implies %s", t->file, t->name, got,
                   want);
}

static int make_view(circuits_model *m, const cx_weight_entry *w, const source_view *v, cx_st_tensor *t,
                     circuits_tensor *out)
{
    bool plain = t->dtype == CX_DT_F32 || t->dtype == CX_DT_F16 || t->dtype == CX_DT_BF16;
    if (!plain && cx_dtype_public(t->dtype) < 0)
        return cx_fail(CIRCUITS_E_DTYPE, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                       t->file, t->name, cx_dtype_name(t->dtype));
    int rc = check_shape(w, v, t);
    if (rc) return rc;
    t->used = true;
    memset(out, 0, sizeof *out);
    out->ndim = w->ndim;
    memcpy(out->shape, w->shape, sizeof out->shape);
    out->head = -1;
    out->head_axis = -1;
    if (t->dtype == CX_DT_F32 && ((uintptr_t)t->data % sizeof(float)) == 0 && v->transform == XF_NONE &&
        !v->unpermute) {
        out->data = (float *)(uintptr_t)t->data + v->offset; /* in place, read-only mapping */
        memcpy(out->strides, v->strides, sizeof out->strides);
        return CIRCUITS_OK;
    }
    /* quantized or permuted: a temporary fp32 copy of the stored tensor to gather from */
    float *staged = NULL;
    if ((!plain || v->unpermute) && (rc = stage_fp32(t, v, m->cfg.d_head, &staged))) return rc;
    size_t numel = 1;
    for (int i = 0; i < w->ndim; i++) numel *= (size_t)w->shape[i];
    /* a view that is the whole stored tensor in its own order keeps the staged copy itself */
    int64_t contiguous[4];
    cx_contiguous_strides(w->ndim, w->shape, contiguous);
    bool identity = staged && v->offset == 0 && numel == t->numel;
    for (int i = 0; identity && i < w->ndim; i++) identity = v->strides[i] == contiguous[i];
    /* Convert to an owned contiguous fp32 buffer, gathering through the view. */
    float *buf = identity ? staged : cx_malloc(numel * sizeof *buf);
    if (identity) staged = NULL; /* buf now: the model's, already in place */
    if (!buf || cx_model_own(m, buf)) { /* cx_model_own frees buf when it fails */
        cx_free(staged);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory converting '%s' to fp32", t->name);
    }
    m->exclusive[out - m->weights] = 1;
    int64_t sh[4] = {1, 1, 1, 1}, st[4] = {0, 0, 0, 0};
    for (int i = 0; i < w->ndim; i++) {
        sh[4 - w->ndim + i] = w->shape[i];
        st[4 - w->ndim + i] = v->strides[i];
    }
    size_t k = 0;
    for (int64_t a = 0; !identity && a < sh[0]; a++)
        for (int64_t b = 0; b < sh[1]; b++)
            for (int64_t c = 0; c < sh[2]; c++)
                for (int64_t d = 0; d < sh[3]; d++) {
                    size_t at = (size_t)(v->offset + a * st[0] + b * st[1] + c * st[2] + d * st[3]);
                    buf[k++] = staged ? staged[at] : cx_st_read_f32(t, at);
                }
    cx_free(staged);
    /* as convert_gemma_weights computes them: w.float() + 1, and W_E * torch.tensor(d_model**0.5,
     * dtype=float32), both in fp32 */
    if (v->transform == XF_PLUS_ONE)
        for (size_t i = 0; i < numel; i++) buf[i] += 1.0f;
    else if (v->transform == XF_SCALE_SQRT_D_MODEL)
        for (size_t i = 0; i < numel; i++) buf[i] *= (float)sqrt((double)m->cfg.d_model);
    out->data = buf;
    cx_contiguous_strides(w->ndim, w->shape, out->strides);
    return CIRCUITS_OK;
}

/* keep_stored_dtype: weight i kept as stored tensor t (a cx_qmat, model/stored.c) where its
 * layout allows; *kept false: make_view builds the fp32 view as without the option. */
static int make_stored(circuits_model *m, const cx_arch *a, size_t i, const cx_weight_entry *w, cx_st_tensor *t,
                       bool *kept)
{
    /* TransformerLens-layout files (no table) store W_E as is; their other matrices are [in, out] */
    int map = a->sources ? (int)a->sources[w->kind].map : CX_MAP_SAME, part = a->sources ? a->sources[w->kind].part : 0;
    *kept = false;
    if (!m->keep_stored_dtype) return CIRCUITS_OK;
    return cx_stored_make(m, i, (int)w->kind, w->ndim, w->shape, map, part, t, kept);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int join(char *buf, size_t n, const char *dir, const char *file)
{
    int len = snprintf(buf, n, "%s/%s", dir, file);
    if (len < 0 || (size_t)len >= n) return cx_fail(CIRCUITS_E_IO, "path too long: %s/%s", dir, file);
    return CIRCUITS_OK;
}

static int open_weights(const char *dir, cx_st_set **files, cx_st_mode mode)
{
    char path[4096];
    int rc = join(path, sizeof path, dir, "model.safetensors");
    if (rc) return rc;
    if (file_exists(path)) return cx_st_open(files, path, mode);
    if ((rc = join(path, sizeof path, dir, "model.safetensors.index.json"))) return rc;
    if (file_exists(path)) return cx_st_open_index(files, dir, path, mode);
    return cx_fail(CIRCUITS_E_IO, "%s: no model.safetensors or model.safetensors.index.json", dir);
}

static int build_weights(circuits_model *m, const char *dir, const cx_arch *a, const cx_hf_extra *hf_extra, bool gguf);
static int load_gguf(circuits_model *m, const char *path, cx_st_mode mode);

/* Records the files that decide m's weights: config (NULL for GGUF) and every file m->files holds. */
static int record_sources(circuits_model *m, const char *config)
{
    size_t n = (config ? 1 : 0) + m->files->n_maps;
    m->src_files = cx_calloc(n, sizeof *m->src_files);
    m->src_sha256 = cx_calloc(n, 65);
    if (!m->src_files || !m->src_sha256) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading a model");
    for (size_t i = 0; i < n; i++) {
        const char *p = config && i == 0 ? config : m->files->maps[i - (config ? 1 : 0)].path;
        if (!(m->src_files[i] = cx_strdup(p))) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading a model");
        m->n_src_files = i + 1;
    }
    return CIRCUITS_OK;
}

static int load_into(circuits_model *m, const char *dir, cx_st_mode mode)
{
    char path[4096];
    cx_hf_extra hf = {0};
    int rc;
    struct stat st;
    /* a regular file: a GGUF model (a directory keeps its files apart) */
    if (stat(dir, &st) == 0 && S_ISREG(st.st_mode) && cx_gguf_is_file(dir)) return load_gguf(m, dir, mode);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cx_fail(CIRCUITS_E_IO, "%s is not a model directory or a GGUF file", dir);
    if ((rc = join(path, sizeof path, dir, "tl_config.json"))) return rc;
    if (file_exists(path)) {
        rc = cx_config_load_tl(path, &m->cfg);
    } else {
        if ((rc = join(path, sizeof path, dir, "config.json"))) return rc;
        if (!file_exists(path))
            return cx_fail(CIRCUITS_E_IO, "%s: neither tl_config.json nor config.json found", dir);
        rc = cx_config_load_hf(path, &m->cfg, &hf);
    }
    if (rc) return rc;
    if ((rc = open_weights(dir, &m->files, mode))) return rc;
    if ((rc = build_weights(m, dir, cx_arch_of(&m->cfg), &hf, false))) return rc;
    if ((rc = record_sources(m, path))) return rc;
    return cx_tokenizer_load_optional(&m->tokenizer, dir);
}

/* The weight views of m (config read, files open) through architecture a's table; `dir`
 * names the model in messages; gguf: attention biases may be absent (zeros, as llama.cpp reads
 * them as optional). */
static int build_weights(circuits_model *m, const char *dir, const cx_arch *a, const cx_hf_extra *hf_extra, bool gguf)
{
    const cx_hf_extra hf = *hf_extra;
    int rc;
    const circuits_config *c = &m->cfg;
    bool strip = false, untied = true;
    if (a->sources) {
        strip = !cx_st_find(m->files, a->sources[CX_W_EMBED].name);
        const cx_weight_source *u = &a->sources[CX_W_U];
        untied = cx_st_find(m->files, u->name) || (u->alt && cx_st_find(m->files, u->alt));
        if (!untied && !hf.tie_word_embeddings)
            return cx_fail(CIRCUITS_E_TENSOR_MISSING, "%s: tie_word_embeddings is false but there is no %s", dir,
                           u->name);
    }
    cx_weight_entry *specs = cx_calloc(cx_weight_list(c, NULL), sizeof *specs);
    m->layers = cx_calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!specs || !m->layers) {
        cx_free(specs);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", dir);
    }
    size_t n = cx_weight_list(c, specs);
    m->weights = cx_calloc(n, sizeof *m->weights);
    m->exclusive = cx_calloc(n, sizeof *m->exclusive);
    m->kind = cx_calloc(n, sizeof *m->kind);
    if (!m->weights || !m->exclusive || !m->kind) {
        cx_free(specs);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", dir);
    }
    /* One shared zero buffer backs every absent bias (b_U of GPT-2, biases of bias-free files);
     * allocated on first need, after the shapes before it have been checked. */
    float *zeros = NULL;
    cx_st_tensor *copied = NULL; /* the last tensor a view was copied from, released when done */
    for (size_t i = 0; i < n; i++) {
        const cx_weight_entry *w = &specs[i];
        unsigned flags = cx_weight_kinds[w->kind].flags;
        circuits_tensor *out = &m->weights[i];
        source_view v;
        memset(&v, 0, sizeof v);
        bool has_src = a->sources ? arch_source(a, c, strip, untied, w, &v) : (tl_source(w, &v), true);
        if (hf.absent & (1u << w->kind)) has_src = false; /* the config says it is not stored */
        cx_st_tensor *t = has_src ? cx_st_find(m->files, v.src) : NULL;
        if (!t && has_src && v.alt[0]) t = cx_st_find(m->files, v.alt);
        if (!t && !a->sources && (flags & CX_WF_KV)) t = tl_grouped_name(m, &v);
        bool attn_bias = w->kind == CX_B_Q || w->kind == CX_B_K || w->kind == CX_B_V || w->kind == CX_B_O;
        if (copied && copied != t) { /* the views of a tensor follow each other (W_Q, W_K, W_V of c_attn) */
            release_if_unread(m, copied);
            copied = NULL;
        }
        if (t) {
            bool kept = false;
            rc = make_stored(m, a, i, w, t, &kept);
            if (!rc && !kept) rc = make_view(m, w, &v, t, out);
            if (!rc && m->exclusive[i]) copied = t;
        } else if (!has_src || (!a->sources && (flags & CX_WF_BIAS)) || (gguf && attn_bias)) {
            if (!zeros) {
                size_t zlen = (size_t)c->d_model;
                if ((size_t)c->d_vocab_out > zlen) zlen = (size_t)c->d_vocab_out;
                if ((size_t)c->d_mlp > zlen) zlen = (size_t)c->d_mlp;
                if ((size_t)c->n_heads * (size_t)c->d_head > zlen) zlen = (size_t)c->n_heads * (size_t)c->d_head;
                zeros = cx_calloc(zlen, sizeof *zeros);
                if (!zeros || cx_model_own(m, zeros)) {
                    rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", dir);
                    break;
                }
            }
            memset(out, 0, sizeof *out);
            out->ndim = w->ndim;
            memcpy(out->shape, w->shape, sizeof out->shape);
            cx_contiguous_strides(w->ndim, w->shape, out->strides);
            out->head = -1;
            out->data = zeros;
            rc = CIRCUITS_OK;
        } else {
            rc = cx_fail(CIRCUITS_E_TENSOR_MISSING, "%s: required tensor '%s' (for %s) is missing", dir, v.src,
                         w->name);
        }
        if (!rc && !(out->name = cx_strdup(w->name)))
            rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", dir);
        if (rc) break;
        m->n_weights++;
        m->kind[i] = (uint8_t)w->kind;
        out->layer = w->layer;
        out->head_axis = flags & CX_WF_HEADS ? 0 : -1;
    }
    cx_free(specs);
    if (rc) return rc;
    release_if_unread(m, copied);
    for (size_t i = 0; i < m->files->n_tensors; i++) {
        cx_st_tensor *t = &m->files->tensors[i];
        if (t->used || a->ignorable(t->name)) continue;
        return cx_fail(CIRCUITS_E_TENSOR_UNEXPECTED, "%s: tensor '%s' has no place in this %s model (config: %d layers%s)",
                       t->file, t->name, a->label, c->n_layers, c->attn_only ? ", attention-only" : "");
    }
    cx_model_link(m);
    return CIRCUITS_OK;
}

/* A GGUF file: its metadata gives the config (config_gguf.c) and the tokenizer, its tensors the
 * weights through the architecture's GGUF table (arch.c): fp32 views, or with keep_stored_dtype
 * the matrices kept in the file's types (make_stored). */
static int load_gguf(circuits_model *m, const char *path, cx_st_mode mode)
{
    cx_gguf g;
    cx_hf_extra hf;
    int rc = cx_gguf_open(&m->files, &g, path, mode);
    if (rc) return rc;
    rc = cx_config_from_gguf(&g, m->files, &m->cfg, &hf);
    if (!rc) rc = build_weights(m, path, cx_arch_gguf_of(&m->cfg), &hf, true);
    if (!rc) rc = record_sources(m, NULL);
    /* the tokenizer of the same file, when it has one */
    if (!rc && cx_gguf_find(&g, "tokenizer.ggml.model")) rc = cx_tok_from_gguf(&m->tokenizer, &g);
    cx_gguf_free(&g);
    return rc;
}

void circuits_load_options_init(circuits_load_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    /* TransformerLens from_pretrained's defaults */
    opts->fold_ln = 1;
    opts->center_writing_weights = 1;
    opts->center_unembed = 1;
    opts->fold_value_biases = 1;
    opts->refactor_factored_attn_matrices = 0;
    opts->read_into_memory = 0; /* map the files */
}

int circuits_model_load(circuits_model **out, const char *path, const circuits_load_options *opts)
{
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_load: out is NULL");
    *out = NULL;
    if (!path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_load: path is NULL");
    circuits_load_options o;
    circuits_load_options_init(&o);
    /* the published sizes (docs/abi.md): 0.1-0.2.0's, then 0.3.0's (read_into_memory). Literal
     * sizes, as released: a later field's offset need not equal an older sizeof (tail padding). */
    static const size_t versions[] = {24, 28, 32};
    _Static_assert(sizeof(circuits_load_options) == 32, "a new circuits_load_options version: list its size here");
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), "circuits_model_load"))) return rc;
    const int32_t flags[] = {o.fold_ln, o.center_writing_weights, o.center_unembed, o.fold_value_biases,
                             o.refactor_factored_attn_matrices};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (flags[i] != 0 && flags[i] != 1)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_load: processing flags must be 0 or 1");
    if (o.read_into_memory != 0 && o.read_into_memory != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_load: read_into_memory %d must be 0 or 1",
                       (int)o.read_into_memory);
    if (o.keep_stored_dtype != 0 && o.keep_stored_dtype != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_load: keep_stored_dtype %d must be 0 or 1",
                       (int)o.keep_stored_dtype);
    circuits_model *m = cx_calloc(1, sizeof *m);
    if (!m) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", path);
    m->keep_stored_dtype = o.keep_stored_dtype == 1;
    m->load_opts = o;
    rc = load_into(m, path, o.read_into_memory ? CX_ST_READ : CX_ST_MAP);
    if (!rc) rc = cx_process_weights(m, &o);
    if (!rc) release_unread(m);
    if (rc) {
        circuits_model_free(m);
        return rc;
    }
    *out = m;
    return CIRCUITS_OK;
}
