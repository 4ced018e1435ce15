/* Generation and the KV cache (docs/generation.md):
 *   - greedy (and seeded sampled) generation with the KV cache equals generation without it,
 *     token for token, with close logits, on every reference architecture (standard, LNPre, RMS, RMSPre,
 *     no LN, SoLU, shortformer, attn-only, no biases, use_attn_result, HF GPT-2 variants);
 *   - forward_kv in chunks equals one full forward: logits, patterns, cached keys and values;
 *   - hooks during cached generation fire with TransformerLens's KV-cache shapes, hook_pos_embed
 *     is W_pos at the cache offset, and hook edits of k / v reach the cache;
 *   - the sampler's TransformerLens semantics (greedy, temperature, top-k, top-p and their
 *     precedence, frequency penalty, seeds), driven by logits a hook writes;
 *   - EOS handling (finished rows pad with EOS, early end), the tokenizer's EOS, callbacks,
 *     and every error path.
 * Usage: test_generate CASES_DIR TINY_MODEL_DIR */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>

static const char *g_cases;

#define CHECK_ERR(call, status, needle) CHECK_FAILS(call, status, needle)

static circuits_model *load(const char *path)
{
    circuits_model *m = NULL;
    int rc = circuits_model_load(&m, path, NULL);
    if (rc == CIRCUITS_E_UNSUPPORTED && strstr(circuits_last_error(), "fold_ln of a gated MLP")) {
        /* a gated MLP after LN cannot be folded (test_bad_input): the rest of the processing */
        circuits_load_options o;
        circuits_load_options_init(&o);
        o.fold_ln = 0;
        rc = circuits_model_load(&m, path, &o);
    }
    if (rc != CIRCUITS_OK) {
        fprintf(stderr, "FATAL: cannot load %s: %s\n", path, circuits_last_error());
        exit(1);
    }
    return m;
}

static circuits_model *load_case(const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", g_cases, name);
    return load(p);
}

static circuits_config config(const circuits_model *m)
{
    circuits_config c = {.size = sizeof c};
    circuits_model_config(m, &c);
    return c;
}

static void random_tokens(int32_t *t, size_t n, int32_t vocab, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = (int32_t)((seed >> 33) % (uint64_t)vocab);
    }
}

/* on_step: stores each step's logits [batch, V] */
typedef struct logit_log {
    float *data; /* [steps, batch, V] */
    int64_t V, steps;
} logit_log;

static int log_logits(int64_t step, const int32_t *tokens, const float *logits, int64_t batch, void *user)
{
    (void)tokens;
    logit_log *l = user;
    memcpy(l->data + step * batch * l->V, logits, (size_t)(batch * l->V) * sizeof(float));
    l->steps = step + 1;
    return CIRCUITS_HOOK_CONTINUE;
}

/* ---------------------------------------------------------------------------------------- */
/* cache == no cache                                                                         */
/* ---------------------------------------------------------------------------------------- */

static void test_cache_equivalence(const char *name, bool attn_result)
{
    circuits_model *m = load_case(name);
    circuits_config c = config(m);
    circuits_context_options co;
    circuits_context_options_init(&co);
    co.use_attn_result = attn_result;
    circuits_context *ctx;
    CHECK_OK(circuits_context_create(&ctx, m, &co));
    const int64_t B = 2, P = 5;
    int32_t max_new = c.n_ctx - (int32_t)P > 40 ? 40 : c.n_ctx - (int32_t)P; /* up to the end of n_ctx */
    int64_t L = P + max_new, V = c.d_vocab_out;
    int32_t *prompt = malloc(sizeof(int32_t) * B * P), *a = malloc(sizeof(int32_t) * B * L),
            *b = malloc(sizeof(int32_t) * B * L);
    random_tokens(prompt, (size_t)(B * P), c.d_vocab, 42);
    logit_log la = {malloc(sizeof(float) * (size_t)(max_new * B * V)), V, 0};
    logit_log lb = {malloc(sizeof(float) * (size_t)(max_new * B * V)), V, 0};

    for (int mode = 0; mode < 3; mode++) { /* greedy, sampled, sampled with top-k/top-p/penalty */
        circuits_generate_options o;
        circuits_generate_options_init(&o);
        o.max_new_tokens = max_new;
        o.stop_at_eos = 0;
        o.do_sample = mode > 0;
        o.seed = 7;
        if (mode == 2) {
            o.temperature = 0.7f;
            o.top_p = 0.9f;
            o.freq_penalty = 0.5f;
        }
        o.on_step = log_logits;
        o.use_kv_cache = 1;
        o.user_data = &la;
        int64_t na = -1, nb = -1;
        CHECK_OK(circuits_context_generate(ctx, prompt, B, P, &o, a, &na));
        o.use_kv_cache = 0;
        o.user_data = &lb;
        CHECK_OK(circuits_context_generate(ctx, prompt, B, P, &o, b, &nb));
        CHECK(na == L && nb == L, "%s: lengths %lld %lld, want %lld", name, (long long)na, (long long)nb, (long long)L);
        CHECK(memcmp(a, b, sizeof(int32_t) * (size_t)(B * L)) == 0, "%s mode %d: tokens differ with and without the KV cache",
              name, mode);
        CHECK(memcmp(a, prompt, sizeof(int32_t) * (size_t)P) == 0 && memcmp(a + L, prompt + P, sizeof(int32_t) * (size_t)P) == 0,
              "%s: the prompt is not copied", name);
        double worst = 0, scale = 0;
        for (int64_t i = 0; i < max_new * B * V; i++) {
            worst = fmax(worst, fabs((double)la.data[i] - lb.data[i]));
            scale = fmax(scale, fabs((double)lb.data[i]));
        }
        CHECK(la.steps == max_new && lb.steps == max_new, "%s: %lld / %lld steps logged", name, (long long)la.steps,
              (long long)lb.steps);
        CHECK(worst <= 1e-4 * fmax(1.0, scale), "%s mode %d: logits differ by %g (scale %g)", name, mode, worst, scale);
    }
    /* greedy tokens are the argmax of the logged logits */
    free(la.data);
    free(lb.data);
    free(prompt);
    free(a);
    free(b);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* forward_kv in chunks == one forward                                                       */
/* ---------------------------------------------------------------------------------------- */

typedef struct pattern_log {
    float *full;  /* [B, H, T, T] of the full run */
    int64_t B, H, T, past; /* past: positions before this chunk */
    double worst;
    int calls, bad_shape;
} pattern_log;

static int check_pattern(const circuits_tensor *t, void *user)
{
    pattern_log *p = user;
    if (t->layer != 0) return CIRCUITS_HOOK_CONTINUE;
    p->calls++;
    int64_t n = t->shape[2], keys = t->shape[3];
    if (t->shape[0] != p->B || t->shape[1] != p->H || keys != p->past + n) {
        p->bad_shape++;
        return CIRCUITS_HOOK_CONTINUE;
    }
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->H; h++)
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < keys; j++) {
                    float got = t->data[b * t->strides[0] + h * t->strides[1] + i * t->strides[2] + j];
                    float want = p->full[((b * p->H + h) * p->T + p->past + i) * p->T + j];
                    p->worst = fmax(p->worst, fabs((double)got - want));
                }
    return CIRCUITS_HOOK_CONTINUE;
}

