/* GGUF files written by llama.cpp's own converter and quantizers, against outputs computed by code
 * nobody here wrote (tests/reference/generate_gguf.py, tests/reference/gguf/README.md):
 *   - the reference: transformers in fp32 on the file's dequantized weights (logits) and
 *     TransformerLens built from that model (hooks);
 *   - transformers loading the GGUF file itself (its own dequantizer and un-permutation), where it
 *     supports the architecture;
 *   - llama.cpp's logits for the same file and tokens, where llama.cpp runs the architecture,
 *     within a per-type tolerance measured and documented in the README (llama.cpp quantizes the
 *     activations for its quantized dot products, so it is a peer, not a reference).
 * Usage: test_gguf_reference [--mode NAME] CASE_DIR...   (every file that CASE_DIR/case.json lists) */
#include "testutil.h"

#include <jansson.h>
#include <math.h>

#include "../lib/io/safetensors.h"

/* How the files are loaded and how close each comparison must be. Modes are rows here so that a
 * new way of loading (keep_stored_dtype = 1) is one more row with its own tolerances. */
typedef struct mode {
    const char *name;
    int32_t keep_stored_dtype;
    double tol_logits_f32; /* logits of an F32 file vs the references */
    double tol_logits_q;   /* logits of an F16 / quantized file vs the fp32-on-dequantized references */
    double tol_hook;       /* hooks vs TransformerLens */
} mode;

static const mode MODES[] = {
    /* fp32 path: weights dequantized at load, every product in fp32, as the references compute */
    {"fp32", 0, 5e-5, 1e-4, 1e-4},
    /* keep_stored_dtype: the matrices stay quantized and products dequantize blocks on the fly;
     * the same references and bounds (the products differ from fp32 ones only in summation order) */
    {"stored", 1, 5e-5, 1e-4, 1e-4},
};

/* llama.cpp vs ours, by the file's type: about twice the largest difference between llama.cpp and
 * the reference over every family (tests/reference/gguf/README.md). F32: llama.cpp's GELU reads an
 * fp16 table (gpt2, gpt_neox, gemma: ~1e-3; the SiLU families agree to ~2e-6). F16: it rounds
 * the activations to fp16 for the F16 products (~2e-3). Quantized types: it rounds the
 * activations to 8-bit blocks (Q8_0 / Q8_K) for the quantized dot products (<= 0.09). */
typedef struct peer_tol { const char *type; double tol; } peer_tol;
static const peer_tol LLAMA_CPP_TOL[] = {
    {"F32", 2e-3},  {"F16", 5e-3},  {"Q8_0", 0.15}, {"Q4_0", 0.15}, {"Q4_1", 0.15}, {"Q5_0", 0.15},
    {"Q5_1", 0.15}, {"Q2_K", 0.15}, {"Q3_K", 0.15}, {"Q4_K", 0.15}, {"Q5_K", 0.15}, {"Q6_K", 0.15},
};

static double llama_cpp_tol(const char *type)
{
    for (size_t i = 0; i < sizeof LLAMA_CPP_TOL / sizeof *LLAMA_CPP_TOL; i++)
        if (strcmp(LLAMA_CPP_TOL[i].type, type) == 0) return LLAMA_CPP_TOL[i].tol;
    fprintf(stderr, "no llama.cpp tolerance for type %s\n", type);
    exit(2);
}

static const cx_st_tensor *want(cx_st_set *s, const char *file, const char *name)
{
    const cx_st_tensor *t = cx_st_find(s, name);
    if (!t) {
        fprintf(stderr, "%s has no '%s'\n", file, name);
        exit(2);
    }
    return t;
}

/* Max |got - want| over the expected tensor's values. */
static double max_diff(const float *got, const cx_st_tensor *t)
{
    double m = 0.0;
    for (size_t i = 0; i < t->numel; i++) {
        double d = fabs((double)got[i] - (double)cx_st_read_f32(t, i));
        if (isnan(d)) d = INFINITY;
        if (d > m) m = d;
    }
    return m;
}

