/* Hostile GGUF model files (lib/io/gguf.c, io/config_gguf.c, io/model_load.c): a small valid
 * llama file is written (tests/gguf_write.h), then one field of it is broken per check; each must
 * fail with its own status and message (docs/errors.md, "GGUF model files"), leave no model and
 * not crash. Positive controls: the valid file (F32, and with Q8_0 matrices) loads and runs,
 * mapped and read into memory, as version 2 and 3, with keep_stored_dtype too.
 * Usage: test_gguf_bad [-v] (-v prints the catalogue rows), or test_gguf_bad --write-seeds DIR:
 * writes valid files (ok.gguf, ok_q8.gguf, ok_rope_freqs.gguf) into DIR, the fuzz seeds of
 * tests/fuzz/fuzz_gguf_model.c. */
#include "catalogue.h"
#include "gguf_write.h"

#include <math.h>
#include <stdbool.h>
#include <unistd.h>

enum { D = 32, NH = 4, NKV = 2, DH = 8, F = 64, V = 32, CTX = 16 };

static char g_root[] = "/tmp/circuits-gguf-bad-XXXXXX";
static char sentinel_byte;
#define SENTINEL ((circuits_model *)(void *)&sentinel_byte)

static float vals[V * D * 4];

/* attn_q's values for the F16 check: n/256, exact in F16 and F32 */
static float q_vals[D * NH * DH];
static uint16_t q_half[D * NH * DH];

/* the F16 bits of a float that F16 holds exactly (0 or a normal number) */
static uint16_t to_half(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) == 0) return (uint16_t)(u >> 16);
    return (uint16_t)(((u >> 16) & 0x8000u) | ((((u >> 23) & 0xffu) - 112u) << 10) | ((u >> 13) & 0x3ffu));
}

/* Q8_0 blocks of ffn_up ([F, D]: F rows of one 32-value block): scale 1/16, quants varying */
static uint8_t q8[F * 34];

typedef struct variant {
    bool quant;                       /* token_embd and ffn_up as Q8_0 */
    int q_dtype;                      /* 1: attn_q from q_vals as F16, 2: the same values as F32 */
    const char *arch;                 /* general.architecture (NULL: "llama"; "" : absent) */
    bool no_block_count, dup_block_count, alignment_48, alignment_f32, eps_string;
    bool alignment_1;                 /* general.alignment 1: tensors at any byte offset */
    int head_count_kv;                /* 0: 2 */
    void (*more_kv)(gw_file *f);      /* keys added after the model's */
    void (*more_tensors)(gw_file *f); /* tensors added after the model's */
    const char *rename_k;             /* another name for blk.0.attn_k.weight */
    const char *rename_embd;          /* another name for token_embd.weight */
} variant;

/* "{arch}.suffix" for the architecture being built */
static const char *g_arch = "llama";
static const char *K(const char *suffix)
{
    static char buf[4][128];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s.%s", g_arch, suffix);
    return buf[i];
}

