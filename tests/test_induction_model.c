/* A hand-built 2-layer attention-only model (TransformerLens layout, no LayerNorm, written here)
 * whose layer-0 head 0 provably attends to the previous position and whose layer-1 head 0
 * implements induction through K-composition with it; the library must find exactly that
 * pair: previous-token detection, induction scores, K-composition against the random baseline,
 * the loss on repeated tokens, zero-ablation of the induction head, and its copying score.
 *
 * Tokens are K-dimensional unit codes c_t (random, fixed seed), not one-hot: with one-hot
 * tokens the induction circuit has rank d_vocab, so its composition score is 1/sqrt(d_vocab)
 * against a random baseline of 1/sqrt(d_model), and a small vocabulary makes repeated random
 * blocks repeat tokens inside a block, which splits induction attention. Codes give a large
 * vocabulary (1024) with rank-K (60) circuits.
 * The residual stream [d_model] is split into subspaces:
 *   tok   [0, K)           the current token's code (W_E), read by W_U
 *   prev  [K, 2K)          the previous token's code, written by L0H0; W_E writes -c_t here
 *   pos   [2K, 2K + P)     the position, one-hot (W_pos)
 *   const 2K + P           1 for every token (W_E)
 *   the rest               unused by the designed heads (only the small random heads touch it);
 *                          d_model is large next to the rank-K circuits, as in a real model
 * L0H0 (previous token): q_i = a e_i from pos i, k_j = a e_{j+1} from pos j: score a^2 [j = i-1],
 *   exactly; OV copies tok into prev. At position 0 (which can only attend to itself) it writes
 *   c(tok 0) into prev, cancelling W_E's -c(tok 0): prev(0) = 0, while for j >= 1
 *   prev(j) = c(tok j-1) - c(tok j).
 * L1H0 (induction): q_i = s c(tok i) + s e_sink, k_j = s prev(j) + (b / s) [j = 0] e_sink:
 *   score s^2 (<c_i, c_{j-1}> - <c_i, c_j>) + b [j = 0]: about s^2 for the key whose previous
 *   token is the query's, |.| << s^2 otherwise; b = s^2 / 2. With no matching key, position 0
 *   (an attention sink) wins, which is also the induction target of the last token of the
 *   first block. OV copies tok, times g, into tok, which W_U reads (logits g <c_pred, c_t>):
 *   it predicts the token after the earlier occurrence.
 * L0H1 and L1H1 are small random heads.
 * Usage: test_induction_model */
#include "testutil.h"
#include "rng.h"
#include "st_write.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define V 1024     /* d_vocab */
#define K 60       /* token code dimension */
#define P 32       /* n_ctx */
#define DH 64      /* d_head >= max(K + 1, P) */
#define DM 512     /* d_model >= 2K + P + 1 */
#define NH 2
#define NL 2
#define TOK(k) (k)
#define PREV(k) (K + (k))
#define POS(p) (2 * K + (p))
#define CONST (2 * K + P)
#define SINK_DIM (DH - 1) /* L1H0's d_head dimension for the attention sink */

static char g_root[256];

