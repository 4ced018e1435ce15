/* Batch invariance under padding (issue 14): every row of a padded batch, left or right, gives
 * at its real positions the logits, the per-token loss and every hook value of that row run
 * alone; the mean loss is the mean over the real pairs; a KV cache continued in two chunks
 * equals one run; greedy generation of a left-padded batch gives each row's own continuation;
 * the detectors score each row as if alone. Usage: test_padding CASE_DIR... */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>

#define TOL 1e-5

enum { B = 3, T = 9, GEN = 4 };
static const int64_t LEN[B] = {9, 5, 7}; /* real tokens per row */

static double worst; /* the largest difference seen, printed at the end */

/* |a - b| relative to max(1, |b|); equal infinities (masked scores) are equal */
static double diff(float a, float b)
{
    if (a == b) return 0.0;
    if (isinf(a) || isinf(b) || isnan(a) || isnan(b)) return INFINITY;
    return fabs((double)a - (double)b) / fmax(1.0, fabs((double)b));
}

/* The row's first real column in the padded batch. */
static int64_t first(int left, int64_t b) { return left ? T - LEN[b] : 0; }

/* The rows [B, T] (row b's first LEN[b] tokens real) padded on one side with pad_id. */
static void pad_batch(const int32_t *rows, int left, int32_t pad_id, int32_t *tokens, int32_t *mask)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t i = t - first(left, b);
            bool real = i >= 0 && i < LEN[b];
            tokens[b * T + t] = real ? rows[b * T + i] : pad_id;
            mask[b * T + t] = real;
        }
}

/* Compares one cache entry of the padded run (row b) with the same entry of the row alone. */
static void compare_entry(const char *dir, const circuits_tensor *pad, const circuits_tensor *one, int64_t b, int64_t f,
                          int left)
{
    bool attn = strstr(pad->name, "attn_scores") || strstr(pad->name, "pattern");
    int64_t n = LEN[b], inner = 1;
    double m = 0.0;
    if (attn) { /* [B, H, q, k]: real queries x real keys */
        for (int64_t h = 0; h < pad->shape[1]; h++)
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < n; j++) {
                    float a = pad->data[((b * pad->shape[1] + h) * T + f + i) * T + f + j];
                    float e = one->data[(h * n + i) * n + j];
                    m = fmax(m, diff(a, e));
                }
    } else { /* [B, pos, ...] */
        for (int d = 2; d < pad->ndim; d++) inner *= pad->shape[d];
        for (int64_t i = 0; i < n * inner; i++)
            m = fmax(m, diff(pad->data[(b * T + f) * inner + i], one->data[i]));
    }
    worst = fmax(worst, m);
    CHECK(m <= TOL, "%s, %s padding, row %lld: %s differs from the row alone by %g", dir, left ? "left" : "right",
          (long long)b, pad->name, m);
}

static void check_side(const char *dir, const circuits_model *model, circuits_context *ctx, const int32_t *rows, int left,
                       int32_t pad_id)
{
    circuits_config cfg = {.size = sizeof cfg};
    CHECK_OK(circuits_model_config(model, &cfg));
    int64_t V = cfg.d_vocab_out;
    int32_t tokens[B * T], mask[B * T];
    pad_batch(rows, left, pad_id, tokens, mask);
    float *logits = malloc(sizeof(float) * B * T * V), *alone = malloc(sizeof(float) * T * V);
    float ptl[B * (T - 1)], ptl1[T - 1], loss = NAN;
    circuits_cache *cp = NULL, *c1 = NULL;
    CHECK_OK(circuits_cache_create(&cp));
    CHECK_OK(circuits_cache_create(&c1));
    circuits_run_options o;
    circuits_run_options_init(&o);
    o.attention_mask = mask;
    CHECK_OK(circuits_context_run_with_cache_opts(ctx, &o, tokens, B, T, NULL, 0, cp, logits, &loss, ptl));
    double sum = 0.0;
    int64_t pairs = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t f = first(left, b), n = LEN[b];
        float l1 = NAN;
        CHECK_OK(circuits_context_run_with_cache(ctx, rows + b * T, 1, n, NULL, 0, c1, alone, &l1, ptl1));
        double m = 0.0;
        for (int64_t i = 0; i < n * V; i++) m = fmax(m, diff(logits[(b * T + f) * V + i], alone[i]));
        for (int64_t i = 0; i + 1 < n; i++) {
            m = fmax(m, diff(ptl[b * (T - 1) + f + i], ptl1[i]));
            sum += ptl1[i];
            pairs++;
        }
        for (int64_t i = 0; i < T - 1; i++) /* pairs touching padding: 0, as TL's masked_fill */
            if (i < f || i + 1 >= f + n) CHECK(ptl[b * (T - 1) + i] == 0.0f, "%s: per-token loss at padding", dir);
        worst = fmax(worst, m);
        CHECK(m <= TOL, "%s, %s padding, row %lld: logits / per-token loss differ from the row alone by %g", dir,
              left ? "left" : "right", (long long)b, m);
        size_t count = circuits_cache_count(cp);
        CHECK(count == circuits_cache_count(c1), "%s: cache entry counts differ", dir);
        for (size_t k = 0; k < count && k < circuits_cache_count(c1); k++) {
            circuits_tensor tp, t1;
            CHECK_OK(circuits_cache_at(cp, k, &tp));
            CHECK_OK(circuits_cache_at(c1, k, &t1));
            compare_entry(dir, &tp, &t1, b, f, left);
        }
        (void)l1;
    }
    CHECK(fabs(loss - sum / (double)pairs) <= TOL, "%s: loss %g, mean over the real pairs %g", dir, loss,
          sum / (double)pairs);

    /* a KV cache continued in two chunks (the second with a mask too) equals the one run */
    circuits_kv_cache *kv = NULL;
    CHECK_OK(circuits_kv_cache_create(&kv, model, B, T));
    float *chunk = malloc(sizeof(float) * B * T * V);
    int32_t tok1[B * 5], mask1[B * 5], tok2[B * 4], mask2[B * 4];
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            if (t < 5) tok1[b * 5 + t] = tokens[b * T + t], mask1[b * 5 + t] = mask[b * T + t];
            else tok2[b * 4 + t - 5] = tokens[b * T + t], mask2[b * 4 + t - 5] = mask[b * T + t];
        }
    o.kv_cache = kv;
    o.attention_mask = mask1;
    CHECK_OK(circuits_context_run(ctx, &o, tok1, B, 5, chunk));
    o.attention_mask = mask2;
    CHECK_OK(circuits_context_run(ctx, &o, tok2, B, 4, chunk));
    double mk = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < 4; t++)
            if (mask2[b * 4 + t])
                for (int64_t v = 0; v < V; v++)
                    mk = fmax(mk, diff(chunk[(b * 4 + t) * V + v], logits[(b * T + 5 + t) * V + v]));
    worst = fmax(worst, mk);
    CHECK(mk <= TOL, "%s, %s padding: a KV cache in two chunks differs from one run by %g", dir,
          left ? "left" : "right", mk);
    circuits_kv_cache_free(kv);
    free(chunk);
    circuits_cache_free(cp);
    circuits_cache_free(c1);
    free(logits);
    free(alone);
}

