/* Loading GGUF files: the F32 GGUF conversions of the Hugging Face reference cases
 * (tests/reference/gguf/<case>.f32.gguf, written by tests/reference/generate_gguf_f32.py: llama.cpp's own convert_hf_to_gguf.py code, GPT-J with
 * the gguf package) against the same cases loaded from their Hugging Face directories:
 *   - the config, field by field: equal, except the fields the conversion does not carry (each
 *     listed below with the value llama.cpp's loader gives it instead, checked too);
 *   - every weight view, element for element (bit-exact: an F32 file holds the same floats, the
 *     loader only moves them), unprocessed and with the default processing;
 *   - the tokenizer of the same file is loaded with the model.
 * The hooks of the cases the conversion keeps whole are checked against the Hugging Face
 * references by test_reference (tests/meson.build passes it the .gguf file). */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

/* a config field: its name and offset */
typedef struct field {
    const char *name;
    size_t off;
    bool is_float;
} field;

#define F_(n) {#n, offsetof(circuits_config, n), false}
#define FF_(n) {#n, offsetof(circuits_config, n), true}
static const field fields[] = {
    F_(n_layers),  F_(d_model),     F_(n_heads),    F_(d_head),     F_(d_mlp),         F_(d_vocab),
    F_(d_vocab_out), F_(n_ctx),     F_(act_fn),     F_(normalization_type), F_(positional_embedding_type),
    F_(attn_only), F_(format),      F_(scale_attn_by_inverse_layer_idx), FF_(eps), FF_(attn_scale),
    F_(processing), F_(n_key_value_heads), F_(rotary_dim), F_(rotary_adjacent_pairs), FF_(rotary_base),
    F_(rope_scaling), FF_(rope_factor), FF_(rope_low_freq_factor), FF_(rope_high_freq_factor),
    F_(rope_original_n_ctx), F_(gated_mlp), F_(parallel_attn_mlp), F_(final_rms), F_(norm_before_and_after),
    FF_(attn_scores_soft_cap), FF_(output_logits_soft_cap), F_(window_size), F_(local_attn),
};