static void test_forward_kv_chunks(const char *name)
{
    circuits_model *m = load_case(name);
    circuits_config c = config(m);
    circuits_context *ctx;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    /* K/V heads: n_key_value_heads (grouped-query attention) */
    const int64_t B = 2, T = 11, H = c.n_heads, KV = c.n_key_value_heads, HD = KV * c.d_head, V = c.d_vocab_out;
    int32_t tok[2 * 11];
    random_tokens(tok, (size_t)(B * T), c.d_vocab, 9);
    float *full = malloc(sizeof(float) * (size_t)(B * T * V));
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    bool rotary = c.positional_embedding_type == CIRCUITS_POS_ROTARY;
    const char *names[] = {"blocks.*.attn.hook_k", "blocks.*.attn.hook_v", "pattern0", "blocks.*.attn.hook_rot_k"};
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, names, rotary ? 4 : 3, cache, full, NULL, NULL));
    circuits_tensor pat;
    CHECK_OK(circuits_cache_get(cache, "pattern0", &pat));

    circuits_kv_cache *kv;
    CHECK_OK(circuits_kv_cache_create(&kv, m, B, 0));
    pattern_log pl = {pat.data, B, H, T, 0, 0, 0, 0};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.attn.hook_pattern", check_pattern, &pl, NULL));
    const int64_t chunks[] = {4, 1, 3, 1, 2};
    int64_t at = 0;
    double worst = 0;
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        int64_t n = chunks[k];
        int32_t part[2 * 4];
        float *lg = malloc(sizeof(float) * (size_t)(B * n * V));
        for (int64_t b = 0; b < B; b++) memcpy(part + b * n, tok + b * T + at, sizeof(int32_t) * (size_t)n);
        pl.past = at;
        CHECK_OK(circuits_context_forward_kv(ctx, kv, part, B, n, lg));
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < n; i++)
                for (int64_t v = 0; v < V; v++)
                    worst = fmax(worst, fabs((double)lg[(b * n + i) * V + v] - full[(b * T + at + i) * V + v]));
        free(lg);
        at += n;
        CHECK(circuits_kv_cache_length(kv) == at, "%s: cache length %lld, want %lld", name,
              (long long)circuits_kv_cache_length(kv), (long long)at);
    }
    CHECK(at == T, "chunks cover the sequence");
    CHECK(worst < 1e-4, "%s: chunked logits differ from the full run by %g", name, worst);
    CHECK(pl.calls == 5 && pl.bad_shape == 0, "%s: pattern hook %d calls, %d with a wrong shape", name, pl.calls,
          pl.bad_shape);
    CHECK(pl.worst < 1e-5, "%s: chunked patterns differ by %g", name, pl.worst);

    /* cached keys / values == hook_k (rotary: hook_rot_k, the cache keeps rotated keys) / hook_v
     * of the full run */
    double kw = 0;
    for (int32_t l = 0; l < c.n_layers; l++) {
        circuits_tensor K, Vt, hk, hv;
        char nk[64], nv[64];
        snprintf(nk, sizeof nk, "blocks.%d.attn.%s", l, rotary ? "hook_rot_k" : "hook_k");
        snprintf(nv, sizeof nv, "blocks.%d.attn.hook_v", l);
        CHECK_OK(circuits_kv_cache_layer(kv, l, &K, &Vt));
        CHECK_OK(circuits_cache_get(cache, nk, &hk));
        CHECK_OK(circuits_cache_get(cache, nv, &hv));
        CHECK(K.ndim == 4 && K.shape[0] == B && K.shape[1] == T && K.shape[2] == KV && K.shape[3] == c.d_head &&
                  K.head_axis == 2,
              "kv view shape");
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t e = 0; e < HD; e++) {
                    kw = fmax(kw, fabs((double)K.data[b * K.strides[0] + t * K.strides[1] + e] - hk.data[(b * T + t) * HD + e]));
                    kw = fmax(kw, fabs((double)Vt.data[b * Vt.strides[0] + t * Vt.strides[1] + e] - hv.data[(b * T + t) * HD + e]));
                }
    }
    CHECK(kw < 1e-5, "%s: cached keys/values differ from hook_k/hook_v by %g", name, kw);

    /* truncate and rerun a suffix: the same logits */
    CHECK_OK(circuits_kv_cache_truncate(kv, 8));
    float *lg3 = malloc(sizeof(float) * (size_t)(B * 3 * V));
    int32_t part[2 * 3];
    for (int64_t b = 0; b < B; b++) memcpy(part + b * 3, tok + b * T + 8, sizeof(int32_t) * 3);
    pl.past = 8;
    CHECK_OK(circuits_context_forward_kv(ctx, kv, part, B, 3, lg3));
    double w = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < 3; i++)
            for (int64_t v = 0; v < V; v++) w = fmax(w, fabs((double)lg3[(b * 3 + i) * V + v] - full[(b * T + 8 + i) * V + v]));
    CHECK(w < 1e-4, "%s: after truncate, logits differ by %g", name, w);
    free(lg3);
    circuits_kv_cache_free(kv);
    circuits_cache_free(cache);
    free(full);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* hook shapes and offsets during cached generation                                          */
