/* The public API's documented contract (include/circuits.h), part 2 of 6: the config of a
 * loaded model, load options, and the weight views (zero-copy views of the files' tensors, tied
 * and untied unembeddings, both layouts). Shared helpers: tests/testutil.h (TESTUTIL_API_HELPERS).
 * Usage: test_load CASES_DIR   (tests/reference/cases) */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

#include <stddef.h>

#include "../lib/io/safetensors.h"

static float at2(const circuits_tensor *t, int64_t i, int64_t j) { return t->data[i * t->strides[0] + j * t->strides[1]]; }

static float at3(const circuits_tensor *t, int64_t i, int64_t j, int64_t k)
{
    return t->data[i * t->strides[0] + j * t->strides[1] + k * t->strides[2]];
}

/* ---------------------------------------------------------------------------------------- */
/* config                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static void test_config(void)
{
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_config c = config_of(m);
    CHECK(c.size == sizeof c, "size %u", c.size);
    CHECK(c.n_layers == 5 && c.d_model == 32 && c.n_heads == 4 && c.d_head == 8 && c.d_mlp == 128, "dims %d %d %d %d %d",
          c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp);
    CHECK(c.d_vocab == 1000 && c.d_vocab_out == 1000 && c.n_ctx == 512, "vocab %d/%d n_ctx %d", c.d_vocab, c.d_vocab_out,
          c.n_ctx);
    CHECK(c.act_fn == CIRCUITS_ACT_GELU_NEW, "act_fn %d", c.act_fn);
    CHECK(c.normalization_type == CIRCUITS_NORM_LN, "normalization %d", c.normalization_type);
    CHECK(c.positional_embedding_type == CIRCUITS_POS_STANDARD, "pos embed %d", c.positional_embedding_type);
    CHECK(c.format == CIRCUITS_FORMAT_HF_GPT2, "format %d", c.format);
    CHECK(c.attn_only == 0 && c.scale_attn_by_inverse_layer_idx == 0, "attn_only %d, inverse idx %d", c.attn_only,
          c.scale_attn_by_inverse_layer_idx);
    CHECK(fabsf(c.eps - 1e-5f) < 1e-12f, "eps %g", (double)c.eps);
    CHECK(fabs(c.attn_scale - sqrt(8.0)) < 1e-6, "attn_scale %g", (double)c.attn_scale);

    /* a size that ends inside the struct is no published version: refused, nothing written */
    union { circuits_config c; unsigned char b[sizeof(circuits_config) + 16]; } u;
    memset(&u, 0xAB, sizeof u);
    u.c.size = (uint32_t)offsetof(circuits_config, n_heads);
    CHECK_FAILS(circuits_model_config(m, &u.c), CIRCUITS_E_VERSION, "out->size 12 is not one this library knows");
    bool untouched = true;
    for (size_t i = sizeof u.c.size; i < sizeof u; i++) untouched &= u.b[i] == 0xAB;
    CHECK(untouched && u.c.size == offsetof(circuits_config, n_heads), "a refused request wrote into the struct");
    /* a caller with a bigger (newer) struct gets this library's fields and size */
    memset(&u, 0xAB, sizeof u);
    u.c.size = (uint32_t)sizeof u;
    CHECK_OK(circuits_model_config(m, &u.c));
    CHECK(u.c.size == sizeof(circuits_config), "out->size %u for a bigger struct", u.c.size);
    CHECK(u.c.attn_scale == c.attn_scale && u.c.n_ctx == 512, "full copy");
    untouched = true;
    for (size_t i = sizeof(circuits_config); i < sizeof u; i++) untouched &= u.b[i] == 0xAB;
    CHECK(untouched, "bytes beyond sizeof(circuits_config) were written");
    circuits_config z;
    memset(&z, 0, sizeof z);
    CHECK_ERR(circuits_model_config(m, &z), CIRCUITS_E_VERSION);
    z.size = 2;
    CHECK_ERR(circuits_model_config(m, &z), CIRCUITS_E_VERSION);
    circuits_model_free(m);

    m = load_case("tl_1l_solu_ln");
    c = config_of(m);
    CHECK(c.n_layers == 1 && c.d_model == 16 && c.n_heads == 2 && c.d_head == 8 && c.d_mlp == 32, "TL dims %d %d %d %d %d",
          c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp);
    CHECK(c.d_vocab == 50 && c.d_vocab_out == 50 && c.n_ctx == 32, "TL vocab %d/%d n_ctx %d", c.d_vocab, c.d_vocab_out,
          c.n_ctx);
    CHECK(c.act_fn == CIRCUITS_ACT_SOLU_LN && c.normalization_type == CIRCUITS_NORM_LN &&
              c.positional_embedding_type == CIRCUITS_POS_STANDARD,
          "TL act %d norm %d pos %d", c.act_fn, c.normalization_type, c.positional_embedding_type);
    CHECK(c.format == CIRCUITS_FORMAT_TRANSFORMERLENS, "TL format %d", c.format);
    CHECK(fabs(c.attn_scale - 2.8284271247461903) < 1e-6 && fabsf(c.eps - 1e-5f) < 1e-12f, "TL attn_scale %g eps %g",
          (double)c.attn_scale, (double)c.eps);
    circuits_model_free(m);

    /* load options */
    char p[4096];
    case_dir(p, sizeof p, "tl_1l_solu_ln");
    circuits_load_options lo;
    memset(&lo, 0x55, sizeof lo);
    circuits_load_options_init(&lo);
    CHECK(lo.size == sizeof lo && lo.fold_ln == 1 && lo.center_writing_weights == 1 && lo.center_unembed == 1 &&
              lo.fold_value_biases == 1 && lo.refactor_factored_attn_matrices == 0, "load_options_init: TL defaults");
    m = NULL;
    CHECK_OK(circuits_model_load(&m, p, &lo));
    circuits_model_free(m);
    lo.size = 0;
    m = (circuits_model *)(uintptr_t)1;
    CHECK_ERR(circuits_model_load(&m, p, &lo), CIRCUITS_E_VERSION);
    CHECK(m == NULL, "a failed load leaves *out NULL");
    lo.size = sizeof lo + 8;
    CHECK_ERR(circuits_model_load(&m, p, &lo), CIRCUITS_E_VERSION);
    circuits_load_options_init(&lo);
    lo.fold_ln = 2;
    CHECK_ERR(circuits_model_load(&m, p, &lo), CIRCUITS_E_INVALID_ARGUMENT);
    CHECK(m == NULL, "a failed load leaves *out NULL");
}

