/* Memory lent to hook callbacks (circuits_context_take_run_memory) and the run door's other
 * promises: every activation a callback sees lies in the context's run memory (logits included,
 * when the caller passed its own buffer, and in KV-cache runs and generation); a taken block
 * outlives later runs, the context and the model, and is never written again; taking is refused
 * while a pass computes; induction scores need no loss. Run under ASan and valgrind too: a kept
 * view read after the context and model are gone would be reported there.
 * Usage: test_run_memory CASE_DIR (an attention-only TL-layout case: tl_attn_only_2l_none) */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_write.h"

#define MAX_KEPT 64

typedef struct kept {
    const float *data[MAX_KEPT];
    size_t numel[MAX_KEPT];
    char name[MAX_KEPT][64];
    int n;
} kept;

/* Keeps the pointer a hook saw, as a garbage-collected binding's view would. */
static int keep_view(const circuits_tensor *t, void *u)
{
    kept *k = u;
    if (k->n < MAX_KEPT) {
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        k->data[k->n] = t->data;
        k->numel[k->n] = n;
        snprintf(k->name[k->n], sizeof k->name[0], "%s", t->name);
        k->n++;
    }
    return CIRCUITS_HOOK_CONTINUE;
}

static bool inside(const circuits_run_memory *m, const float *p, size_t numel)
{
    const char *b = circuits_run_memory_data(m), *q = (const char *)p;
    return b && q >= b && q + numel * sizeof(float) <= b + circuits_run_memory_nbytes(m);
}

static float *copy_of(const float *p, size_t n)
{
    float *c = malloc(n * sizeof *c);
    if (!c) exit(2);
    memcpy(c, p, n * sizeof *c);
    return c;
}

static void tokens_for(int32_t *t, int64_t n, int32_t vocab, int32_t salt)
{
    for (int64_t i = 0; i < n; i++) t[i] = (int32_t)((i * 7 + salt * 3 + 1) % vocab);
}

/* A hook keeps views; the block is taken; later runs, the context and the model go; the views
 * still read what they read when the run ended. */
static void kept_views_outlive_everything(const char *dir)
{
    circuits_model *m;
    circuits_context *ctx;
    CHECK_OK(circuits_model_load(&m, dir, NULL));
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));
    kept k = {0};
    CHECK_OK(circuits_context_add_hook(ctx, "*", keep_view, &k, NULL));
    int32_t tok[2 * 6];
    tokens_for(tok, 12, c.d_vocab, 0);
    float *logits = malloc((size_t)12 * (size_t)c.d_vocab_out * sizeof *logits);
    CHECK_OK(circuits_context_forward(ctx, tok, 2, 6, logits, NULL, NULL));
    circuits_run_memory *mem = NULL;
    CHECK_OK(circuits_context_take_run_memory(ctx, &mem));
    CHECK(mem != NULL, "a context that ran has run memory to give");
    int n_seen = k.n;
    CHECK(n_seen > 10, "hooks fired %d times", n_seen);
    float *snap[MAX_KEPT];
    int logits_i = -1;
    for (int i = 0; i < n_seen; i++) {
        CHECK(inside(mem, k.data[i], k.numel[i]), "'%s' lies outside the run memory", k.name[i]);
        snap[i] = copy_of(k.data[i], k.numel[i]);
        if (strcmp(k.name[i], "unembed.hook_out") == 0) logits_i = i;
    }
    /* the caller's logits buffer is not what the hook saw; it holds the same numbers */
    CHECK(logits_i >= 0 && k.data[logits_i] != logits, "unembed.hook_out saw the run memory, not the caller's buffer");
    if (logits_i >= 0)
        CHECK(memcmp(k.data[logits_i], logits, k.numel[logits_i] * sizeof(float)) == 0, "logits copied out after the hooks");
    /* the next run (another shape) works in a fresh block: the taken one is not written */
    kept k2 = {0};
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_add_hook(ctx, "*", keep_view, &k2, NULL));
    int32_t tok2[3 * 9];
    tokens_for(tok2, 27, c.d_vocab, 5);
    CHECK_OK(circuits_context_forward(ctx, tok2, 3, 9, NULL, NULL, NULL));
    CHECK(k2.n > 0 && !inside(mem, k2.data[0], 1), "the next run works outside the taken block");
    circuits_context_free(ctx);
    circuits_model_free(m);
    bool same = true;
    for (int i = 0; i < n_seen; i++) same &= memcmp(snap[i], k.data[i], k.numel[i] * sizeof(float)) == 0;
    CHECK(same, "a kept view changed after later runs and after the context and model were freed");
    for (int i = 0; i < n_seen; i++) free(snap[i]);
    circuits_run_memory_free(mem);
    free(logits);
}