static void build(gw_file *f, const variant *v)
{
    gw_init(f);
    g_arch = v->arch && v->arch[0] ? v->arch : "llama";
    if (!v->arch || v->arch[0]) gw_kv_str(f, "general.architecture", g_arch);
    if (v->alignment_48) gw_kv_u32(f, "general.alignment", 48);
    if (v->alignment_f32) gw_kv_f32(f, "general.alignment", 32.0f);
    if (v->alignment_1) {
        gw_kv_u32(f, "general.alignment", 1);
        gw_kv_str(f, "general.name", "odd"); /* an odd header length: the data at odd offsets */
        f->alignment = 1;
    }
    gw_kv_u32(f, K("context_length"), CTX);
    gw_kv_u32(f, K("embedding_length"), D);
    if (!v->no_block_count) gw_kv_u32(f, K("block_count"), 1);
    if (v->dup_block_count) gw_kv_u32(f, K("block_count"), 1);
    gw_kv_u32(f, K("feed_forward_length"), F);
    gw_kv_u32(f, K("attention.head_count"), NH);
    gw_kv_u32(f, K("attention.head_count_kv"), v->head_count_kv ? (uint32_t)v->head_count_kv : NKV);
    if (v->eps_string) gw_kv_str(f, K("attention.layer_norm_rms_epsilon"), "tiny");
    else gw_kv_f32(f, K("attention.layer_norm_rms_epsilon"), 1e-5f);
    gw_kv_f32(f, K("rope.freq_base"), 10000.0f);
    if (v->more_kv) v->more_kv(f);
    if (v->quant) /* the embedding too: its view is the whole tensor in order (no gather) */
        gw_tensor(f, v->rename_embd ? v->rename_embd : "token_embd.weight", 2, (int64_t[]){D, V}, GW_Q8_0, q8, V * 34);
    else
        gw_tensor(f, v->rename_embd ? v->rename_embd : "token_embd.weight", 2, (int64_t[]){D, V}, GW_F32, vals,
                  V * D * 4);
    gw_tensor(f, "blk.0.attn_norm.weight", 1, (int64_t[]){D}, GW_F32, vals, D * 4);
    if (v->q_dtype == 1) gw_tensor(f, "blk.0.attn_q.weight", 2, (int64_t[]){D, NH * DH}, GW_F16, q_half, sizeof q_half);
    else if (v->q_dtype == 2) gw_tensor(f, "blk.0.attn_q.weight", 2, (int64_t[]){D, NH * DH}, GW_F32, q_vals, sizeof q_vals);
    else gw_tensor(f, "blk.0.attn_q.weight", 2, (int64_t[]){D, NH * DH}, GW_F32, vals, D * NH * DH * 4);
    gw_tensor(f, v->rename_k ? v->rename_k : "blk.0.attn_k.weight", 2, (int64_t[]){D, NKV * DH}, GW_F32, vals,
              D * NKV * DH * 4);
    gw_tensor(f, "blk.0.attn_v.weight", 2, (int64_t[]){D, NKV * DH}, GW_F32, vals, D * NKV * DH * 4);
    gw_tensor(f, "blk.0.attn_output.weight", 2, (int64_t[]){NH * DH, D}, GW_F32, vals, D * NH * DH * 4);
    gw_tensor(f, "blk.0.ffn_norm.weight", 1, (int64_t[]){D}, GW_F32, vals, D * 4);
    gw_tensor(f, "blk.0.ffn_gate.weight", 2, (int64_t[]){D, F}, GW_F32, vals, D * F * 4);
    if (v->quant) gw_tensor(f, "blk.0.ffn_up.weight", 2, (int64_t[]){D, F}, GW_Q8_0, q8, sizeof q8);
    else gw_tensor(f, "blk.0.ffn_up.weight", 2, (int64_t[]){D, F}, GW_F32, vals, D * F * 4);
    gw_tensor(f, "blk.0.ffn_down.weight", 2, (int64_t[]){F, D}, GW_F32, vals, D * F * 4);
    gw_tensor(f, "output_norm.weight", 1, (int64_t[]){D}, GW_F32, vals, D * 4);
    gw_tensor(f, "output.weight", 2, (int64_t[]){D, V}, GW_F32, vals, V * D * 4);
    if (v->more_tensors) v->more_tensors(f);
    gw_finish(f);
}

/* the index of the tensor named name in f */
static size_t tidx(const gw_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_t; i++)
        if (strcmp(f->t[i].name, name) == 0) return i;
    fprintf(stderr, "no tensor %s\n", name);
    exit(2);
}

static const char *save(const gw_file *f, const char *name, size_t len)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s.gguf", g_root, name);
    if (gw_save(f, path, len)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    return path;
}

#define GGUF_FAILS(name, path, opts, status, needle)                                       \
    do {                                                                                   \
        int f0_ = tu_failures;                                                             \
        circuits_model *m_ = SENTINEL;                                                     \
        CHECK_FAILS(circuits_model_load(&m_, (path), (opts)), (status), (needle));         \
        CHECK(m_ == NULL, "*out is %p, not NULL", (void *)m_);                             \
        if (m_ && m_ != SENTINEL) circuits_model_free(m_);                                 \
        cat_row((name), NULL, (status));                                                   \
        CAT_NOTE_FAIL((name), f0_);                                                        \
    } while (0)