static double field_value(const circuits_config *c, const field *f)
{
    const char *p = (const char *)c + f->off;
    if (f->is_float) {
        float v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* A field the GGUF file does not carry, and the value the GGUF load must give it instead. */
typedef struct lost {
    const char *field;
    double gguf_value; /* < -1e30: computed by the caller (see the cases) */
} lost;

typedef struct gguf_case {
    const char *name;
    lost lost[4];
    const char *why;
} gguf_case;

static const gguf_case cases[] = {
    {"hf_llama_gqa", {{0, 0}}, NULL},
    {"hf_qwen2_bias", {{0, 0}}, NULL},
    {"hf_gemma", {{0, 0}}, NULL},
    {"hf_gptj", {{0, 0}}, NULL},
    {"hf_tiny_random_gpt2", {{0, 0}}, NULL},
    /* LlamaModel converts Mistral as llama and writes no sliding window; llama.cpp's llama
     * attends globally, and GGUF llama is TransformerLens's Llama (final_rms) */
    {"hf_mistral_window",
     {{"format", CIRCUITS_FORMAT_HF_LLAMA}, {"final_rms", 1}, {"window_size", 0}, {"local_attn", CIRCUITS_LOCAL_ATTN_NONE}},
     "Mistral is written as llama, without its sliding window"},
    /* GPTNeoXModel writes no rope.freq_base: llama.cpp's default 10000 */
    {"hf_neox", {{"rotary_base", 10000.0}}, "GPT-NeoX's rotary_emb_base is not written"},
    /* Gemma2Model writes no query_pre_attn_scalar: llama.cpp scales by 1/sqrt(key_length) */
    {"hf_gemma2", {{"attn_scale", -1e31}}, "Gemma 2's query_pre_attn_scalar is not written"},
};

static void check_config(const gguf_case *gc, const circuits_config *hf, const circuits_config *gg)
{
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const field *f = &fields[i];
        double a = field_value(hf, f), b = field_value(gg, f);
        const lost *l = NULL;
        for (int k = 0; k < 4; k++)
            if (gc->lost[k].field && strcmp(gc->lost[k].field, f->name) == 0) l = &gc->lost[k];
        if (!l) {
            CHECK(a == b, "%s: config.%s is %g from Hugging Face's config.json, %g from the GGUF file", gc->name, f->name,
                  a, b);
            continue;
        }
        double want = l->gguf_value < -1e30 ? (double)(float)sqrt((double)gg->d_head) : l->gguf_value;
        CHECK(a != b, "%s: config.%s is listed as lost by the conversion but is equal (%g)", gc->name, f->name, a);
        CHECK(b == want, "%s: config.%s from the GGUF file is %g, llama.cpp's value is %g", gc->name, f->name, b, want);
    }
}

/* every weight of the two models: same names, shapes, and elements */
static void check_weights(const char *name, const char *label, const circuits_model *hf, const circuits_model *gg)
{
    size_t n = circuits_model_weight_count(hf);
    CHECK(n == circuits_model_weight_count(gg), "%s (%s): %zu weights from Hugging Face, %zu from GGUF", name, label, n,
          circuits_model_weight_count(gg));
    size_t bad_total = 0;
    for (size_t i = 0; i < n; i++) {
        circuits_tensor a, b;
        CHECK_OK(circuits_model_weight_at(hf, i, &a));
        if (circuits_model_weight(gg, a.name, &b) != CIRCUITS_OK) {
            CHECK(0, "%s (%s): the GGUF model has no '%s'", name, label, a.name);
            continue;
        }
        bool same = a.ndim == b.ndim;
        size_t numel = 1;
        for (int d = 0; same && d < a.ndim; d++) same = a.shape[d] == b.shape[d], numel *= (size_t)a.shape[d];
        CHECK(same, "%s (%s): '%s' has another shape", name, label, a.name);
        if (!same) continue;
        size_t bad = 0;
        for (size_t e = 0; e < numel; e++) {
            size_t rest = e, oa = 0, ob = 0;
            for (int d = a.ndim - 1; d >= 0; d--) {
                size_t idx = rest % (size_t)a.shape[d];
                oa += idx * (size_t)a.strides[d];
                ob += idx * (size_t)b.strides[d];
                rest /= (size_t)a.shape[d];
            }
            if (memcmp(&a.data[oa], &b.data[ob], sizeof(float)) != 0) bad++;
        }
        CHECK(bad == 0, "%s (%s): '%s' differs in %zu of %zu elements", name, label, a.name, bad, numel);
        bad_total += bad;
    }
    printf("%-22s %-11s %zu weights, %zu elements differ\n", name, label, n, bad_total);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASES_DIR\n", argv[0]);
        return 2;
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const gguf_case *gc = &cases[c];
        char dir[4096], file[4200];
        snprintf(dir, sizeof dir, "%s/%s", argv[1], gc->name);
        snprintf(file, sizeof file, "%s/../gguf/%s.f32.gguf", argv[1], gc->name);
        for (int processed = 0; processed < 2; processed++) {
            circuits_load_options o;
            circuits_load_options_init(&o);
            if (!processed) o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
            circuits_model *hf = NULL, *gg = NULL;
            CHECK_OK(circuits_model_load(&hf, dir, &o));
            CHECK_OK(circuits_model_load(&gg, file, &o));
            if (hf && gg) {
                circuits_config a = {.size = sizeof a}, b = {.size = sizeof b};
                CHECK_OK(circuits_model_config(hf, &a));
                CHECK_OK(circuits_model_config(gg, &b));
                if (!processed) check_config(gc, &a, &b);
                check_weights(gc->name, processed ? "processed" : "unprocessed", hf, gg);
                /* the file's own (minimal) vocabulary came with it */
                const circuits_tokenizer *t = circuits_model_tokenizer(gg);
                CHECK(t != NULL, "%s: the GGUF model has no tokenizer", gc->name);
                if (t) CHECK(circuits_tokenizer_vocab_size(t) == (size_t)b.d_vocab, "%s: %zu tokens for d_vocab %d",
                             gc->name, circuits_tokenizer_vocab_size(t), b.d_vocab);
            }
            circuits_model_free(hf);
            circuits_model_free(gg);
        }
        /* read into memory instead of mapped: the same model */
        circuits_load_options o;
        circuits_load_options_init(&o);
        o.read_into_memory = 1;
        circuits_model *hf = NULL, *gg = NULL;
        CHECK_OK(circuits_model_load(&hf, dir, &o));
        CHECK_OK(circuits_model_load(&gg, file, &o));
        if (hf && gg) check_weights(gc->name, "in memory", hf, gg);
        circuits_model_free(hf);
        circuits_model_free(gg);
    }
    return tu_finish("gguf_load");
}
