/* Composition scores are bit-identical whatever the thread count (lib/analysis/compose.c runs
 * its per-head reductions and its score tiles on the pool). A random attention-only model in
 * the TransformerLens layout, big enough that every thread count splits both phases: 6 layers
 * x 8 heads = 48 readers and 48 writers to reduce, 5 score tiles (one per writer layer), so
 * with 2 or 3 threads each slot computes several heads and tiles. Scores of Q, K and V (and
 * the MLP scores of a model with MLPs) with 1, 2 and 3 threads must match bit for bit (memcmp).
 * The check can fail: a decomposition that depended on the thread count — e.g. the product's
 * inner dimension split per thread and the parts added — changes the fp32 sums, and with them
 * the scores' bits (tried by hand: ~150 of the 960 scored pairs per mode then differ).
 * Usage: test_compose_threads */
#include "testutil.h"
#include "model_dir.h"
#include "st_write.h"

#include <math.h>
#include <stdint.h>

#define L 6
#define H 8
#define D 64
#define DH 16
#define M 96 /* d_mlp of the model with MLPs */
#define V 32
#define CTX 16

static uint64_t rng = 0x9E3779B97F4A7C15u;
static float randn(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    double u1 = ((rng >> 11) + 1.0) / 9007199254740993.0;
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    double u2 = (rng >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2) / sqrt((double)D));
}

static float *randv(size_t n)
{
    float *x = malloc(n * sizeof *x);
    if (!x) exit(2);
    for (size_t i = 0; i < n; i++) x[i] = randn();
    return x;
}

/* Writes the model into dir: attention-only, or with ReLU MLPs. */
static void write_model(const char *dir, int mlp)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tl_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) md_die(path);
    fprintf(f, "{\"d_model\": %d, \"d_head\": %d, \"n_heads\": %d, \"n_layers\": %d, \"n_ctx\": %d, \"d_vocab\": %d, "
               "\"attn_only\": %s, \"d_mlp\": %d, \"normalization_type\": null, \"act_fn\": \"relu\"}\n",
            D, DH, H, L, CTX, V, mlp ? "false" : "true", M);
    if (fclose(f) != 0) md_die(path);
    st_entry e[3 + 6 * L];
    int n = 0;
    e[n++] = (st_entry){"embed.W_E", 2, {V, D}, randv(V * D)};
    e[n++] = (st_entry){"pos_embed.W_pos", 2, {CTX, D}, randv(CTX * D)};
    for (int l = 0; l < L; l++) {
        static const char *w[4] = {"W_Q", "W_K", "W_V", "W_O"};
        for (int k = 0; k < 4; k++) {
            e[n] = (st_entry){"", 3, {H, k == 3 ? DH : D, k == 3 ? D : DH}, randv(H * D * DH)};
            snprintf(e[n++].name, sizeof e[0].name, "blocks.%d.attn.%s", l, w[k]);
        }
        if (mlp) {
            e[n] = (st_entry){"", 2, {D, M}, randv(D * M)};
            snprintf(e[n++].name, sizeof e[0].name, "blocks.%d.mlp.W_in", l);
            e[n] = (st_entry){"", 2, {M, D}, randv(M * D)};
            snprintf(e[n++].name, sizeof e[0].name, "blocks.%d.mlp.W_out", l);
        }
    }
    e[n++] = (st_entry){"unembed.W_U", 2, {D, V}, randv(D * V)};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_write(path, e, n);
    for (int i = 0; i < n; i++) free((void *)e[i].data);
}

/* mode 0..2: circuits_model_composition_scores; 3..5: the MLP scores of mode - 3. */
static int scores(const circuits_model *m, int mode, float *out)
{
    return mode < 3 ? circuits_model_composition_scores(m, mode, out)
                    : circuits_model_mlp_composition_scores(m, mode - 3, out);
}

static void check_model(const char *dir, int mlp)
{
    circuits_load_options o;
    circuits_load_options_init(&o);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, &o));
    if (!m) return;
    size_t n = (size_t)(L * H) * (L * H);
    float *one = malloc(n * sizeof *one), *many = malloc(n * sizeof *many);
    if (!one || !many) exit(2);
    for (int mode = mlp ? 3 : 0; mode < (mlp ? 6 : 3); mode++) {
        circuits_set_num_threads(1);
        CHECK_OK(scores(m, mode, one));
        /* not a vacuous comparison: the later layers' heads are scored, and not all alike */
        CHECK(one[1 * L * H + (L - 1) * H] > 0 && one[1 * L * H + (L - 1) * H] != one[2 * L * H + (L - 1) * H],
              "mode %d: scores of distinct pairs should be distinct and positive", mode);
        for (int t = 2; t <= 3; t++) {
            circuits_set_num_threads(t);
            memset(many, 0xff, n * sizeof *many);
            CHECK_OK(scores(m, mode, many));
            size_t diff = 0, first = n;
            size_t rows = mode < 3 ? (size_t)(L * H) : (size_t)L;
            for (size_t i = 0; i < rows * (size_t)(L * H); i++)
                if (memcmp(one + i, many + i, sizeof *one) != 0 && diff++ == 0) first = i;
            CHECK(diff == 0, "%s mode %d: %zu scores differ between 1 and %d threads (first [%zu]: %.9g vs %.9g)",
                  mlp ? "MLP" : "attention", mode % 3, diff, t, first, first < n ? one[first] : 0.0,
                  first < n ? many[first] : 0.0);
        }
    }
    circuits_set_num_threads(0);
    free(one);
    free(many);
    circuits_model_free(m);
}

int main(void)
{
    char tmpl[] = "/tmp/circuits_compose_threads_XXXXXX";
    const char *dir = mkdtemp(tmpl);
    if (!dir) md_die("mkdtemp");
    static const char *const files[] = {"tl_config.json", "model.safetensors"};
    for (int mlp = 0; mlp <= 1; mlp++) {
        write_model(dir, mlp);
        check_model(dir, mlp);
    }
    md_remove(dir, files, 2);
    return tu_finish("test_compose_threads");
}