/* Without a take the context reuses its block (no allocation per run): documented, and what
 * makes a take necessary. */
static void untaken_memory_is_reused(const char *dir)
{
    circuits_model *m;
    circuits_context *ctx;
    CHECK_OK(circuits_model_load(&m, dir, NULL));
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    circuits_run_memory *mem = (circuits_run_memory *)&mem;
    CHECK_OK(circuits_context_take_run_memory(ctx, &mem));
    CHECK(mem == NULL, "a context that never ran has no run memory");
    kept k = {0};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", keep_view, &k, NULL));
    int32_t tok[5] = {1, 2, 3, 4, 5};
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 5, NULL, NULL, NULL));
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 5, NULL, NULL, NULL));
    CHECK(k.n == 2 && k.data[0] == k.data[1], "an untaken block is reused by the next run of the same shape");
    CHECK(circuits_run_memory_data(NULL) == NULL && circuits_run_memory_nbytes(NULL) == 0, "NULL run memory");
    circuits_run_memory_free(NULL);
    CHECK_FAILS(circuits_context_take_run_memory(ctx, NULL), CIRCUITS_E_INVALID_ARGUMENT, "out is NULL");
    CHECK_FAILS(circuits_context_take_run_memory(NULL, &mem), CIRCUITS_E_INVALID_ARGUMENT, "ctx is NULL");
    CHECK(mem == NULL, "*out is NULL after a failure");
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* A cache that records the logits copies them from the caller's buffer: no callback sees them,
 * so the run memory holds no [B, T, V] copy of its own (it would be a third one, next to the
 * caller's and the cache's): run_with_cache's run memory is a plain forward's. */
static void cached_logits_need_no_run_copy(const char *dir)
{
    circuits_model *m;
    circuits_context *ctx;
    CHECK_OK(circuits_model_load(&m, dir, NULL));
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));
    int32_t tok[2 * 6];
    tokens_for(tok, 12, c.d_vocab, 3);
    float *lg = malloc(sizeof *lg * 12 * (size_t)c.d_vocab_out);
    circuits_cache *cache = NULL;
    circuits_run_memory *plain = NULL, *cached = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_forward(ctx, tok, 2, 6, lg, NULL, NULL));
    CHECK_OK(circuits_context_take_run_memory(ctx, &plain));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, 2, 6, NULL, 0, cache, lg, NULL, NULL));
    CHECK_OK(circuits_context_take_run_memory(ctx, &cached));
    CHECK(plain && cached && circuits_run_memory_nbytes(cached) == circuits_run_memory_nbytes(plain),
          "run_with_cache's run memory %zu bytes, a forward's %zu", circuits_run_memory_nbytes(cached),
          circuits_run_memory_nbytes(plain));
    circuits_tensor t;
    CHECK_OK(circuits_cache_get(cache, "unembed.hook_out", &t));
    CHECK(t.data && memcmp(t.data, lg, sizeof *lg * 12 * (size_t)c.d_vocab_out) == 0, "the cached logits differ");
    circuits_run_memory_free(plain);
    circuits_run_memory_free(cached);
    circuits_cache_free(cache);
    free(lg);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