/* A file built from v, broken by patch (may be NULL), saved whole (len 0) or cut to len, must
 * fail with status and needle. */
static void gguf_fails(const char *name, const variant *v, void (*patch)(gw_file *), size_t len, int status,
                   const char *needle)
{
    gw_file f;
    build(&f, v);
    if (patch) patch(&f);
    const char *path = save(&f, name, len ? len : f.len);
    GGUF_FAILS(name, path, NULL, status, needle);
    gw_free(&f);
}

/* The file loads and runs a forward pass with a finite loss; returns the model (or NULL). */
static circuits_model *load_ok(const char *label, const char *path, const circuits_load_options *o)
{
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, path, o));
    if (!m) return NULL;
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    int32_t tok[4] = {1, 2, 3, 7};
    float loss = NAN;
    if (ctx) CHECK_OK(circuits_context_forward(ctx, tok, 1, 4, NULL, &loss, NULL));
    CHECK(isfinite(loss), "%s: loss %f", label, (double)loss);
    circuits_context_free(ctx);
    return m;
}

/* ---- the breakages ---- */

static void p_version4(gw_file *f) { gw_patch(f, 4, 4, 4); }
static void p_version2(gw_file *f) { gw_patch(f, 4, 2, 4); }
static void p_magic(gw_file *f) { f->buf[3] = 'X'; }
static void p_n_tensors_huge(gw_file *f) { gw_patch(f, 8, UINT64_C(1) << 40, 8); }
static void p_n_kv_huge(gw_file *f) { gw_patch(f, 16, UINT64_C(1) << 40, 8); }
static void p_offset_outside(gw_file *f) { gw_patch(f, f->t[tidx(f, "output.weight")].offset_at, UINT64_C(1) << 40, 8); }
static void p_offset_misaligned(gw_file *f)
{
    gw_tensor_rec *t = &f->t[tidx(f, "output_norm.weight")];
    gw_patch(f, t->offset_at, t->offset + 4, 8);
}
static void p_overlap(gw_file *f)
{
    gw_patch(f, f->t[tidx(f, "blk.0.attn_k.weight")].offset_at, f->t[tidx(f, "blk.0.attn_q.weight")].offset, 8);
}
static void p_ne_overflow(gw_file *f)
{
    size_t at = f->t[tidx(f, "blk.0.ffn_gate.weight")].ne_at;
    gw_patch(f, at, UINT64_C(1) << 62, 8);
    gw_patch(f, at + 8, UINT64_C(1) << 62, 8);
}
static void p_bytes_overflow(gw_file *f) /* 2^62 elements (fine), 2^64 bytes */
{
    size_t at = f->t[tidx(f, "blk.0.ffn_gate.weight")].ne_at;
    gw_patch(f, at, UINT64_C(1) << 60, 8);
    gw_patch(f, at + 8, 4, 8);
}
static void p_ne_negative(gw_file *f) { gw_patch(f, f->t[tidx(f, "blk.0.ffn_gate.weight")].ne_at + 8, UINT64_MAX, 8); }
static void p_n_dims_5(gw_file *f) { gw_patch(f, f->t[tidx(f, "blk.0.ffn_gate.weight")].ndims_at, 5, 4); }
static void p_type_99(gw_file *f) { gw_patch(f, f->t[tidx(f, "blk.0.ffn_gate.weight")].type_at, 99, 4); }
static void p_type_iq2(gw_file *f) { gw_patch(f, f->t[tidx(f, "blk.0.ffn_gate.weight")].type_at, 16, 4); }
static void p_type_i32(gw_file *f) { gw_patch(f, f->t[tidx(f, "blk.0.ffn_gate.weight")].type_at, 26, 4); }
static void p_block(gw_file *f) { gw_patch(f, f->t[tidx(f, "blk.0.ffn_up.weight")].ne_at, 16, 8); }
static void p_shape(gw_file *f)
{
    size_t at = f->t[tidx(f, "blk.0.ffn_up.weight")].ne_at;
    gw_patch(f, at, F, 8);
    gw_patch(f, at + 8, D, 8);
}
static void p_dup_name(gw_file *f)
{
    const char *q = "blk.0.attn_q.weight";
    memcpy(f->buf + f->t[tidx(f, "blk.0.attn_k.weight")].name_at + 8, q, strlen(q));
}
static void p_name_nul(gw_file *f) { f->buf[f->t[tidx(f, "blk.0.attn_k.weight")].name_at + 8 + 3] = '\0'; }
static void p_kv_type(gw_file *f) { gw_patch(f, f->kv[3].type_at, GW_F32T, 4); } /* llama.block_count */
static void p_kv_type_unknown(gw_file *f) { gw_patch(f, f->kv[3].type_at, 77, 4); }
static void p_head_count_zero(gw_file *f) { gw_patch(f, f->kv[5].value_at, 0, 4); } /* attention.head_count */

