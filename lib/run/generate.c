/* Generation (TransformerLens HookedTransformer.generate) and the KV cache it runs on.
 *
 * The sampler follows transformer_lens utilities sample_logits (docs/generation.md):
 *   do_sample = 0 or temperature = 0: argmax of the raw logits (the first maximum);
 *   else x = logits / temperature - freq_penalty * count(token in the row so far), then
 *   top-k (k clamped to the vocabulary; every logit below the k-th largest is removed) or, only
 *   without top-k, top-p (sorted descending, token i is kept if i = 0 or the cumulative
 *   probability of tokens 0 .. i-1 is <= p), then one draw from softmax(x) over the kept tokens.
 * Draws come from a splitmix64 stream seeded with opts->seed: one uniform per row per step, rows
 * in order, so a seed reproduces its tokens on every platform (not torch's). */
#include "context.h"
#include "rng.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- KV cache ---- */

int circuits_kv_cache_create(circuits_kv_cache **out, const circuits_model *model, int64_t batch, int64_t max_pos)
{
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_kv_cache_create: out is NULL");
    *out = NULL;
    if (!model) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_kv_cache_create: model is NULL");
    const circuits_config *c = &model->cfg;
    if (batch < 1) return cx_fail(CIRCUITS_E_SHAPE, "circuits_kv_cache_create: batch %lld < 1", (long long)batch);
    if (max_pos == 0) max_pos = c->n_ctx;
    if (max_pos < 1 || max_pos > c->n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_kv_cache_create: max_pos %lld is outside [1, n_ctx = %d] (0: n_ctx)",
                       (long long)max_pos, c->n_ctx);
    size_t n = 1;
    bool ok = cx_mul_size((size_t)c->n_layers, (size_t)batch, &n) && cx_mul_size(n, (size_t)max_pos, &n) &&
              cx_mul_size(n, (size_t)c->n_key_value_heads * (size_t)c->d_head, &n) && n < SIZE_MAX / sizeof(float);
    if (!ok)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_kv_cache_create: a cache of [%lld, %lld] positions is too large",
                       (long long)batch, (long long)max_pos);
    circuits_kv_cache *kv = cx_calloc(1, sizeof *kv);
    if (kv) {
        kv->k = cx_malloc(n * sizeof(float));
        kv->v = cx_malloc(n * sizeof(float));
        kv->mask = cx_malloc((size_t)batch * (size_t)max_pos * sizeof(int32_t));
    }
    if (!kv || !kv->k || !kv->v || !kv->mask) {
        circuits_kv_cache_free(kv);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: a KV cache of [%lld, %lld] positions needs %zu MiB",
                       (long long)batch, (long long)max_pos, 2 * n * sizeof(float) >> 20);
    }
    kv->model = model;
    kv->batch = batch;
    kv->cap = max_pos;
    kv->hi = c->n_layers;
    *out = kv;
    return CIRCUITS_OK;
}

void circuits_kv_cache_free(circuits_kv_cache *kv)
{
    if (!kv) return;
    cx_free(kv->k);
    cx_free(kv->v);
    cx_free(kv->mask);
    cx_free(kv);
}

int64_t circuits_kv_cache_length(const circuits_kv_cache *kv) { return kv ? kv->len : 0; }

int circuits_kv_cache_truncate(circuits_kv_cache *kv, int64_t length)
{
    if (!kv) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_kv_cache_truncate: kv is NULL");
    if (length < 0 || length > kv->len)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_kv_cache_truncate: length %lld is outside [0, %lld]",
                       (long long)length, (long long)kv->len);
    kv->len = length;
    if (length == 0) { /* empty: every block again */
        kv->lo = 0;
        kv->hi = kv->model->cfg.n_layers;
    }
    return CIRCUITS_OK;
}