typedef struct take_in_hook {
    circuits_context *ctx;
    int rc;
    char msg[256];
} take_in_hook;

static int try_take(const circuits_tensor *t, void *u)
{
    (void)t;
    take_in_hook *h = u;
    circuits_run_memory *mem = NULL;
    h->rc = circuits_context_take_run_memory(h->ctx, &mem);
    snprintf(h->msg, sizeof h->msg, "%s", circuits_last_error());
    circuits_run_memory_free(mem);
    return CIRCUITS_HOOK_CONTINUE;
}

static void take_refused_during_a_pass(const char *dir)
{
    circuits_model *m;
    circuits_context *ctx;
    CHECK_OK(circuits_model_load(&m, dir, NULL));
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    take_in_hook h = {ctx, 0, ""};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.attn.hook_pattern", try_take, &h, NULL));
    int32_t tok[6] = {1, 2, 3, 4, 5, 6};
    float with[6 * 64], without[6 * 64];
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));
    CHECK(c.d_vocab_out <= 64, "test assumes d_vocab_out <= 64");
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 6, with, NULL, NULL));
    CHECK(h.rc == CIRCUITS_E_INVALID_ARGUMENT, "take from a hook -> %d", h.rc);
    CHECK(strstr(h.msg, "a pass is computing") != NULL, "message '%s'", h.msg);
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 6, without, NULL, NULL));
    CHECK(memcmp(with, without, (size_t)(6 * c.d_vocab_out) * sizeof(float)) == 0,
          "a refused take changed nothing in the run");
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* A hook that edits the logits edits what the caller receives (the copy follows the hooks). */
static int set_first_logit(const circuits_tensor *t, void *u)
{
    (void)u;
    t->data[0] = 42.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

static void logit_edits_reach_the_caller(const char *dir)
{
    circuits_model *m;
    circuits_context *ctx;
    CHECK_OK(circuits_model_load(&m, dir, NULL));
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "unembed.hook_out", set_first_logit, NULL, NULL));
    int32_t tok[4] = {3, 1, 4, 1};
    float logits[4 * 64];
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 4, logits, NULL, NULL));
    CHECK(logits[0] == 42.0f, "edited logit reached the caller: %g", (double)logits[0]);
    int64_t last = -1;
    circuits_run_options o;
    circuits_run_options_init(&o);
    o.logit_positions = &last;
    o.n_logit_positions = 1;
    CHECK_OK(circuits_context_run(ctx, &o, tok, 1, 4, logits));
    CHECK(logits[0] == 42.0f, "edited logit at a chosen position reached the caller: %g", (double)logits[0]);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* Generation: on_step may take the memory between steps; views of every step stay valid. */
typedef struct gen_state {
    circuits_context *ctx;
    kept k;
    circuits_run_memory *mem[32];
    int n_mem;
    int from;  /* kept views from this index belong to the current step */
    bool all_inside;
} gen_state;

static int take_each_step(int64_t step, const int32_t *tokens, const float *logits, int64_t batch, void *u)
{
    (void)step, (void)tokens, (void)logits, (void)batch;
    gen_state *g = u;
    circuits_run_memory *mem = NULL;
    if (circuits_context_take_run_memory(g->ctx, &mem) != CIRCUITS_OK || !mem || g->n_mem >= 32) return -1;
    for (int i = g->from; i < g->k.n; i++) g->all_inside &= inside(mem, g->k.data[i], g->k.numel[i]);
    g->from = g->k.n;
    g->mem[g->n_mem++] = mem;
    return CIRCUITS_HOOK_CONTINUE;
}