/* ---------------------------------------------------------------------------------------- */
/* weight views                                                                              */
/* ---------------------------------------------------------------------------------------- */

static void check_enumeration(const circuits_model *m, size_t want_count, const char *label)
{
    size_t n = circuits_model_weight_count(m);
    CHECK(n == want_count, "%s: %zu weights, want %zu", label, n, want_count);
    for (size_t i = 0; i < n; i++) {
        circuits_tensor a, b;
        CHECK_OK(circuits_model_weight_at(m, i, &a));
        CHECK(a.name && a.data, "%s: weight %zu has no name or data", label, i);
        if (!a.name) continue;
        CHECK_OK(circuits_model_weight(m, a.name, &b));
        CHECK(b.data == a.data && b.ndim == a.ndim && !memcmp(b.shape, a.shape, sizeof a.shape) &&
                  !memcmp(b.strides, a.strides, sizeof a.strides) && b.layer == a.layer && b.head_axis == a.head_axis,
              "%s: weight_at(%zu) and weight('%s') differ", label, i, a.name);
        CHECK(a.layer == parse_layer(a.name), "%s: '%s' has layer %d", label, a.name, a.layer);
        CHECK(a.head == -1, "%s: '%s' has head %d", label, a.name, a.head);
        const char *dot = strrchr(a.name, '.');
        bool headed = false;
        static const char *const head_leaves[] = {".W_Q", ".W_K", ".W_V", ".W_O", ".b_Q", ".b_K", ".b_V"};
        for (size_t k = 0; dot && k < sizeof head_leaves / sizeof head_leaves[0]; k++)
            headed |= strcmp(dot, head_leaves[k]) == 0;
        CHECK(a.head_axis == (headed ? 0 : -1), "%s: '%s' has head_axis %d", label, a.name, a.head_axis);
        for (size_t j = 0; j < i; j++) {
            circuits_tensor o;
            if (circuits_model_weight_at(m, j, &o) == CIRCUITS_OK)
                CHECK(strcmp(o.name, a.name) != 0, "%s: '%s' listed twice", label, a.name);
        }
    }
    circuits_tensor t;
    CHECK_ERR(circuits_model_weight_at(m, n, &t), CIRCUITS_E_RANGE);
}

static circuits_tensor weight(const circuits_model *m, const char *name)
{
    circuits_tensor t;
    memset(&t, 0, sizeof t);
    CHECK_OK(circuits_model_weight(m, name, &t));
    return t;
}