static void kv_view(const circuits_kv_cache *kv, int32_t layer, float *base, const char *name, circuits_tensor *t)
{
    const circuits_config *c = &kv->model->cfg;
    int64_t HD = (int64_t)c->n_key_value_heads * c->d_head; /* K/V heads (grouped-query attention) */
    memset(t, 0, sizeof *t);
    t->name = name;
    t->layer = layer;
    t->head = -1;
    t->head_axis = 2;
    t->ndim = 4;
    t->shape[0] = kv->batch;
    t->shape[1] = kv->len;
    t->shape[2] = c->n_key_value_heads;
    t->shape[3] = c->d_head;
    t->strides[0] = kv->cap * HD;
    t->strides[1] = HD;
    t->strides[2] = c->d_head;
    t->strides[3] = 1;
    t->data = base + (size_t)layer * (size_t)kv->batch * (size_t)kv->cap * (size_t)HD;
}

int circuits_kv_cache_layer(const circuits_kv_cache *kv, int32_t layer, circuits_tensor *keys, circuits_tensor *values)
{
    if (!kv) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_kv_cache_layer: kv is NULL");
    if (layer < 0 || layer >= kv->model->cfg.n_layers)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_kv_cache_layer: layer %d is outside [0, %d)", layer,
                       kv->model->cfg.n_layers);
    if (kv->len > 0 && (layer < kv->lo || layer >= kv->hi))
        return cx_fail(CIRCUITS_E_RANGE, "circuits_kv_cache_layer: the KV cache holds keys and values of blocks %d .. %d "
                       "only (a run skipped the others); layer %d is not one of them", kv->lo, kv->hi - 1, layer);
    if (keys) kv_view(kv, layer, kv->k, "past_keys", keys);
    if (values) kv_view(kv, layer, kv->v, "past_values", values);
    return CIRCUITS_OK;
}

int circuits_context_forward_kv(circuits_context *ctx, circuits_kv_cache *kv, const int32_t *tokens, int64_t batch,
                                int64_t pos, float *logits)
{
    if (!ctx || !kv)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_forward_kv: ctx and kv must not be NULL");
    cx_run r = cx_run_init(ctx, "circuits_context_forward_kv", tokens, batch, pos);
    r.kv = kv;
    r.out = logits;
    return cx_context_run(ctx, &r);
}

/* ---- sampling ---- */

void circuits_generate_options_init(circuits_generate_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->max_new_tokens = 10;
    o->do_sample = 1;
    o->temperature = 1.0f;
    o->stop_at_eos = 1;
    o->eos_token_id = -1;
    o->use_kv_cache = 1;
}

typedef struct ranked {
    float x;
    int32_t id;
} ranked;

typedef struct sampler {
    const circuits_generate_options *o;
    int64_t V;
    float *x;          /* [V] working logits */
    ranked *order;     /* [V] (x, id) sorted by x descending (top-k / top-p) */
    uint64_t rng;
} sampler;

static int cmp_desc(const void *a, const void *b)
{
    const ranked *p = a, *q = b;
    if (p->x != q->x) return p->x > q->x ? -1 : 1;
    return (p->id > q->id) - (p->id < q->id); /* ties: the lower id first, as a stable sort would */
}

/* The token for one row; counts [V] (may be NULL without a frequency penalty). Fails on NaN or
 * +inf logits, or when no logit is finite. */