static void generation_lends_per_step(const char *dir)
{
    for (int use_kv = 0; use_kv <= 1; use_kv++) {
        circuits_model *m;
        gen_state g = {0};
        g.all_inside = true;
        CHECK_OK(circuits_model_load(&m, dir, NULL));
        CHECK_OK(circuits_context_create(&g.ctx, m, NULL));
        CHECK_OK(circuits_context_add_hook(g.ctx, "blocks.1.attn.hook_k", keep_view, &g.k, NULL));
        CHECK_OK(circuits_context_add_hook(g.ctx, "unembed.hook_out", keep_view, &g.k, NULL));
        circuits_generate_options o;
        circuits_generate_options_init(&o);
        o.max_new_tokens = 4;
        o.use_kv_cache = use_kv;
        o.stop_at_eos = 0;
        o.on_step = take_each_step;
        o.user_data = &g;
        int32_t prompt[3] = {1, 2, 3}, out[7];
        int64_t n = 0;
        CHECK_OK(circuits_context_generate(g.ctx, prompt, 1, 3, &o, out, &n));
        CHECK(n == 7 && g.n_mem == 4, "use_kv %d: %lld tokens, %d blocks taken", use_kv, (long long)n, g.n_mem);
        CHECK(g.all_inside && g.k.n == 8, "use_kv %d: %d views, all in the block of their step", use_kv, g.k.n);
        float *snap[16];
        for (int i = 0; i < g.k.n; i++) snap[i] = copy_of(g.k.data[i], g.k.numel[i]);
        circuits_context_free(g.ctx);
        circuits_model_free(m);
        bool same = true;
        for (int i = 0; i < g.k.n; i++) {
            same &= memcmp(snap[i], g.k.data[i], g.k.numel[i] * sizeof(float)) == 0;
            free(snap[i]);
        }
        CHECK(same, "use_kv %d: views of every step unchanged after the context and model are gone", use_kv);
        for (int i = 0; i < g.n_mem; i++) circuits_run_memory_free(g.mem[i]);
    }
}

/* A copy of the case with the unembedding cut to its first `keep` columns: d_vocab_out < d_vocab. */
static void write_narrow_unembed(const char *dir, const char *out_dir, int32_t keep)
{
    circuits_model *m;
    CHECK_OK(circuits_model_load(&m, dir, &(circuits_load_options){.size = sizeof(circuits_load_options)}));
    size_t n = circuits_model_weight_count(m);
    st_entry *e = calloc(n, sizeof *e);
    float **bufs = calloc(n, sizeof *bufs);
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        CHECK_OK(circuits_model_weight_at(m, i, &t));
        snprintf(e[i].name, sizeof e[i].name, "%s", t.name);
        e[i].ndim = t.ndim;
        for (int d = 0; d < t.ndim; d++) e[i].shape[d] = t.shape[d];
        bool wu = strcmp(t.name, "unembed.W_U") == 0, bu = strcmp(t.name, "unembed.b_U") == 0;
        if (wu) e[i].shape[1] = keep;
        if (bu) e[i].shape[0] = keep;
        size_t numel = 1;
        for (int d = 0; d < t.ndim; d++) numel *= (size_t)e[i].shape[d];
        bufs[i] = malloc(numel * sizeof(float));
        for (size_t j = 0; j < numel; j++) { /* gather through the view's strides */
            size_t rem = j, off = 0;
            for (int d = t.ndim - 1; d >= 0; d--) {
                off += (rem % (size_t)e[i].shape[d]) * (size_t)t.strides[d];
                rem /= (size_t)e[i].shape[d];
            }
            bufs[i][j] = t.data[off];
        }
        e[i].data = bufs[i];
    }
    mkdir(out_dir, 0700);
    char path[4400];
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    st_write(path, e, (int)n);
    /* tl_config.json with d_vocab_out = keep */
    snprintf(path, sizeof path, "%s/tl_config.json", dir);
    FILE *f = fopen(path, "rb");
    char text[16384];
    size_t len = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[len] = '\0';
    char *p = strstr(text, "\"d_vocab_out\":");
    CHECK(p != NULL, "tl_config.json has d_vocab_out");
    snprintf(path, sizeof path, "%s/tl_config.json", out_dir);
    f = fopen(path, "wb");
    if (!f || !p) exit(2);
    char *end = strchr(p, ',');
    fwrite(text, 1, (size_t)(p - text), f);
    fprintf(f, "\"d_vocab_out\": %d", keep);
    fputs(end, f);
    fclose(f);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(e);
    circuits_model_free(m);
}