static void k_yarn(gw_file *f) { gw_kv_str(f, "llama.rope.scaling.type", "yarn"); }
static void k_window(gw_file *f) { gw_kv_u32(f, K("attention.sliding_window"), 3); }
static void k_experts(gw_file *f) { gw_kv_u32(f, "llama.expert_count", 8); }
static void k_value_length(gw_file *f) { gw_kv_u32(f, "llama.attention.value_length", 4); }
static void k_vocab_size(gw_file *f) { gw_kv_u32(f, "llama.vocab_size", 99); }
static void k_rope_dim(gw_file *f) { gw_kv_u32(f, "llama.rope.dimension_count", 4); }
static void k_causal(gw_file *f) { gw_kv_bool(f, "llama.attention.causal", 0); }
static void k_nested(gw_file *f)
{
    uint8_t b[12];
    gw_key(f, "x.nested", GW_ARRAY);
    gw_le(b, GW_ARRAY, 4);
    gw_le(b + 4, 0, 8);
    gw_put(&f->kvbuf, &f->kvlen, &f->kvcap, b, 12);
}
static const float freqs_alternating[DH / 2] = {1, 8, 1, 8}, freqs_llama3[DH / 2] = {1, 1, 2.5f, 8};
static void t_rope_freqs(gw_file *f) { gw_tensor(f, "rope_freqs.weight", 1, (int64_t[]){DH / 2}, GW_F32, vals, DH / 2 * 4); }
static void t_rope_freqs_alternating(gw_file *f)
{
    gw_tensor(f, "rope_freqs.weight", 1, (int64_t[]){DH / 2}, GW_F32, freqs_alternating, sizeof freqs_alternating);
}
static void t_rope_freqs_shape(gw_file *f) { gw_tensor(f, "rope_freqs.weight", 1, (int64_t[]){DH}, GW_F32, vals, DH * 4); }
static void t_rope_freqs_llama3(gw_file *f)
{
    gw_tensor(f, "rope_freqs.weight", 1, (int64_t[]){DH / 2}, GW_F32, freqs_llama3, sizeof freqs_llama3);
}
static void t_extra(gw_file *f) { gw_tensor(f, "blk.0.extra.weight", 1, (int64_t[]){D}, GW_F32, vals, D * 4); }