static int choose(sampler *s, const float *logits, const int32_t *counts, int64_t b, int64_t step, int32_t *tok)
{
    const circuits_generate_options *o = s->o;
    int64_t V = s->V, best = -1;
    double u = (double)(cx_splitmix64(&s->rng) >> 11) * 0x1.0p-53; /* drawn for every row and step */
    for (int64_t j = 0; j < V; j++) {
        if (isnan(logits[j]) || logits[j] == INFINITY)
            return cx_fail(CIRCUITS_E_RANGE, "generate: step %lld, row %lld: logit %lld is %s", (long long)step,
                           (long long)b, (long long)j, isnan(logits[j]) ? "NaN" : "+inf");
        if (logits[j] != -INFINITY && (best < 0 || logits[j] > logits[best])) best = j;
    }
    if (best < 0)
        return cx_fail(CIRCUITS_E_RANGE, "generate: step %lld, row %lld: every logit is -inf", (long long)step,
                       (long long)b);
    if (!o->do_sample || o->temperature == 0.0f) {
        *tok = (int32_t)best;
        return CIRCUITS_OK;
    }
    float *x = s->x;
    for (int64_t j = 0; j < V; j++) {
        x[j] = logits[j] / o->temperature;
        if (o->freq_penalty > 0.0f) x[j] -= o->freq_penalty * (float)counts[j];
    }
    if (o->top_k > 0 || o->top_p > 0.0f) {
        for (int64_t j = 0; j < V; j++) s->order[j] = (ranked){x[j], (int32_t)j};
        qsort(s->order, (size_t)V, sizeof *s->order, cmp_desc);
        if (o->top_k > 0) {
            float kth = s->order[(o->top_k < V ? o->top_k : V) - 1].x;
            for (int64_t j = 0; j < V; j++)
                if (x[j] < kth) x[j] = -INFINITY;
        } else {
            double mx = s->order[0].x, z = 0.0, cum = 0.0;
            for (int64_t r = 0; r < V; r++) z += exp((double)s->order[r].x - mx);
            for (int64_t r = 0; r < V; r++) {
                int32_t j = s->order[r].id;
                double p = exp((double)x[j] - mx) / z;
                if (r > 0 && cum > (double)o->top_p) x[j] = -INFINITY;
                cum += p;
            }
        }
    }
    /* one draw from softmax(x), walking the vocabulary in id order */
    double mx = -INFINITY, z = 0.0;
    for (int64_t j = 0; j < V; j++)
        if (x[j] > mx) mx = x[j];
    for (int64_t j = 0; j < V; j++) z += exp((double)x[j] - mx);
    double target = u * z, acc = 0.0;
    int64_t pick = -1;
    for (int64_t j = 0; j < V; j++) {
        if (x[j] == -INFINITY) continue;
        pick = j;
        acc += exp((double)x[j] - mx);
        if (acc > target) break;
    }
    *tok = (int32_t)pick;
    return CIRCUITS_OK;
}

/* ---- generation ---- */

static int check_options(const circuits_generate_options *o, const circuits_model *m, int32_t *eos)
{
    const char *fn = "circuits_context_generate";
    if (o->max_new_tokens < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: max_new_tokens %d < 0", fn, o->max_new_tokens);
    if ((o->do_sample | o->stop_at_eos | o->use_kv_cache) & ~1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: do_sample, stop_at_eos and use_kv_cache must be 0 or 1", fn);
    if (!(o->temperature >= 0.0f) || isinf(o->temperature))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: temperature %g must be finite and >= 0", fn,
                       (double)o->temperature);
    if (o->top_k < 0) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: top_k %d < 0 (0: off)", fn, o->top_k);
    if (!(o->top_p >= 0.0f && o->top_p <= 1.0f))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: top_p %g is outside (0, 1] (0: off)", fn, (double)o->top_p);
    if (!(o->freq_penalty >= 0.0f) || isinf(o->freq_penalty))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: freq_penalty %g must be finite and >= 0", fn,
                       (double)o->freq_penalty);
    if (o->eos_token_id < -1 || o->eos_token_id >= m->cfg.d_vocab)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: eos_token_id %d is outside [0, d_vocab = %d) (-1: the tokenizer's)",
                       fn, o->eos_token_id, m->cfg.d_vocab);
    *eos = o->eos_token_id >= 0 ? o->eos_token_id : circuits_tokenizer_eos_id(m->tokenizer);
    if (o->stop_at_eos && *eos < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "%s: stop_at_eos needs an EOS token, and the model has %s: set eos_token_id, or stop_at_eos = 0",
                       fn, m->tokenizer ? "a tokenizer without one" : "no tokenizer");
    if (o->stop_at_eos && *eos >= m->cfg.d_vocab)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the tokenizer's EOS %d is outside d_vocab = %d", fn, *eos,
                       m->cfg.d_vocab);
    return CIRCUITS_OK;
}

