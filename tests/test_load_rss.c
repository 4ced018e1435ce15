/* What a mapped load keeps resident of its weight file (docs/loading.md#memory-at-load).
 *
 *   test_load_rss TMP_DIR
 *
 * Writes models into TMP_DIR, loads each mapped (the default) and reads /proc/self/smaps: the
 * resident bytes (Rss) of the weight file's mapping must not exceed the bytes of the tensors the
 * model still reads in place (the union of its weights' extents inside the mapping) plus two
 * pages per such weight and a few pages more -- after the load and again after a forward. A
 * weight copied out of the file (converted, dequantized or rewritten by processing) must leave
 * none of its pages behind:
 *   1. GPT-2, F32, the default processing: every weight is a processed copy, nothing stays;
 *   2. the same file with fold_ln only: W_E (tied: the folded W_U is a copy) and W_pos, W_O,
 *      W_out stay mapped, and after a forward the pages it read of them are resident;
 *   3. the same weights as F16, no processing: every weight a converted fp32 copy;
 *   4. a GGUF Llama with Q8_0 matrices, the default load: dequantized to fp32 copies.
 * The figures are printed. */
#include "testutil.h"

#include "gguf_write.h"
#include "model_dir.h"
#include "st_write.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

enum { D = 256, H = 4, M = 1024, L = 2, V = 8192, CTX = 256, BATCH = 2, POS = 16 };
enum { GD = 256, GH = 4, GKV = 2, GDH = 64, GF = 512, GV = 4096 };

/* dir/config.json and dir/model.safetensors (as dt) of a GPT-2 with tied embeddings */
static void write_gpt2(const char *dir, st_dtype dt)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *fp = fopen(path, "w");
    if (!fp) md_die(path);
    fprintf(fp, "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\", \"n_embd\": %d, \"n_head\": %d, "
                "\"n_layer\": %d, \"n_positions\": %d, \"n_ctx\": %d, \"vocab_size\": %d, \"n_inner\": %d, "
                "\"layer_norm_epsilon\": 1e-05, \"activation_function\": \"gelu_new\"}\n",
            D, H, L, CTX, CTX, V, M);
    if (fclose(fp) != 0) md_die(path);
    st_entry e[4 + 12 * L];
    int n = 0;
    uint32_t seed = 7;
#define ADD(nm, nd, a, b, sc)                                                                     \
    (snprintf(e[n].name, sizeof e[n].name, "%s", nm), e[n].ndim = (nd), e[n].shape[0] = (a), e[n].shape[1] = (b), \
     e[n].data = md_randn((size_t)(a) * (size_t)((nd) == 2 ? (b) : 1), &seed, sc), n++)
    ADD("wte.weight", 2, V, D, 0.2f);
    ADD("wpe.weight", 2, CTX, D, 0.2f);
    for (int l = 0; l < L; l++) {
        char nm[64];
#define ADDL(leaf, nd, a, b, sc) (snprintf(nm, sizeof nm, "h.%d.%s", l, leaf), ADD(nm, nd, a, b, sc))
        ADDL("ln_1.weight", 1, D, 0, 2.0f);
        ADDL("ln_1.bias", 1, D, 0, 0.2f);
        ADDL("attn.c_attn.weight", 2, D, 3 * D, 0.1f);
        ADDL("attn.c_attn.bias", 1, 3 * D, 0, 0.1f);
        ADDL("attn.c_proj.weight", 2, D, D, 0.1f);
        ADDL("attn.c_proj.bias", 1, D, 0, 0.1f);
        ADDL("ln_2.weight", 1, D, 0, 2.0f);
        ADDL("ln_2.bias", 1, D, 0, 0.2f);
        ADDL("mlp.c_fc.weight", 2, D, M, 0.1f);
        ADDL("mlp.c_fc.bias", 1, M, 0, 0.1f);
        ADDL("mlp.c_proj.weight", 2, M, D, 0.1f);
        ADDL("mlp.c_proj.bias", 1, D, 0, 0.1f);
    }
    ADD("ln_f.weight", 1, D, 0, 2.0f);
    ADD("ln_f.bias", 1, D, 0, 0.2f);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_write_as(path, e, n, dt);
    for (int i = 0; i < n; i++) free((void *)e[i].data);
}

