/* circuits_model_rotary_qk: the QK circuit of a rotary head with the rotation, per offset.
 *   1. A hand-built model (written here: tl_config.json + model.safetensors) whose one head is
 *      made to attend to offset 3: W_Q row 0 = (1, 0), W_K row 0 = (cos 3, sin 3) on the pair
 *      with inv_freq 1, so M[delta][0][0] = cos(delta - 3) by hand and every other entry is 0;
 *      the forward's hook_attn_scores are cos(i - j - 3) / attn_scale and peak at j = i - 3.
 *   2. On every rotary reference case (GQA, MQA, GPT-J pairs, partial rotary_dim, linear and
 *      llama3 scaling, local layers without linear scaling): for every head and every causal
 *      (i, j), hook_attn_scores * attn_scale = x_i M[i-j] x_j^T + x_i A[i-j] b_K^T
 *      + rot(b_Q, i-j) . k_j, with x = ln1.hook_normalized, k = hook_k (unrotated, with b_K)
 *      and A = W_Q R(delta) the factor the library returns; once with our forward's
 *      activations, once with TransformerLens's own (processed.safetensors).
 * Usage: test_circuits_rotary CASES_DIR TMP_DIR */
#include "testutil.h"

#include <math.h>
#include <sys/stat.h>

#include "internal.h"
#include "../lib/io/safetensors.h"
#include "rope.h"
#include "st_write.h"

#define TOL 1e-4

static double worst_hand, worst_case;

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f)) {
        fprintf(stderr, "FATAL: writing %s\n", path);
        exit(2);
    }
}

static void test_hand_built(const char *tmp)
{
    enum { D = 4, DH = 2, V = 4, N = 8, K = 3 };
    char dir[1024], p[1100];
    snprintf(dir, sizeof dir, "%s/rotary_offset3", tmp);
    mkdir(tmp, 0755);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/tl_config.json", dir);
    /* rotary_dim 2: one pair, inv_freq = base^0 = 1 rad per position */
    write_text(p, "{\"d_model\": 4, \"d_head\": 2, \"n_heads\": 1, \"n_layers\": 1, \"n_ctx\": 8, \"d_vocab\": 4,"
                  " \"d_mlp\": 4, \"act_fn\": \"gelu_new\", \"normalization_type\": null, \"attn_only\": true,"
                  " \"positional_embedding_type\": \"rotary\", \"rotary_dim\": 2}");
    float WE[V * D] = {0}, WQ[D * DH] = {0}, WK[D * DH] = {0}, WV[D * DH] = {0}, WO[DH * D] = {0}, WU[D * V] = {0};
    for (int t = 0; t < V; t++) {
        WE[t * D] = 1.0f;             /* every token: e0, plus a token-specific direction */
        WE[t * D + 1 + t % 3] = 0.5f; /* that W_Q and W_K ignore */
    }
    WQ[0] = 1.0f;
    WK[0] = (float)cos((double)K);
    WK[1] = (float)sin((double)K);
    st_entry e[] = {{"embed.W_E", 2, {V, D}, WE},           {"blocks.0.attn.W_Q", 3, {1, D, DH}, WQ},
                    {"blocks.0.attn.W_K", 3, {1, D, DH}, WK}, {"blocks.0.attn.W_V", 3, {1, D, DH}, WV},
                    {"blocks.0.attn.W_O", 3, {1, DH, D}, WO}, {"unembed.W_U", 2, {D, V}, WU}};
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    st_write(p, e, (int)(sizeof e / sizeof e[0]));

    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, NULL));
    if (!m) return;
    circuits_factored *f = NULL;
    CHECK_OK(circuits_model_rotary_qk(m, 0, 0, N, &f));
    float M[N * D * D];
    if (f) {
        int64_t shape[4];
        int32_t nd = 0;
        int64_t md = 0;
        CHECK_OK(circuits_factored_shape(f, shape, &nd, &md));
        CHECK(nd == 3 && shape[0] == N && shape[1] == D && shape[2] == D && md == DH, "shape [%lld, %lld, %lld] / %lld",
              (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)md);
        CHECK_OK(circuits_factored_materialize(f, M, (size_t)(N * D * D)));
        int best = 0;
        for (int d = 0; d < N; d++) {
            for (int r = 0; r < D; r++)
                for (int c = 0; c < D; c++) {
                    double want = (r == 0 && c == 0) ? cos((double)(d - K)) : 0.0;
                    worst_hand = fmax(worst_hand, fabs(M[(d * D + r) * D + c] - want));
                }
            if (M[d * D * D] > M[best * D * D]) best = d;
        }
        CHECK(best == K, "the head's favourite offset is %d, built as %d", best, K);
    }
    circuits_factored_free(f);

    /* the forward agrees: scores cos(i - j - 3) / sqrt(d_head), the head looks 3 back */
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    CHECK_OK(circuits_cache_create(&cache));
    int32_t tok[N] = {0, 1, 2, 3, 2, 1, 0, 3};
    const char *want = "blocks.0.attn.hook_attn_scores";
    if (ctx && cache) {
        CHECK_OK(circuits_context_run_with_cache(ctx, tok, 1, N, &want, 1, cache, NULL, NULL, NULL));
        circuits_tensor s;
        CHECK_OK(circuits_cache_get(cache, want, &s));
        int hits = 0;
        for (int i = 0; i < N && s.data; i++) {
            int best = 0;
            for (int j = 0; j <= i; j++) {
                worst_hand = fmax(worst_hand, fabs(s.data[i * N + j] - cos((double)(i - j - K)) / sqrt(2.0)));
                if (s.data[i * N + j] > s.data[i * N + best]) best = j;
            }
            hits += i >= K && best == i - K;
        }
        CHECK(hits == N - K, "the forward's head looks 3 back at %d of %d positions", hits, N - K);
    }
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
    CHECK(worst_hand < 1e-5, "hand-built rotary head: max error %g", worst_hand);
}