/* ---------------------------------------------------------------------------------------- */

typedef struct shape_log {
    int64_t B, P, H, dh, D;
    const circuits_tensor *W_pos;
    int step_q, step_pattern, step_pos, step_resid;
    int bad;
    double pos_err;
} shape_log;

static int64_t expect_new(const shape_log *s, int step) { return step == 0 ? s->P : 1; }
static int64_t expect_past(const shape_log *s, int step) { return step == 0 ? 0 : s->P + step - 1; }

static int on_q(const circuits_tensor *t, void *u)
{
    shape_log *s = u;
    if (t->layer != 1) return CIRCUITS_HOOK_CONTINUE;
    int st = s->step_q++;
    if (!(t->ndim == 4 && t->shape[0] == s->B && t->shape[1] == expect_new(s, st) && t->shape[2] == s->H &&
          t->shape[3] == s->dh))
        s->bad++;
    return CIRCUITS_HOOK_CONTINUE;
}

static int on_pattern(const circuits_tensor *t, void *u)
{
    shape_log *s = u;
    if (t->layer != 1) return CIRCUITS_HOOK_CONTINUE;
    int st = s->step_pattern++;
    int64_t n = expect_new(s, st);
    if (!(t->ndim == 4 && t->shape[0] == s->B && t->shape[1] == s->H && t->shape[2] == n &&
          t->shape[3] == expect_past(s, st) + n && t->head_axis == 1))
        s->bad++;
    /* rows sum to 1 over the visible keys */
    for (int64_t r = 0; r < s->B * s->H * n; r++) {
        double sum = 0;
        for (int64_t j = 0; j < t->shape[3]; j++) sum += t->data[r * t->shape[3] + j];
        if (fabs(sum - 1) > 1e-4) s->bad++;
    }
    return CIRCUITS_HOOK_CONTINUE;
}

static int on_pos(const circuits_tensor *t, void *u)
{
    shape_log *s = u;
    int st = s->step_pos++;
    int64_t n = expect_new(s, st), past = expect_past(s, st);
    if (!(t->ndim == 3 && t->shape[0] == s->B && t->shape[1] == n && t->shape[2] == s->D)) {
        s->bad++;
        return CIRCUITS_HOOK_CONTINUE;
    }
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t d = 0; d < s->D; d++) {
                float want = s->W_pos->data[(past + i) * s->W_pos->strides[0] + d * s->W_pos->strides[1]];
                s->pos_err = fmax(s->pos_err, fabs((double)t->data[(b * n + i) * s->D + d] - want));
            }
    return CIRCUITS_HOOK_CONTINUE;
}

static int on_resid(const circuits_tensor *t, void *u)
{
    shape_log *s = u;
    if (t->layer != 0) return CIRCUITS_HOOK_CONTINUE;
    int st = s->step_resid++;
    if (!(t->ndim == 3 && t->shape[0] == s->B && t->shape[1] == expect_new(s, st) && t->shape[2] == s->D)) s->bad++;
    return CIRCUITS_HOOK_CONTINUE;
}