/* x as Q8_0 blocks (a scale in F16, then 32 int8) into out (n / 32 * 34 bytes) */
static void q8_0(const float *x, size_t n, uint8_t *out)
{
    for (size_t b = 0; b < n / 32; b++, out += 34) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        float d = amax / 127.0f, inv = d ? 1.0f / d : 0.0f;
        uint16_t h = st_f16(d);
        memcpy(out, &h, 2);
        for (int i = 0; i < 32; i++) out[2 + i] = (uint8_t)(int8_t)lrintf(x[b * 32 + i] * inv);
    }
}

/* a one-block Llama GGUF with every matrix Q8_0 and the norms F32 */
static void write_gguf(const char *path)
{
    gw_file f;
    gw_init(&f);
    gw_kv_str(&f, "general.architecture", "llama");
    gw_kv_u32(&f, "llama.context_length", CTX);
    gw_kv_u32(&f, "llama.embedding_length", GD);
    gw_kv_u32(&f, "llama.block_count", 1);
    gw_kv_u32(&f, "llama.feed_forward_length", GF);
    gw_kv_u32(&f, "llama.attention.head_count", GH);
    gw_kv_u32(&f, "llama.attention.head_count_kv", GKV);
    gw_kv_f32(&f, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gw_kv_f32(&f, "llama.rope.freq_base", 10000.0f);
    static const struct { const char *name; int64_t ne0, ne1; } mats[] = {
        {"token_embd.weight", GD, GV},         {"blk.0.attn_q.weight", GD, GH * GDH},
        {"blk.0.attn_k.weight", GD, GKV * GDH}, {"blk.0.attn_v.weight", GD, GKV * GDH},
        {"blk.0.attn_output.weight", GH * GDH, GD}, {"blk.0.ffn_gate.weight", GD, GF},
        {"blk.0.ffn_up.weight", GD, GF},       {"blk.0.ffn_down.weight", GF, GD},
        {"output.weight", GD, GV}};
    static const char *const norms[] = {"blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"};
    void *keep[12];
    int nk = 0;
    uint32_t seed = 11;
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
        size_t n = (size_t)mats[i].ne0 * (size_t)mats[i].ne1;
        float *x = md_randn(n, &seed, 0.2f);
        uint8_t *q = malloc(n / 32 * 34);
        if (!q) md_die("malloc");
        q8_0(x, n, q);
        free(x);
        gw_tensor(&f, mats[i].name, 2, (int64_t[]){mats[i].ne0, mats[i].ne1}, GW_Q8_0, q, n / 32 * 34);
        keep[nk++] = q;
    }
    for (size_t i = 0; i < 3; i++) {
        float *w = md_randn(GD, &seed, 2.0f);
        gw_tensor(&f, norms[i], 1, (int64_t[]){GD}, GW_F32, w, GD * sizeof *w);
        keep[nk++] = w;
    }
    gw_finish(&f);
    if (gw_save(&f, path, f.len)) md_die(path);
    gw_free(&f);
    for (int i = 0; i < nk; i++) free(keep[i]);
}

typedef struct range { uintptr_t lo, hi; } range;

static int by_lo(const void *a, const void *b)
{
    const range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* The mappings of `file` (at most cap) and their resident bytes, from /proc/self/smaps. */
static long long file_rss(const char *file, range *maps, int cap, int *n_maps)
{
    char real[4096], line[8192];
    if (!realpath(file, real)) md_die(file);
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) md_die("/proc/self/smaps");
    long long rss = 0;
    bool in = false;
    *n_maps = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char path[4096] = "";
        long kb;
        /* a mapping's header: "lo-hi perms offset dev inode [path]"; else a field such as "Rss:" */
        bool header = strchr(line, '-') && strchr(line, ' ') && strchr(line, '-') < strchr(line, ' ');
        if (header && sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095[^\n]", &lo, &hi, path) >= 2) {
            in = strcmp(path, real) == 0;
            if (in && *n_maps < cap) maps[(*n_maps)++] = (range){lo, hi};
        } else if (in && sscanf(line, "Rss: %ld kB", &kb) == 1) {
            rss += 1024LL * kb;
        }
    }
    fclose(f);
    return rss;
}

/* Bytes of the mappings m's weights read in place (the union of their extents) and how many
 * weights do. */
