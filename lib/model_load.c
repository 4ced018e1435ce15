/* Loading a model directory: config, safetensors, and the mapping from stored tensors to
 * TransformerLens-named weight views.
 *
 * Every weight is a strided view (circuits_tensor) with TL's shape. Where the stored tensor is
 * F32, 4-byte aligned and the view is just a re-striding of it (HF GPT-2's fused c_attn split
 * into heads, the tied W_U = wte transposed, TL-layout tensors), the view points into the
 * read-only file mapping and nothing is copied. F16/BF16 (or misaligned) tensors are
 * converted once into an owned, contiguous fp32 buffer. */
#include "config.h"
#include "safetensors.h"
#include "tokenizer.h"

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
} source_view;

typedef struct weight_spec {
    char name[96];          /* TL name */
    int ndim;
    int64_t shape[4];
    bool bias;              /* may be absent in a TL-layout file (then zeros, as TL fills them) */
} weight_spec;

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i];
    }
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int cx_model_own(circuits_model *m, void *p)
{
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 16;
        void **o = cx_realloc(m->owned, cap * sizeof *o);
        if (!o) {
            cx_free(p);
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading the model");
        }
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return CIRCUITS_OK;
}

/* ---- the list of TL weights a config implies ---- */

static size_t add_spec(weight_spec *specs, size_t n, const char *name, bool bias, int ndim, int64_t d0,
                       int64_t d1, int64_t d2)
{
    weight_spec *s = &specs[n];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->shape[2] = d2;
    s->bias = bias;
    return n + 1;
}

static size_t max_specs(const circuits_config *c) { return 6 + (size_t)c->n_layers * 20; }

/* Fills specs in the order TransformerLens's state_dict lists them; returns the count. */
static size_t build_specs(const circuits_config *c, weight_spec *sp)
{
    int64_t D = c->d_model, H = c->n_heads, dh = c->d_head, M = c->d_mlp;
    bool ln = c->normalization_type == CIRCUITS_NORM_LN;
    char nm[96];
    size_t n = 0;
    n = add_spec(sp, n, "embed.W_E", false, 2, c->d_vocab, D, 0);
    n = add_spec(sp, n, "pos_embed.W_pos", false, 2, c->n_ctx, D, 0);
    for (int l = 0; l < c->n_layers; l++) {
#define NM(suffix) (snprintf(nm, sizeof nm, "blocks.%d.%s", l, suffix), nm)
        if (ln) {
            n = add_spec(sp, n, NM("ln1.w"), false, 1, D, 0, 0);
            n = add_spec(sp, n, NM("ln1.b"), true, 1, D, 0, 0);
        }
        if (ln && !c->attn_only) {
            n = add_spec(sp, n, NM("ln2.w"), false, 1, D, 0, 0);
            n = add_spec(sp, n, NM("ln2.b"), true, 1, D, 0, 0);
        }
        n = add_spec(sp, n, NM("attn.W_Q"), false, 3, H, D, dh);
        n = add_spec(sp, n, NM("attn.W_O"), false, 3, H, dh, D);
        n = add_spec(sp, n, NM("attn.b_Q"), true, 2, H, dh, 0);
        n = add_spec(sp, n, NM("attn.b_O"), true, 1, D, 0, 0);
        n = add_spec(sp, n, NM("attn.W_K"), false, 3, H, D, dh);
        n = add_spec(sp, n, NM("attn.W_V"), false, 3, H, D, dh);
        n = add_spec(sp, n, NM("attn.b_K"), true, 2, H, dh, 0);
        n = add_spec(sp, n, NM("attn.b_V"), true, 2, H, dh, 0);
        if (!c->attn_only) {
            n = add_spec(sp, n, NM("mlp.W_in"), false, 2, D, M, 0);
            n = add_spec(sp, n, NM("mlp.b_in"), true, 1, M, 0, 0);
            n = add_spec(sp, n, NM("mlp.W_out"), false, 2, M, D, 0);
            n = add_spec(sp, n, NM("mlp.b_out"), true, 1, D, 0, 0);
            if (c->act_fn == CIRCUITS_ACT_SOLU_LN && ln) {
                n = add_spec(sp, n, NM("mlp.ln.w"), false, 1, M, 0, 0);
                n = add_spec(sp, n, NM("mlp.ln.b"), true, 1, M, 0, 0);
            }
        }
#undef NM
    }
    if (ln) {
        n = add_spec(sp, n, "ln_final.w", false, 1, D, 0, 0);
        n = add_spec(sp, n, "ln_final.b", true, 1, D, 0, 0);
    }
    n = add_spec(sp, n, "unembed.W_U", false, 2, D, c->d_vocab_out, 0);
    n = add_spec(sp, n, "unembed.b_U", true, 1, c->d_vocab_out, 0, 0);
    return n;
}