/* b rotated by delta as the forward rotates a query at position delta (TL skips linear
 * scaling on local layers), in double: the test's own copy of the rotation */
static void rotate(const circuits_config *c, int32_t layer, int64_t delta, const float *b, double *out)
{
    double inv[256];
    circuits_config u = *c;
    bool local = c->local_attn == CIRCUITS_LOCAL_ATTN_ALL || (c->local_attn == CIRCUITS_LOCAL_ATTN_EVEN && layer % 2 == 0) ||
                 (c->local_attn == CIRCUITS_LOCAL_ATTN_ODD && layer % 2 == 1);
    if (local && c->rope_scaling == CIRCUITS_ROPE_LINEAR) u.rope_scaling = CIRCUITS_ROPE_NONE;
    cx_rope_inv_freq(&u, inv);
    for (int e = 0; e < c->d_head; e++) out[e] = b[e];
    for (int i = 0; i < c->rotary_dim / 2; i++) {
        int a, bb;
        cx_rope_pair(c, i, &a, &bb);
        double th = (double)delta * inv[i];
        out[a] = b[a] * cos(th) - b[bb] * sin(th);
        out[bb] = b[bb] * cos(th) + b[a] * sin(th);
    }
}

static float at(const circuits_tensor *t, int64_t i, int64_t j)
{
    return t ? t->data[i * t->strides[0] + j * t->strides[1]] : 0.0f;
}

/* Per layer: x = ln1.hook_normalized [B, T, D], k = attn.hook_k [B, T, KV, dh] (unrotated) and
 * s = attn.hook_attn_scores [B, H, T, T] from one source (our forward, or TransformerLens's). */
typedef struct layer_acts {
    const float *x, *k, *s;
} layer_acts;

