/* One loaded model used from 8 threads at once, each with its own context: tokenizer encode,
 * a forward with hooks that read and edit, run_with_cache, generation (KV cache), head
 * detection, composition scores and OV eigenvalues. Every result must be bit-identical
 * (memcmp) to the same job run serially beforehand — once with circuits_set_num_threads(1) and
 * once with the default thread count. Runs in the normal, ASan and ThreadSanitizer builds.
 * Then the same with STORED_GGUF, a GGUF file of that model loaded with keep_stored_dtype.
 * Usage: test_threads MODEL_DIR TOKENIZER_DIR [STORED_GGUF]
 *   MODEL_DIR: a GPT-2 with MLPs (tests/reference/cases/hf_tiny_random_gpt2), loaded with
 *   TransformerLens's default weight processing; TOKENIZER_DIR: a tokenizer of its vocabulary. */
#include "testutil.h"

#include <pthread.h>
#include <stdint.h>

#define N_THREADS 8
#define N_ROUNDS 3 /* each thread repeats its job: later rounds overlap other threads' work */
#define TB 2       /* tokens [TB, TT] */
#define TT 12

static const circuits_model *g_model;
static const circuits_tokenizer *g_tok;
static circuits_config g_cfg;

/* ---- a transcript: every output of a job, appended in order, compared with memcmp ---- */

typedef struct transcript {
    unsigned char *p;
    size_t n, cap;
    int oom;
} transcript;