int main(int argc, char **argv)
{
    cat_verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) vals[i] = 0.05f * sinf((float)i * 0.37f);
    for (int r = 0; r < F; r++) {
        q8[r * 34] = 0x00; /* f16 0x2C00 = 1/16, little-endian */
        q8[r * 34 + 1] = 0x2C;
        for (int j = 0; j < 32; j++) q8[r * 34 + 2 + j] = (uint8_t)(int8_t)((r * 7 + j * 13) % 255 - 127);
    }
    const variant plain = {0}, quant = {.quant = true};
    for (size_t i = 0; i < sizeof q_vals / sizeof q_vals[0]; i++) {
        q_vals[i] = (float)((int)((i * 37) % 61) - 30) / 256.0f;
        q_half[i] = to_half(q_vals[i]);
    }
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0) {
        gw_file f;
        char path[4096];
        int rc = 0;
        build(&f, &plain);
        snprintf(path, sizeof path, "%s/ok.gguf", argv[2]);
        rc |= gw_save(&f, path, f.len);
        gw_free(&f);
        build(&f, &quant);
        snprintf(path, sizeof path, "%s/ok_q8.gguf", argv[2]);
        rc |= gw_save(&f, path, f.len);
        gw_free(&f);
        build(&f, &(variant){.more_tensors = t_rope_freqs_llama3});
        snprintf(path, sizeof path, "%s/ok_rope_freqs.gguf", argv[2]);
        rc |= gw_save(&f, path, f.len);
        gw_free(&f);
        return rc ? 1 : 0;
    }
    if (!mkdtemp(g_root)) return 2;
    cat_tmp = g_root;

    /* positive controls */
    {
        gw_file f;
        build(&f, &plain);
        const char *path = save(&f, "ok", f.len);
        circuits_load_options o;
        circuits_load_options_init(&o);
        circuits_model_free(load_ok("ok", path, NULL));
        o.read_into_memory = 1;
        circuits_model_free(load_ok("ok read", path, &o));
        circuits_load_options_init(&o);
        o.keep_stored_dtype = 1; /* not refused on a GGUF file */
        circuits_model_free(load_ok("ok keep_stored_dtype", path, &o));
        p_version2(&f);
        circuits_model_free(load_ok("ok v2", save(&f, "ok_v2", f.len), NULL));
        gw_free(&f);
        /* an F16 attn_q (permuted rows, as llama.cpp stores them) reads as the same values in F32 */
        circuits_model *mh = NULL, *mf = NULL;
        circuits_load_options_init(&o);
        o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
        build(&f, &(variant){.q_dtype = 1});
        mh = load_ok("ok f16", save(&f, "ok_f16", f.len), &o);
        gw_free(&f);
        build(&f, &(variant){.q_dtype = 2});
        mf = load_ok("ok f16 as f32", save(&f, "ok_f16_as_f32", f.len), &o);
        gw_free(&f);
        circuits_tensor th, tf;
        size_t differ = 0;
        if (mh && mf) {
            CHECK_OK(circuits_model_weight(mh, "blocks.0.attn.W_Q", &th));
            CHECK_OK(circuits_model_weight(mf, "blocks.0.attn.W_Q", &tf));
            for (int64_t a = 0; a < NH; a++)
                for (int64_t b = 0; b < D; b++)
                    for (int64_t c = 0; c < DH; c++)
                        differ += th.data[a * th.strides[0] + b * th.strides[1] + c * th.strides[2]] !=
                               tf.data[a * tf.strides[0] + b * tf.strides[1] + c * tf.strides[2]];
        }
        CHECK(mh && mf && differ == 0, "W_Q from an F16 attn_q differs from the F32 one in %zu elements", differ);
        circuits_model_free(mh);
        circuits_model_free(mf);
        /* general.alignment 1 (a power of two, so valid): F32, F16 and Q8_0 tensors at odd
         * addresses, read as fp32 and kept stored (the sanitizer build checks every access) */
        build(&f, &(variant){.quant = true, .q_dtype = 1, .alignment_1 = true});
        size_t odd = 0;
        for (size_t i = 0; i < f.n_t; i++) odd += f.t[i].data_at % 2;
        CHECK(odd > 0, "alignment 1: no tensor at an odd offset");
        const char *p1 = save(&f, "ok_alignment_1", f.len);
        circuits_model_free(load_ok("ok alignment 1", p1, NULL));
        circuits_load_options_init(&o);
        o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
        o.keep_stored_dtype = 1;
        circuits_model_free(load_ok("ok alignment 1 keep_stored_dtype", p1, &o));
        o.read_into_memory = 1;
        circuits_model_free(load_ok("ok alignment 1 keep_stored_dtype read", p1, &o));
        gw_free(&f);
        /* Llama 3 rope factors (1, 1, a blend, 8): read as llama3 scaling that gives them again */
        build(&f, &(variant){.more_tensors = t_rope_freqs_llama3});
        circuits_model *m3 = load_ok("ok rope_freqs", save(&f, "ok_rope_freqs", f.len), NULL);
        circuits_config c3 = {.size = sizeof c3};
        if (m3) CHECK_OK(circuits_model_config(m3, &c3));
        CHECK(m3 && c3.rope_scaling == CIRCUITS_ROPE_LLAMA3 && c3.rope_factor == 8.0f, "rope_scaling %d, factor %g",
              c3.rope_scaling, (double)c3.rope_factor);
        circuits_model_free(m3);
        gw_free(&f);
        /* a llama file with a sliding window (Mistral's): every layer windowed */
        build(&f, &(variant){.more_kv = k_window});
        circuits_model *mw = load_ok("ok window", save(&f, "ok_window", f.len), NULL);
        circuits_config cw = {.size = sizeof cw};
        if (mw) CHECK_OK(circuits_model_config(mw, &cw));
        CHECK(mw && cw.window_size == 3 && cw.local_attn == CIRCUITS_LOCAL_ATTN_ALL, "window %d, local_attn %d",
              cw.window_size, cw.local_attn);
        circuits_model_free(mw);
        gw_free(&f);
        /* a Q8_0 matrix: W_in is its dequantized rows, transposed */
        build(&f, &quant);
        path = save(&f, "ok_q8", f.len);
        circuits_load_options_init(&o);
        o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
        circuits_model *m = load_ok("ok q8", path, &o);
        circuits_tensor w;
        if (m) CHECK_OK(circuits_model_weight(m, "blocks.0.mlp.W_in", &w));
        size_t bad = 0;
        for (int r = 0; m && r < F; r++) {
            float row[D];
            CHECK_OK(circuits_dequantize(CIRCUITS_DTYPE_Q8_0, q8 + r * 34, 34, row, D));
            for (int c = 0; c < D; c++) bad += memcmp(&row[c], &w.data[c * w.strides[0] + r * w.strides[1]], 4) != 0;
        }
        CHECK(m && bad == 0, "W_in from a Q8_0 ffn_up differs from its dequantized rows in %zu elements", bad);
        /* W_E [V, D]: token_embd's rows as they are */
        if (m) CHECK_OK(circuits_model_weight(m, "embed.W_E", &w));
        bad = 0;
        for (int r = 0; m && r < V; r++) {
            float row[D];
            CHECK_OK(circuits_dequantize(CIRCUITS_DTYPE_Q8_0, q8 + r * 34, 34, row, D));
            for (int c = 0; c < D; c++) bad += memcmp(&row[c], &w.data[r * w.strides[0] + c * w.strides[1]], 4) != 0;
        }
        CHECK(m && bad == 0, "W_E from a Q8_0 token_embd differs from its dequantized rows in %zu elements", bad);
        circuits_model_free(m);
        gw_free(&f);
    }

    /* the header and its counts */
    {
        gw_file f;
        build(&f, &plain);
        size_t infos = f.t[0].name_at, data = f.t[0].data_at;
        gw_free(&f);
        gguf_fails("gguf_truncated_header", &plain, NULL, 20, CIRCUITS_E_FORMAT, "a GGUF file has at least 24");
        gguf_fails("gguf_truncated_kv", &plain, NULL, 100, CIRCUITS_E_FORMAT, "truncated GGUF");
        gguf_fails("gguf_truncated_infos", &plain, NULL, infos + 30, CIRCUITS_E_FORMAT, "truncated GGUF");
        gguf_fails("gguf_truncated_data", &plain, NULL, data + 100, CIRCUITS_E_FORMAT, "run past the data section");
    }
    gguf_fails("gguf_bad_magic", &plain, p_magic, 0, CIRCUITS_E_IO, "is not a model directory or a GGUF file");
    gguf_fails("gguf_version_4", &plain, p_version4, 0, CIRCUITS_E_UNSUPPORTED, "GGUF version 4 is not supported");
    gguf_fails("gguf_n_tensors_huge", &plain, p_n_tensors_huge, 0, CIRCUITS_E_FORMAT, "tensor infos cannot fit");
    gguf_fails("gguf_n_kv_huge", &plain, p_n_kv_huge, 0, CIRCUITS_E_FORMAT, "key-value pairs (at most 65536)");

    /* key-values */
    gguf_fails("gguf_kv_wrong_type", &plain, p_kv_type, 0, CIRCUITS_E_FORMAT, "is of type f32, not an integer");
    gguf_fails("gguf_kv_unknown_type", &plain, p_kv_type_unknown, 0, CIRCUITS_E_FORMAT, "unknown value type 77");
    gguf_fails("gguf_kv_duplicate", &(variant){.dup_block_count = true}, NULL, 0, CIRCUITS_E_FORMAT, "appears twice");
    gguf_fails("gguf_kv_nested_array", &(variant){.more_kv = k_nested}, NULL, 0, CIRCUITS_E_UNSUPPORTED, "array of arrays");
    gguf_fails("gguf_kv_eps_string", &(variant){.eps_string = true}, NULL, 0, CIRCUITS_E_FORMAT, "not a float");
    gguf_fails("gguf_alignment_48", &(variant){.alignment_48 = true}, NULL, 0, CIRCUITS_E_FORMAT, "not a power of two");
    gguf_fails("gguf_alignment_f32", &(variant){.alignment_f32 = true}, NULL, 0, CIRCUITS_E_FORMAT, "of type f32, not a u32");

    /* the config */
    gguf_fails("gguf_arch_missing", &(variant){.arch = ""}, NULL, 0, CIRCUITS_E_CONFIG, "'general.architecture' is missing");
    gguf_fails("gguf_arch_bert", &(variant){.arch = "bert"}, NULL, 0, CIRCUITS_E_UNSUPPORTED, "architecture 'bert'");
    gguf_fails("gguf_block_count_missing", &(variant){.no_block_count = true}, NULL, 0, CIRCUITS_E_CONFIG,
           "'llama.block_count' is missing");
    gguf_fails("gguf_head_count_zero", &plain, p_head_count_zero, 0, CIRCUITS_E_CONFIG, "out of range");
    gguf_fails("gguf_head_count_kv_3", &(variant){.head_count_kv = 3}, NULL, 0, CIRCUITS_E_CONFIG, "not a multiple");
    gguf_fails("gguf_rope_yarn", &(variant){.more_kv = k_yarn}, NULL, 0, CIRCUITS_E_UNSUPPORTED, "'yarn' is not supported");
    gguf_fails("gguf_window_qwen2", &(variant){.arch = "qwen2", .more_kv = k_window}, NULL, 0, CIRCUITS_E_UNSUPPORTED,
               "sliding window in this architecture");
    gguf_fails("gguf_experts", &(variant){.more_kv = k_experts}, NULL, 0, CIRCUITS_E_UNSUPPORTED, "mixture of experts");
    gguf_fails("gguf_value_length", &(variant){.more_kv = k_value_length}, NULL, 0, CIRCUITS_E_UNSUPPORTED,
           "value_length = 4 differs");
    gguf_fails("gguf_vocab_size", &(variant){.more_kv = k_vocab_size}, NULL, 0, CIRCUITS_E_CONFIG, "vocab_size");
    gguf_fails("gguf_rope_partial_llama", &(variant){.more_kv = k_rope_dim}, NULL, 0, CIRCUITS_E_UNSUPPORTED,
           "must equal the head size");
    gguf_fails("gguf_not_causal", &(variant){.more_kv = k_causal}, NULL, 0, CIRCUITS_E_UNSUPPORTED, "bidirectional");
    gguf_fails("gguf_rope_freqs_below_1", &(variant){.more_tensors = t_rope_freqs}, NULL, 0, CIRCUITS_E_UNSUPPORTED,
               "is not a Llama 3 rope factor");
    gguf_fails("gguf_rope_freqs_not_llama3", &(variant){.more_tensors = t_rope_freqs_alternating}, NULL, 0,
               CIRCUITS_E_UNSUPPORTED, "is not Llama 3's rope scaling");
    gguf_fails("gguf_rope_freqs_shape", &(variant){.more_tensors = t_rope_freqs_shape}, NULL, 0, CIRCUITS_E_SHAPE,
               "must be F32 [4]");

    /* tensor infos */
    gguf_fails("gguf_offset_outside", &plain, p_offset_outside, 0, CIRCUITS_E_FORMAT, "run past the data section");
    gguf_fails("gguf_offset_misaligned", &plain, p_offset_misaligned, 0, CIRCUITS_E_FORMAT, "not a multiple of the alignment");
    gguf_fails("gguf_overlap", &plain, p_overlap, 0, CIRCUITS_E_FORMAT, "overlap");
    gguf_fails("gguf_ne_overflow", &plain, p_ne_overflow, 0, CIRCUITS_E_FORMAT, "element count overflows");
    gguf_fails("gguf_ne_negative", &plain, p_ne_negative, 0, CIRCUITS_E_FORMAT, "element count overflows");
    gguf_fails("gguf_bytes_overflow", &plain, p_bytes_overflow, 0, CIRCUITS_E_FORMAT, "byte size overflows");
    gguf_fails("gguf_n_dims_5", &plain, p_n_dims_5, 0, CIRCUITS_E_FORMAT, "5 dimensions (at most 4)");
    gguf_fails("gguf_type_unknown", &plain, p_type_99, 0, CIRCUITS_E_DTYPE, "unknown type 99");
    gguf_fails("gguf_type_iq2_xxs", &plain, p_type_iq2, 0, CIRCUITS_E_DTYPE, "type IQ2_XXS, which is not supported");
    gguf_fails("gguf_type_i32", &plain, p_type_i32, 0, CIRCUITS_E_DTYPE, "type I32, which is not supported");
    gguf_fails("gguf_block_not_multiple", &quant, p_block, 0, CIRCUITS_E_FORMAT, "not a multiple of Q8_0's block of 32");
    gguf_fails("gguf_duplicate_tensor", &plain, p_dup_name, 0, CIRCUITS_E_FORMAT, "defined twice");
    gguf_fails("gguf_tensor_name_nul", &plain, p_name_nul, 0, CIRCUITS_E_FORMAT, "no NUL byte");

    /* tensors against the architecture */
    gguf_fails("gguf_shape_mismatch", &plain, p_shape, 0, CIRCUITS_E_SHAPE, "but the config implies");
    gguf_fails("gguf_missing_tensor", &(variant){.rename_k = "blk.0.attn_z.weight"}, NULL, 0, CIRCUITS_E_TENSOR_MISSING,
           "'blk.0.attn_k.weight'");
    gguf_fails("gguf_no_token_embd", &(variant){.rename_embd = "token_emb.weight"}, NULL, 0, CIRCUITS_E_TENSOR_MISSING,
           "token_embd.weight");
    gguf_fails("gguf_unexpected_tensor", &(variant){.more_tensors = t_extra}, NULL, 0, CIRCUITS_E_TENSOR_UNEXPECTED,
           "blk.0.extra.weight");

    /* every truncation of the small file fails cleanly (any status) */
    {
        gw_file f;
        build(&f, &quant);
        size_t step = f.len / 97 + 1, fails = 0, tried = 0;
        for (size_t cut = 0; cut < f.len; cut += step) {
            circuits_model *m = NULL;
            const char *path = save(&f, "cut", cut);
            tried++;
            if (circuits_model_load(&m, path, NULL) != CIRCUITS_OK) fails++;
            CHECK(m == NULL || cut >= f.t[f.n_t - 1].data_at + f.t[f.n_t - 1].bytes, "cut %zu loaded", cut);
            circuits_model_free(m);
        }
        CHECK(fails == tried, "%zu of %zu truncations failed", fails, tried);
        gw_free(&f);
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_root);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", g_root);
    return tu_finish("gguf_bad");
}