/* ---- where each TL weight is stored ---- */

/* TransformerLens layout: stored under its own name, contiguous. */
static void tl_source(const weight_spec *w, source_view *v)
{
    snprintf(v->src, sizeof v->src, "%s", w->name);
    v->src_ndim = -1; /* the stored shape must equal the TL shape */
    v->offset = 0;
    contiguous_strides(w->ndim, w->shape, v->strides);
}

static void src1(source_view *v, const char *prefix, int layer, const char *suffix, int64_t d0)
{
    if (layer >= 0) snprintf(v->src, sizeof v->src, "%sh.%d.%s", prefix, layer, suffix);
    else snprintf(v->src, sizeof v->src, "%s%s", prefix, suffix);
    v->src_ndim = 1;
    v->src_shape[0] = d0;
    v->offset = 0;
    v->strides[0] = 1;
}

static void src2(source_view *v, const char *prefix, int layer, const char *suffix, int64_t d0, int64_t d1)
{
    src1(v, prefix, layer, suffix, d0);
    v->src_ndim = 2;
    v->src_shape[1] = d1;
    v->strides[0] = d1;
    v->strides[1] = 1;
}

/* Hugging Face GPT-2 (Conv1D weights stored [in, out]), as TransformerLens's convert_gpt2_weights
 * maps them. Returns false for a TL name GPT-2 has no tensor for (b_U: zeros). */