static void test_hook_shapes(const char *name)
{
    circuits_model *m = load_case(name);
    circuits_config c = config(m);
    circuits_context *ctx;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    circuits_tensor W_pos;
    CHECK_OK(circuits_model_weight(m, "pos_embed.W_pos", &W_pos));
    shape_log s = {3, 4, c.n_heads, c.d_head, c.d_model, &W_pos, 0, 0, 0, 0, 0, 0};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.*.attn.hook_q", on_q, &s, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.*.attn.hook_pattern", on_pattern, &s, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "hook_pos_embed", on_pos, &s, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.*.hook_resid_post", on_resid, &s, NULL));
    int32_t prompt[3 * 4], out[3 * 10];
    random_tokens(prompt, 12, c.d_vocab, 3);
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    o.max_new_tokens = 6;
    o.stop_at_eos = 0;
    o.do_sample = 0;
    int64_t n;
    CHECK_OK(circuits_context_generate(ctx, prompt, 3, 4, &o, out, &n));
    CHECK(s.step_q == 6 && s.step_pattern == 6 && s.step_pos == 6 && s.step_resid == 6,
          "%s: hooks fired %d %d %d %d times, want 6 (one per step)", name, s.step_q, s.step_pattern, s.step_pos,
          s.step_resid);
    CHECK(s.bad == 0, "%s: %d hook calls had a wrong shape or pattern", name, s.bad);
    CHECK(s.pos_err == 0, "%s: hook_pos_embed is not W_pos at the cache offset (%g)", name, s.pos_err);
    /* the point descriptors outside a run are unaffected */
    size_t np = circuits_context_hook_point_count(ctx);
    for (size_t i = 0; i < np; i++) {
        circuits_tensor d;
        CHECK_OK(circuits_context_hook_point(ctx, i, 2, 5, &d));
        if (strstr(d.name, "hook_pattern")) CHECK(d.shape[2] == 5 && d.shape[3] == 5, "descriptor %s", d.name);
    }
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* hook edits of k and v are what the cache keeps: cache == no cache with such hooks */
static int scale_k(const circuits_tensor *t, void *u)
{
    (void)u;
    int64_t n = t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3];
    for (int64_t i = 0; i < n; i++) t->data[i] *= 0.5f;
    return CIRCUITS_HOOK_CONTINUE;
}

static int shift_v(const circuits_tensor *t, void *u)
{
    (void)u;
    int64_t n = t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3];
    for (int64_t i = 0; i < n; i++) t->data[i] += 0.25f * (float)(i % (t->shape[2] * t->shape[3]) % 3); /* per (head, d) */
    return CIRCUITS_HOOK_CONTINUE;
}