/* max over heads and causal (i, j) of |s * attn_scale - (x_i M x_j^T + x_i A b_K^T + rot(b_Q) . k_j)| */
static double identity_error(const circuits_model *m, int32_t l, const layer_acts *a, int64_t B, int64_t T)
{
    const circuits_config *c = &m->cfg;
    int64_t D = c->d_model, dh = c->d_head, H = c->n_heads, KV = c->n_key_value_heads;
    const cx_layer_weights *L = &m->layers[l];
    float *M = malloc(sizeof(float) * (size_t)(T * D * D));
    double worst = 0, rb[512];
    for (int32_t h = 0; h < H && M; h++) {
        circuits_factored *f = NULL;
        CHECK_OK(circuits_model_rotary_qk(m, l, h, T, &f));
        if (!f) continue;
        circuits_tensor A, Bt;
        CHECK_OK(circuits_factored_factors(f, &A, &Bt));
        CHECK_OK(circuits_factored_materialize(f, M, (size_t)(T * D * D)));
        int64_t g = h / (H / KV);
        float bq[512];
        for (int64_t e = 0; e < dh; e++) bq[e] = at(L->b_Q, h, e);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j <= i; j++) {
                    float got = a->s[((b * H + h) * T + i) * T + j];
                    if (isinf(got)) continue; /* outside a local window */
                    int64_t d = i - j;
                    const float *xi = a->x + (b * T + i) * D, *xj = a->x + (b * T + j) * D;
                    const float *kj = a->k + ((b * T + j) * KV + g) * dh;
                    const float *Ad = A.data + d * D * dh, *Md = M + d * D * D;
                    double want = 0;
                    for (int64_t r = 0; r < D; r++)
                        for (int64_t q = 0; q < D; q++) want += (double)xi[r] * Md[r * D + q] * xj[q];
                    for (int64_t e = 0; e < dh; e++) { /* x_i A b_K^T */
                        double xa = 0;
                        for (int64_t r = 0; r < D; r++) xa += (double)xi[r] * Ad[r * dh + e];
                        want += xa * at(L->b_K, g, e);
                    }
                    rotate(c, l, d, bq, rb);
                    for (int64_t e = 0; e < dh; e++) want += rb[e] * kj[e];
                    worst = fmax(worst, fabs((double)got * c->attn_scale - want));
                }
        circuits_factored_free(f);
    }
    free(M);
    return worst;
}

/* Against our forward pass, on the model as loaded by default (processed). */
static void test_case_forward(const char *cases, const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", cases, name);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, p, NULL));
    if (!m) return;
    const circuits_config *c = &m->cfg;
    CHECK(c->positional_embedding_type == CIRCUITS_POS_ROTARY, "%s is not rotary", name);
    enum { B = 2, T = 9 };
    int32_t tok[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 13 + 5) % c->d_vocab);
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    CHECK_OK(circuits_cache_create(&cache));
    if (ctx && cache) CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, NULL, NULL, NULL));
    double worst = 0;
    for (int32_t l = 0; l < c->n_layers && ctx && cache; l++) {
        char nx[128], nk[128], ns[128];
        snprintf(nx, sizeof nx, "blocks.%d.ln1.hook_normalized", l);
        snprintf(nk, sizeof nk, "blocks.%d.attn.hook_k", l);
        snprintf(ns, sizeof ns, "blocks.%d.attn.hook_attn_scores", l);
        circuits_tensor x, k, s;
        memset(&x, 0, sizeof x);
        memset(&k, 0, sizeof k);
        memset(&s, 0, sizeof s);
        CHECK_OK(circuits_cache_get(cache, nx, &x));
        CHECK_OK(circuits_cache_get(cache, nk, &k));
        CHECK_OK(circuits_cache_get(cache, ns, &s));
        if (!x.data || !k.data || !s.data) break;
        layer_acts a = {x.data, k.data, s.data};
        worst = fmax(worst, identity_error(m, l, &a, B, T));
    }
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
    printf("%s: rotary QK vs our forward's scores: max error %.3g\n", name, worst);
    CHECK(worst < TOL, "%s: rotary QK identity (our forward) off by %g", name, worst);
    worst_case = fmax(worst_case, worst);
}