static bool hf_source(const circuits_config *c, const char *prefix, bool has_lm_head, const weight_spec *w,
                      source_view *v)
{
    int64_t D = c->d_model, H = c->n_heads, dh = c->d_head, M = c->d_mlp, V = c->d_vocab;
    const char *n = w->name;
    if (strcmp(n, "embed.W_E") == 0) { src2(v, prefix, -1, "wte.weight", V, D); return true; }
    if (strcmp(n, "pos_embed.W_pos") == 0) { src2(v, prefix, -1, "wpe.weight", c->n_ctx, D); return true; }
    if (strcmp(n, "ln_final.w") == 0) { src1(v, prefix, -1, "ln_f.weight", D); return true; }
    if (strcmp(n, "ln_final.b") == 0) { src1(v, prefix, -1, "ln_f.bias", D); return true; }
    if (strcmp(n, "unembed.b_U") == 0) return false;
    if (strcmp(n, "unembed.W_U") == 0) {
        /* W_U [d_model, d_vocab] is lm_head.weight (or the tied wte) [d_vocab, d_model] transposed */
        if (has_lm_head) src2(v, "", -1, "lm_head.weight", V, D);
        else src2(v, prefix, -1, "wte.weight", V, D);
        v->strides[0] = 1;
        v->strides[1] = D;
        return true;
    }
    int l;
    char part[64];
    if (sscanf(n, "blocks.%d.%63s", &l, part) != 2) return false;
    if (strcmp(part, "ln1.w") == 0) src1(v, prefix, l, "ln_1.weight", D);
    else if (strcmp(part, "ln1.b") == 0) src1(v, prefix, l, "ln_1.bias", D);
    else if (strcmp(part, "ln2.w") == 0) src1(v, prefix, l, "ln_2.weight", D);
    else if (strcmp(part, "ln2.b") == 0) src1(v, prefix, l, "ln_2.bias", D);
    else if (strncmp(part, "attn.W_", 7) == 0 && strchr("QKV", part[7]) && part[8] == '\0') {
        /* c_attn.weight [D, 3D] = [Q | K | V], each "m (i h) -> i m h": head i owns columns
         * i*dh .. i*dh+dh-1 of its third. */
        src2(v, prefix, l, "attn.c_attn.weight", D, 3 * D);
        v->offset = (part[7] == 'Q' ? 0 : part[7] == 'K' ? 1 : 2) * D;
        v->strides[0] = dh;
        v->strides[1] = 3 * D;
        v->strides[2] = 1;
    } else if (strncmp(part, "attn.b_", 7) == 0 && strchr("QKV", part[7]) && part[8] == '\0') {
        src1(v, prefix, l, "attn.c_attn.bias", 3 * D);
        v->offset = (part[7] == 'Q' ? 0 : part[7] == 'K' ? 1 : 2) * D;
        v->strides[0] = dh;
        v->strides[1] = 1;
    } else if (strcmp(part, "attn.W_O") == 0) {
        /* c_proj.weight [(i h), D] -> [i, h, D]: already head-major */
        src2(v, prefix, l, "attn.c_proj.weight", D, D);
        v->strides[0] = dh * D;
        v->strides[1] = D;
        v->strides[2] = 1;
        (void)H;
    } else if (strcmp(part, "attn.b_O") == 0) src1(v, prefix, l, "attn.c_proj.bias", D);
    else if (strcmp(part, "mlp.W_in") == 0) src2(v, prefix, l, "mlp.c_fc.weight", D, M);
    else if (strcmp(part, "mlp.b_in") == 0) src1(v, prefix, l, "mlp.c_fc.bias", M);
    else if (strcmp(part, "mlp.W_out") == 0) src2(v, prefix, l, "mlp.c_proj.weight", M, D);
    else if (strcmp(part, "mlp.b_out") == 0) src1(v, prefix, l, "mlp.c_proj.bias", D);
    else return false;
    return true;
}

/* ---- building one view ---- */

static int make_view(circuits_model *m, const weight_spec *w, const source_view *v, cx_st_tensor *t,
                     circuits_tensor *out)
{
    char got[96], want[96];
    if (t->dtype != CX_DT_F32 && t->dtype != CX_DT_F16 && t->dtype != CX_DT_BF16)
        return cx_fail(CIRCUITS_E_DTYPE, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                       t->file, t->name, cx_dtype_name(t->dtype));
    const int64_t *src_shape = v->src_ndim < 0 ? w->shape : v->src_shape;
    int src_ndim = v->src_ndim < 0 ? w->ndim : v->src_ndim;
    bool same = t->ndim == src_ndim;
    for (int i = 0; same && i < src_ndim; i++) same = t->shape[i] == src_shape[i];
    if (!same) {
        shape_str(got, sizeof got, t->ndim, t->shape);
        shape_str(want, sizeof want, src_ndim, src_shape);
        return cx_fail(CIRCUITS_E_SHAPE, "%s: tensor '%s' has shape %s, but the config implies %s", t->file,
                       t->name, got, want);
    }
    t->used = true;
    memset(out, 0, sizeof *out);
    out->ndim = w->ndim;
    memcpy(out->shape, w->shape, sizeof out->shape);
    out->head = -1;
    out->head_axis = -1;
    if (t->dtype == CX_DT_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        out->data = (float *)(uintptr_t)t->data + v->offset; /* in place, read-only mapping */
        memcpy(out->strides, v->strides, sizeof out->strides);
        return CIRCUITS_OK;
    }
    /* Convert to an owned contiguous fp32 buffer, gathering through the view. */
    size_t numel = 1;
    for (int i = 0; i < w->ndim; i++) numel *= (size_t)w->shape[i];
    float *buf = cx_malloc(numel * sizeof *buf);
    if (!buf || cx_model_own(m, buf))
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory converting '%s' to fp32", t->name);
    m->exclusive[out - m->weights] = 1;
    int64_t sh[4] = {1, 1, 1, 1}, st[4] = {0, 0, 0, 0};
    for (int i = 0; i < w->ndim; i++) {
        sh[4 - w->ndim + i] = w->shape[i];
        st[4 - w->ndim + i] = v->strides[i];
    }
    size_t k = 0;
    for (int64_t a = 0; a < sh[0]; a++)
        for (int64_t b = 0; b < sh[1]; b++)
            for (int64_t c = 0; c < sh[2]; c++)
                for (int64_t d = 0; d < sh[3]; d++)
                    buf[k++] = cx_st_read_f32(t, (size_t)(v->offset + a * st[0] + b * st[1] + c * st[2] + d * st[3]));
    out->data = buf;
    contiguous_strides(w->ndim, w->shape, out->strides);
    return CIRCUITS_OK;
}