static void test_hook_edits(const char *name)
{
    circuits_model *m = load_case(name);
    circuits_config c = config(m);
    circuits_context *ctx;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    int32_t prompt[2 * 3], a[2 * 20], b[2 * 20], plain[2 * 20];
    random_tokens(prompt, 6, c.d_vocab, 11);
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    o.max_new_tokens = 17;
    o.stop_at_eos = 0;
    o.do_sample = 0;
    CHECK_OK(circuits_context_generate(ctx, prompt, 2, 3, &o, plain, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.attn.hook_k", scale_k, NULL, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.*.attn.hook_v", shift_v, NULL, NULL));
    CHECK_OK(circuits_context_generate(ctx, prompt, 2, 3, &o, a, NULL));
    o.use_kv_cache = 0;
    CHECK_OK(circuits_context_generate(ctx, prompt, 2, 3, &o, b, NULL));
    CHECK(memcmp(a, b, sizeof a) == 0, "%s: with k/v hooks, cached and uncached generation differ", name);
    CHECK(memcmp(a, plain, sizeof a) != 0, "%s: the k/v hooks changed nothing (weak test)", name);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* sampler semantics, with logits written by a hook at unembed.hook_out                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct forced {
    const float *logits; /* [V] for every row and position; -inf entries excluded */
    int64_t V;
} forced;

static int force_logits(const circuits_tensor *t, void *u)
{
    forced *f = u;
    int64_t rows = t->shape[0] * t->shape[1];
    for (int64_t r = 0; r < rows; r++) memcpy(t->data + r * f->V, f->logits, (size_t)f->V * sizeof(float));
    return CIRCUITS_HOOK_CONTINUE;
}

typedef struct sampler_env {
    circuits_model *m;
    circuits_context *ctx;
    int64_t V, B, P, n_new;
    int32_t *prompt, *out;
    float *lg;
    forced f;
} sampler_env;

/* counts[V] of the generated tokens (columns P..) over every row */
static int run_counts(sampler_env *e, const circuits_generate_options *o, int64_t *counts)
{
    int64_t n = 0;
    int rc = circuits_context_generate(e->ctx, e->prompt, e->B, e->P, o, e->out, &n);
    if (rc) return rc;
    memset(counts, 0, sizeof(int64_t) * (size_t)e->V);
    int64_t L = e->P + o->max_new_tokens;
    for (int64_t b = 0; b < e->B; b++)
        for (int64_t i = e->P; i < n; i++) counts[e->out[b * L + i]]++;
    return rc;
}

static void set_logits(sampler_env *e, const float *vals, int n)
{
    for (int64_t j = 0; j < e->V; j++) e->lg[j] = j < n ? vals[j] : -INFINITY;
}

static void test_sampler(void)
{
    sampler_env e = {0};
    e.m = load_case("tl_attn_only_1l_ln");
    circuits_config c = config(e.m);
    CHECK_OK(circuits_context_create(&e.ctx, e.m, NULL));
    e.V = c.d_vocab_out;
    e.B = 64;
    e.P = 2;
    e.n_new = 25;
    e.prompt = calloc((size_t)(e.B * e.P), sizeof(int32_t));
    e.out = calloc((size_t)(e.B * (e.P + e.n_new)), sizeof(int32_t));
    e.lg = malloc(sizeof(float) * (size_t)e.V);
    e.f = (forced){e.lg, e.V};
    CHECK_OK(circuits_context_add_hook(e.ctx, "unembed.hook_out", force_logits, &e.f, NULL));
    int64_t *cnt = calloc((size_t)e.V, sizeof(int64_t));
    const double draws = (double)(e.B * e.n_new);
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    o.max_new_tokens = (int32_t)e.n_new;
    o.stop_at_eos = 0;

    /* greedy: the first maximum */
    float ties[] = {0.0f, 3.0f, 1.0f, 3.0f};
    set_logits(&e, ties, 4);
    o.do_sample = 0;
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(cnt[1] == (int64_t)draws, "greedy picks the first maximum (%lld of %g)", (long long)cnt[1], draws);
    o.do_sample = 1;
    o.temperature = 0.0f;
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(cnt[1] == (int64_t)draws, "temperature 0 is greedy");
    o.temperature = 1.0f;
    o.top_k = 1;
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(cnt[1] + cnt[3] == (int64_t)draws && cnt[1] > 0 && cnt[3] > 0, "top_k 1 keeps both tied maxima (%lld %lld)",
          (long long)cnt[1], (long long)cnt[3]);
    o.top_k = 0;

    /* frequencies follow softmax(logits / temperature) */
    float two[] = {0.0f, logf(3.0f)};
    set_logits(&e, two, 2);
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(fabs(cnt[1] / draws - 0.75) < 0.05, "p(1) = %g, want 0.75", cnt[1] / draws);
    float nine[] = {0.0f, logf(9.0f)};
    set_logits(&e, nine, 2);
    o.temperature = 2.0f;
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(fabs(cnt[1] / draws - 0.75) < 0.05, "temperature 2: p(1) = %g, want 0.75", cnt[1] / draws);
    o.temperature = 1.0f;

    /* seeds reproduce */
    int32_t *first = malloc(sizeof(int32_t) * (size_t)(e.B * (e.P + e.n_new)));
    o.seed = 123;
    CHECK_OK(run_counts(&e, &o, cnt));
    memcpy(first, e.out, sizeof(int32_t) * (size_t)(e.B * (e.P + e.n_new)));
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(memcmp(first, e.out, sizeof(int32_t) * (size_t)(e.B * (e.P + e.n_new))) == 0, "the same seed gives the same tokens");
    o.seed = 124;
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(memcmp(first, e.out, sizeof(int32_t) * (size_t)(e.B * (e.P + e.n_new))) != 0, "another seed, other tokens");
    free(first);

    /* top-p on probabilities 0.5, 0.3, 0.15, 0.05 */
    float four[] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    set_logits(&e, four, 4);
    struct { float p; int kept; } tp[] = {{0.4f, 1}, {0.6f, 2}, {0.85f, 3}, {0.99f, 4}, {1.0f, 4}};
    for (size_t k = 0; k < sizeof tp / sizeof tp[0]; k++) {
        o.top_p = tp[k].p;
        CHECK_OK(run_counts(&e, &o, cnt));
        int kept = 0;
        int64_t inside = 0;
        for (int j = 0; j < 4; j++) kept += cnt[j] > 0;
        for (int j = 0; j < tp[k].kept; j++) inside += cnt[j];
        CHECK(kept == tp[k].kept && inside == (int64_t)draws, "top_p %g: %d tokens drawn, want %d", (double)tp[k].p,
              kept, tp[k].kept);
    }
    /* top-k takes precedence over top-p */
    o.top_p = 0.1f;
    o.top_k = 3;
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(cnt[0] > 0 && cnt[1] > 0 && cnt[2] > 0 && cnt[3] == 0, "top_k 3 with top_p 0.1: %lld %lld %lld %lld",
          (long long)cnt[0], (long long)cnt[1], (long long)cnt[2], (long long)cnt[3]);
    o.top_k = 100000; /* clamped to the vocabulary */
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(cnt[3] > 0, "top_k beyond the vocabulary keeps everything");
    o.top_k = 0;
    o.top_p = 0.0f;

    /* frequency penalty: a large one never repeats a token of the row (prompt included) */
    float flat[64];
    for (int j = 0; j < 64; j++) flat[j] = 0.0f;
    set_logits(&e, flat, (int)e.V);
    o.freq_penalty = 1000.0f;
    CHECK_OK(run_counts(&e, &o, cnt));
    int repeats = 0;
    int64_t L = e.P + e.n_new;
    for (int64_t b = 0; b < e.B; b++)
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < i; j++) repeats += e.out[b * L + i] == e.out[b * L + j] && i >= e.P;
    CHECK(repeats == 0, "freq_penalty 1000: %d repeated tokens", repeats);
    /* ... but greedy ignores it (TransformerLens: do_sample = False is a plain argmax) */
    set_logits(&e, ties, 4);
    o.do_sample = 0;
    CHECK_OK(run_counts(&e, &o, cnt));
    CHECK(cnt[1] == (int64_t)draws, "greedy ignores freq_penalty");
    o.do_sample = 1;
    o.freq_penalty = 0.0f;

    /* bad logits */
    float bad[] = {0.0f, NAN};
    set_logits(&e, bad, 2);
    CHECK_ERR(circuits_context_generate(e.ctx, e.prompt, e.B, e.P, &o, e.out, NULL), CIRCUITS_E_RANGE, "NaN");
    float none[] = {-INFINITY};
    set_logits(&e, none, 1);
    CHECK_ERR(circuits_context_generate(e.ctx, e.prompt, e.B, e.P, &o, e.out, NULL), CIRCUITS_E_RANGE, "-inf");

    free(cnt);
    free(e.lg);
    free(e.out);
    free(e.prompt);
    circuits_context_free(e.ctx);
    circuits_model_free(e.m);
}