static long long in_place_bytes(const circuits_model *m, const range *maps, int n_maps, int *n_views)
{
    size_t n = circuits_model_weight_count(m);
    range *r = calloc(n ? n : 1, sizeof *r);
    if (!r) md_die("calloc");
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        if (circuits_model_weight_at(m, i, &t) != CIRCUITS_OK || !t.data) continue;
        uintptr_t lo = (uintptr_t)t.data, last = 0;
        for (int d = 0; d < t.ndim; d++) last += (uintptr_t)((t.shape[d] - 1) * t.strides[d]);
        for (int j = 0; j < n_maps; j++)
            if (lo >= maps[j].lo && lo < maps[j].hi) r[k++] = (range){lo, lo + (last + 1) * sizeof(float)};
    }
    qsort(r, (size_t)k, sizeof *r, by_lo);
    long long total = 0;
    uintptr_t end = 0;
    for (int i = 0; i < k; i++) {
        uintptr_t lo = r[i].lo > end ? r[i].lo : end;
        if (r[i].hi > lo) total += (long long)(r[i].hi - lo);
        if (r[i].hi > end) end = r[i].hi;
    }
    free(r);
    *n_views = k;
    return total;
}

/* Loads path mapped with opts, checks the bound after the load and after a forward. */
static void check(const char *label, const char *path, const char *weight_file, const circuits_load_options *opts,
                  int want_in_place)
{
    long long page = sysconf(_SC_PAGESIZE);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, path, opts));
    if (!m) return;
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));
    range maps[16];
    int n_maps = 0, n_views = 0;
    for (int step = 0; step < 2; step++) {
        if (step == 1) {
            circuits_context *ctx = NULL;
            int32_t tokens[BATCH * POS];
            for (int i = 0; i < BATCH * POS; i++) tokens[i] = (int32_t)((i * 2654435761u) % (uint32_t)c.d_vocab);
            float *logits = malloc(sizeof *logits * BATCH * POS * (size_t)c.d_vocab_out);
            if (!logits) md_die("malloc");
            CHECK_OK(circuits_context_create(&ctx, m, NULL));
            if (ctx) CHECK_OK(circuits_context_forward(ctx, tokens, BATCH, POS, logits, NULL, NULL));
            circuits_context_free(ctx);
            free(logits);
        }
        long long rss = file_rss(weight_file, maps, 16, &n_maps);
        long long used = in_place_bytes(m, maps, n_maps, &n_views);
        long long bound = used + page * (2LL * n_views + 4);
        printf("%s, after the %s: file mapping resident %lld bytes; %d weights read %lld bytes of it in place; "
               "bound %lld\n", label, step ? "forward" : "load", rss, n_views, used, bound);
        CHECK(n_maps >= 1, "%s: the weight file is not mapped", label);
        CHECK(rss <= bound, "%s, after the %s: %lld bytes of the file resident, the weights read %lld in place",
              label, step ? "forward" : "load", rss, used);
        CHECK(want_in_place ? n_views > 0 : n_views == 0, "%s: %d weights read in place, expected %s", label,
              n_views, want_in_place ? "some" : "none");
    }
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_load_rss TMP_DIR\n");
        return 2;
    }
    char dir[4096], file[4200], f16dir[4096], f16file[4200], gguf[4200];
    snprintf(dir, sizeof dir, "%s/load_rss_f32", argv[1]);
    snprintf(f16dir, sizeof f16dir, "%s/load_rss_f16", argv[1]);
    snprintf(gguf, sizeof gguf, "%s/load_rss_q8.gguf", argv[1]);
    static const char *const files[] = {"config.json", "model.safetensors"};
    if (mkdir(dir, 0700) != 0 || mkdir(f16dir, 0700) != 0) md_die(dir);
    write_gpt2(dir, ST_F32);
    write_gpt2(f16dir, ST_F16);
    write_gguf(gguf);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    snprintf(f16file, sizeof f16file, "%s/model.safetensors", f16dir);

    circuits_load_options o;
    circuits_load_options_init(&o);
    check("GPT-2 F32, default processing", dir, file, &o, 0);
    o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    check("GPT-2 F32, fold_ln only", dir, file, &o, 1);
    o.fold_ln = 0;
    check("GPT-2 F16, no processing", f16dir, f16file, &o, 0);
    circuits_load_options_init(&o);
    check("Llama GGUF Q8_0, default processing", gguf, gguf, &o, 0);

    md_remove(dir, files, 2);
    md_remove(f16dir, files, 2);
    unlink(gguf);
    return tu_finish("test_load_rss");
}