static float *read_all(const cx_st_set *st, const char *name, size_t *n)
{
    const cx_st_tensor *t = cx_st_find(st, name);
    CHECK(t != NULL, "reference tensor %s missing", name);
    if (!t) return NULL;
    float *v = malloc(sizeof(float) * t->numel);
    for (size_t i = 0; i < t->numel; i++) v[i] = cx_st_read_f32(t, i);
    if (n) *n = t->numel;
    return v;
}

/* Against TransformerLens's own activations (processed.safetensors, from generate_circuits.py:
 * its ln1.hook_normalized, hook_k and hook_attn_scores on expected.safetensors' tokens), with
 * the weights processed as from_pretrained processes them (our default load, as TL's; the
 * unprocessed hook_normalized would still lack RMSNorm's w, applied after the hook). */
static void test_case_tl(const char *cases, const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", cases, name);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, p, NULL));
    snprintf(p, sizeof p, "%s/%s/processed.safetensors", cases, name);
    cx_st_set *st = NULL, *ex = NULL;
    CHECK_OK(cx_st_open_file(&st, p));
    snprintf(p, sizeof p, "%s/%s/expected.safetensors", cases, name);
    CHECK_OK(cx_st_open_file(&ex, p));
    if (!m || !st || !ex) {
        circuits_model_free(m);
        cx_st_close(st);
        cx_st_close(ex);
        return;
    }
    const circuits_config *c = &m->cfg;
    const cx_st_tensor *tok = cx_st_find(ex, "tokens");
    CHECK(tok && tok->shape[0] > 0, "%s: no tokens", name);
    int64_t B = tok ? tok->shape[0] : 0, T = tok ? tok->shape[1] : 0;
    double worst = 0;
    for (int32_t l = 0; l < c->n_layers && tok; l++) {
        char nx[128], nk[128], ns[128];
        snprintf(nx, sizeof nx, "hook:blocks.%d.ln1.hook_normalized", l);
        snprintf(nk, sizeof nk, "hook:blocks.%d.attn.hook_k", l);
        snprintf(ns, sizeof ns, "hook:blocks.%d.attn.hook_attn_scores", l);
        size_t ns_n = 0;
        float *x = read_all(st, nx, NULL), *k = read_all(st, nk, NULL), *s = read_all(st, ns, &ns_n);
        if (x && k && s && ns_n == (size_t)(B * c->n_heads * T * T)) {
            layer_acts a = {x, k, s};
            worst = fmax(worst, identity_error(m, l, &a, B, T));
        } else {
            CHECK(0, "%s layer %d: reference activations missing or mis-shaped", name, l);
        }
        free(x);
        free(k);
        free(s);
    }
    cx_st_close(st);
    cx_st_close(ex);
    circuits_model_free(m);
    printf("%s: rotary QK vs TransformerLens's scores: max error %.3g\n", name, worst);
    CHECK(worst < TOL, "%s: rotary QK identity (TransformerLens) off by %g", name, worst);
    worst_case = fmax(worst_case, worst);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s CASES_DIR TMP_DIR\n", argv[0]);
        return 2;
    }
    test_hand_built(argv[2]);
    printf("hand-built offset-3 head: max error %.3g\n", worst_hand);
    static const char *const cases[] = {"tl_gqa_rotary_rms",  "tl_local_alternating_rotary", "tl_rope_linear_mqa",
                                        "tl_rope_llama3",     "tl_rotary_gptj",              "tl_rotary_neox_quarter"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_case_forward(argv[1], cases[i]);
        test_case_tl(argv[1], cases[i]);
    }
    return tu_finish("circuits_rotary");
}