/* ---------------------------------------------------------------------------------------- */
/* EOS, callbacks, errors                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* greedy script: row r emits EOS (token 9) at step stop[r], else token 5 + step % 3 */
typedef struct script {
    int64_t V;
    int step;
    int stop[2];
} script;

static int scripted(const circuits_tensor *t, void *u)
{
    script *s = u;
    int64_t B = t->shape[0], T = t->shape[1];
    for (int64_t b = 0; b < B; b++) {
        float *row = t->data + (b * T + T - 1) * s->V;
        for (int64_t j = 0; j < s->V; j++) row[j] = 0.0f;
        row[s->step == s->stop[b] ? 9 : 5 + s->step % 3] = 10.0f;
    }
    s->step++;
    return CIRCUITS_HOOK_CONTINUE;
}

typedef struct stopper {
    int at, ret, calls;
} stopper;

static int stop_step(int64_t step, const int32_t *tokens, const float *logits, int64_t batch, void *u)
{
    (void)tokens;
    (void)logits;
    (void)batch;
    stopper *s = u;
    s->calls++;
    return step == s->at ? s->ret : CIRCUITS_HOOK_CONTINUE;
}

typedef struct reenter {
    circuits_context *ctx;
    int rc;
} reenter;

static int reenter_hook(const circuits_tensor *t, void *u)
{
    (void)t;
    reenter *r = u;
    int32_t p = 1, out[4];
    r->rc = circuits_context_generate(r->ctx, &p, 1, 1, NULL, out, NULL);
    return CIRCUITS_HOOK_STOP;
}

static int stop_hook(const circuits_tensor *t, void *u)
{
    (void)t;
    int *n = u;
    return ++*n == 3 ? CIRCUITS_HOOK_STOP : CIRCUITS_HOOK_CONTINUE;
}