/* Sets the layer/head_axis fields from the TL name. */
static void describe(circuits_tensor *t)
{
    int l;
    t->layer = sscanf(t->name, "blocks.%d.", &l) == 1 ? l : -1;
    const char *dot = strrchr(t->name, '.');
    t->head_axis = dot && (strcmp(dot, ".W_Q") == 0 || strcmp(dot, ".W_K") == 0 || strcmp(dot, ".W_V") == 0 ||
                           strcmp(dot, ".W_O") == 0 || strcmp(dot, ".b_Q") == 0 || strcmp(dot, ".b_K") == 0 ||
                           strcmp(dot, ".b_V") == 0)
                       ? 0
                       : -1;
}

/* HF GPT-2 buffers that are not weights (causal mask constants in older saves). */
static bool hf_ignorable(const char *name)
{
    const char *p = strstr(name, ".attn.");
    return p && (strcmp(p, ".attn.bias") == 0 || strcmp(p, ".attn.masked_bias") == 0);
}

void cx_model_link(circuits_model *m)
{
    m->W_E = m->W_pos = m->ln_final_w = m->ln_final_b = m->W_U = m->b_U = NULL;
    memset(m->layers, 0, (size_t)m->cfg.n_layers * sizeof *m->layers);
    for (size_t i = 0; i < m->n_weights; i++) {
        circuits_tensor *t = &m->weights[i];
        const char *n = t->name;
        if (strcmp(n, "embed.W_E") == 0) m->W_E = t;
        else if (strcmp(n, "pos_embed.W_pos") == 0) m->W_pos = t;
        else if (strcmp(n, "ln_final.w") == 0) m->ln_final_w = t;
        else if (strcmp(n, "ln_final.b") == 0) m->ln_final_b = t;
        else if (strcmp(n, "unembed.W_U") == 0) m->W_U = t;
        else if (strcmp(n, "unembed.b_U") == 0) m->b_U = t;
        else {
            cx_layer_weights *L = &m->layers[t->layer];
            const char *p = strchr(n + 7, '.') + 1; /* after "blocks.N." */
            static const struct { const char *suffix; size_t off; } map[] = {
#define F(s, f) {s, offsetof(cx_layer_weights, f)}
                F("ln1.w", ln1_w), F("ln1.b", ln1_b), F("ln2.w", ln2_w), F("ln2.b", ln2_b),
                F("attn.W_Q", W_Q), F("attn.W_K", W_K), F("attn.W_V", W_V), F("attn.W_O", W_O),
                F("attn.b_Q", b_Q), F("attn.b_K", b_K), F("attn.b_V", b_V), F("attn.b_O", b_O),
                F("mlp.W_in", W_in), F("mlp.b_in", b_in), F("mlp.W_out", W_out), F("mlp.b_out", b_out),
                F("mlp.ln.w", mlp_ln_w), F("mlp.ln.b", mlp_ln_b),
#undef F
            };
            for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
                if (strcmp(p, map[k].suffix) == 0)
                    *(const circuits_tensor **)((char *)L + map[k].off) = t;
        }
    }
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

static int load_into(circuits_model *m, const char *dir, cx_st_mode mode)
{
    char path[4096];
    cx_hf_extra hf = {0};
    int rc;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cx_fail(CIRCUITS_E_IO, "%s is not a model directory", dir);
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

    const circuits_config *c = &m->cfg;
    bool hf_fmt = c->format == CIRCUITS_FORMAT_HF_GPT2;
    const char *prefix = "";
    bool has_lm_head = false;
    if (hf_fmt) {
        prefix = cx_st_find(m->files, "transformer.wte.weight") ? "transformer." : "";
        has_lm_head = cx_st_find(m->files, "lm_head.weight") != NULL;
        if (!has_lm_head && !hf.tie_word_embeddings)
            return cx_fail(CIRCUITS_E_TENSOR_MISSING,
                           "%s: tie_word_embeddings is false but there is no lm_head.weight", dir);
    }
    weight_spec *specs = cx_calloc(max_specs(c), sizeof *specs);
    m->layers = cx_calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!specs || !m->layers) {
        cx_free(specs);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", dir);
    }
    size_t n = build_specs(c, specs);
    m->weights = cx_calloc(n, sizeof *m->weights);
    m->exclusive = cx_calloc(n, sizeof *m->exclusive);
    if (!m->weights || !m->exclusive) {
        cx_free(specs);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", dir);
    }
    /* One shared zero buffer backs every absent bias (b_U of GPT-2, biases of bias-free files);
     * allocated on first need, after the shapes before it have been checked. */
    float *zeros = NULL;
    for (size_t i = 0; i < n; i++) {
        const weight_spec *w = &specs[i];
        circuits_tensor *out = &m->weights[i];
        source_view v;
        memset(&v, 0, sizeof v);
        bool has_src = hf_fmt ? hf_source(c, prefix, has_lm_head, w, &v) : (tl_source(w, &v), true);
        cx_st_tensor *t = has_src ? cx_st_find(m->files, v.src) : NULL;
        if (t) {
            rc = make_view(m, w, &v, t, out);
        } else if (!has_src || (!hf_fmt && w->bias)) {
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
            contiguous_strides(w->ndim, w->shape, out->strides);
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
        describe(out);
    }
    cx_free(specs);
    if (rc) return rc;
    for (size_t i = 0; i < m->files->n_tensors; i++) {
        cx_st_tensor *t = &m->files->tensors[i];
        if (t->used || (hf_fmt && hf_ignorable(t->name))) continue;
        /* TransformerLens buffers, if a state dict was saved with them */
        if (!hf_fmt && (strstr(t->name, ".IGNORE") || strstr(t->name, ".mask") || strstr(t->name, "rotary_")))
            continue;
        return cx_fail(CIRCUITS_E_TENSOR_UNEXPECTED, "%s: tensor '%s' has no place in this %s model (config: %d layers%s)",
                       t->file, t->name, hf_fmt ? "GPT-2" : "TransformerLens", c->n_layers,
                       c->attn_only ? ", attention-only" : "");
    }
    cx_model_link(m);
    return cx_tokenizer_load_optional(&m->tokenizer, dir);
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
    /* the published sizes: 0.2.0's (before read_into_memory), then this one's */
    static const size_t versions[] = {offsetof(circuits_load_options, read_into_memory), sizeof o};
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
    circuits_model *m = cx_calloc(1, sizeof *m);
    if (!m) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", path);
    rc = load_into(m, path, o.read_into_memory ? CX_ST_READ : CX_ST_MAP);
    if (!rc) rc = cx_process_weights(m, &o);
    if (rc) {
        circuits_model_free(m);
        return rc;
    }
    *out = m;
    return CIRCUITS_OK;
}