static void tr_add(transcript *t, const void *data, size_t n)
{
    if (t->n + n > t->cap) {
        size_t cap = (t->n + n) * 2;
        unsigned char *p = realloc(t->p, cap);
        if (!p) {
            t->oom = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->n, data, n);
    t->n += n;
}

/* ---- hooks: one reads, two edit ---- */

typedef struct hook_state {
    int job;
    double resid_sum[64]; /* [n_layers]: sum of hook_resid_pre, as the reading hook saw it */
} hook_state;

static int read_resid(const circuits_tensor *act, void *user_data)
{
    hook_state *s = user_data;
    int64_t n = act->shape[0] * act->shape[1] * act->shape[2]; /* [batch, pos, d_model], contiguous */
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += act->data[i];
    if (act->layer >= 0 && act->layer < 64) s->resid_sum[act->layer] += sum;
    return CIRCUITS_HOOK_CONTINUE;
}

/* hook_z [batch, pos, head, d_head]: zero-ablate head job % n_heads */
static int ablate_head(const circuits_tensor *act, void *user_data)
{
    const hook_state *s = user_data;
    int64_t h = s->job % act->shape[2];
    for (int64_t b = 0; b < act->shape[0]; b++)
        for (int64_t p = 0; p < act->shape[1]; p++)
            memset(act->data + b * act->strides[0] + p * act->strides[1] + h * act->strides[2], 0,
                   (size_t)act->shape[3] * sizeof(float));
    return CIRCUITS_HOOK_CONTINUE;
}

/* hook_resid_post [batch, pos, d_model]: steer along channel job % d_model */
static int steer(const circuits_tensor *act, void *user_data)
{
    const hook_state *s = user_data;
    int64_t c = s->job % act->shape[2];
    for (int64_t b = 0; b < act->shape[0]; b++)
        for (int64_t p = 0; p < act->shape[1]; p++) act->data[b * act->strides[0] + p * act->strides[1] + c] += 3.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

/* ---- the job ---- */

typedef struct job_result {
    int failed;           /* first failing step, 0 if none */
    char message[256];    /* circuits_last_error() of that step */
    int own_error_ok;     /* a deliberate failure reported this thread's own message */
} job_result;

#define STEP(k, call)                                                                       \
    do {                                                                                    \
        if (!r->failed && (call) != CIRCUITS_OK) {                                          \
            r->failed = (k);                                                                \
            snprintf(r->message, sizeof r->message, "%s: %s", #call, circuits_last_error()); \
        }                                                                                   \
    } while (0)

/* Job `job` on ctx; hooks: 1 registers the reading and the editing hooks, 2 the reading one only. */
static void run_job(circuits_context *ctx, int job, int hooks, transcript *tr, job_result *r)
{
    const circuits_config *c = &g_cfg;
    int64_t L = c->n_layers, H = c->n_heads, V = c->d_vocab_out;

    /* 1. tokenizer encode (the shared tokenizer) */
    char text[160];
    snprintf(text, sizeof text, "Thread %d reads the residual stream, ablates head %d and steers channel %d.", job,
             job % (int)H, job % (int)c->d_model);
    int32_t ids[256];
    size_t n_ids = 0;
    STEP(1, circuits_tokenizer_encode(g_tok, text, strlen(text), NULL, ids, 256, &n_ids));
    if (r->failed || n_ids == 0) {
        if (!r->failed) r->failed = 1;
        return;
    }
    tr_add(tr, ids, n_ids * sizeof *ids);
    int32_t tokens[TB * TT]; /* [TB, TT] */
    for (int i = 0; i < TB * TT; i++) tokens[i] = ids[(size_t)i % n_ids] % c->d_vocab;

    /* 2. a forward whose hooks read and edit */
    hook_state hs;
    memset(&hs, 0, sizeof hs);
    hs.job = job;
    STEP(2, circuits_context_add_hook(ctx, "blocks.*.hook_resid_pre", read_resid, &hs, NULL));
    if (hooks == 1) {
        STEP(2, circuits_context_add_hook(ctx, "blocks.2.attn.hook_z", ablate_head, &hs, NULL));
        STEP(2, circuits_context_add_hook(ctx, "resid_post3", steer, &hs, NULL));
    }
    float *logits = malloc((size_t)(TB * TT * V) * sizeof *logits); /* [TB, TT, V] */
    float loss = 0, ptl[TB * (TT - 1)];
    if (!logits) {
        r->failed = 2;
        return;
    }
    STEP(3, circuits_context_forward(ctx, tokens, TB, TT, logits, &loss, ptl));
    tr_add(tr, logits, (size_t)(TB * TT * V) * sizeof *logits);
    tr_add(tr, &loss, sizeof loss);
    tr_add(tr, ptl, sizeof ptl);
    tr_add(tr, hs.resid_sum, sizeof hs.resid_sum);

    /* 3. run_with_cache, the same hooks still editing */
    circuits_cache *cache = NULL;
    STEP(4, circuits_cache_create(&cache));
    const char *filter[3] = {"blocks.*.attn.hook_pattern", "blocks.0.mlp.hook_post", "resid_post4"};
    STEP(4, circuits_context_run_with_cache(ctx, tokens, TB, TT, filter, 3, cache, logits, NULL, NULL));
    tr_add(tr, logits, (size_t)(TB * TT * V) * sizeof *logits);
    for (size_t i = 0; !r->failed && i < circuits_cache_count(cache); i++) {
        circuits_tensor t;
        STEP(4, circuits_cache_at(cache, i, &t));
        int64_t numel = 1;
        for (int d = 0; d < t.ndim; d++) numel *= t.shape[d];
        if (!r->failed) tr_add(tr, t.data, (size_t)numel * sizeof(float));
    }
    circuits_cache_free(cache);
    circuits_context_clear_hooks(ctx);

    /* 4. greedy generation (KV cache) and head detection, without hooks */
    circuits_generate_options go;
    circuits_generate_options_init(&go);
    go.do_sample = 0;
    go.stop_at_eos = 0;
    go.max_new_tokens = 4;
    int32_t gen[TB * (TT + 4)];
    int64_t gen_len = 0;
    STEP(5, circuits_context_generate(ctx, tokens, TB, TT, &go, gen, &gen_len));
    tr_add(tr, gen, sizeof gen);
    float *scores = malloc((size_t)(L * H * L * H) * sizeof *scores); /* [L, H, L, H] */
    if (!scores) {
        free(logits);
        r->failed = 6;
        return;
    }
    STEP(6, circuits_context_detect_heads(ctx, tokens, TB, TT, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, NULL, scores));
    tr_add(tr, scores, (size_t)(L * H) * sizeof *scores);

    /* 5. circuits: composition scores, OV eigenvalues */
    STEP(7, circuits_model_composition_scores(g_model, job % 3, scores));
    tr_add(tr, scores, (size_t)(L * H * L * H) * sizeof *scores);
    circuits_factored *ov = NULL;
    STEP(8, circuits_model_ov(g_model, -1, -1, &ov));
    float re[64 * 64], im[64 * 64]; /* [L, H, d_head] */
    if (!r->failed && L * H * c->d_head <= 64 * 64) {
        STEP(8, circuits_factored_eigenvalues(ov, re, im));
        tr_add(tr, re, (size_t)(L * H * c->d_head) * sizeof *re);
        tr_add(tr, im, (size_t)(L * H * c->d_head) * sizeof *im);
    }
    circuits_factored_free(ov);

    /* 6. a failure of this thread's own: its message, not another thread's */
    int32_t bad[2] = {0, 100000 + job};
    char own[16];
    snprintf(own, sizeof own, "%d", 100000 + job);
    r->own_error_ok = circuits_context_forward(ctx, bad, 1, 2, NULL, NULL, NULL) == CIRCUITS_E_RANGE &&
                      strstr(circuits_last_error(), own) != NULL;
    free(scores);
    free(logits);
}

/* ---- threads ---- */

typedef struct worker {
    int job;
    const transcript *ref;
    int mismatches;   /* rounds whose transcript differs from ref */
    size_t first_diff;
    job_result r;
} worker;

static void *worker_main(void *p)
{
    worker *w = p;
    circuits_context *ctx = NULL;
    if (circuits_context_create(&ctx, g_model, NULL) != CIRCUITS_OK) {
        w->r.failed = 100;
        snprintf(w->r.message, sizeof w->r.message, "context_create: %s", circuits_last_error());
        return NULL;
    }
    for (int round = 0; round < N_ROUNDS && !w->r.failed; round++) {
        transcript tr = {0};
        run_job(ctx, w->job, 1, &tr, &w->r);
        if (tr.oom) w->r.failed = 101;
        if (!w->r.failed && (tr.n != w->ref->n || memcmp(tr.p, w->ref->p, tr.n) != 0)) {
            if (!w->mismatches) {
                size_t i = 0;
                while (i < tr.n && i < w->ref->n && tr.p[i] == w->ref->p[i]) i++;
                w->first_diff = i;
            }
            w->mismatches++;
        }
        free(tr.p);
    }
    circuits_context_free(ctx);
    return NULL;
}

static void run_all(const char *label)
{
    /* the serial references, one fresh context per job as the threads have */
    transcript ref[N_THREADS];
    memset(ref, 0, sizeof ref);
    for (int j = 0; j < N_THREADS; j++) {
        circuits_context *ctx = NULL;
        CHECK_OK(circuits_context_create(&ctx, g_model, NULL));
        if (!ctx) return;
        job_result r = {0};
        run_job(ctx, j, 1, &ref[j], &r);
        CHECK(!r.failed && !ref[j].oom, "%s: serial job %d failed at step %d: %s", label, j, r.failed, r.message);
        CHECK(r.own_error_ok, "%s: serial job %d: the deliberate failure's message", label, j);
        circuits_context_free(ctx);
    }
    /* the comparison can fail: jobs differ from each other, and the editing hooks matter */
    CHECK(ref[0].n != ref[1].n || memcmp(ref[0].p, ref[1].p, ref[0].n) != 0, "%s: jobs 0 and 1 agree", label);
    {
        circuits_context *ctx = NULL;
        CHECK_OK(circuits_context_create(&ctx, g_model, NULL));
        transcript plain = {0};
        job_result r = {0};
        if (ctx) run_job(ctx, 1, 2, &plain, &r);
        CHECK(!r.failed, "%s: job without editing hooks failed: %s", label, r.message);
        CHECK(plain.n != ref[1].n || memcmp(plain.p, ref[1].p, plain.n) != 0, "%s: the editing hooks change nothing",
              label);
        free(plain.p);
        circuits_context_free(ctx);
    }

    worker w[N_THREADS];
    pthread_t th[N_THREADS];
    int started[N_THREADS];
    for (int j = 0; j < N_THREADS; j++) {
        memset(&w[j], 0, sizeof w[j]);
        w[j].job = j;
        w[j].ref = &ref[j];
        started[j] = pthread_create(&th[j], NULL, worker_main, &w[j]) == 0;
        CHECK(started[j], "%s: pthread_create %d", label, j);
    }
    for (int j = 0; j < N_THREADS; j++)
        if (started[j]) pthread_join(th[j], NULL);
    int identical = 0;
    for (int j = 0; j < N_THREADS; j++) {
        CHECK(!w[j].r.failed, "%s: thread %d failed at step %d: %s", label, j, w[j].r.failed, w[j].r.message);
        CHECK(w[j].r.own_error_ok, "%s: thread %d saw another thread's error message", label, j);
        CHECK(w[j].mismatches == 0, "%s: thread %d: %d of %d rounds differ from the serial run (first at byte %zu of %zu)",
              label, j, w[j].mismatches, N_ROUNDS, w[j].first_diff, ref[j].n);
        identical += !w[j].r.failed && w[j].mismatches == 0;
        free(ref[j].p);
    }
    printf("%s: %d threads x %d rounds, %d of %d jobs bit-identical to the serial run (%zu bytes each)\n", label,
           N_THREADS, N_ROUNDS, identical, N_THREADS, ref[0].n);
}

/* Runs every job serially and then from N_THREADS threads on m, with one and with the default
 * number of pool threads. */
static void run_model(const circuits_model *m, const circuits_tokenizer *tok, const char *what)
{
    g_cfg.size = sizeof g_cfg;
    CHECK_OK(circuits_model_config(m, &g_cfg));
    CHECK(!g_cfg.attn_only && g_cfg.n_layers >= 4 && g_cfg.n_layers <= 64, "need a model with MLPs and 4..64 layers");
    CHECK(circuits_tokenizer_vocab_size(tok) <= (size_t)g_cfg.d_vocab, "tokenizer larger than the vocabulary");
    g_model = m;
    g_tok = tok;
    char label[160];
    circuits_set_num_threads(1);
    snprintf(label, sizeof label, "%s, circuits_set_num_threads(1)", what);
    run_all(label);
    circuits_set_num_threads(0);
    snprintf(label, sizeof label, "%s, default thread count (%d)", what, circuits_get_num_threads());
    run_all(label);
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s MODEL_DIR TOKENIZER_DIR [STORED_GGUF]\n", argv[0]);
        return 2;
    }
    circuits_model *m = NULL;
    circuits_tokenizer *tok = NULL;
    CHECK_OK(circuits_model_load(&m, argv[1], NULL)); /* TransformerLens's default processing */
    CHECK_OK(circuits_tokenizer_load(&tok, argv[2]));
    if (!m || !tok) return tu_finish("test_threads");
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));
    CHECK(c.processing & CIRCUITS_PROCESSED_FOLD_LN, "the model was not processed (processing = %#x)", c.processing);
    run_model(m, tok, "processed fp32 model");
    circuits_model_free(m);
    m = NULL;

    /* STORED_GGUF: the same model as a GGUF file whose matrices stay in their stored types
     * (keep_stored_dtype, no processing): the shared quantized matrices and row maps, the
     * kernels' CPU check, the fused and tiled products, from every thread at once */
    if (argc == 4) {
        circuits_load_options o;
        circuits_load_options_init(&o);
        o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
        o.keep_stored_dtype = 1;
        CHECK_OK(circuits_model_load(&m, argv[3], &o));
        size_t kept = 0;
        for (size_t i = 0; m && i < circuits_model_weight_count(m); i++) {
            circuits_tensor t;
            int32_t dt = CIRCUITS_DTYPE_F32;
            if (circuits_model_weight_at(m, i, &t) == CIRCUITS_E_DTYPE && t.name)
                CHECK_OK(circuits_model_weight_dtype(m, t.name, &dt));
            kept += dt != CIRCUITS_DTYPE_F32;
        }
        CHECK(kept > 0, "%s: no weight kept in a stored dtype", argv[3]);
        if (m) run_model(m, tok, "keep_stored_dtype model");
        circuits_model_free(m);
    }

    circuits_tokenizer_free(tok);
    return tu_finish("test_threads");
}