static void test_eos_and_errors(const char *tiny)
{
    circuits_model *m = load_case("tl_1l_solu_ln");
    circuits_config c = config(m);
    circuits_context *ctx;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    int32_t prompt[2 * 3] = {1, 2, 3, 4, 5, 6}, out[2 * 13];
    int64_t n = -1;
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    CHECK(o.size == sizeof o && o.max_new_tokens == 10 && o.do_sample == 1 && o.temperature == 1.0f && o.top_k == 0 &&
              o.top_p == 0.0f && o.freq_penalty == 0.0f && o.stop_at_eos == 1 && o.eos_token_id == -1 &&
              o.use_kv_cache == 1 && !o.on_step,
          "defaults are TransformerLens's");

    /* no tokenizer: stop_at_eos needs an explicit EOS */
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &o, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "no tokenizer");
    CHECK(n == 0, "out_len is 0 after a refused call");

    /* scripted EOS: row 0 at step 1, row 1 at step 3; then every row is finished */
    script s = {c.d_vocab_out, 0, {1, 3}};
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_hook(ctx, "unembed.hook_out", scripted, &s, &id));
    o.eos_token_id = 9;
    o.do_sample = 0;
    for (int cache = 0; cache < 2; cache++) {
        s.step = 0;
        o.use_kv_cache = cache;
        for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) out[i] = -7;
        CHECK_OK(circuits_context_generate(ctx, prompt, 2, 3, &o, out, &n));
        CHECK(n == 3 + 4, "stopped after the last row finished: out_len %lld", (long long)n);
        int32_t want0[] = {1, 2, 3, 5, 9, 9, 9, -7}, want1[] = {4, 5, 6, 5, 6, 7, 9, -7};
        CHECK(memcmp(out, want0, sizeof want0) == 0 && memcmp(out + 13, want1, sizeof want1) == 0,
              "EOS padding: row 0 %d %d %d %d %d, row 1 %d %d %d %d %d", out[3], out[4], out[5], out[6], out[7], out[16],
              out[17], out[18], out[19], out[20]);
    }
    /* without stop_at_eos the budget is spent and rows go on after EOS */
    s.step = 0;
    o.stop_at_eos = 0;
    CHECK_OK(circuits_context_generate(ctx, prompt, 2, 3, &o, out, &n));
    CHECK(n == 13 && out[4] == 9 && out[5] == 5 + 2 % 3, "stop_at_eos 0: n %lld, %d %d", (long long)n, out[4], out[5]);
    o.stop_at_eos = 1;

    /* on_step: stop early (a success), fail (CALLBACK), odd values (CALLBACK) */
    stopper st = {2, CIRCUITS_HOOK_STOP, 0};
    o.on_step = stop_step;
    o.user_data = &st;
    s.step = 0;
    s.stop[0] = s.stop[1] = 100;
    CHECK_OK(circuits_context_generate(ctx, prompt, 2, 3, &o, out, &n));
    CHECK(n == 3 + 3 && st.calls == 3, "on_step STOP at step 2: out_len %lld, %d calls", (long long)n, st.calls);
    st.ret = -5;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &o, out, &n), CIRCUITS_E_CALLBACK, "on_step");
    CHECK(n == 3 + 3, "out_len after a failed step: %lld", (long long)n);
    st.ret = 7;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &o, out, &n), CIRCUITS_E_CALLBACK, "returned 7");
    o.on_step = NULL;
    CHECK_OK(circuits_context_remove_hook(ctx, id));

    /* a hook that stops the run: E_STOPPED, with the columns done so far */
    int calls = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", stop_hook, &calls, &id));
    o.stop_at_eos = 0;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &o, out, &n), CIRCUITS_E_STOPPED, "stopped");
    o.stop_at_eos = 1;
    CHECK(n == 3 + 2, "two steps done before the stop: %lld", (long long)n);
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    /* a hook calling generate on its own context */
    reenter re = {ctx, 0};
    CHECK_OK(circuits_context_add_hook(ctx, "hook_embed", reenter_hook, &re, &id));
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &o, out, &n), CIRCUITS_E_STOPPED, "stopped");
    CHECK(re.rc == CIRCUITS_E_INVALID_ARGUMENT, "reentrant generate -> %d", re.rc);
    CHECK_OK(circuits_context_remove_hook(ctx, id));

    /* argument errors */
    CHECK_ERR(circuits_context_generate(NULL, prompt, 2, 3, &o, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_ERR(circuits_context_generate(ctx, NULL, 2, 3, &o, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &o, NULL, &n), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_ERR(circuits_context_generate(ctx, prompt, 0, 3, &o, out, &n), CIRCUITS_E_SHAPE, "at least 1");
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 0, &o, out, &n), CIRCUITS_E_SHAPE, "at least 1");
    int32_t badp[2 * 3] = {1, 2, 3, 4, 50, 6};
    CHECK_ERR(circuits_context_generate(ctx, badp, 2, 3, &o, out, &n), CIRCUITS_E_RANGE, "outside the vocabulary");
    circuits_generate_options b = o;
    b.max_new_tokens = c.n_ctx - 2;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_RANGE, "n_ctx");
    b = o;
    b.max_new_tokens = -1;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "max_new_tokens");
    b = o;
    b.temperature = -1.0f;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "temperature");
    b.temperature = NAN;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "temperature");
    b = o;
    b.top_k = -2;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "top_k");
    b = o;
    b.top_p = 1.5f;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "top_p");
    b = o;
    b.freq_penalty = -0.5f;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "freq_penalty");
    b = o;
    b.do_sample = 2;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "0 or 1");
    b = o;
    b.eos_token_id = c.d_vocab;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "eos_token_id");
    b = o;
    b.size = sizeof b + 8;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_VERSION, "size");
    /* a size that no release published (it ends inside the struct) is refused, not half-read */
    b = o;
    b.size = offsetof(circuits_generate_options, stop_at_eos);
    b.max_new_tokens = 2;
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n), CIRCUITS_E_VERSION,
              "is not one this library knows");
    /* max_new_tokens 0: the prompt only */
    b = o;
    b.max_new_tokens = 0;
    CHECK_OK(circuits_context_generate(ctx, prompt, 2, 3, &b, out, &n));
    CHECK(n == 3 && out[3] == 4, "max_new_tokens 0: out_len %lld", (long long)n);
    /* NULL options: defaults, which need an EOS here */
    CHECK_ERR(circuits_context_generate(ctx, prompt, 2, 3, NULL, out, &n), CIRCUITS_E_INVALID_ARGUMENT, "EOS");

    /* KV cache errors */
    circuits_kv_cache *kv = NULL;
    CHECK_ERR(circuits_kv_cache_create(NULL, m, 1, 0), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_ERR(circuits_kv_cache_create(&kv, NULL, 1, 0), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_ERR(circuits_kv_cache_create(&kv, m, 0, 0), CIRCUITS_E_SHAPE, "batch");
    CHECK_ERR(circuits_kv_cache_create(&kv, m, 1, c.n_ctx + 1), CIRCUITS_E_RANGE, "max_pos");
    CHECK_ERR(circuits_kv_cache_create(&kv, m, 1, -1), CIRCUITS_E_RANGE, "max_pos");
    CHECK(kv == NULL, "no cache after a failure");
    CHECK_OK(circuits_kv_cache_create(&kv, m, 2, 4));
    CHECK(circuits_kv_cache_length(kv) == 0 && circuits_kv_cache_length(NULL) == 0, "empty");
    CHECK_ERR(circuits_context_forward_kv(ctx, kv, prompt, 1, 3, NULL), CIRCUITS_E_SHAPE, "batch");
    CHECK_OK(circuits_context_forward_kv(ctx, kv, prompt, 2, 3, NULL));
    CHECK_ERR(circuits_context_forward_kv(ctx, kv, prompt, 2, 2, NULL), CIRCUITS_E_RANGE, "KV cache");
    CHECK(circuits_kv_cache_length(kv) == 3, "a failed run leaves the cache as it was");
    int32_t badk[2] = {c.d_vocab, 1};
    CHECK_ERR(circuits_context_forward_kv(ctx, kv, badk, 2, 1, NULL), CIRCUITS_E_RANGE, "vocabulary");
    CHECK_ERR(circuits_context_forward_kv(ctx, NULL, prompt, 2, 1, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_ERR(circuits_kv_cache_truncate(kv, 4), CIRCUITS_E_RANGE, "length");
    CHECK_ERR(circuits_kv_cache_truncate(NULL, 0), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    circuits_tensor kt;
    CHECK_ERR(circuits_kv_cache_layer(kv, c.n_layers, &kt, NULL), CIRCUITS_E_RANGE, "layer");
    CHECK_OK(circuits_kv_cache_truncate(kv, 0));
    circuits_model *other = load_case("tl_1l_solu_ln");
    circuits_kv_cache *kv2;
    CHECK_OK(circuits_kv_cache_create(&kv2, other, 2, 0));
    CHECK_ERR(circuits_context_forward_kv(ctx, kv2, prompt, 2, 1, NULL), CIRCUITS_E_INVALID_ARGUMENT, "another model");
    circuits_kv_cache_free(kv2);
    circuits_model_free(other);
    /* n_ctx through the cache */
    circuits_kv_cache *big;
    CHECK_OK(circuits_kv_cache_create(&big, m, 1, 0));
    int32_t *seq = calloc((size_t)c.n_ctx, sizeof(int32_t));
    CHECK_OK(circuits_context_forward_kv(ctx, big, seq, 1, c.n_ctx - 1, NULL));
    CHECK_ERR(circuits_context_forward_kv(ctx, big, seq, 1, 2, NULL), CIRCUITS_E_RANGE, "n_ctx");
    CHECK_OK(circuits_context_forward_kv(ctx, big, seq, 1, 1, NULL));
    free(seq);
    circuits_kv_cache_free(big);
    circuits_kv_cache_free(kv);
    circuits_kv_cache_free(NULL);
    circuits_generate_options_init(NULL);
    circuits_context_free(ctx);
    circuits_model_free(m);

    /* a model with a tokenizer: its EOS by default */
    circuits_model *tm = load(tiny);
    circuits_config tc = config(tm);
    const circuits_tokenizer *tok = circuits_model_tokenizer(tm);
    CHECK(tok && circuits_tokenizer_eos_id(tok) >= 0, "the bundled model has a tokenizer with an EOS");
    CHECK_OK(circuits_context_create(&ctx, tm, NULL));
    int32_t ids[16];
    size_t nid = 0;
    CHECK_OK(circuits_tokenizer_encode(tok, "Hello world", 11, NULL, ids, 16, &nid));
    int32_t *tout = malloc(sizeof(int32_t) * (nid + 10));
    CHECK_OK(circuits_context_generate(ctx, ids, 1, (int64_t)nid, NULL, tout, &n));
    CHECK(n > (int64_t)nid && n <= (int64_t)nid + 10, "default generation: out_len %lld", (long long)n);
    for (int64_t i = 0; i < n; i++) CHECK(tout[i] >= 0 && tout[i] < tc.d_vocab_out, "token %d", tout[i]);
    free(tout);
    circuits_context_free(ctx);
    circuits_model_free(tm);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s CASES_DIR TINY_MODEL_DIR\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    const char *cases[] = {"tl_1l_solu_ln",       "tl_shortformer_relu", "tl_2l_lnpre_gelu",  "tl_attn_only_2l_none",
                           "tl_attn_only_1l_ln",  "tl_gelu_fast",        "tl_silu",           "tl_no_biases",
                           "tl_f16",              "hf_tiny_random_gpt2", "hf_tiny_noprefix",  "hf_random_untied",
                           "hf_random_f16",       "tl_2l_rms_gelu",      "tl_attn_only_2l_rmspre",
                           /* rotary, grouped-query, local and soft-capped attention */
                           "tl_rotary_neox_quarter", "tl_rotary_gptj", "tl_gqa_rotary_rms", "tl_rope_llama3",
                           "tl_rope_linear_mqa", "tl_local_all", "tl_local_alternating_rotary", "tl_attn_softcap",
                           /* gated MLP, parallel block, final_rms, post-sublayer norms, logit soft-cap */
                           "tl_gated_swiglu_rms", "tl_gated_geglu_ln", "tl_parallel_ln", "tl_final_rms_ln",
                           "tl_gemma2_block", "tl_pythia_like", "tl_llama_like",
                           /* the Hugging Face families (generate_families.py) */
                           "hf_neox", "hf_gptj", "hf_llama_gqa", "hf_llama3_rope", "hf_mistral_window",
                           "hf_qwen2_bias", "hf_gemma", "hf_gemma2", "hf_qwen2_bf16", "hf_mistral_sharded"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_cache_equivalence(cases[i], false);
    test_cache_equivalence("tl_gelu_new_attn_result", true);
    test_forward_kv_chunks("tl_shortformer_relu");
    test_forward_kv_chunks("tl_2l_lnpre_gelu");
    test_forward_kv_chunks("tl_2l_rms_gelu");
    test_forward_kv_chunks("hf_tiny_random_gpt2");
    test_forward_kv_chunks("tl_gqa_rotary_rms");           /* keys rotated at the cache offset */
    test_forward_kv_chunks("tl_rotary_gptj");
    test_forward_kv_chunks("tl_local_alternating_rotary"); /* the window counted in absolute positions */
    test_forward_kv_chunks("tl_local_all");
    test_forward_kv_chunks("tl_attn_softcap");
    test_forward_kv_chunks("tl_gemma2_block"); /* post-sublayer norms, gated MLP, logit soft-cap */
    test_forward_kv_chunks("tl_pythia_like");  /* parallel attention + MLP */
    test_forward_kv_chunks("hf_mistral_window"); /* window 4 < T = 12 across chunks */
    test_forward_kv_chunks("hf_gemma2");         /* alternating windows, both soft-caps */
    test_forward_kv_chunks("hf_neox");           /* NeoX's gathered q/k/v biases, partial rotary */
    test_hook_shapes("tl_shortformer_relu");
    test_hook_shapes("hf_tiny_random_gpt2");
    test_hook_edits("tl_shortformer_relu");
    test_hook_edits("tl_gelu_fast");
    test_hook_edits("tl_gqa_rotary_rms"); /* an edit at hook_k flows through the rotation into the cache */
    test_sampler();
    test_eos_and_errors(argv[2]);
    return tu_finish("test_generate");
}