/* Greedy generation of the left-padded batch: each row's continuation is its own. */
static void check_generate(const char *dir, circuits_context *ctx, const int32_t *rows, int32_t pad_id)
{
    int32_t prompt[B * T], mask[B * T], out[B * (T + GEN)], one[T + GEN];
    pad_batch(rows, 1, pad_id, prompt, mask);
    circuits_generate_options g;
    for (int kv = 0; kv < 2; kv++) {
        circuits_generate_options_init(&g);
        g.do_sample = 0;
        g.stop_at_eos = 0;
        g.max_new_tokens = GEN;
        g.use_kv_cache = kv;
        g.attention_mask = mask;
        int64_t len = 0;
        CHECK_OK(circuits_context_generate(ctx, prompt, B, T, &g, out, &len));
        CHECK(len == T + GEN, "%s: generated %lld columns", dir, (long long)len);
        g.attention_mask = NULL;
        for (int64_t b = 0; b < B; b++) {
            CHECK_OK(circuits_context_generate(ctx, rows + b * T, 1, LEN[b], &g, one, &len));
            CHECK(memcmp(out + b * (T + GEN) + T, one + LEN[b], GEN * sizeof *one) == 0,
                  "%s, use_kv_cache %d, row %lld: the padded batch generates other tokens than the row alone", dir, kv,
                  (long long)b);
        }
    }
}

/* Detectors: each padded row scores as if alone. */
static void check_detect(const char *dir, const circuits_model *model, circuits_context *ctx, const int32_t *rows,
                         int32_t pad_id)
{
    circuits_config cfg = {.size = sizeof cfg};
    CHECK_OK(circuits_model_config(model, &cfg));
    size_t LH = (size_t)cfg.n_layers * (size_t)cfg.n_heads;
    float got[256], want[256] = {0}, one[256];
    if (LH > 256) return;
    int32_t tokens[B * T], mask[B * T];
    pad_batch(rows, 1, pad_id, tokens, mask);
    circuits_detect_options d;
    circuits_detect_options_init(&d);
    d.exclude_bos = 1;
    for (int64_t b = 0; b < B; b++) {
        CHECK_OK(circuits_context_detect_heads(ctx, rows + b * T, 1, LEN[b], CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, &d, one));
        for (size_t k = 0; k < LH; k++) want[k] += one[k] / B;
    }
    d.attention_mask = mask;
    CHECK_OK(circuits_context_detect_heads(ctx, tokens, B, T, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, &d, got));
    double md = 0.0;
    for (size_t k = 0; k < LH; k++) md = fmax(md, fabs((double)got[k] - want[k]));
    CHECK(md <= TOL, "%s: detector scores of the padded batch differ from the rows alone by %g", dir, md);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR...\n", argv[0]);
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        circuits_model *m = NULL;
        circuits_context *ctx = NULL;
        circuits_context_options co;
        circuits_context_options_init(&co);
        co.use_attn_result = 1; /* hook_result too */
        CHECK_OK(circuits_model_load(&m, argv[a], NULL));
        if (m) CHECK_OK(circuits_context_create(&ctx, m, &co));
        if (!ctx) continue;
        circuits_config cfg = {.size = sizeof cfg};
        CHECK_OK(circuits_model_config(m, &cfg));
        int32_t rows[B * T];
        uint64_t s = 12345;
        for (int64_t i = 0; i < B * T; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            rows[i] = (int32_t)((s >> 33) % (uint64_t)cfg.d_vocab_out);
        }
        int32_t pad_id = cfg.d_vocab_out - 1; /* any token: padding must not matter */
        check_side(argv[a], m, ctx, rows, 1, pad_id);
        check_side(argv[a], m, ctx, rows, 0, pad_id);
        check_generate(argv[a], ctx, rows, pad_id);
        check_detect(argv[a], m, ctx, rows, pad_id);
        circuits_context_free(ctx);
        circuits_model_free(m);
    }
    printf("test_padding: largest difference from the rows run alone: %.3g\n", worst);
    return tu_finish("test_padding");
}