/* Induction scores read only the patterns: a model whose d_vocab_out < d_vocab (targets beyond
 * the unembedding) gets the same scores as the same model with the full unembedding, and the
 * losses are refused only when asked for. */
static void induction_scores_need_no_loss(const char *dir)
{
    char tmp[] = "/tmp/circuits-narrow-XXXXXX";
    if (!mkdtemp(tmp)) exit(2);
    char narrow[4200];
    snprintf(narrow, sizeof narrow, "%s/model", tmp);
    write_narrow_unembed(dir, narrow, 7);
    circuits_model *full, *cut;
    CHECK_OK(circuits_model_load(&full, dir, NULL));
    CHECK_OK(circuits_model_load(&cut, narrow, NULL));
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(cut, &c));
    CHECK(c.d_vocab_out == 7 && c.d_vocab > 7, "narrow model: d_vocab %d, d_vocab_out %d", c.d_vocab, c.d_vocab_out);
    int64_t L = 8, B = 3, T = 2 * L + 1;
    int32_t tok[3 * 17];
    CHECK_OK(circuits_repeated_tokens(B, L, c.d_vocab, 7, 0, tok));
    bool beyond = false;
    for (int64_t i = 0; i < B * T; i++) beyond |= tok[i] >= 7;
    CHECK(beyond, "some target lies beyond d_vocab_out");
    circuits_context *cf, *cc;
    CHECK_OK(circuits_context_create(&cf, full, NULL));
    CHECK_OK(circuits_context_create(&cc, cut, NULL));
    size_t LH = (size_t)c.n_layers * (size_t)c.n_heads;
    float sf[64], sc[64], lf, lr;
    CHECK(LH <= 64, "test assumes at most 64 heads");
    CHECK_OK(circuits_context_induction_scores(cf, tok, B, T, L, sf, &lf, &lr));
    CHECK_OK(circuits_context_induction_scores(cc, tok, B, T, L, sc, NULL, NULL));
    CHECK(memcmp(sf, sc, LH * sizeof(float)) == 0, "scores identical with a cut unembedding");
    CHECK_FAILS(circuits_context_induction_scores(cc, tok, B, T, L, sc, &lf, NULL), CIRCUITS_E_RANGE,
                "outside d_vocab_out = 7");
    /* the loss check comes before the pass: no hook fires for a refused run */
    kept k = {0};
    CHECK_OK(circuits_context_add_hook(cc, "*", keep_view, &k, NULL));
    float loss;
    CHECK_FAILS(circuits_context_forward(cc, tok, B, T, NULL, &loss, NULL), CIRCUITS_E_RANGE, "outside d_vocab_out");
    CHECK(k.n == 0, "a run refused for its loss fired %d hooks", k.n);
    circuits_context_free(cf);
    circuits_context_free(cc);
    circuits_model_free(full);
    circuits_model_free(cut);
    char path[4300];
    snprintf(path, sizeof path, "%s/model.safetensors", narrow);
    unlink(path);
    snprintf(path, sizeof path, "%s/tl_config.json", narrow);
    unlink(path);
    rmdir(narrow);
    rmdir(tmp);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASE_DIR\n", argv[0]);
        return 2;
    }
    kept_views_outlive_everything(argv[1]);
    untaken_memory_is_reused(argv[1]);
    cached_logits_need_no_run_copy(argv[1]);
    take_refused_during_a_pass(argv[1]);
    logit_edits_reach_the_caller(argv[1]);
    generation_lends_per_step(argv[1]);
    induction_scores_need_no_loss(argv[1]);
    return tu_finish("run_memory");
}