int circuits_context_generate(circuits_context *ctx, const int32_t *prompt, int64_t B, int64_t P,
                              const circuits_generate_options *opts, int32_t *out, int64_t *out_len)
{
    const char *fn = "circuits_context_generate";
    if (out_len) *out_len = 0;
    if (!ctx || !prompt || !out)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, prompt and out must not be NULL", fn);
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    static const size_t versions[] = {offsetof(circuits_generate_options, attention_mask), /* 0.1 */
                                      sizeof(circuits_generate_options)};
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn))) return rc;
    const circuits_model *m = ctx->model;
    const circuits_config *c = &m->cfg;
    int32_t eos = -1;
    rc = check_options(&o, m, &eos);
    if (rc) return rc;
    if (B < 1 || P < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: prompt shape [%lld, %lld]: batch and prompt_len must be at least 1", fn,
                       (long long)B, (long long)P);
    if (P > c->n_ctx || o.max_new_tokens > c->n_ctx - P)
        return cx_fail(CIRCUITS_E_RANGE, "%s: prompt_len %lld + max_new_tokens %d exceed the model's n_ctx = %d", fn,
                       (long long)P, o.max_new_tokens, c->n_ctx);
    for (int64_t i = 0; i < B * P; i++)
        if (prompt[i] < 0 || prompt[i] >= c->d_vocab)
            return cx_fail(CIRCUITS_E_RANGE, "%s: prompt token %d at [%lld, %lld] is outside the vocabulary [0, %d)", fn,
                           prompt[i], (long long)(i / P), (long long)(i % P), c->d_vocab);
    /* each row goes on after its last position: padding there would be continued (the forward
     * pass checks the mask's values and rows) */
    const int32_t *pmask = o.attention_mask;
    for (int64_t b = 0; pmask && b < B; b++)
        if (pmask[b * P + P - 1] == 0)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "%s: attention_mask row %lld ends in padding: pad prompts on the left to generate "
                           "(TransformerLens's generate pads batches left)", fn, (long long)b);
    int64_t L = P + o.max_new_tokens, V = c->d_vocab_out;
    for (int64_t b = 0; b < B; b++) memcpy(out + b * L, prompt + b * P, (size_t)P * sizeof *out);
    if (out_len) *out_len = P;
    if (o.max_new_tokens == 0) return CIRCUITS_OK;

    /* buffers: logits of one run, the last position's [B, V], the new column [B], the packed
     * sequence (no cache), per-row token counts (frequency penalty), the sampler's two [V] */
    bool counting = o.do_sample && o.temperature != 0.0f && o.freq_penalty > 0.0f;
    int64_t run_T = o.use_kv_cache ? P : L;
    size_t n_logits = 0, n_last = 0, n_seq = 0, n_counts = 0;
    bool ok = cx_mul_size((size_t)(B * run_T), (size_t)V, &n_logits) && cx_mul_size((size_t)B, (size_t)V, &n_last);
    ok = ok && n_logits < SIZE_MAX / sizeof(float) && n_last < SIZE_MAX / sizeof(float);
    n_seq = o.use_kv_cache ? 0 : (size_t)(B * L) * (pmask ? 2 : 1); /* the sequence, and its mask */
    n_counts = counting ? n_last : 0;
    if (!ok) return cx_fail(CIRCUITS_E_RANGE, "%s: [%lld, %lld] positions need more memory than can be addressed", fn,
                            (long long)B, (long long)L);
    float *logits = cx_malloc(n_logits * sizeof(float)), *last = cx_malloc(n_last * sizeof(float));
    int32_t *col = cx_malloc((size_t)B * sizeof(int32_t)), *seq = n_seq ? cx_malloc(n_seq * sizeof(int32_t)) : NULL;
    int32_t *counts = n_counts ? cx_calloc(n_counts, sizeof(int32_t)) : NULL;
    uint8_t *finished = cx_calloc((size_t)B, 1);
    sampler smp = {&o, V, cx_malloc((size_t)V * sizeof(float)), cx_malloc((size_t)V * sizeof(ranked)), o.seed};
    circuits_kv_cache *kv = NULL;
    if (!logits || !last || !col || (n_seq && !seq) || (n_counts && !counts) || !finished || !smp.x || !smp.order)
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: generating [%lld, %lld] tokens", (long long)B,
                     (long long)L);
    if (!rc && o.use_kv_cache) rc = circuits_kv_cache_create(&kv, m, B, L);
    if (!rc && counts)
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < P; i++)
                if (prompt[b * P + i] < V) counts[b * V + prompt[b * P + i]]++;

    /* the steps run as one operation: the guard is held from the first to the last (an on_step
     * callback may not run the context either) */
    if (!rc) rc = cx_context_enter(ctx, fn);
    bool entered = !rc;
    int64_t cur = P; /* columns written */
    for (int64_t step = 0; !rc && step < o.max_new_tokens; step++) {
        int64_t T; /* positions of this run; the last one predicts column cur */
        cx_run run;
        if (kv) {
            T = step == 0 ? P : 1;
            run = cx_run_init(ctx, fn, step == 0 ? prompt : col, B, T);
            run.kv = kv; /* it remembers the prompt's mask; the new tokens are real */
            if (step == 0) run.attention_mask = pmask;
        } else {
            T = cur;
            int32_t *seq_mask = seq + B * T;
            for (int64_t b = 0; b < B; b++) {
                memcpy(seq + b * T, out + b * L, (size_t)T * sizeof *seq);
                for (int64_t t = 0; pmask && t < T; t++) seq_mask[b * T + t] = t < P ? pmask[b * P + t] : 1;
            }
            run = cx_run_init(ctx, fn, seq, B, T);
            if (pmask) run.attention_mask = seq_mask;
        }
        run.out = logits;
        run.held = true;
        rc = cx_context_run(ctx, &run);
        if (rc) break;
        for (int64_t b = 0; b < B && !rc; b++) {
            memcpy(last + b * V, logits + (b * T + T - 1) * V, (size_t)V * sizeof(float));
            int32_t tok = 0;
            rc = choose(&smp, last + b * V, counts ? counts + b * V : NULL, b, step, &tok);
            if (rc) break;
            if (o.stop_at_eos && finished[b]) tok = eos;
            if (o.stop_at_eos && tok == eos) finished[b] = 1;
            col[b] = tok;
            if (counts) counts[b * V + tok]++;
        }
        if (rc) break;
        for (int64_t b = 0; b < B; b++) out[b * L + cur] = col[b];
        cur++;
        if (out_len) *out_len = cur;
        if (o.on_step) {
            int r = o.on_step(step, col, last, B, o.user_data);
            if (r == CIRCUITS_HOOK_STOP) break;
            if (r < 0) rc = cx_fail(CIRCUITS_E_CALLBACK, "%s: the on_step callback failed (returned %d) at step %lld",
                                    fn, r, (long long)step);
            else if (r != CIRCUITS_HOOK_CONTINUE)
                rc = cx_fail(CIRCUITS_E_CALLBACK, "%s: the on_step callback returned %d at step %lld (0: go on, 1: stop)",
                             fn, r, (long long)step);
        }
        bool all = o.stop_at_eos;
        for (int64_t b = 0; b < B && all; b++) all = finished[b];
        if (all) break;
    }
    if (entered) cx_context_leave(ctx);
    circuits_kv_cache_free(kv);
    cx_free(smp.x);
    cx_free(smp.order);
    cx_free(finished);
    cx_free(counts);
    cx_free(seq);
    cx_free(col);
    cx_free(last);
    cx_free(logits);
    return rc;
}