static void die(const char *what)
{
    fprintf(stderr, "test_induction_model: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void *xcalloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    if (!p) die("calloc");
    return p;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* rng, rng_u64, rng_unif, rng_gauss: tests/rng.h */

/* st_entry, st_write: tests/st_write.h */

static void add_entry(st_entry *t, int *n, const char *name, const float *data, int ndim, int64_t d0, int64_t d1,
                      int64_t d2)
{
    st_entry *e = &t[(*n)++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->shape[0] = d0, e->shape[1] = d1, e->shape[2] = d2;
    e->data = data;
}

/* ---- the model ---- */

/* Scales: attention scores are q.k / sqrt(d_head). */
#define PREV_SCORE 30.0  /* L0H0: a^2 / sqrt(d_head) */
#define MATCH_SCORE 60.0 /* L1H0: s^2 / sqrt(d_head) */
#define SINK_SCORE 30.0  /* L1H0: b / sqrt(d_head) */
#define GAIN 20.0f       /* L1H0's OV */
#define NOISE 0.02       /* entries of the random heads */

typedef struct weights {
    float *WE, *Wpos, *WU;
    float *WQ[NL], *WK[NL], *WV[NL], *WO[NL];
} weights;

#define QKV(W, h, row, col) (W)[((size_t)(h) * DM + (size_t)(row)) * DH + (size_t)(col)] /* [H, D, dh] */
#define OUT(W, h, row, col) (W)[((size_t)(h) * DH + (size_t)(row)) * DM + (size_t)(col)] /* [H, dh, D] */

static void build(weights *w, uint64_t seed)
{
    rng g = {seed};
    w->WE = xcalloc((size_t)V * DM * sizeof(float));
    w->Wpos = xcalloc((size_t)P * DM * sizeof(float));
    w->WU = xcalloc((size_t)DM * V * sizeof(float));
    for (int l = 0; l < NL; l++) {
        w->WQ[l] = xcalloc((size_t)NH * DM * DH * sizeof(float));
        w->WK[l] = xcalloc((size_t)NH * DM * DH * sizeof(float));
        w->WV[l] = xcalloc((size_t)NH * DM * DH * sizeof(float));
        w->WO[l] = xcalloc((size_t)NH * DH * DM * sizeof(float));
    }
    /* token codes: Gaussian directions, unit length */
    for (int t = 0; t < V; t++) {
        double c[K], n = 0;
        for (int k = 0; k < K; k++) c[k] = rng_gauss(&g), n += c[k] * c[k];
        n = sqrt(n);
        for (int k = 0; k < K; k++) {
            w->WE[(size_t)t * DM + TOK(k)] = (float)(c[k] / n);
            w->WE[(size_t)t * DM + PREV(k)] = (float)(-c[k] / n);
            w->WU[(size_t)TOK(k) * V + t] = (float)(c[k] / n);
        }
        w->WE[(size_t)t * DM + CONST] = 1.0f;
    }
    for (int p = 0; p < P; p++) w->Wpos[(size_t)p * DM + POS(p)] = 1.0f;

    /* L0H0: previous token */
    float a = (float)sqrt(PREV_SCORE * sqrt((double)DH));
    for (int p = 0; p < P; p++) {
        QKV(w->WQ[0], 0, POS(p), p) = a;
        if (p + 1 < P) QKV(w->WK[0], 0, POS(p), p + 1) = a;
    }
    for (int k = 0; k < K; k++) {
        QKV(w->WV[0], 0, TOK(k), k) = 1.0f;
        OUT(w->WO[0], 0, k, PREV(k)) = 1.0f;
    }
    /* L1H0: induction */
    float s = (float)sqrt(MATCH_SCORE * sqrt((double)DH)), b = (float)(SINK_SCORE * sqrt((double)DH));
    for (int k = 0; k < K; k++) {
        QKV(w->WQ[1], 0, TOK(k), k) = s;
        QKV(w->WK[1], 0, PREV(k), k) = s;
        QKV(w->WV[1], 0, TOK(k), k) = 1.0f;
        OUT(w->WO[1], 0, k, TOK(k)) = GAIN;
    }
    QKV(w->WQ[1], 0, CONST, SINK_DIM) = s;
    QKV(w->WK[1], 0, POS(0), SINK_DIM) = b / s;
    /* L0H1, L1H1: small random */
    for (int l = 0; l < NL; l++) {
        for (size_t i = 0; i < (size_t)DM * DH; i++) {
            w->WQ[l][(size_t)DM * DH + i] = (float)(NOISE * rng_gauss(&g));
            w->WK[l][(size_t)DM * DH + i] = (float)(NOISE * rng_gauss(&g));
            w->WV[l][(size_t)DM * DH + i] = (float)(NOISE * rng_gauss(&g));
            w->WO[l][(size_t)DH * DM + i] = (float)(NOISE * rng_gauss(&g));
        }
    }
}

static void release(weights *w)
{
    free(w->WE);
    free(w->Wpos);
    free(w->WU);
    for (int l = 0; l < NL; l++) {
        free(w->WQ[l]);
        free(w->WK[l]);
        free(w->WV[l]);
        free(w->WO[l]);
    }
}

static circuits_model *write_and_load(const weights *w)
{
    char dir[512], path[600], nm[64];
    snprintf(dir, sizeof dir, "%s/induction", g_root);
    if (mkdir(dir, 0700) != 0) die(dir);
    snprintf(path, sizeof path, "%s/tl_config.json", dir);
    FILE *fp = fopen(path, "w");
    if (!fp) die(path);
    fprintf(fp,
            "{\"d_model\":%d,\"d_head\":%d,\"n_heads\":%d,\"n_layers\":%d,\"n_ctx\":%d,\"d_vocab\":%d,"
            "\"act_fn\":null,\"normalization_type\":null,\"attn_only\":true,\"positional_embedding_type\":\"standard\"}",
            DM, DH, NH, NL, P, V);
    if (fclose(fp) != 0) die(path);
    st_entry t[3 + 4 * NL];
    int n = 0;
    add_entry(t, &n, "embed.W_E", w->WE, 2, V, DM, 0);
    add_entry(t, &n, "pos_embed.W_pos", w->Wpos, 2, P, DM, 0);
    for (int l = 0; l < NL; l++) {
#define NM(x) (snprintf(nm, sizeof nm, "blocks.%d.%s", l, x), nm)
        add_entry(t, &n, NM("attn.W_Q"), w->WQ[l], 3, NH, DM, DH);
        add_entry(t, &n, NM("attn.W_K"), w->WK[l], 3, NH, DM, DH);
        add_entry(t, &n, NM("attn.W_V"), w->WV[l], 3, NH, DM, DH);
        add_entry(t, &n, NM("attn.W_O"), w->WO[l], 3, NH, DH, DM);
#undef NM
    }
    add_entry(t, &n, "unembed.W_U", w->WU, 2, DM, V, 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_write(path, t, n);
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    circuits_model *m = NULL;
    if (circuits_model_load(&m, dir, &o) != CIRCUITS_OK) {
        fprintf(stderr, "test_induction_model: loading %s: %s\n", dir, circuits_last_error());
        exit(2);
    }
    return m;
}

/* ---- checks ---- */

static int argmax(const float *x, int n)
{
    int k = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[k]) k = i;
    return k;
}

/* The head with the highest score, and whether it beats every other by `margin`. */
static int best_head(const float *s, int n, double margin, int *clear)
{
    int k = argmax(s, n);
    *clear = 1;
    for (int i = 0; i < n; i++)
        if (i != k && s[i] > s[k] - margin) *clear = 0;
    return k;
}

static void print_heads(const char *what, const float *s)
{
    printf("%-26s", what);
    for (int k = 0; k < NL * NH; k++) printf("  L%dH%d %7.4f", k / NH, k % NH, s[k]);
    printf("\n");
}

/* Zero-ablation of head 0 at hook_z [batch, pos, head, d_head]. */
static int zero_head0(const circuits_tensor *z, void *user)
{
    (void)user;
    for (int64_t b = 0; b < z->shape[0]; b++)
        for (int64_t p = 0; p < z->shape[1]; p++)
            for (int64_t d = 0; d < z->shape[3]; d++) z->data[b * z->strides[0] + p * z->strides[1] + d * z->strides[3]] = 0.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/circuits_induction_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) die("mkdtemp");
    weights w;
    build(&w, 31337);
    circuits_model *m = write_and_load(&w);
    release(&w);
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    if (!ctx) {
        circuits_model_free(m);
        nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return tu_finish("test_induction_model");
    }
    const int LH = NL * NH, IND = 1 * NH + 0, PREVH = 0;
    int clear;

    /* (a) previous-token detection on random tokens, full context */
    {
        enum { B = 2, T = P };
        int32_t tokens[B * T];
        rng g = {5};
        for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(rng_u64(&g) % V);
        float s[NL * NH];
        CHECK_OK(circuits_context_detect_heads(ctx, tokens, B, T, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, NULL, s));
        print_heads("previous-token score", s);
        CHECK(s[PREVH] > 0.9f, "previous-token score of L0H0: %.4f", s[PREVH]);
        CHECK(best_head(s, LH, 0.5, &clear) == PREVH && clear, "L0H0 is not clearly the previous-token head");
        /* the ideal score: every row but the first (which can only attend to itself) */
        CHECK(fabs(s[PREVH] - (double)(T - 1) / T) < 1e-3, "L0H0 previous-token score %.5f, ideal %.5f", s[PREVH],
              (double)(T - 1) / T);
    }

    /* (b), (d): induction on repeated random tokens, no BOS */
    enum { B = 4, L = 10, T = 2 * L };
    int32_t rep[B * T];
    CHECK_OK(circuits_repeated_tokens(B, L, V, 2024, -1, rep));
    float ind[NL * NH], loss_first = 0, loss_repeat = 0;
    CHECK_OK(circuits_context_induction_scores(ctx, rep, B, T, L, ind, &loss_first, &loss_repeat));
    print_heads("induction score", ind);
    CHECK(ind[IND] > 0.9f, "induction score of L1H0: %.4f", ind[IND]);
    CHECK(best_head(ind, LH, 0.5, &clear) == IND && clear, "L1H0 is not clearly the induction head");
    {
        float d[NL * NH];
        CHECK_OK(circuits_context_detect_heads(ctx, rep, B, T, CIRCUITS_HEAD_INDUCTION, NULL, NULL, d));
        print_heads("induction (detector)", d);
        CHECK(best_head(d, LH, 0.3, &clear) == IND && clear, "the induction detector does not single out L1H0");
    }
    /* predictions on the repeated block: the token after the earlier occurrence */
    {
        float *logits = xcalloc((size_t)B * T * V * sizeof(float));
        CHECK_OK(circuits_context_forward(ctx, rep, B, T, logits, NULL, NULL));
        int right = 0, total = 0;
        for (int b = 0; b < B; b++)
            for (int i = L; i < T - 1; i++, total++) right += argmax(logits + ((size_t)b * T + i) * V, V) == rep[b * T + i + 1];
        printf("repeated block: %d of %d next tokens predicted (argmax)\n", right, total);
        CHECK(right >= 0.85 * total, "only %d of %d tokens of the repeat predicted", right, total);
        free(logits);
    }
    printf("loss: first block %.4f, repeated block %.4f (uniform: ln %d = %.4f)\n", loss_first, loss_repeat, V, log(V));
    CHECK(loss_repeat < 0.1f * loss_first && loss_repeat < 0.25 * log(V), "loss on the repeat %.4f is not much below the first block's %.4f",
          loss_repeat, loss_first);

    /* (c) K-composition: the top pair is L0H0 -> L1H0, far above the random baseline */
    {
        float k[LH * LH], q[LH * LH], v[LH * LH], mean = 0, std = 0;
        CHECK_OK(circuits_model_composition_scores(m, CIRCUITS_COMPOSITION_K, k));
        CHECK_OK(circuits_model_composition_scores(m, CIRCUITS_COMPOSITION_Q, q));
        CHECK_OK(circuits_model_composition_scores(m, CIRCUITS_COMPOSITION_V, v));
        CHECK_OK(circuits_composition_baseline(DM, DH, 0, 8, 99, &mean, &std));
        int top = argmax(k, LH * LH), pair = PREVH * LH + IND;
        double second = 0;
        for (int i = 0; i < LH * LH; i++)
            if (i != top && k[i] > second) second = k[i];
        printf("K-composition scores (writer -> reader):\n");
        for (int a = 0; a < LH; a++)
            for (int b = 0; b < LH; b++)
                if (a / NH < b / NH)
                    printf("  L%dH%d -> L%dH%d  K %.4f  Q %.4f  V %.4f\n", a / NH, a % NH, b / NH, b % NH, k[a * LH + b],
                           q[a * LH + b], v[a * LH + b]);
        printf("baseline (d_model %d, d_head %d): mean %.4f, std %.4f; L0H0 -> L1H0 = %.4f = %.2f x the baseline mean "
               "(%.0f std above), next best pair %.4f\n",
               DM, DH, mean, std, k[pair], k[pair] / mean, (k[pair] - mean) / std, second);
        CHECK(top == pair, "top K-composition pair is L%dH%d -> L%dH%d", top / LH / NH, top / LH % NH, top % LH / NH,
              top % LH % NH);
        CHECK(k[pair] > 2.5 * mean && k[pair] > mean + 20 * std, "L0H0 -> L1H0 K-composition %.4f vs baseline %.4f (std %.4f)",
              k[pair], mean, std);
        CHECK(k[pair] > 2.0 * second, "L0H0 -> L1H0 K-composition %.4f does not stand out from the next pair %.4f", k[pair],
              second);
        /* the ideal value: s^2 sqrt(K) / (sqrt(K) sqrt(s^4 K + b^2)) */
        double ideal = 1.0 / sqrt(K + pow(SINK_SCORE / MATCH_SCORE, 2));
        CHECK(fabs(k[pair] - ideal) < 0.02 * ideal, "L0H0 -> L1H0 K-composition %.5f, ideal %.5f", k[pair], ideal);
        /* L0H0 writes only prev, which L1H0 reads only through its keys */
        CHECK(q[pair] < 1e-3 && v[pair] < 1e-3, "L0H0 -> L1H0 Q %.4g / V %.4g composition should vanish", q[pair], v[pair]);
    }

    /* (e) zero-ablating L1H0 (hook_z, head 0 of layer 1) takes the gain away */
    {
        circuits_hook_id id;
        CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.attn.hook_z", zero_head0, NULL, &id));
        float ind2[NL * NH], lf = 0, lr = 0;
        CHECK_OK(circuits_context_induction_scores(ctx, rep, B, T, L, ind2, &lf, &lr));
        CHECK_OK(circuits_context_remove_hook(ctx, id));
        double gain = loss_first - loss_repeat, gain_abl = lf - lr, recovered = (lr - loss_repeat) / (lf - loss_repeat);
        printf("L1H0 ablated: loss first block %.4f, repeated block %.4f (was %.4f); gain first - repeat %.4f -> %.4f; "
               "the repeat's loss rose by %.0f%% of the way to the ablated first block's\n",
               lf, lr, loss_repeat, gain, gain_abl, 100 * recovered);
        CHECK(lr > 5 * loss_repeat && lr > 0.9 * log(V), "ablated repeat loss %.4f (was %.4f)", lr, loss_repeat);
        CHECK(fabs(gain_abl) < 0.05 * gain, "ablation left a gain of %.4f of %.4f", gain_abl, gain);
        CHECK(recovered > 0.9, "ablation took back only %.0f%% of the gain", 100 * recovered);
        /* the ablation edits z, not the patterns */
        CHECK(fabs(ind2[IND] - ind[IND]) < 1e-6, "ablating z changed the induction score %.5f -> %.5f", ind[IND], ind2[IND]);
        /* and it is undone */
        float lr2 = 0;
        CHECK_OK(circuits_context_induction_scores(ctx, rep, B, T, L, ind2, NULL, &lr2));
        CHECK(lr2 == loss_repeat, "removing the hook did not restore the loss (%.6f vs %.6f)", lr2, loss_repeat);
    }

    /* (f) L1H0's OV copies: copying score of the full OV circuit W_E OV W_U (and of OV) */
    {
        float full[NL * NH], ov[NL * NH];
        CHECK_OK(circuits_model_copying_scores(m, 1, full));
        CHECK_OK(circuits_model_copying_scores(m, 0, ov));
        /* L0H0's OV (tok -> prev) is nilpotent and its full OV circuit is 0 (W_U does not read
         * prev): all its eigenvalues are 0 and the score is 0/0, NaN, as in TransformerLens */
        print_heads("copying score (full OV)", full);
        print_heads("copying score (OV)", ov);
        CHECK(full[IND] > 0.99f, "full-OV copying score of L1H0: %.5f", full[IND]);
        CHECK(ov[IND] > 0.99f, "OV copying score of L1H0: %.5f", ov[IND]);
        /* the full OV circuit is GAIN * I: top entries on the diagonal */
        circuits_factored *f = NULL;
        CHECK_OK(circuits_model_full_ov(m, 1, 0, &f));
        if (f) {
            float *d = xcalloc(V * sizeof(float)), vals[4];
            int64_t rows[4], cols[4];
            CHECK_OK(circuits_factored_diagonal(f, d));
            double dmin = INFINITY;
            for (int i = 0; i < V; i++) dmin = fmin(dmin, d[i]);
            CHECK(fabs(dmin - GAIN) < 0.01 * GAIN, "diagonal of L1H0's full OV: min %.4f, want %.1f", dmin, (double)GAIN);
            for (int t = 0; t < V; t += 37) {
                CHECK_OK(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ROW, t, 1, vals, rows, cols, NULL));
                CHECK(cols[0] == t, "token %d's full-OV row peaks at %lld", t, (long long)cols[0]);
            }
            free(d);
            circuits_factored_free(f);
        }
        /* L0H0's previous-token stripe in pos QK: row i peaks at column i - 1 */
        f = NULL;
        CHECK_OK(circuits_model_pos_qk(m, 0, 0, &f));
        if (f) {
            int ok = 1;
            for (int i = 1; i < P; i++) {
                float vals[1];
                int64_t rows[1], cols[1];
                CHECK_OK(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ROW, i, 1, vals, rows, cols, NULL));
                ok &= cols[0] == i - 1;
            }
            CHECK(ok, "L0H0's positional QK is not the previous-token stripe");
            circuits_factored_free(f);
        }
    }

    circuits_context_free(ctx);
    circuits_model_free(m);
    if (nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return tu_finish("test_induction_model");
}
