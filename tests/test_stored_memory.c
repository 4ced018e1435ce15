/* keep_stored_dtype's memory bound: resident size ≈ file size + activations.
 *
 *   test_stored_memory TMP_DIR
 *
 * Writes an F16 Llama with grouped-query attention (d_model 256, 8 query / 2 key-value heads,
 * d_mlp 512, 2 layers, vocab 4096, untied: about 6.3 MB), then loads it without processing, with
 * and without keep_stored_dtype, and counts the library's live heap bytes (the test-only
 * counting allocator, lib/base/fault.h) after the load and after a forward of [2, 32] tokens:
 *   - stored: the model's own heap (names, norms as fp32, row maps) <= 10% of the file, so with
 *     the mapping (the file's size, read-only) the model holds <= 1.1 x the file;
 *   - the run adds no more than the fp32 model's run does (activations only: no weight is
 *     dequantized into a lasting buffer);
 *   - fp32: the heap holds the widened weights, about 2 x the file (the figure the option saves).
 * The figures are printed (docs/loading.md#keep_stored_dtype quotes them). */
#include "testutil.h"

#include "fault.h"
#include "model_dir.h"
#include "st_write.h"

#include <errno.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

enum { D = 256, H = 8, KV = 2, DH = 32, M = 512, L = 2, V = 4096, BATCH = 2, POS = 32 };

/* dir/config.json and dir/model.safetensors (F16); returns the weight file's size. */
static long long write_model(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *fp = fopen(path, "w");
    if (!fp) md_die(path);
    fprintf(fp, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, "
                "\"intermediate_size\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
                "\"num_hidden_layers\": %d, \"vocab_size\": %d, \"max_position_embeddings\": 128, "
                "\"hidden_act\": \"silu\", \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0, "
                "\"tie_word_embeddings\": false, \"attention_bias\": false, \"mlp_bias\": false}\n",
            D, M, H, KV, DH, L, V);
    if (fclose(fp) != 0) md_die(path);
    st_entry e[3 + 9 * L];
    int n = 0;
    uint32_t seed = 1;
#define ADD1(nm, a) (snprintf(e[n].name, sizeof e[n].name, "%s", nm), e[n].ndim = 1, e[n].shape[0] = (a), \
                     e[n].data = md_randn((size_t)(a), &seed, 2.0f), n++)
#define ADD2(nm, a, b) (snprintf(e[n].name, sizeof e[n].name, "%s", nm), e[n].ndim = 2, e[n].shape[0] = (a), \
                        e[n].shape[1] = (b), e[n].data = md_randn((size_t)(a) * (size_t)(b), &seed, 0.1f), n++)
    ADD2("model.embed_tokens.weight", V, D);
    ADD2("lm_head.weight", V, D);
    ADD1("model.norm.weight", D);
    for (int l = 0; l < L; l++) {
        char nm[64];
#define NAME(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s), nm)
        ADD1(NAME("input_layernorm.weight"), D);
        ADD1(NAME("post_attention_layernorm.weight"), D);
        ADD2(NAME("self_attn.q_proj.weight"), H * DH, D);
        ADD2(NAME("self_attn.k_proj.weight"), KV * DH, D);
        ADD2(NAME("self_attn.v_proj.weight"), KV * DH, D);
        ADD2(NAME("self_attn.o_proj.weight"), D, H * DH);
        ADD2(NAME("mlp.gate_proj.weight"), M, D);
        ADD2(NAME("mlp.up_proj.weight"), M, D);
        ADD2(NAME("mlp.down_proj.weight"), D, M);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_write_as(path, e, n, ST_F16);
    for (int i = 0; i < n; i++) free((void *)e[i].data);
    struct stat st;
    if (stat(path, &st) != 0) md_die(path);
    return (long long)st.st_size;
}

/* Live heap bytes the model holds after loading, and those a forward adds. */
static void measure(const char *dir, int keep, long long *model_bytes, long long *run_bytes, float *logits)
{
    long long base = cx_live_bytes();
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    o.keep_stored_dtype = keep;
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, &o));
    if (!m) exit(1);
    *model_bytes = cx_live_bytes() - base;
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    int32_t tok[BATCH * POS];
    for (int i = 0; i < BATCH * POS; i++) tok[i] = (i * 977 + 13) % V;
    CHECK_OK(circuits_context_forward(ctx, tok, BATCH, POS, logits, NULL, NULL));
    *run_bytes = cx_live_bytes() - base - *model_bytes;
    circuits_context_free(ctx);
    circuits_model_free(m);
    CHECK(cx_live_bytes() == base, "keep %d: %lld bytes outlive the model", keep, cx_live_bytes() - base);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_stored_memory TMP_DIR\n");
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/test_stored_memory_XXXXXX", argv[1]);
    if (!mkdtemp(dir)) md_die(dir);
    long long file = write_model(dir);
    size_t nl = (size_t)BATCH * POS * V;
    float *ls = malloc(nl * sizeof *ls), *lf = malloc(nl * sizeof *lf);
    if (!ls || !lf) md_die("malloc");
    long long ms, rs, mf, rf;
    measure(dir, 1, &ms, &rs, ls);
    measure(dir, 0, &mf, &rf, lf);
    printf("file %.2f MB; stored: model heap %.3f MB (%.1f%% of the file), run %.2f MB; fp32: model heap %.2f MB "
           "(%.2f x the file), run %.2f MB\n",
           (double)file / 1e6, (double)ms / 1e6, 100.0 * (double)ms / (double)file, (double)rs / 1e6,
           (double)mf / 1e6, (double)mf / (double)file, (double)rf / 1e6);
    CHECK(ms <= file / 10, "stored: the model holds %lld heap bytes, more than 10%% of the %lld-byte file", ms, file);
    CHECK(rs <= rf, "stored: a run holds %lld bytes, the fp32 model's %lld", rs, rf);
    CHECK(mf >= file * 19 / 10, "fp32: %lld heap bytes for a %lld-byte F16 file: the weights not widened?", mf, file);
    double d = 0, mag = 0;
    for (size_t i = 0; i < nl; i++) {
        d = fmax(d, fabs((double)ls[i] - (double)lf[i]));
        mag = fmax(mag, fabs((double)lf[i]));
    }
    CHECK(d <= 2e-5 * mag, "stored logits differ from fp32's by %g (max %g)", d, mag);
    free(ls);
    free(lf);
    static const char *const files[] = {"config.json", "model.safetensors"};
    md_remove(dir, files, 2);
    return tu_finish("test_stored_memory");
}