/* One GGUF file of a case against its references. */
static void check_file(const char *dir, json_t *cj, json_t *fj, const mode *m)
{
    const char *type = json_string_value(json_object_get(fj, "type"));
    const char *file = json_string_value(json_object_get(fj, "file"));
    const char *cname = json_string_value(json_object_get(cj, "name"));
    if (!type || !file || !cname) exit(2);
    char gpath[4096], rpath[4096];
    snprintf(gpath, sizeof gpath, "%s/%s", dir, file);
    snprintf(rpath, sizeof rpath, "%s/%s.safetensors", dir, type);
    cx_st_set *ref = NULL;
    if (cx_st_open_file(&ref, rpath)) {
        fprintf(stderr, "%s\n", circuits_last_error());
        exit(2);
    }
    const cx_st_tensor *tt = want(ref, rpath, "tokens");
    if (tt->dtype != CX_DT_I32 || tt->ndim != 2) exit(2);
    int64_t B = tt->shape[0], T = tt->shape[1];
    const int32_t *tokens = (const int32_t *)tt->data;

    circuits_load_options opt;
    circuits_load_options_init(&opt);
    opt.fold_ln = opt.center_writing_weights = opt.center_unembed = opt.fold_value_biases = 0;
    opt.keep_stored_dtype = m->keep_stored_dtype;
    circuits_model *model = NULL;
    CHECK_OK(circuits_model_load(&model, gpath, &opt));
    if (!model) {
        cx_st_close(ref);
        return;
    }
    circuits_config cfg = {.size = sizeof cfg};
    CHECK_OK(circuits_model_config(model, &cfg));
    /* the stored mode really keeps the file's matrices (an F32 file's stay fp32 views; llama.cpp's
     * K-quant mixes store some matrices in a neighbouring type: Q2_K files hold ffn_down as Q3_K) */
    int32_t dt = -1;
    CHECK_OK(circuits_model_weight_dtype(model, "blocks.0.mlp.W_out", &dt));
    const char *dt_name = circuits_dtype_name(dt);
    bool kept = dt_name && dt != CIRCUITS_DTYPE_F32;
    CHECK(m->keep_stored_dtype && strcmp(type, "F32") != 0 ? kept : dt == CIRCUITS_DTYPE_F32,
          "%s (%s, mode %s): blocks.0.mlp.W_out held as %s", gpath, type, m->name, dt_name ? dt_name : "?");
    const cx_st_tensor *rl = want(ref, rpath, "logits");
    CHECK(rl->numel == (size_t)(B * T * cfg.d_vocab_out), "%s: vocab %d, the reference has %zu logits", gpath,
          cfg.d_vocab_out, rl->numel);
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, model, NULL));
    float *logits = calloc(rl->numel, sizeof *logits);
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    json_t *hooks = json_object_get(cj, "hooks");
    const char *names[64];
    size_t nh = json_array_size(hooks);
    if (nh > 64) exit(2);
    for (size_t i = 0; i < nh; i++) names[i] = json_string_value(json_array_get(hooks, i));
    if (ctx && rl->numel == (size_t)(B * T * cfg.d_vocab_out)) {
        CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, names, nh, cache, logits, NULL, NULL));
        double tol = strcmp(type, "F32") == 0 ? m->tol_logits_f32 : m->tol_logits_q;
        double d_ref = max_diff(logits, rl);
        CHECK(d_ref <= tol, "%s %s: logits vs transformers on the dequantized weights %.3g > %.3g", cname, type,
              d_ref, tol);
        printf("%-9s %-5s %-5s ref %.2e", cname, type, m->name, d_ref);

        double d_hook = 0.0;
        for (size_t i = 0; i < nh; i++) {
            char key[160];
            snprintf(key, sizeof key, "hook:%s", names[i]);
            const cx_st_tensor *e = want(ref, rpath, key);
            circuits_tensor t;
            int rc = circuits_cache_get(cache, names[i], &t);
            CHECK(rc == CIRCUITS_OK, "%s: no hook %s (%s)", gpath, names[i], circuits_last_error());
            if (rc != CIRCUITS_OK) continue;
            bool same = e->ndim == t.ndim;
            for (int d = 0; same && d < t.ndim; d++) same = e->shape[d] == t.shape[d];
            CHECK(same, "%s: hook %s shape differs from TransformerLens", gpath, names[i]);
            if (!same) continue;
            double d = max_diff(t.data, e);
            CHECK(d <= m->tol_hook, "%s %s: hook %s vs TransformerLens %.3g > %.3g", cname, type, names[i], d,
                  m->tol_hook);
            d_hook = fmax(d_hook, d);
        }
        printf("  hooks(%zu) %.2e", nh, d_hook);

        /* the peers: their presence is what case.json says, never silently absent */
        json_t *peers = json_object_get(cj, "peers");
        const cx_st_tensor *hg = cx_st_find(ref, "hf_gguf_logits");
        CHECK(!hg == !json_is_true(json_object_get(peers, "hf_gguf_logits")), "%s: hf_gguf_logits presence", rpath);
        if (hg) {
            double d = max_diff(logits, hg);
            CHECK(d <= tol, "%s %s: logits vs transformers' own GGUF loading %.3g > %.3g", cname, type, d, tol);
            printf("  hf-gguf %.2e", d);
        } else {
            printf("  hf-gguf n/a     ");
        }
        const cx_st_tensor *lc = cx_st_find(ref, "llama_cpp_logits");
        CHECK(!lc == !json_is_true(json_object_get(peers, "llama_cpp_logits")), "%s: llama_cpp_logits presence",
              rpath);
        if (lc) {
            double d = max_diff(logits, lc), lt = llama_cpp_tol(type);
            CHECK(d <= lt, "%s %s: logits vs llama.cpp %.3g > %.3g", cname, type, d, lt);
            printf("  llama.cpp %.2e (tol %.2g)", d, lt);
        } else {
            printf("  llama.cpp n/a");
        }
        printf("\n");
    }
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(model);
    free(logits);
    cx_st_close(ref);
}

int main(int argc, char **argv)
{
    const mode *m = &MODES[0];
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "--mode") == 0) {
        m = NULL;
        for (size_t i = 0; i < sizeof MODES / sizeof *MODES; i++)
            if (strcmp(MODES[i].name, argv[2]) == 0) m = &MODES[i];
        if (!m) {
            fprintf(stderr, "unknown mode %s\n", argv[2]);
            return 2;
        }
        first = 3;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: %s [--mode NAME] CASE_DIR...\n", argv[0]);
        return 2;
    }
    size_t n_files = 0;
    for (int a = first; a < argc; a++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/case.json", argv[a]);
        json_t *cj = json_load_file(path, 0, NULL);
        if (!cj) {
            fprintf(stderr, "cannot read %s\n", path);
            return 2;
        }
        json_t *files = json_object_get(cj, "files");
        if (json_array_size(files) == 0) return 2;
        for (size_t i = 0; i < json_array_size(files); i++, n_files++)
            check_file(argv[a], cj, json_array_get(files, i), m);
        json_decref(cj);
    }
    CHECK(n_files > 0, "no GGUF file was compared");
    return tu_finish("gguf_reference");
}