static void test_weights(void)
{
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    const int64_t D = 32, H = 4, dh = 8, V = 1000, M = 128, C = 512;
    check_enumeration(m, 2 + 5 * 16 + 2 + 2, "hf_tiny_random_gpt2");
    circuits_tensor WE = weight(m, "embed.W_E"), Wpos = weight(m, "pos_embed.W_pos"), WU = weight(m, "unembed.W_U"),
                    bU = weight(m, "unembed.b_U");
    CHECK(shape_is(&WE, SHAPE(V, D)) && contiguous(&WE), "W_E shape/strides");
    CHECK(shape_is(&Wpos, SHAPE(C, D)), "W_pos shape");
    CHECK(shape_is(&WU, SHAPE(D, V)), "W_U shape");
    CHECK(shape_is(&bU, SHAPE(V)), "b_U shape");
    CHECK(WE.layer == -1 && WE.head_axis == -1, "W_E layer %d head_axis %d", WE.layer, WE.head_axis);
    /* the tied unembedding is the embedding's memory, transposed */
    CHECK(WU.data == WE.data, "tied W_U does not share W_E's memory");
    CHECK(WU.strides[0] == 1 && WU.strides[1] == D, "tied W_U strides [%lld, %lld]", (long long)WU.strides[0],
          (long long)WU.strides[1]);
    bool transposed = true;
    for (int64_t i = 0; i < D && WU.ndim == 2; i++)
        for (int64_t v = 0; v < V; v++) transposed &= at2(&WU, i, v) == at2(&WE, v, i);
    CHECK(transposed, "W_U[i][v] != W_E[v][i]");
    bool zeros = true;
    for (int64_t v = 0; v < V && bU.ndim == 1; v++) zeros &= bU.data[v * bU.strides[0]] == 0.0f;
    CHECK(zeros, "GPT-2 has no b_U: it must read as zeros");

    char p[4096];
    snprintf(p, sizeof p, "%s/hf_tiny_random_gpt2/model.safetensors", g_cases);
    cx_st_set *file = NULL;
    CHECK_OK(cx_st_open_file(&file, p));
    for (int l = 0; l < 5; l += 4) {
        char nm[96];
        circuits_tensor W[3];
        for (int k = 0; k < 3; k++) {
            snprintf(nm, sizeof nm, "blocks.%d.attn.W_%c", l, "QKV"[k]);
            W[k] = weight(m, nm);
            CHECK(shape_is(&W[k], SHAPE(H, D, dh)), "%s shape", nm);
            CHECK(W[k].strides[0] == dh && W[k].strides[1] == 3 * D && W[k].strides[2] == 1,
                  "%s is not a zero-copy view of c_attn: strides [%lld, %lld, %lld]", nm, (long long)W[k].strides[0],
                  (long long)W[k].strides[1], (long long)W[k].strides[2]);
            CHECK(W[k].layer == l && W[k].head_axis == 0, "%s layer %d head_axis %d", nm, W[k].layer, W[k].head_axis);
            CHECK(W[k].data == W[0].data + k * D, "%s does not sit at offset %lld of c_attn", nm, (long long)(k * D));
        }
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_attn.weight", l);
        const cx_st_tensor *ca = file ? cx_st_find(file, nm) : NULL;
        CHECK(ca != NULL, "no %s in the file", nm);
        if (ca && W[1].ndim == 3) {
            bool same = true;
            for (int k = 0; k < 3; k++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t i = 0; i < D; i++)
                        for (int64_t j = 0; j < dh; j++)
                            same &= at3(&W[k], h, i, j) == cx_st_read_f32(ca, (size_t)(i * 3 * D + k * D + h * dh + j));
            CHECK(same, "W_{Q,K,V}[h][i][j] != c_attn.weight[i][k*D + h*dh + j]");
        }
        snprintf(nm, sizeof nm, "blocks.%d.attn.W_O", l);
        circuits_tensor WO = weight(m, nm);
        CHECK(shape_is(&WO, SHAPE(H, dh, D)), "W_O shape");
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_proj.weight", l);
        const cx_st_tensor *cp = file ? cx_st_find(file, nm) : NULL;
        if (cp && WO.ndim == 3) {
            bool same = true;
            for (int64_t h = 0; h < H; h++)
                for (int64_t k = 0; k < dh; k++)
                    for (int64_t j = 0; j < D; j++)
                        same &= at3(&WO, h, k, j) == cx_st_read_f32(cp, (size_t)((h * dh + k) * D + j));
            CHECK(same, "W_O[h][k][j] != c_proj.weight[h*dh + k][j]");
        }
        snprintf(nm, sizeof nm, "blocks.%d.attn.b_K", l);
        circuits_tensor bK = weight(m, nm);
        CHECK(shape_is(&bK, SHAPE(H, dh)), "b_K shape");
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_attn.bias", l);
        const cx_st_tensor *cb = file ? cx_st_find(file, nm) : NULL;
        if (cb && bK.ndim == 2) {
            bool same = true;
            for (int64_t h = 0; h < H; h++)
                for (int64_t j = 0; j < dh; j++) same &= at2(&bK, h, j) == cx_st_read_f32(cb, (size_t)(D + h * dh + j));
            CHECK(same, "b_K[h][j] != c_attn.bias[D + h*dh + j]");
        }
        snprintf(nm, sizeof nm, "blocks.%d.mlp.W_in", l);
        circuits_tensor Win = weight(m, nm);
        snprintf(nm, sizeof nm, "blocks.%d.mlp.W_out", l);
        circuits_tensor Wout = weight(m, nm);
        CHECK(shape_is(&Win, SHAPE(D, M)) && contiguous(&Win), "W_in shape/strides");
        CHECK(shape_is(&Wout, SHAPE(M, D)) && contiguous(&Wout), "W_out shape/strides");
        snprintf(nm, sizeof nm, "blocks.%d.ln1.w", l);
        circuits_tensor ln = weight(m, nm);
        CHECK(shape_is(&ln, SHAPE(D)) && ln.layer == l, "ln1.w shape/layer");
    }
    cx_st_close(file);
    circuits_tensor t;
    CHECK_FAILS(circuits_model_weight(m, "blocks.0.attn.W_X", &t), CIRCUITS_E_NOT_FOUND, "blocks.0.attn.W_X");
    CHECK_ERR(circuits_model_weight(m, "blocks.5.attn.W_Q", &t), CIRCUITS_E_NOT_FOUND);
    CHECK_ERR(circuits_model_weight(m, "", &t), CIRCUITS_E_NOT_FOUND);
    CHECK_ERR(circuits_model_weight(m, "transformer.wte.weight", &t), CIRCUITS_E_NOT_FOUND);
    circuits_model_free(m);

    /* untied: W_U is lm_head.weight transposed, not W_E */
    m = load_case("hf_random_untied");
    check_enumeration(m, 2 + 2 * 16 + 2 + 2, "hf_random_untied");
    WE = weight(m, "embed.W_E");
    WU = weight(m, "unembed.W_U");
    CHECK(shape_is(&WU, SHAPE(16, 64)) && WU.strides[0] == 1 && WU.strides[1] == 16, "untied W_U shape/strides");
    CHECK(WU.data != WE.data, "untied W_U aliases W_E");
    snprintf(p, sizeof p, "%s/hf_random_untied/model.safetensors", g_cases);
    file = NULL;
    CHECK_OK(cx_st_open_file(&file, p));
    const cx_st_tensor *lm = file ? cx_st_find(file, "lm_head.weight") : NULL;
    CHECK(lm != NULL, "no lm_head.weight");
    if (lm && WU.ndim == 2) {
        bool same = true, differs = false;
        for (int64_t i = 0; i < 16; i++)
            for (int64_t v = 0; v < 64; v++) {
                same &= at2(&WU, i, v) == cx_st_read_f32(lm, (size_t)(v * 16 + i));
                differs |= at2(&WU, i, v) != at2(&WE, v, i);
            }
        CHECK(same, "untied W_U[i][v] != lm_head.weight[v][i]");
        CHECK(differs, "untied W_U equals W_E^T: the test model does not exercise untying");
    }
    cx_st_close(file);
    circuits_model_free(m);

    /* TransformerLens layout: contiguous views of the stored tensors */
    m = load_case("tl_1l_solu_ln");
    check_enumeration(m, 2 + 18 + 2 + 2, "tl_1l_solu_ln");
    snprintf(p, sizeof p, "%s/tl_1l_solu_ln/model.safetensors", g_cases);
    file = NULL;
    CHECK_OK(cx_st_open_file(&file, p));
    for (size_t i = 0; file && i < circuits_model_weight_count(m); i++) {
        circuits_tensor w;
        if (circuits_model_weight_at(m, i, &w) != CIRCUITS_OK) continue;
        CHECK(contiguous(&w), "TL weight '%s' is not contiguous", w.name);
        const cx_st_tensor *s = cx_st_find(file, w.name);
        CHECK(s != NULL, "TL weight '%s' not stored under its name", w.name);
        if (!s) continue;
        bool same = s->ndim == w.ndim && s->numel == numel(&w);
        for (size_t k = 0; same && k < s->numel; k++) same = w.data[k] == cx_st_read_f32(s, k);
        CHECK(same, "TL weight '%s' differs from the stored tensor", w.name);
    }
    circuits_tensor WQ = weight(m, "blocks.0.attn.W_Q");
    CHECK(shape_is(&WQ, SHAPE(2, 16, 8)), "TL W_Q shape");
    circuits_tensor mln = weight(m, "blocks.0.mlp.ln.w");
    CHECK(shape_is(&mln, SHAPE(32)), "solu_ln mlp.ln.w shape");
    cx_st_close(file);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    tu_cases_arg(argc, argv);
    test_config();
    test_weights();
    return tu_finish("test_load");
}
