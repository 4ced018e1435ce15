/* Failure in the middle (issue 7 §5): every allocation an operation makes is failed in turn.
 *
 * For each operation and k = 0, 1, 2, ... the k-th allocation (lib/base/fault.h counts the library's
 * own, jansson's and its file mappings) fails; then the call must return
 * CIRCUITS_E_OUT_OF_MEMORY with a message, create no object (*out NULL), hold exactly the
 * allocations it held before (nothing leaked, nothing half-built), and the same model, context
 * or cache must still work: the call repeated without a failure gives bytes identical to a
 * baseline run (for a call that creates an object, from a model it only reads, the next k's
 * call is that repetition). The loop ends at the first k the call succeeds without reaching; that k is the
 * number of allocation sites the call passes, printed per operation. Both modes run: only the
 * k-th allocation fails (later ones succeed) and every allocation from the k-th on fails.
 *
 * Then hooks that fail or stop the run at each hook point in turn, and at the k-th firing of a
 * pattern-registered hook, and a generation callback failing at each step: the clean error,
 * nothing leaked, and the next run bit-identical to the baseline.
 *
 * usage: test_failure_injection <tests/reference/cases> <examples/models> <tests/tokenizer/data> */
#include "fault.h"
#include "st_write.h"
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <unistd.h>

static const char *g_cases, *g_models, *g_tokdata;

/* ---- bytes: what an operation produced, compared bit for bit ---- */
typedef struct bytes {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort(); /* the test's own memory, not the library's */
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_i64(bytes *b, int64_t v) { put(b, &v, sizeof v); }
static void put_str(bytes *b, const char *s) { put(b, s, strlen(s) + 1); }

/* Any strided tensor, element by element in row-major order. */
static void put_tensor(bytes *b, const circuits_tensor *t)
{
    put_str(b, t->name ? t->name : "");
    put(b, &t->ndim, sizeof t->ndim);
    put(b, t->shape, sizeof t->shape[0] * (size_t)t->ndim);
    int64_t idx[CIRCUITS_MAX_DIMS] = {0}, total = 1;
    for (int d = 0; d < t->ndim; d++) total *= t->shape[d];
    for (int64_t e = 0; e < total; e++) {
        int64_t off = 0;
        for (int d = 0; d < t->ndim; d++) off += idx[d] * t->strides[d];
        put(b, &t->data[off], sizeof(float));
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* ---- the fixture: what operations run on ---- */
enum { B = 2, T = 6, VOCAB = 1000, OUT_FLOATS = 1 << 20 };
static const char TEXT[] = "Hello world, hello again! <|endoftext|> 12 apples";

typedef struct op op;
typedef struct fx {
    const op *op;
    circuits_model *model;     /* hf_tiny_random_gpt2, default processing: 5 layers, MLPs, LN */
    const circuits_tokenizer *tok;
    circuits_tokenizer *tok_nfc;  /* GPT-NeoX's, from GGUF: an NFC normalizer */
    circuits_model *tok_model; /* examples/models/tiny-random-gpt2, which owns tok */
    circuits_factored *ov, *qk; /* the model's OV and QK, [5, 4] x [32, 32] */
    int32_t tokens[B * T];
    circuits_context *ctx;     /* per attempt (setup) */
    circuits_cache *cache;
    circuits_cache *wcache;    /* weight gradients (gradient runs) */
    circuits_kv_cache *kv;
    void *made;                /* the object a creating call made (NULL after a failure) */
    float *out;                /* [OUT_FLOATS]: dense results */
    size_t out_n;              /* floats of out the call wrote */
    int32_t ids[256];
    size_t n_ids;
    char text[512];
    long hook_calls;
    bool expect_set;           /* setup says what a failed call leaves held (else: what it found) */
    long expect_live;
    long long expect_bytes;
} fx;

struct op {
    const char *name;
    void (*setup)(fx *);            /* may be NULL: state the call works on, made without failures */
    int (*call)(fx *);              /* the operation under test */
    void (*digest)(fx *, bytes *);  /* after a successful call: its results; frees what it made */
    void (*teardown)(fx *);         /* may be NULL */
    const char *arg;                /* a path or hook name, per operation */
    int variant;
    /* A failed call may keep capacity it grew (freed with its object, checked at teardown):
     * add_hook grows each selected point's registration array before adding anything
     * (lib/run/context.c, visit_add), and a failure at a later point leaves the earlier ones grown;
     * generation without a KV cache grows the context's scratch step by step (lib/run/forward.c,
     * prepare_scratch), and a failure at a later step leaves it as the last step grew it. */
    bool keeps_capacity;
};

static char SENTINEL; /* a creating call's *out before the call: must be NULL after a failure */

static circuits_context *new_ctx(const circuits_model *m, int use_attn_result)
{
    circuits_context_options o;
    circuits_context_options_init(&o);
    o.use_attn_result = use_attn_result;
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, &o));
    return ctx;
}

static void free_state(fx *f)
{
    circuits_context_free(f->ctx);
    circuits_cache_free(f->cache);
    circuits_cache_free(f->wcache);
    circuits_kv_cache_free(f->kv);
    f->ctx = NULL;
    f->cache = NULL;
    f->wcache = NULL;
    f->kv = NULL;
}

static void put_out(fx *f, bytes *b) { put(b, f->out, f->out_n * sizeof(float)); }

static void put_forward(const circuits_model *m, bytes *b, const int32_t *tokens)
{
    circuits_context *ctx = new_ctx(m, 0);
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));
    float *lg = malloc((size_t)(B * T * c.d_vocab_out) * sizeof *lg);
    int32_t tok[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = tokens[i] % c.d_vocab;
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL));
    put(b, lg, (size_t)(B * T * c.d_vocab_out) * sizeof *lg);
    free(lg);
    circuits_context_free(ctx);
}

/* ---- model and tokenizer loading ---- */
enum { LOAD_DEFAULT, LOAD_RAW, LOAD_REFACTOR, LOAD_READ, LOAD_RAW_READ, LOAD_STORED }; /* *_READ: read_into_memory;
                                                                                 * STORED: raw, keep_stored_dtype */

static int call_load(fx *f)
{
    char path[1024];
    snprintf(path, sizeof path, "%s", f->op->arg);
    circuits_load_options o;
    circuits_load_options_init(&o);
    if (f->op->variant == LOAD_RAW || f->op->variant == LOAD_RAW_READ || f->op->variant == LOAD_STORED)
        o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    if (f->op->variant == LOAD_REFACTOR) o.refactor_factored_attn_matrices = 1;
    if (f->op->variant == LOAD_READ || f->op->variant == LOAD_RAW_READ) o.read_into_memory = 1;
    o.keep_stored_dtype = f->op->variant == LOAD_STORED;
    circuits_model *m = (circuits_model *)&SENTINEL;
    int rc = circuits_model_load(&m, path, &o);
    f->made = m;
    return rc;
}

static void put_tokenizer(const circuits_tokenizer *t, bytes *b)
{
    put_i64(b, (int64_t)circuits_tokenizer_vocab_size(t));
    put_i64(b, circuits_tokenizer_bos_id(t));
    put_i64(b, circuits_tokenizer_eos_id(t));
    int32_t ids[256];
    size_t n = 0;
    CHECK_OK(circuits_tokenizer_encode(t, TEXT, strlen(TEXT), NULL, ids, 256, &n));
    put(b, ids, n * sizeof *ids);
    char text[512];
    size_t len = 0;
    CHECK_OK(circuits_tokenizer_decode(t, ids, n, text, sizeof text, &len));
    put(b, text, len);
}

static void digest_model(fx *f, bytes *b)
{
    circuits_model *m = f->made;
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));
    put(b, &c, sizeof c);
    size_t n = circuits_model_weight_count(m);
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        int rc = circuits_model_weight_at(m, i, &t);
        if (rc != CIRCUITS_E_DTYPE) {
            CHECK_OK(rc);
            put_tensor(b, &t);
            continue;
        }
        /* kept in its stored dtype (keep_stored_dtype): its fp32 copy */
        size_t k = 1;
        for (int d = 0; d < t.ndim; d++) k *= (size_t)t.shape[d];
        float *buf = malloc(k * sizeof *buf);
        if (!buf) abort();
        CHECK_OK(circuits_model_weight_read(m, t.name, buf, k, &t));
        put_tensor(b, &t);
        free(buf);
    }
    const circuits_tokenizer *tok = circuits_model_tokenizer(m);
    put_i64(b, tok != NULL);
    if (tok) put_tokenizer(tok, b);
    put_forward(m, b, f->tokens);
    circuits_model_free(m);
}

static int call_tokenizer_load(fx *f)
{
    circuits_tokenizer *t = (circuits_tokenizer *)&SENTINEL;
    int rc = circuits_tokenizer_load(&t, f->op->arg);
    f->made = t;
    return rc;
}

static void digest_tokenizer(fx *f, bytes *b)
{
    put_tokenizer(f->made, b);
    circuits_tokenizer_free(f->made);
}

/* variant 1: GPT-NeoX's tokenizer on text that NFC changes (e + combining acute) */
static int call_encode(fx *f)
{
    static const char nfc_text[] = "Cafe\xcc\x81 na\xc3\xafve \xe2\x84\xab 12345 <|endoftext|>";
    circuits_encode_options o;
    circuits_encode_options_init(&o);
    o.prepend_bos = f->op->variant == 0;
    if (f->op->variant == 1)
        return circuits_tokenizer_encode(f->tok_nfc, nfc_text, strlen(nfc_text), &o, f->ids, 256, &f->n_ids);
    return circuits_tokenizer_encode(f->tok, TEXT, strlen(TEXT), &o, f->ids, 256, &f->n_ids);
}

static void digest_ids(fx *f, bytes *b) { put(b, f->ids, f->n_ids * sizeof *f->ids); }

static int call_decode(fx *f)
{
    static const int32_t ids[] = {15496, 995, 11, 23748, 757, 0, 50256, 1105};
    size_t n = 0;
    int32_t v = (int32_t)circuits_tokenizer_vocab_size(f->tok);
    int32_t use[8];
    for (int i = 0; i < 8; i++) use[i] = ids[i] % v;
    int rc = circuits_tokenizer_decode(f->tok, use, 8, f->text, sizeof f->text, &n);
    f->n_ids = n;
    return rc;
}

static void digest_text(fx *f, bytes *b) { put(b, f->text, f->n_ids); }

/* ---- contexts, hooks, runs ---- */
static int hook_read(const circuits_tensor *t, void *u)
{
    fx *f = u;
    f->hook_calls++;
    return t->data[0] == t->data[0] ? CIRCUITS_HOOK_CONTINUE : -1;
}

/* Scales the activation: an edit that flows downstream. */
static int hook_edit(const circuits_tensor *t, void *u)
{
    (void)u;
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    for (size_t i = 0; i < n; i++) t->data[i] *= 0.5f;
    return CIRCUITS_HOOK_CONTINUE;
}

static int call_context_create(fx *f)
{
    circuits_context_options o;
    circuits_context_options_init(&o);
    o.use_attn_result = f->op->variant;
    circuits_context *ctx = (circuits_context *)&SENTINEL;
    int rc = circuits_context_create(&ctx, f->model, &o);
    f->made = ctx;
    return rc;
}

static void digest_context(fx *f, bytes *b)
{
    circuits_context *ctx = f->made;
    size_t n = circuits_context_hook_point_count(ctx);
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        CHECK_OK(circuits_context_hook_point(ctx, i, B, T, &t));
        put_str(b, t.name);
        put(b, t.shape, sizeof t.shape);
    }
    float *lg = f->out;
    CHECK_OK(circuits_context_forward(ctx, f->tokens, B, T, lg, NULL, NULL));
    put(b, lg, (size_t)(B * T * VOCAB) * sizeof *lg);
    circuits_context_free(ctx);
}

static int call_cache_create(fx *f)
{
    circuits_cache *c = (circuits_cache *)&SENTINEL;
    int rc = circuits_cache_create(&c);
    f->made = c;
    return rc;
}

static void digest_cache_made(fx *f, bytes *b)
{
    put_i64(b, (int64_t)circuits_cache_count(f->made));
    circuits_cache_free(f->made);
}

/* a fresh context (variant 1: with use_attn_result) */
static void setup_ctx(fx *f) { f->ctx = new_ctx(f->model, f->op->variant == 1); }

static int call_add_hook(fx *f) { return circuits_context_add_hook(f->ctx, f->op->arg, hook_edit, f, NULL); }

static void digest_forward_of_ctx(fx *f, bytes *b)
{
    float loss = 0;
    CHECK_OK(circuits_context_forward(f->ctx, f->tokens, B, T, f->out, &loss, NULL));
    put(b, f->out, (size_t)(B * T * VOCAB) * sizeof(float));
    put(b, &loss, sizeof loss);
}

/* variant 0: fresh context; 1: with use_attn_result; 2: warm (it has run once: no allocation) */
static void setup_forward(fx *f)
{
    f->ctx = new_ctx(f->model, f->op->variant == 1);
    CHECK_OK(circuits_context_add_hook(f->ctx, "*", hook_read, f, NULL));
    CHECK_OK(circuits_context_add_hook(f->ctx, "blocks.2.hook_resid_mid", hook_edit, f, NULL));
    CHECK_OK(circuits_context_add_hook(f->ctx, "pattern1", hook_edit, f, NULL));
    if (f->op->variant == 2) CHECK_OK(circuits_context_forward(f->ctx, f->tokens, B, T, NULL, NULL, NULL));
}

static int call_forward(fx *f)
{
    f->out_n = (size_t)(B * T * VOCAB) + 1 + (size_t)(B * (T - 1));
    return circuits_context_forward(f->ctx, f->tokens, B, T, f->out, f->out + B * T * VOCAB,
                                    f->out + B * T * VOCAB + 1);
}

static void put_cache(const circuits_cache *c, bytes *b)
{
    size_t n = circuits_cache_count(c);
    put_i64(b, (int64_t)n);
    put_i64(b, (int64_t)circuits_cache_nbytes(c));
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        CHECK_OK(circuits_cache_at(c, i, &t));
        put_tensor(b, &t);
        put(b, &t.layer, sizeof t.layer);
        put(b, &t.head_axis, sizeof t.head_axis);
    }
}

static const char *const FILTER_SMALL[] = {"blocks.*.hook_resid_post"};
static const char *const FILTER_SOME[] = {"blocks.*.attn.hook_pattern", "blocks.1.*", "hook_embed"};

/* variant 0: a fresh cache; 1: a cache holding a run of the same layout (its block is reused);
 * 2: a cache holding a smaller run (the block must grow). A failed run gives the cache's memory
 * back: what is held then is what was held before the cache was first filled. */
static void setup_run_with_cache(fx *f)
{
    setup_forward(f);
    if (f->op->variant) CHECK_OK(circuits_context_forward(f->ctx, f->tokens, B, T, NULL, NULL, NULL));
    CHECK_OK(circuits_cache_create(&f->cache));
    f->expect_set = true;
    f->expect_live = cx_live_allocations();
    f->expect_bytes = cx_live_bytes();
    if (f->op->variant == 1)
        CHECK_OK(circuits_context_run_with_cache(f->ctx, f->tokens, B, T, FILTER_SOME, 3, f->cache, NULL, NULL, NULL));
    if (f->op->variant == 2)
        CHECK_OK(circuits_context_run_with_cache(f->ctx, f->tokens, B, T, FILTER_SMALL, 1, f->cache, NULL, NULL, NULL));
}

static int call_run_with_cache(fx *f)
{
    f->out_n = (size_t)(B * T * VOCAB) + 1;
    return circuits_context_run_with_cache(f->ctx, f->tokens, B, T, FILTER_SOME, 3, f->cache, f->out,
                                           f->out + B * T * VOCAB, NULL);
}

static void digest_run_with_cache(fx *f, bytes *b)
{
    put_out(f, b);
    put_cache(f->cache, b);
}

static int call_run_with_cache_all(fx *f)
{
    f->out_n = (size_t)(B * T * VOCAB);
    return circuits_context_run_with_cache(f->ctx, f->tokens, B, T, NULL, 0, f->cache, f->out, NULL, NULL);
}

/* ---- gradient runs (lib/run/backward.c) ---- */

/* setup_forward's hooks (a reader everywhere, two editors), a backward hook reading every point,
 * and the two caches; variant 1: the per-head points on (use_attn_result), a mask, THROUGH. */
static int bwd_read(const circuits_tensor *t, void *u)
{
    (void)u;
    volatile float sink = t->data[0];
    (void)sink;
    return CIRCUITS_HOOK_CONTINUE;
}

static void setup_backward(fx *f)
{
    setup_forward(f);
    CHECK_OK(circuits_context_add_backward_hook(f->ctx, "*", bwd_read, NULL, NULL));
    CHECK_OK(circuits_cache_create(&f->cache));
    CHECK_OK(circuits_cache_create(&f->wcache));
}

static int call_backward(fx *f)
{
    static const int32_t mask[B * T] = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}; /* row 0 left-padded by two */
    circuits_metric m;
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_LOSS;
    m.tokens = f->tokens;
    circuits_run_options ro;
    circuits_run_options_init(&ro);
    circuits_backward_options o;
    circuits_backward_options_init(&o);
    o.weight_grads = 1;
    if (f->op->variant == 1) {
        ro.attention_mask = mask;
        m.attention_mask = mask;
        o.run = &ro;
        o.edit_grad = CIRCUITS_EDIT_GRAD_THROUGH;
    } else {
        o.names_filter = FILTER_SOME;
        o.n_filter = 3;
    }
    f->out_n = (size_t)(B * T * VOCAB) + 1;
    return circuits_context_backward(f->ctx, &o, f->tokens, B, T, &m, f->out + B * T * VOCAB, f->out, f->cache,
                                     f->wcache);
}

static void digest_backward(fx *f, bytes *b)
{
    put_out(f, b);
    put_cache(f->cache, b);
    put_cache(f->wcache, b);
}

/* ---- the residual stream of a cache (lib/analysis/resid.c) ---- */

/* a cache of every hook point of a plain run (variant 1: with use_attn_result, so heads are read
 * from hook_result) */
static void setup_resid(fx *f)
{
    f->ctx = new_ctx(f->model, f->op->variant == 1);
    CHECK_OK(circuits_cache_create(&f->cache));
    CHECK_OK(circuits_context_run_with_cache(f->ctx, f->tokens, B, T, NULL, 0, f->cache, NULL, NULL, NULL));
}

static void resid_opts(circuits_resid_options *o, int32_t layer)
{
    static const int64_t positions[2] = {-1, 1};
    circuits_resid_options_init(o);
    o->layer = layer;
    o->apply_ln = 1;
    o->incl_remainder = 1;
    o->positions = positions;
    o->n_positions = 2;
}

static int call_resid_stack(fx *f)
{
    circuits_resid_options o;
    resid_opts(&o, -1);
    int64_t shape[4];
    int rc = circuits_resid_shape(f->model, f->cache, CIRCUITS_RESID_FULL, &o, shape);
    if (rc) return rc;
    f->out_n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    return circuits_resid_stack(f->model, f->cache, CIRCUITS_RESID_FULL, &o, f->out, OUT_FLOATS);
}

static int call_resid_apply_ln(fx *f)
{
    circuits_resid_options o;
    resid_opts(&o, 2);
    o.mlp_input = 1;
    f->out_n = (size_t)(3 * B * 2 * 32);
    for (size_t i = 0; i < f->out_n; i++) f->out[i] = (float)((i * 37) % 11) - 5.0f;
    return circuits_resid_apply_ln(f->model, f->cache, &o, f->out, 3, B, 2);
}

static const int32_t ANSWERS[B * 2] = {3, 7, 11, 13}, WRONG[B * 2] = {5, 1, 2, 9};

static int call_resid_logit_attrs(fx *f)
{
    circuits_resid_options o;
    resid_opts(&o, -1);
    float stack[4 * B * 2 * 32];
    for (size_t i = 0; i < sizeof stack / sizeof *stack; i++) stack[i] = (float)((i * 13) % 7) - 3.0f;
    f->out_n = 4 * B * 2;
    return circuits_resid_logit_attrs(f->model, f->cache, &o, stack, 4, B, 2, ANSWERS, WRONG, B * 2, f->out);
}

static int call_logit_lens(fx *f)
{
    circuits_resid_options o;
    resid_opts(&o, 3);
    o.incl_mid = 1;
    f->out_n = (size_t)(6 * B * 2 * VOCAB);
    return circuits_logit_lens(f->model, f->cache, &o, f->out, OUT_FLOATS);
}

static int call_dla(fx *f)
{
    circuits_resid_options o;
    resid_opts(&o, 4);
    f->out_n = (size_t)((4 * 128 + 1) * B * 2);
    return circuits_direct_logit_attribution(f->model, f->cache, CIRCUITS_RESID_NEURONS, &o, ANSWERS, WRONG, B * 2,
                                             f->out, OUT_FLOATS);
}

/* ---- ablation and patching (lib/analysis/ablate.c, patch.c) ---- */

/* resid_pre (variant 0, incremental; 1, whole re-runs, one cell per run) or the pattern by dest
 * with the loss (2: logits of every position, cells batched) patched from the cache of setup_resid
 * into a run of the same tokens with two changed */
static int call_patch(fx *f)
{
    static const char *const names[2] = {"blocks.%d.hook_resid_pre", "blocks.%d.attn.hook_pattern"};
    int32_t corrupted[B * T];
    memcpy(corrupted, f->tokens, sizeof corrupted);
    corrupted[1] = (corrupted[1] + 1) % VOCAB;
    corrupted[T + 3] = (corrupted[T + 3] + 5) % VOCAB;
    const float *clean[5];
    for (int l = 0; l < 5; l++) {
        char name[64];
        circuits_tensor t;
        snprintf(name, sizeof name, names[f->op->variant == 2], l);
        CHECK_OK(circuits_cache_get(f->cache, name, &t));
        clean[l] = t.data;
    }
    circuits_metric m;
    circuits_metric_init(&m);
    m.answer = ANSWERS;
    m.wrong = WRONG;
    if (f->op->variant == 2) {
        m.kind = CIRCUITS_METRIC_LOSS;
        m.tokens = corrupted;
    }
    circuits_patch_options o;
    circuits_patch_options_init(&o);
    o.incremental = f->op->variant != 1;
    o.cells_per_run = f->op->variant == 1;
    int32_t kind = f->op->variant == 2 ? CIRCUITS_PATCH_HEAD_PATTERN_BY_POS : CIRCUITS_PATCH_RESID_PRE;
    f->out_n = (size_t)(f->op->variant == 2 ? 5 * 4 * T : 5 * T);
    return circuits_context_activation_patch(f->ctx, kind, corrupted, B, T, clean, &m, &o, f->out);
}

/* a mean ablation of a head (means over the tokens in batches of 1) and a resampled neuron */
static int call_ablate(fx *f)
{
    const char *hooks[2] = {"blocks.1.attn.hook_z", "blocks.2.mlp.hook_post"};
    float *means[2] = {f->out + B * T * VOCAB, f->out + B * T * VOCAB + T * 32};
    int rc = circuits_context_mean_activations(f->ctx, hooks, 2, f->tokens, B, T, 1, means);
    if (rc) return rc;
    circuits_tensor src;
    CHECK_OK(circuits_cache_get(f->cache, hooks[1], &src));
    circuits_ablation a[2];
    circuits_ablation_init(&a[0]);
    a[0].kind = CIRCUITS_ABLATE_MEAN;
    a[0].hook = hooks[0];
    a[0].head = 2;
    a[0].values = means[0];
    circuits_ablation_init(&a[1]);
    a[1].kind = CIRCUITS_ABLATE_RESAMPLE;
    a[1].hook = hooks[1];
    a[1].neuron = 7;
    a[1].values = src.data;
    a[1].source_batch = B;
    a[1].seed = 3;
    f->out_n = (size_t)(B * T * VOCAB + T * 32 + T * 128);
    return circuits_context_run_ablated(f->ctx, a, 2, f->tokens, B, T, f->out, NULL);
}

/* ---- steering (lib/analysis/steer.c, lib/io/control_vector.c) ---- */

static float steer_values(int i) { return 0.125f * (float)(i % 7) - 0.375f * (float)(i % 3); }

/* a steering vector at every resid_pre at positions 1 and -1 */
static int call_add_steering(fx *f)
{
    float v[32];
    for (int i = 0; i < 32; i++) v[i] = steer_values(i);
    int64_t pos[2] = {1, -1};
    circuits_steering_options o;
    circuits_steering_options_init(&o);
    o.scale = 2.0f;
    o.positions = pos;
    o.n_positions = 2;
    return circuits_context_add_steering(f->ctx, "blocks.*.hook_resid_pre", v, 32, &o, NULL);
}

/* a control vector of every block but the first */
static int call_add_control_vector(fx *f)
{
    float d[5 * 32] = {0};
    for (int i = 32; i < 5 * 32; i++) d[i] = steer_values(i);
    return circuits_context_add_control_vector(f->ctx, d, 5, 32, NULL, NULL);
}

/* a contrastive vector of every resid_post, positive left-padded */
static int call_contrastive(fx *f)
{
    static const int32_t pmask[B * T] = {0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    int32_t neg[B * T];
    for (int i = 0; i < B * T; i++) neg[i] = (f->tokens[i] + 3) % VOCAB;
    circuits_contrast_options o;
    circuits_contrast_options_init(&o);
    o.reduce = CIRCUITS_CONTRAST_MEAN;
    o.positive_mask = pmask;
    f->out_n = 5 * 32;
    return circuits_context_contrastive_vector(f->ctx, "blocks.*.hook_resid_post", f->tokens, neg, B, T, &o, f->out,
                                               OUT_FLOATS);
}

/* a control vector saved then read back */
static int call_control_vector_file(fx *f)
{
    float d[5 * 32] = {0};
    for (int i = 32; i < 5 * 32; i++) d[i] = steer_values(i);
    char p[256];
    snprintf(p, sizeof p, "%s/circuits_fi_cv_%ld.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    int rc = circuits_control_vector_save(p, d, 5, 32, "gpt2");
    if (!rc) rc = circuits_control_vector_load(p, 5, 32, f->out);
    remove(p);
    f->out_n = 5 * 32;
    return rc;
}

/* ---- attribution (lib/analysis/attribute.c, eap.c, ig.c) ---- */

/* attribution patching of head z by position, the source the cache of setup_resid, the base a run
 * of the same tokens with two changed */
static int call_attribution_patch(fx *f)
{
    int32_t base[B * T];
    memcpy(base, f->tokens, sizeof base);
    base[1] = (base[1] + 1) % VOCAB;
    base[T + 3] = (base[T + 3] + 5) % VOCAB;
    const float *src[5];
    for (int l = 0; l < 5; l++) {
        char name[64];
        circuits_tensor t;
        snprintf(name, sizeof name, "blocks.%d.attn.hook_z", l);
        CHECK_OK(circuits_cache_get(f->cache, name, &t));
        src[l] = t.data;
    }
    circuits_metric m;
    circuits_metric_init(&m);
    m.answer = ANSWERS;
    m.wrong = WRONG;
    f->out_n = (size_t)(5 * T * 4 + 1);
    return circuits_context_attribution_patch(f->ctx, CIRCUITS_PATCH_HEAD_Z_BY_POS, base, B, T, src, &m,
                                              f->out + 5 * T * 4, f->out);
}

/* EAP (variant 0) or EAP-IG with 2 steps (1) between the tokens and two changed */
static int call_edge_attribution(fx *f)
{
    int32_t corrupted[B * T];
    memcpy(corrupted, f->tokens, sizeof corrupted);
    corrupted[2] = (corrupted[2] + 3) % VOCAB;
    circuits_metric m;
    circuits_metric_init(&m);
    m.answer = ANSWERS;
    m.wrong = WRONG;
    circuits_eap_options o;
    circuits_eap_options_init(&o);
    o.ig_steps = f->op->variant ? 2 : 0;
    int64_t nu, nd;
    CHECK_OK(circuits_eap_graph(f->model, &nu, &nd));
    f->out_n = (size_t)(nu * nd);
    return circuits_context_edge_attribution(f->ctx, f->tokens, corrupted, B, T, &m, &o, f->out);
}

/* integrated gradients at blocks.2.hook_resid_mid, 3 steps, baseline other tokens, completeness */
static int call_integrated_gradients(fx *f)
{
    int32_t baseline[B * T];
    for (int i = 0; i < B * T; i++) baseline[i] = (f->tokens[i] + 17) % VOCAB;
    circuits_metric m;
    circuits_metric_init(&m);
    m.answer = ANSWERS;
    m.wrong = WRONG;
    f->out_n = (size_t)(B * T * 32 + 1);
    return circuits_context_integrated_gradients(f->ctx, "blocks.2.hook_resid_mid", f->tokens, baseline, B, T, 3, &m,
                                                 f->out, f->out + B * T * 32);
}

/* ---- the KV cache and generation ---- */
static int call_kv_create(fx *f)
{
    circuits_kv_cache *kv = (circuits_kv_cache *)&SENTINEL;
    int rc = circuits_kv_cache_create(&kv, f->model, B, 16);
    f->made = kv;
    return rc;
}

static void put_kv(const circuits_kv_cache *kv, const circuits_model *m, bytes *b)
{
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));
    put_i64(b, circuits_kv_cache_length(kv));
    for (int32_t l = 0; l < c.n_layers && circuits_kv_cache_length(kv) > 0; l++) {
        circuits_tensor k, v;
        CHECK_OK(circuits_kv_cache_layer(kv, l, &k, &v));
        put_tensor(b, &k);
        put_tensor(b, &v);
    }
}

static void digest_kv_made(fx *f, bytes *b)
{
    circuits_kv_cache *kv = f->made;
    circuits_context *ctx = new_ctx(f->model, 0);
    CHECK_OK(circuits_context_forward_kv(ctx, kv, f->tokens, B, T, f->out));
    put(b, f->out, (size_t)(B * T * VOCAB) * sizeof(float));
    put_kv(kv, f->model, b);
    circuits_context_free(ctx);
    circuits_kv_cache_free(kv);
}

/* a fresh context with hooks and a KV cache holding a 4-position prefix */
static void setup_forward_kv(fx *f)
{
    setup_forward(f);
    CHECK_OK(circuits_kv_cache_create(&f->kv, f->model, B, 16));
    CHECK_OK(circuits_context_forward_kv(f->ctx, f->kv, f->tokens, B, 4, NULL));
}

static int call_forward_kv(fx *f)
{
    f->out_n = (size_t)(B * 3 * VOCAB);
    int32_t next[B * 3];
    for (int i = 0; i < B * 3; i++) next[i] = f->tokens[(i * 7) % (B * T)];
    return circuits_context_forward_kv(f->ctx, f->kv, next, B, 3, f->out);
}

static void digest_forward_kv(fx *f, bytes *b)
{
    put_out(f, b);
    put_kv(f->kv, f->model, b);
    /* leave the cache as setup made it, for a repeated call */
    CHECK_OK(circuits_kv_cache_truncate(f->kv, 4));
}

static const int32_t PROMPT_MASK[B * 4];

/* variant bit 0: without the KV cache; bit 1: row 1 of the prompt left-padded (PROMPT_MASK) */
static int call_generate(fx *f)
{
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    o.max_new_tokens = 6;
    o.seed = 11;
    o.stop_at_eos = 0;
    o.use_kv_cache = !(f->op->variant & 1);
    if (f->op->variant & 2) o.attention_mask = PROMPT_MASK;
    int32_t *out = (int32_t *)f->out;
    int64_t len = 0;
    int rc = circuits_context_generate(f->ctx, f->tokens, B, 4, &o, out, &len);
    f->out_n = (size_t)(B * (4 + 6));
    return rc;
}

static void digest_detect(fx *f, bytes *b) { put_out(f, b); }

/* ---- padding: row 1 of the batch left-padded by 2 ---- */
static const int32_t MASK[B * T] = {1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1};
static const int32_t PROMPT_MASK[B * 4] = {1, 1, 1, 1, 0, 0, 1, 1}; /* call_generate's */

/* without a cache (setup_forward): circuits_context_run with the mask; with one
 * (setup_run_with_cache): circuits_context_run_with_cache_opts, and a loss */
static int call_masked(fx *f)
{
    circuits_run_options o;
    circuits_run_options_init(&o);
    o.attention_mask = MASK;
    if (!f->cache) {
        f->out_n = (size_t)(B * T * VOCAB);
        return circuits_context_run(f->ctx, &o, f->tokens, B, T, f->out);
    }
    f->out_n = (size_t)(B * T * VOCAB) + 1;
    return circuits_context_run_with_cache_opts(f->ctx, &o, f->tokens, B, T, FILTER_SOME, 3, f->cache, f->out,
                                                f->out + B * T * VOCAB, NULL);
}

static int call_detect_padded(fx *f)
{
    circuits_detect_options o;
    circuits_detect_options_init(&o);
    o.attention_mask = MASK;
    f->out_n = 5 * 4;
    return circuits_context_detect_heads(f->ctx, f->tokens, B, T, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, &o, f->out);
}

static int call_detect(fx *f)
{
    f->out_n = 5 * 4;
    return circuits_context_detect_heads(f->ctx, f->tokens, B, T, CIRCUITS_HEAD_INDUCTION, NULL, NULL, f->out);
}

static int call_induction(fx *f)
{
    int32_t tok[B * 9];
    CHECK_OK(circuits_repeated_tokens(B, 4, VOCAB, 3, 98, tok));
    f->out_n = 5 * 4 + 2;
    return circuits_context_induction_scores(f->ctx, tok, B, 9, 4, f->out, f->out + 20, f->out + 21);
}

/* path patching (tiny-random-gpt2: 5 layers, 4 heads): variant 0 one sender set with q / v
 * receivers and the logits, 1 the per-sender grid with frozen MLPs */
static int call_path_patch(fx *f)
{
    static const int32_t answer[B] = {5, 7}, wrong[B] = {9, 11};
    int32_t corrupted[B * T];
    for (int i = 0; i < B * T; i++) corrupted[i] = i % T == 2 ? (f->tokens[i] + 1) % VOCAB : f->tokens[i];
    circuits_metric m;
    circuits_metric_init(&m);
    m.answer = answer;
    m.wrong = wrong;
    static const circuits_path_head senders[2] = {{0, 1, 0}, {2, 3, 0}};
    static const circuits_path_head receivers[2] = {{3, 0, CIRCUITS_READER_Q}, {4, 2, CIRCUITS_READER_V}};
    circuits_path_patch_options o;
    circuits_path_patch_options_init(&o);
    o.receivers = receivers;
    o.n_receivers = 2;
    if (f->op->variant == 0) {
        f->out_n = (size_t)(B * T * VOCAB) + 1;
        return circuits_context_path_patch(f->ctx, f->tokens, corrupted, B, T, senders, 2, &m, &o,
                                           f->out + B * T * VOCAB, f->out);
    }
    o.freeze_mlps = 1;
    f->out_n = 5 * 4;
    return circuits_context_path_patch_sweep(f->ctx, f->tokens, corrupted, B, T, &m, &o, f->out);
}

/* comparing two models (the model with itself): variant 0 a few points and the logits, 1 every
 * point and head with the padding mask */
static int call_diff(fx *f)
{
    static const char *const names[] = {"blocks.*.hook_resid_post", "blocks.1.*", "hook_embed"};
    circuits_diff_options o;
    circuits_diff_options_init(&o);
    if (f->op->variant == 0) {
        o.names = names;
        o.n_names = 3;
    } else {
        o.attention_mask = MASK;
        o.per_head = 1;
    }
    circuits_diff *d = (circuits_diff *)&SENTINEL;
    int rc = circuits_model_diff(f->model, f->model, f->tokens, B, T, &o, &d);
    f->made = d;
    return rc;
}

static void digest_diff(fx *f, bytes *b)
{
    circuits_diff *d = f->made;
    size_t n = circuits_diff_count(d);
    put_i64(b, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        circuits_diff_entry e = {.size = sizeof e};
        CHECK_OK(circuits_diff_at(d, i, &e));
        put_str(b, e.name);
        put_str(b, e.kind);
        put_i64(b, e.layer);
        put_i64(b, e.head);
        put_i64(b, e.numel);
        put(b, &e.rel_error, 5 * sizeof(double)); /* rel_error .. norm_b */
    }
    circuits_diff_free(d);
}

/* ---- circuits of the model and factored matrices ---- */
static int call_composition(fx *f)
{
    f->out_n = 5 * 4 * 5 * 4;
    return circuits_model_composition_scores(f->model, f->op->variant, f->out);
}

static int call_mlp_composition(fx *f)
{
    f->out_n = 5 * 5 * 4;
    return circuits_model_mlp_composition_scores(f->model, CIRCUITS_COMPOSITION_K, f->out);
}

static int call_baseline(fx *f)
{
    f->out_n = 2;
    return circuits_composition_baseline(32, 8, 37, 6, 5, f->out, f->out + 1);
}

/* test_prompt's report: a failed call writes none of its outputs (out keeps its sentinels) */
static int call_logits_rank(fx *f)
{
    static const float row[8] = {0.5f, -1.0f, 2.0f, 2.0f, 0.0f, 3.5f, -0.25f, 1.0f};
    int64_t rank = -7;
    int32_t ids[4] = {-7, -7, -7, -7};
    f->out_n = 10;
    for (int i = 0; i < 10; i++) f->out[i] = -7.0f;
    int rc = circuits_logits_rank(row, 8, 2, 4, &rank, f->out, ids, f->out + 1);
    f->out[5] = (float)rank;
    for (int i = 0; i < 4; i++) f->out[6 + i] = (float)ids[i];
    if (rc != CIRCUITS_OK)
        for (int i = 0; i < 10; i++) CHECK(f->out[i] == -7.0f, "logits_rank wrote output %d on failure", i);
    return rc;
}

static int call_copying(fx *f)
{
    f->out_n = 5 * 4;
    return circuits_model_copying_scores(f->model, f->op->variant, f->out);
}

/* keep_stored_dtype: a BF16 model loaded with its matrices kept, then analyses that read them
 * through their dequantized rows (variant 0: the full OV circuits, 1: V-composition scores, 2:
 * the residual stack of neurons; the load fails in turn too). Everything is freed in the call. */
static int call_stored_analysis(fx *f)
{
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    o.keep_stored_dtype = 1;
    circuits_model *m = NULL;
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    circuits_factored *fa = NULL;
    int rc = circuits_model_load(&m, f->op->arg, &o);
    f->out_n = 0;
    if (!rc && f->op->variant == 0 && !(rc = circuits_model_full_ov(m, -1, -1, &fa))) {
        circuits_tensor fA, fB;
        if (!(rc = circuits_factored_factors(fa, &fA, &fB))) {
            f->out_n = 64;
            memcpy(f->out, fA.data, 64 * sizeof *f->out);
        }
    } else if (!rc && f->op->variant == 1) {
        f->out_n = 2 * 4 * 2 * 4; /* [L*H, L*H] of a 2-layer, 4-head model */
        rc = circuits_model_composition_scores(m, CIRCUITS_COMPOSITION_V, f->out);
    } else if (!rc && f->op->variant == 2) {
        static const int32_t tok[3] = {1, 2, 3};
        int64_t shape[4];
        if (!(rc = circuits_context_create(&ctx, m, NULL)) && !(rc = circuits_cache_create(&cache)) &&
            !(rc = circuits_context_run_with_cache(ctx, tok, 1, 3, NULL, 0, cache, NULL, NULL, NULL)) &&
            !(rc = circuits_resid_shape(m, cache, CIRCUITS_RESID_NEURONS, NULL, shape))) {
            f->out_n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
            rc = circuits_resid_stack(m, cache, CIRCUITS_RESID_NEURONS, NULL, f->out, OUT_FLOATS);
        }
    }
    if (rc) f->out_n = 0;
    circuits_factored_free(fa);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
    return rc;
}

static int made_factored(fx *f, int rc, circuits_factored *made)
{
    f->made = made;
    return rc;
}

#define FACTORED_CALL(fname, expr)                                   \
    static int fname(fx *f)                                          \
    {                                                                \
        circuits_factored *r = (circuits_factored *)&SENTINEL;       \
        int rc = (expr);                                             \
        return made_factored(f, rc, r);                              \
    }

FACTORED_CALL(call_ov, circuits_model_ov(f->model, -1, -1, &r))
FACTORED_CALL(call_qk, circuits_model_qk(f->model, 2, -1, &r))
FACTORED_CALL(call_full_ov, circuits_model_full_ov(f->model, 1, 2, &r))
FACTORED_CALL(call_full_qk, circuits_model_full_qk(f->model, -1, 0, &r))
FACTORED_CALL(call_pos_qk, circuits_model_pos_qk(f->model, 0, 1, &r))
FACTORED_CALL(call_comp_circuit, circuits_model_composition_circuit(f->model, f->op->variant, 0, 1, 2, 3, &r))
FACTORED_CALL(call_virtual_ov, circuits_model_virtual_ov(f->model, 0, 0, 3, 1, &r))
FACTORED_CALL(call_virtual_weights, circuits_model_virtual_weights(f->model, CIRCUITS_WRITER_HEAD, 1, 2,
                                                                   CIRCUITS_READER_K, 3, 0, &r))
FACTORED_CALL(call_factored_create, circuits_factored_create(&r, f->out, f->out + 4 * 32 * 8, 4, 32, 8, 32))
FACTORED_CALL(call_transpose, circuits_factored_transpose(f->ov, &r))
FACTORED_CALL(call_matmul, circuits_factored_matmul(f->ov, f->qk, &r))
FACTORED_CALL(call_matmul_dense, circuits_factored_matmul_dense(f->ov, f->out, 1, 3, &r))
FACTORED_CALL(call_rmatmul_dense, circuits_factored_rmatmul_dense(f->out, 1, 3, f->ov, &r))

static void setup_dense_input(fx *f)
{
    for (size_t i = 0; i < 4 * 32 * 8 * 2; i++) f->out[i] = (float)sin((double)i * 0.37);
}

static void digest_factored(fx *f, bytes *b)
{
    circuits_tensor A, Bt;
    CHECK_OK(circuits_factored_factors(f->made, &A, &Bt));
    put_tensor(b, &A);
    put_tensor(b, &Bt);
    circuits_factored_free(f->made);
}

static int call_svd(fx *f)
{
    const size_t n = 20 * 32 * 8; /* [batch 20, 32, k 8] */
    f->out_n = 2 * n + 20 * 8;
    return circuits_factored_svd(f->ov, f->out, f->out + n, f->out + n + 20 * 8);
}

static int call_eigenvalues(fx *f)
{
    f->out_n = 2 * 20 * 8;
    return circuits_factored_eigenvalues(f->ov, f->out, f->out + 20 * 8);
}

static int call_norm(fx *f)
{
    f->out_n = 20;
    return circuits_factored_norm(f->ov, f->out);
}

static int call_topk(fx *f)
{
    int64_t rows[16], cols[16], count = 0;
    int rc = circuits_factored_topk(f->ov, 7, f->op->variant, 3, 16, f->out, rows, cols, &count);
    for (int i = 0; i < 16; i++) f->out[16 + i] = (float)rows[i] + 1000.0f * (float)cols[i];
    f->out_n = 32;
    return rc;
}

static int call_materialize(fx *f)
{
    f->out_n = 20 * 32 * 32;
    return circuits_factored_materialize(f->ov, f->out, OUT_FLOATS);
}

static int call_matvec(fx *f)
{
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)i - 16.0f;
    f->out_n = 2 * 20 * 32;
    int rc = circuits_factored_matvec(f->ov, x, f->out);
    if (!rc) rc = circuits_factored_vecmat(x, f->ov, f->out + 20 * 32);
    return rc;
}

static int call_corner_diag(fx *f)
{
    f->out_n = 20 * 9 + 20 * 32;
    int rc = circuits_factored_corner(f->ov, 3, f->out);
    if (!rc) rc = circuits_factored_diagonal(f->ov, f->out + 20 * 9);
    return rc;
}

/* ---- the harness ---- */
static bool same(const bytes *a, const bytes *b) { return a->n == b->n && memcmp(a->p, b->p, a->n) == 0; }

/* Runs o with the k-th allocation failing for k = 0, 1, ... Returns the number of sites. */
/* ---- linear probes: fits of every solver and a probe file's load ---- */
enum { PROBE_N = 40, PROBE_D = 6 };

/* X [40, 6] at out, labels (3 classes) at out + 240, two regression targets at out + 280 */
static void setup_probe_data(fx *f)
{
    for (int i = 0; i < PROBE_N * PROBE_D; i++) f->out[i] = (float)sin((double)i * 0.61) + (float)(i % 7) * 0.1f;
    for (int i = 0; i < PROBE_N; i++) {
        f->out[240 + i] = (float)(i % 3);
        f->out[280 + 2 * i] = f->out[i * PROBE_D] - 2 * f->out[i * PROBE_D + 3] + 0.1f * (float)(i % 5);
        f->out[280 + 2 * i + 1] = (float)(i % 4);
    }
}

static int call_probe_fit(fx *f)
{
    circuits_probe_options o;
    circuits_probe_options_init(&o);
    o.hook_name = "blocks.0.hook_resid_post";
    circuits_probe *p = (circuits_probe *)&SENTINEL;
    int rc;
    if (f->op->variant == 0) {
        rc = circuits_probe_fit(&p, f->out, PROBE_N, PROBE_D, f->out + 240, 1, &o);
    } else {
        o.kind = CIRCUITS_PROBE_LINEAR;
        o.l2 = f->op->variant == 1 ? 0.5f : 0.0f;
        rc = circuits_probe_fit(&p, f->out, PROBE_N, PROBE_D, f->out + 280, 2, &o);
    }
    f->made = p;
    return rc;
}

static void digest_probe(fx *f, bytes *b)
{
    circuits_tensor W, bt;
    CHECK_OK(circuits_probe_weights(f->made, &W, &bt));
    put_tensor(b, &W);
    put_tensor(b, &bt);
    circuits_probe_info info = {.size = sizeof info};
    CHECK_OK(circuits_probe_get_info(f->made, &info));
    put(b, &info.n_iter, sizeof info.n_iter);
    put_str(b, info.hook_name);
    circuits_probe_free(f->made);
}

static char g_probe_path[64];

static void setup_probe_file(fx *f)
{
    if (g_probe_path[0]) return;
    setup_probe_data(f);
    circuits_probe_options o;
    circuits_probe_options_init(&o);
    o.hook_name = "hook_embed";
    circuits_probe *p = NULL;
    CHECK_OK(circuits_probe_fit(&p, f->out, PROBE_N, PROBE_D, f->out + 240, 1, &o));
    snprintf(g_probe_path, sizeof g_probe_path, "/tmp/circuits_fi_probe_%d.safetensors", (int)getpid());
    CHECK_OK(circuits_probe_save(p, g_probe_path));
    circuits_probe_free(p);
}

static int call_probe_load(fx *f)
{
    circuits_probe *p = (circuits_probe *)&SENTINEL;
    int rc = circuits_probe_load(&p, g_probe_path);
    f->made = p;
    return rc;
}

static long run_op(fx *f, const op *o, bool once)
{
    const long max_sites = 200000;
    f->op = o;
    bytes base = {0}, got = {0};
    if (o->setup) o->setup(f);
    int rc = o->call(f);
    CHECK(rc == CIRCUITS_OK, "%s: baseline call -> %d (%s)", o->name, rc, circuits_last_error());
    if (rc) return -1;
    o->digest(f, &base);
    if (o->teardown) o->teardown(f);
    long k = 0;
    for (; k <= max_sites; k++) {
        long live_outside = cx_live_allocations();
        f->expect_set = false;
        if (o->setup) o->setup(f);
        long live = f->expect_set ? f->expect_live : cx_live_allocations();
        long long live_bytes = f->expect_set ? f->expect_bytes : cx_live_bytes();
        circuits_clear_error();
        f->made = &SENTINEL;
        cx_fault_fail_after(k, once);
        rc = o->call(f);
        long injected = cx_fault_injected();
        cx_fault_disarm();
        got.n = 0;
        if (rc == CIRCUITS_OK) {
            o->digest(f, &got);
            if (o->teardown) o->teardown(f);
            /* a success despite a failed allocation is fine only if nothing changed */
            CHECK(same(&got, &base), "%s: k=%ld (%ld injected): success with a different result", o->name, k, injected);
            if (!injected) break;
            continue;
        }
        const char *msg = circuits_last_error();
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "%s: k=%ld: status %d, want E_OUT_OF_MEMORY (%s)", o->name, k, rc, msg);
        CHECK(injected > 0, "%s: k=%ld: failed (%d: %s) with no failure injected", o->name, k, rc, msg);
        CHECK(strstr(msg, "memory") && strlen(msg) > 20, "%s: k=%ld: message '%s' does not say what failed", o->name,
              k, msg);
        if (o->keeps_capacity)
            CHECK(cx_live_allocations() >= live, "%s: k=%ld (%s): live allocations %ld -> %ld", o->name, k, msg, live,
                  cx_live_allocations());
        else
            CHECK(cx_live_allocations() == live && cx_live_bytes() == live_bytes,
                  "%s: k=%ld (%s): live allocations %ld -> %ld, bytes %lld -> %lld", o->name, k, msg, live,
                  cx_live_allocations(), live_bytes, cx_live_bytes());
        if (f->made != &SENTINEL) {
            CHECK(f->made == NULL, "%s: k=%ld: *out not NULL after a failure", o->name, k);
            if (!o->setup) continue; /* a creating call on read-only input: the next k repeats it */
        }
        /* the same state works: the call again, without failures, gives the baseline */
        rc = o->call(f);
        CHECK(rc == CIRCUITS_OK, "%s: k=%ld: the repeated call -> %d (%s)", o->name, k, rc, circuits_last_error());
        if (rc == CIRCUITS_OK) {
            o->digest(f, &got);
            CHECK(same(&got, &base), "%s: k=%ld: after a failure the result differs", o->name, k);
        }
        if (o->teardown) o->teardown(f);
        CHECK(cx_live_allocations() == live_outside, "%s: k=%ld: %ld allocations outlive the objects", o->name, k,
              cx_live_allocations() - live_outside);
        if (tu_failures > 50) break; /* one broken site fails every later k too: enough said */
    }
    CHECK(k <= max_sites, "%s: more than %ld allocation sites", o->name, max_sites);
    free(base.p);
    free(got.p);
    return k;
}

/* ---- SAEs (lib/sae): loading, and the public encode / decode (which allocate their working
 * copies); the directories are written here (a gated SAE with layer_norm and a sparsity file,
 * a topk SAE with rescale_acts_by_decoder_norm) ---- */
static circuits_sae *g_sae; /* the gated one, for encode / decode */
enum { SAE_IN = 8, SAE_LAT = 16, SAE_ROWS = 5 };

static void write_sae_dir(const char *dir, bool topk)
{
    static float w[SAE_IN * SAE_LAT * 2 + 4 * SAE_LAT + SAE_IN];
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) w[i] = (float)sin(0.37 * (double)i + (topk ? 1.0 : 0.0));
    const float *W_enc = w, *W_dec = w + SAE_IN * SAE_LAT, *v = W_dec + SAE_IN * SAE_LAT;
    st_entry e[6] = {{"W_enc", 2, {SAE_IN, SAE_LAT}, W_enc}, {"W_dec", 2, {SAE_LAT, SAE_IN}, W_dec},
                     {"b_dec", 1, {SAE_IN}, v}};
    int n = 3;
    if (topk) {
        e[n++] = (st_entry){"b_enc", 1, {SAE_LAT}, v + SAE_IN};
    } else {
        e[n++] = (st_entry){"b_gate", 1, {SAE_LAT}, v + SAE_IN};
        e[n++] = (st_entry){"b_mag", 1, {SAE_LAT}, v + SAE_IN + SAE_LAT};
        e[n++] = (st_entry){"r_mag", 1, {SAE_LAT}, v + SAE_IN + 2 * SAE_LAT};
    }
    char path[1100], cfg[1024];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    st_write(path, e, n);
    snprintf(cfg, sizeof cfg,
             "{\"d_in\": %d, \"d_sae\": %d, \"dtype\": \"float32\", \"apply_b_dec_to_input\": true, "
             "\"normalize_activations\": \"%s\", \"reshape_activations\": \"none\", \"metadata\": "
             "{\"sae_lens_version\": \"6.54.12\", \"hook_name\": \"blocks.0.hook_resid_pre\"}, %s\"architecture\": \"%s\"}",
             SAE_IN, SAE_LAT, topk ? "constant_norm_rescale" : "layer_norm",
             topk ? "\"k\": 3, \"rescale_acts_by_decoder_norm\": true, " : "", topk ? "topk" : "gated");
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    FILE *fp = fopen(path, "w");
    CHECK(fp && fputs(cfg, fp) >= 0 && fclose(fp) == 0, "cannot write %s", path);
    if (!topk) {
        st_entry sp = {"sparsity", 1, {SAE_LAT}, v + SAE_IN + 3 * SAE_LAT};
        snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
        st_write(path, &sp, 1);
    }
}

/* SAEs on the fixture model (d_model 32) for attaching: variant 0 a standard SAE at
 * blocks.1.hook_resid_pre, 1 a transcoder from blocks.2.ln2.hook_normalized to blocks.2.hook_mlp_out */
static circuits_sae *g_msae[2];

static void write_model_sae_dir(const char *dir, bool transcoder)
{
    enum { DM = 32, L = 16 };
    static float w[2 * DM * L + L + DM];
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) w[i] = 0.3f * (float)sin(0.71 * (double)i + (transcoder ? 2.0 : 0.0));
    st_entry e[4] = {{"W_enc", 2, {DM, L}, w}, {"W_dec", 2, {L, DM}, w + DM * L}, {"b_enc", 1, {L}, w + 2 * DM * L},
                     {"b_dec", 1, {DM}, w + 2 * DM * L + L}};
    char path[1100], cfg[1024];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    st_write(path, e, 4);
    snprintf(cfg, sizeof cfg,
             "{\"d_in\": %d, \"d_sae\": %d, \"d_out\": %d, \"dtype\": \"float32\", \"apply_b_dec_to_input\": %s, "
             "\"normalize_activations\": \"none\", \"metadata\": {\"sae_lens_version\": \"6.54.12\", \"hook_name\": "
             "\"%s\"%s}, \"architecture\": \"%s\"}", DM, L, DM, transcoder ? "false" : "true",
             transcoder ? "blocks.2.ln2.hook_normalized" : "blocks.1.hook_resid_pre",
             transcoder ? ", \"hook_name_out\": \"blocks.2.hook_mlp_out\"" : "", transcoder ? "transcoder" : "standard");
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    FILE *fp = fopen(path, "w");
    CHECK(fp && fputs(cfg, fp) >= 0 && fclose(fp) == 0, "cannot write %s", path);
}

/* A context with hooks (one at a point the SAEs add) and, for remove_sae and runs, both SAEs. */
static void setup_sae_ctx(fx *f)
{
    f->ctx = new_ctx(f->model, 0);
    CHECK_OK(circuits_context_add_hook(f->ctx, "blocks.*.hook_resid_post", hook_read, f, NULL));
    CHECK_OK(circuits_context_add_hook(f->ctx, "pattern1", hook_edit, f, NULL));
    if (f->op->variant >= 2) {
        CHECK_OK(circuits_context_add_sae(f->ctx, g_msae[0], 1));
        CHECK_OK(circuits_context_add_sae(f->ctx, g_msae[1], 0));
        CHECK_OK(circuits_context_add_hook(f->ctx, "blocks.1.hook_resid_pre.hook_sae_acts_post", hook_edit, f, NULL));
    } else {
        CHECK_OK(circuits_context_add_sae(f->ctx, g_msae[1 - f->op->variant], 0));
    }
}

/* variant 0, 1: attach g_msae[variant] (the other attached); 2: detach the SAE; 3: the run */
static int call_sae_ctx(fx *f)
{
    if (f->op->variant < 2) return circuits_context_add_sae(f->ctx, g_msae[f->op->variant], 1);
    if (f->op->variant == 2) return circuits_context_remove_sae(f->ctx, "blocks.1.hook_resid_pre");
    f->out_n = (size_t)(B * T * VOCAB);
    return circuits_context_run_with_cache(f->ctx, f->tokens, B, T, NULL, 0, f->cache, f->out, NULL, NULL);
}

static void setup_sae_run(fx *f)
{
    setup_sae_ctx(f);
    CHECK_OK(circuits_cache_create(&f->cache));
}

static void digest_sae_ctx(fx *f, bytes *b)
{
    put_i64(b, (int64_t)circuits_context_sae_count(f->ctx));
    put_i64(b, (int64_t)circuits_context_hook_point_count(f->ctx));
    if (f->cache) {
        put_out(f, b);
        put_cache(f->cache, b);
    }
    digest_forward_of_ctx(f, b);
}

static void remove_sae_dir(const char *dir)
{
    const char *files[] = {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"};
    for (size_t i = 0; i < 3; i++) {
        char p[1100];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static float sae_x[SAE_ROWS * SAE_IN];

static void put_sae(const circuits_sae *s, bytes *b, float *out)
{
    circuits_sae_info info = {.size = sizeof info};
    CHECK_OK(circuits_sae_get_info(s, &info));
    put_i64(b, info.architecture);
    put_i64(b, info.d_sae);
    put_str(b, info.hook_name);
    static const char *const names[] = {"W_enc", "W_dec", "b_enc", "b_dec", "b_gate", "b_mag", "r_mag",
                                        "log_feature_sparsity"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        circuits_tensor t;
        if (circuits_sae_weight(s, names[i], &t) == CIRCUITS_OK) put_tensor(b, &t);
    }
    CHECK_OK(circuits_sae_encode(s, sae_x, SAE_ROWS, out, out + SAE_ROWS * SAE_LAT));
    CHECK_OK(circuits_sae_decode(s, out + SAE_ROWS * SAE_LAT, SAE_ROWS, sae_x, out + 2 * SAE_ROWS * SAE_LAT));
    put(b, out, (size_t)(2 * SAE_ROWS * SAE_LAT + SAE_ROWS * SAE_IN) * sizeof(float));
}

static int call_sae_load(fx *f)
{
    circuits_sae *s = (circuits_sae *)&SENTINEL;
    int rc = circuits_sae_load(&s, f->op->arg);
    f->made = s;
    return rc;
}

static void digest_sae(fx *f, bytes *b)
{
    put_sae(f->made, b, f->out);
    circuits_sae_free(f->made);
}

/* variant 0: encode (acts_pre NULL: the call allocates it too); 1: decode */
static int call_sae_code(fx *f)
{
    for (int i = 0; i < SAE_ROWS * SAE_IN; i++) sae_x[i] = (float)cos(0.9 * i) + 0.2f;
    f->out_n = f->op->variant ? SAE_ROWS * SAE_IN : SAE_ROWS * SAE_LAT;
    if (!f->op->variant) return circuits_sae_encode(g_sae, sae_x, SAE_ROWS, NULL, f->out);
    for (int i = 0; i < SAE_ROWS * SAE_LAT; i++) f->out[OUT_FLOATS / 2 + i] = (float)(i % 3);
    return circuits_sae_decode(g_sae, f->out + OUT_FLOATS / 2, SAE_ROWS, sae_x, f->out);
}

/* A model directory with a tokenizer, small enough to fail each of its allocations in turn:
 * hf_tiny_noprefix (1 layer, vocab 21) with the toy tokenizer's files, linked into a new
 * directory. */
static void make_model_with_tokenizer(char *dir)
{
    strcpy(dir, "/tmp/circuits-fault-XXXXXX");
    CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    const char *files[][2] = {{"config.json", g_cases}, {"model.safetensors", g_cases}, {"vocab.json", g_tokdata},
                              {"merges.txt", g_tokdata}, {"tokenizer_config.json", g_tokdata},
                              {"special_tokens_map.json", g_tokdata}};
    for (size_t i = 0; i < 6; i++) {
        char src[1024], dst[1024];
        bool model_file = files[i][1] == g_cases;
        snprintf(src, sizeof src, "%s/%s/%s", files[i][1], model_file ? "hf_tiny_noprefix" : "toy", files[i][0]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i][0]);
        char abs[4096];
        CHECK(realpath(src, abs) && symlink(abs, dst) == 0, "cannot link %s to %s", src, dst);
    }
}

static void remove_model_with_tokenizer(const char *dir)
{
    const char *files[] = {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json",
                           "special_tokens_map.json"};
    for (size_t i = 0; i < 6; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* ---- SAE feature statistics (lib/sae/features.c) ---- */

static circuits_sae *g_fs_sae;        /* a standard SAE of 24 latents at blocks.1.hook_resid_post */
static circuits_feature_stats *g_fs;  /* the statistics an add works on (setup_fs_add) */
static char g_fs_dir[] = "/tmp/circuits_fi_sae_XXXXXX", g_fs_file[128];

static void fs_options(circuits_feature_stats_options *o)
{
    circuits_feature_stats_options_init(o);
    o->top_k = 3;
    o->context_left = 2;
    o->context_right = 1;
    o->skip_positions = 1;
}

/* Writes and loads the SAE, and a statistics file of one add for the load scenario. */
static void fs_prepare(fx *f)
{
    if (!mkdtemp(g_fs_dir)) {
        perror("mkdtemp");
        exit(2);
    }
    enum { D = 32, S = 24 };
    static float W_enc[D * S], W_dec[S * D], b_enc[S], b_dec[D];
    for (int i = 0; i < D * S; i++) W_enc[i] = (float)((i * 7919 % 1000) - 500) / 1000.0f, W_dec[i] = W_enc[i] / 3;
    for (int i = 0; i < S; i++) b_enc[i] = (float)(i % 5) / 10.0f - 0.2f;
    for (int i = 0; i < D; i++) b_dec[i] = (float)(i % 3) / 20.0f;
    char path[256];
    snprintf(path, sizeof path, "%s/cfg.json", g_fs_dir);
    FILE *c = fopen(path, "w");
    if (!c) exit(2);
    fprintf(c, "{\"d_in\": %d, \"d_sae\": %d, \"dtype\": \"float32\", \"apply_b_dec_to_input\": true, "
            "\"normalize_activations\": \"none\", \"architecture\": \"standard\", \"metadata\": {\"sae_lens_version\": "
            "\"6.54.12\", \"hook_name\": \"blocks.1.hook_resid_post\"}}", D, S);
    fclose(c);
    st_entry t[4] = {{"W_dec", 2, {S, D}, W_dec}, {"W_enc", 2, {D, S}, W_enc}, {"b_dec", 1, {D}, b_dec},
                     {"b_enc", 1, {S}, b_enc}};
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", g_fs_dir);
    st_write(path, t, 4);
    CHECK_OK(circuits_sae_load(&g_fs_sae, g_fs_dir));
    circuits_feature_stats_options o;
    fs_options(&o);
    circuits_feature_stats *st = NULL;
    circuits_context *ctx = new_ctx(f->model, 0);
    CHECK_OK(circuits_feature_stats_create(&st, g_fs_sae, &o));
    CHECK_OK(circuits_context_feature_stats_add(ctx, st, f->tokens, B, T));
    snprintf(g_fs_file, sizeof g_fs_file, "%s/stats.safetensors", g_fs_dir);
    CHECK_OK(circuits_feature_stats_save(st, g_fs_file));
    circuits_feature_stats_free(st);
    circuits_context_free(ctx);
}

static void fs_cleanup(void)
{
    circuits_sae_free(g_fs_sae);
    g_fs_sae = NULL;
    char path[256];
    const char *names[] = {"cfg.json", "sae_weights.safetensors", "stats.safetensors"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", g_fs_dir, names[i]);
        unlink(path);
    }
    rmdir(g_fs_dir);
}

/* Everything a statistics object holds, as bytes. */
static void put_fs(const circuits_feature_stats *st, bytes *b)
{
    int64_t n, d;
    int32_t k, w, cnt;
    CHECK_OK(circuits_feature_stats_dims(st, &n, &d, &k, &w));
    put_i64(b, n), put_i64(b, d), put_i64(b, k), put_i64(b, w);
    float fr[64], mean[64], mx[64], vals[8];
    int64_t rows[8], pos[8];
    int32_t win[64];
    if (d > 64 || k > 8 || k * w > 64) return;
    CHECK_OK(circuits_feature_stats_get(st, fr, mean, mx));
    put(b, fr, sizeof(float) * (size_t)d), put(b, mean, sizeof(float) * (size_t)d), put(b, mx, sizeof(float) * (size_t)d);
    for (int64_t j = 0; j < d; j++) {
        CHECK_OK(circuits_feature_stats_top(st, j, vals, rows, pos, win, &cnt));
        put(b, vals, sizeof(float) * (size_t)k), put(b, rows, sizeof(int64_t) * (size_t)k);
        put(b, pos, sizeof(int64_t) * (size_t)k), put(b, win, sizeof(int32_t) * (size_t)(k * w));
    }
}

static int call_fs_create(fx *f)
{
    circuits_feature_stats_options o;
    fs_options(&o);
    circuits_feature_stats *st = (circuits_feature_stats *)&SENTINEL;
    int rc = circuits_feature_stats_create(&st, g_fs_sae, &o);
    f->made = st;
    return rc;
}

static int call_fs_load(fx *f)
{
    circuits_feature_stats *st = (circuits_feature_stats *)&SENTINEL;
    int rc = circuits_feature_stats_load(&st, g_fs_file);
    f->made = st;
    return rc;
}

static void digest_fs_made(fx *f, bytes *b)
{
    put_fs(f->made, b);
    circuits_feature_stats_free(f->made);
}

/* an add to statistics that hold one add already: a failed add must leave them as they were */
static void setup_fs_add(fx *f)
{
    f->ctx = new_ctx(f->model, 0);
    circuits_feature_stats_options o;
    fs_options(&o);
    CHECK_OK(circuits_feature_stats_create(&g_fs, g_fs_sae, &o));
    int32_t other[B * T];
    for (int i = 0; i < B * T; i++) other[i] = (f->tokens[i] + 17) % VOCAB;
    CHECK_OK(circuits_context_feature_stats_add(f->ctx, g_fs, other, B, T));
}

static int call_fs_add(fx *f) { return circuits_context_feature_stats_add(f->ctx, g_fs, f->tokens, B, T); }

static void digest_fs_add(fx *f, bytes *b) { put_fs(g_fs, b); }

static void teardown_fs_add(fx *f)
{
    circuits_feature_stats_free(g_fs);
    g_fs = NULL;
    free_state(f);
}

static void test_operations(fx *f)
{
    char hf[1024], tl[1024], tl2[1024], sharded[1024], f16[1024], bf16[1024], tokmodel[64], tok_json[1024], tok_vm[1024],
            tok_toy[1024], gguf[1024], gguf_llama[1024], gguf_q8[1024], gguf_llama3[1024];
    snprintf(hf, sizeof hf, "%s/hf_tiny_noprefix", g_cases);
    /* GGUF models: llama (permuted q/k, a tokenizer in the file), and one with a Q8_0 matrix */
    snprintf(gguf_llama, sizeof gguf_llama, "%s/../gguf/hf_llama_gqa.f32.gguf", g_cases);
    snprintf(gguf_q8, sizeof gguf_q8, "%s/../../fuzz/corpus/gguf_model/ok_q8.gguf", g_cases);
    snprintf(gguf_llama3, sizeof gguf_llama3, "%s/../gguf/hf_llama3_rope.f32.gguf", g_cases);
    snprintf(tl, sizeof tl, "%s/tl_attn_only_1l_ln", g_cases);
    snprintf(tl2, sizeof tl2, "%s/tl_1l_solu_ln", g_cases);
    snprintf(sharded, sizeof sharded, "%s/hf_random_sharded", g_cases);
    snprintf(f16, sizeof f16, "%s/hf_random_f16", g_cases);
    snprintf(bf16, sizeof bf16, "%s/hf_qwen2_bf16", g_cases);
    make_model_with_tokenizer(tokmodel);
    char sae_gated[] = "/tmp/circuits-fault-sae-XXXXXX", sae_topk[] = "/tmp/circuits-fault-sae-XXXXXX";
    CHECK(mkdtemp(sae_gated) && mkdtemp(sae_topk), "mkdtemp failed");
    write_sae_dir(sae_gated, false);
    write_sae_dir(sae_topk, true);
    for (int i = 0; i < SAE_ROWS * SAE_IN; i++) sae_x[i] = (float)cos(0.9 * i) + 0.2f;
    CHECK_OK(circuits_sae_load(&g_sae, sae_gated));
    char sae_m0[] = "/tmp/circuits-fault-sae-XXXXXX", sae_m1[] = "/tmp/circuits-fault-sae-XXXXXX";
    CHECK(mkdtemp(sae_m0) && mkdtemp(sae_m1), "mkdtemp failed");
    write_model_sae_dir(sae_m0, false);
    write_model_sae_dir(sae_m1, true);
    CHECK_OK(circuits_sae_load(&g_msae[0], sae_m0));
    CHECK_OK(circuits_sae_load(&g_msae[1], sae_m1));
    snprintf(tok_json, sizeof tok_json, "%s/tiny-random/tokenizer.json", g_tokdata);
    snprintf(tok_vm, sizeof tok_vm, "%s/tiny-random/vocab.json", g_tokdata);
    snprintf(tok_toy, sizeof tok_toy, "%s/toy", g_tokdata);
    snprintf(gguf, sizeof gguf, "%s/gguf/ggml-vocab-gpt-2.gguf", g_tokdata);
    const op ops[] = {
        {"model_load HF", NULL, call_load, digest_model, NULL, hf, LOAD_DEFAULT, false},
        {"model_load HF raw", NULL, call_load, digest_model, NULL, hf, LOAD_RAW, false},
        {"model_load HF refactor", NULL, call_load, digest_model, NULL, hf, LOAD_REFACTOR, false},
        {"model_load TL", NULL, call_load, digest_model, NULL, tl, LOAD_DEFAULT, false},
        {"model_load TL raw", NULL, call_load, digest_model, NULL, tl2, LOAD_RAW, false},
        {"model_load sharded", NULL, call_load, digest_model, NULL, sharded, LOAD_DEFAULT, false},
        {"model_load HF raw read_into_memory", NULL, call_load, digest_model, NULL, hf, LOAD_RAW_READ, false},
        {"model_load sharded read_into_memory", NULL, call_load, digest_model, NULL, sharded, LOAD_READ, false},
        {"model_load F16", NULL, call_load, digest_model, NULL, f16, LOAD_DEFAULT, false},
        {"model_load BF16 keep_stored_dtype", NULL, call_load, digest_model, NULL, bf16, LOAD_STORED, false},
        {"keep_stored_dtype: full OV circuits", NULL, call_stored_analysis, put_out, NULL, bf16, 0, false},
        {"keep_stored_dtype: composition scores", NULL, call_stored_analysis, put_out, NULL, bf16, 1, false},
        {"keep_stored_dtype: neuron stack", NULL, call_stored_analysis, put_out, NULL, bf16, 2, false},
        {"model_load with tokenizer", NULL, call_load, digest_model, NULL, tokmodel, LOAD_DEFAULT, false},
        {"model_load GGUF", NULL, call_load, digest_model, NULL, gguf_llama, LOAD_DEFAULT, false},
        {"model_load GGUF raw read_into_memory", NULL, call_load, digest_model, NULL, gguf_llama, LOAD_RAW_READ, false},
        {"model_load GGUF Q8_0", NULL, call_load, digest_model, NULL, gguf_q8, LOAD_RAW, false},
        {"model_load GGUF Q8_0 keep_stored_dtype", NULL, call_load, digest_model, NULL, gguf_q8, LOAD_STORED, false},
        {"model_load GGUF Llama 3 rope", NULL, call_load, digest_model, NULL, gguf_llama3, LOAD_RAW, false},
        {"tokenizer_load tokenizer.json", NULL, call_tokenizer_load, digest_tokenizer, NULL, tok_json, 0, false},
        {"tokenizer_load vocab.json+merges", NULL, call_tokenizer_load, digest_tokenizer, NULL, tok_vm, 0, false},
        {"tokenizer_load dir", NULL, call_tokenizer_load, digest_tokenizer, NULL, tok_toy, 0, false},
        {"tokenizer_load GGUF", NULL, call_tokenizer_load, digest_tokenizer, NULL, gguf, 0, false},
        {"tokenizer_encode", NULL, call_encode, digest_ids, NULL, NULL, 0, false},
        {"tokenizer_encode NFC", NULL, call_encode, digest_ids, NULL, NULL, 1, false},
        {"tokenizer_decode", NULL, call_decode, digest_text, NULL, NULL, 0, false},
        {"context_create", NULL, call_context_create, digest_context, NULL, NULL, 0, false},
        {"context_create attn_result", NULL, call_context_create, digest_context, NULL, NULL, 1, false},
        {"cache_create", NULL, call_cache_create, digest_cache_made, NULL, NULL, 0, false},
        {"add_hook exact", setup_ctx, call_add_hook, digest_forward_of_ctx, free_state, "blocks.1.attn.hook_pattern", 0, false},
        {"add_hook pattern", setup_ctx, call_add_hook, digest_forward_of_ctx, free_state, "blocks.*.hook_resid_pre", 0, true},
        {"add_hook all", setup_ctx, call_add_hook, digest_forward_of_ctx, free_state, "*", 1, true},
        {"forward fresh context", setup_forward, call_forward, put_out, free_state, NULL, 0, false},
        {"forward attn_result", setup_forward, call_forward, put_out, free_state, NULL, 1, false},
        {"forward warm context", setup_forward, call_forward, put_out, free_state, NULL, 2, false},
        {"run_with_cache fresh cache", setup_run_with_cache, call_run_with_cache, digest_run_with_cache, free_state, NULL, 0, false},
        {"run_with_cache reused cache", setup_run_with_cache, call_run_with_cache, digest_run_with_cache, free_state, NULL, 1, false},
        {"run_with_cache growing cache", setup_run_with_cache, call_run_with_cache, digest_run_with_cache, free_state, NULL, 2, false},
        {"run_with_cache everything", setup_run_with_cache, call_run_with_cache_all, digest_run_with_cache, free_state, NULL, 0, false},
        /* a gradient run keeps its context's gradient memory, as a forward keeps the run memory */
        {"backward with caches and weight gradients", setup_backward, call_backward, digest_backward, free_state, NULL, 0, true},
        {"backward attn_result, masked, THROUGH", setup_backward, call_backward, digest_backward, free_state, NULL, 1, true},
        {"resid_stack full decomposition", setup_resid, call_resid_stack, put_out, free_state, NULL, 0, false},
        {"resid_stack from hook_result", setup_resid, call_resid_stack, put_out, free_state, NULL, 1, false},
        {"resid_apply_ln", setup_resid, call_resid_apply_ln, put_out, free_state, NULL, 0, false},
        {"resid_logit_attrs", setup_resid, call_resid_logit_attrs, put_out, free_state, NULL, 0, false},
        {"logit_lens", setup_resid, call_logit_lens, put_out, free_state, NULL, 0, false},
        {"direct_logit_attribution", setup_resid, call_dla, put_out, free_state, NULL, 0, false},
        {"activation_patch resid_pre incremental", setup_resid, call_patch, put_out, free_state, NULL, 0, true},
        {"activation_patch resid_pre whole, one cell per run", setup_resid, call_patch, put_out, free_state, NULL, 1, true},
        {"activation_patch pattern with the loss", setup_resid, call_patch, put_out, free_state, NULL, 2, true},
        {"mean_activations and run_ablated", setup_resid, call_ablate, put_out, free_state, NULL, 0, true},
        {"add_steering pattern, positions", setup_ctx, call_add_steering, digest_forward_of_ctx, free_state, NULL, 0, true},
        {"add_control_vector", setup_ctx, call_add_control_vector, digest_forward_of_ctx, free_state, NULL, 0, true},
        {"contrastive_vector", setup_forward, call_contrastive, put_out, free_state, NULL, 0, true},
        {"control_vector save and load", NULL, call_control_vector_file, put_out, NULL, NULL, 0, false},
        {"feature_stats_create", NULL, call_fs_create, digest_fs_made, NULL, NULL, 0, false},
        /* an add runs the model: a failure at a later pass leaves the run memory as it grew */
        {"feature_stats_add", setup_fs_add, call_fs_add, digest_fs_add, teardown_fs_add, NULL, 0, true},
        {"feature_stats_load", NULL, call_fs_load, digest_fs_made, NULL, NULL, 0, false},
        {"attribution_patch head z by position", setup_resid, call_attribution_patch, put_out, free_state, NULL, 0, true},
        {"edge_attribution EAP", setup_resid, call_edge_attribution, put_out, free_state, NULL, 0, true},
        {"edge_attribution EAP-IG", setup_resid, call_edge_attribution, put_out, free_state, NULL, 1, true},
        {"integrated_gradients", setup_resid, call_integrated_gradients, put_out, free_state, NULL, 0, true},
        {"sae_load gated, layer_norm, sparsity", NULL, call_sae_load, digest_sae, NULL, sae_gated, 0, false},
        {"sae_load topk rescale", NULL, call_sae_load, digest_sae, NULL, sae_topk, 0, false},
        {"sae_encode", NULL, call_sae_code, put_out, NULL, NULL, 0, false},
        {"sae_decode layer_norm", NULL, call_sae_code, put_out, NULL, NULL, 1, false},
        {"context_add_sae", setup_sae_ctx, call_sae_ctx, digest_sae_ctx, free_state, NULL, 0, false},
        {"context_add_sae transcoder", setup_sae_ctx, call_sae_ctx, digest_sae_ctx, free_state, NULL, 1, false},
        {"context_remove_sae", setup_sae_ctx, call_sae_ctx, digest_sae_ctx, free_state, NULL, 2, false},
        {"run_with_cache with SAEs", setup_sae_run, call_sae_ctx, digest_sae_ctx, free_state, NULL, 3, false},
        {"kv_cache_create", NULL, call_kv_create, digest_kv_made, NULL, NULL, 0, false},
        {"forward_kv", setup_forward_kv, call_forward_kv, digest_forward_kv, free_state, NULL, 0, false},
        {"generate with KV cache", setup_forward, call_generate, put_out, free_state, NULL, 0, false},
        {"generate without KV cache", setup_forward, call_generate, put_out, free_state, NULL, 1, true},
        {"detect_heads", setup_forward, call_detect, digest_detect, free_state, NULL, 0, false},
        {"run with attention_mask", setup_forward, call_masked, put_out, free_state, NULL, 0, false},
        {"run_with_cache_opts with attention_mask", setup_run_with_cache, call_masked, digest_run_with_cache, free_state, NULL, 0, false},
        {"generate left-padded, KV cache", setup_forward, call_generate, put_out, free_state, NULL, 2, false},
        {"generate left-padded, no KV cache", setup_forward, call_generate, put_out, free_state, NULL, 3, true},
        {"detect_heads with attention_mask", setup_forward, call_detect_padded, digest_detect, free_state, NULL, 0, false},
        {"induction_scores", setup_forward, call_induction, digest_detect, free_state, NULL, 0, false},
        {"path_patch", setup_forward, call_path_patch, put_out, free_state, NULL, 0, false},
        /* a sweep's runs hold several cells (more rows than step 1): a failure at a later run leaves
         * the context's run memory as the earlier runs grew it */
        {"path_patch_sweep", setup_forward, call_path_patch, put_out, free_state, NULL, 1, true},
        {"model_diff some points", NULL, call_diff, digest_diff, NULL, NULL, 0, false},
        {"model_diff every point and head, padded", NULL, call_diff, digest_diff, NULL, NULL, 1, false},
        {"composition_scores Q", NULL, call_composition, put_out, NULL, NULL, CIRCUITS_COMPOSITION_Q, false},
        {"composition_scores K", NULL, call_composition, put_out, NULL, NULL, CIRCUITS_COMPOSITION_K, false},
        {"composition_scores V", NULL, call_composition, put_out, NULL, NULL, CIRCUITS_COMPOSITION_V, false},
        {"mlp_composition_scores", NULL, call_mlp_composition, put_out, NULL, NULL, 0, false},
        {"composition_baseline", NULL, call_baseline, put_out, NULL, NULL, 0, false},
        {"logits_rank", NULL, call_logits_rank, put_out, NULL, NULL, 0, false},
        {"copying_scores", NULL, call_copying, put_out, NULL, NULL, 0, false},
        {"copying_scores full", NULL, call_copying, put_out, NULL, NULL, 1, false},
        {"model_ov", NULL, call_ov, digest_factored, NULL, NULL, 0, false},
        {"model_qk", NULL, call_qk, digest_factored, NULL, NULL, 0, false},
        {"model_full_ov", NULL, call_full_ov, digest_factored, NULL, NULL, 0, false},
        {"model_full_qk", NULL, call_full_qk, digest_factored, NULL, NULL, 0, false},
        {"model_pos_qk", NULL, call_pos_qk, digest_factored, NULL, NULL, 0, false},
        {"composition_circuit K", NULL, call_comp_circuit, digest_factored, NULL, NULL, CIRCUITS_COMPOSITION_K, false},
        {"composition_circuit V", NULL, call_comp_circuit, digest_factored, NULL, NULL, CIRCUITS_COMPOSITION_V, false},
        {"virtual_ov", NULL, call_virtual_ov, digest_factored, NULL, NULL, 0, false},
        {"virtual_weights", NULL, call_virtual_weights, digest_factored, NULL, NULL, 0, false},
        {"factored_create", setup_dense_input, call_factored_create, digest_factored, NULL, NULL, 0, false},
        {"factored_transpose", NULL, call_transpose, digest_factored, NULL, NULL, 0, false},
        {"factored_matmul", NULL, call_matmul, digest_factored, NULL, NULL, 0, false},
        {"factored_matmul_dense", setup_dense_input, call_matmul_dense, digest_factored, NULL, NULL, 0, false},
        {"factored_rmatmul_dense", setup_dense_input, call_rmatmul_dense, digest_factored, NULL, NULL, 0, false},
        {"factored_svd", NULL, call_svd, put_out, NULL, NULL, 0, false},
        {"factored_eigenvalues", NULL, call_eigenvalues, put_out, NULL, NULL, 0, false},
        {"factored_norm", NULL, call_norm, put_out, NULL, NULL, 0, false},
        {"factored_topk all", NULL, call_topk, put_out, NULL, NULL, CIRCUITS_TOPK_ALL, false},
        {"factored_topk row", NULL, call_topk, put_out, NULL, NULL, CIRCUITS_TOPK_ROW, false},
        {"factored_materialize", NULL, call_materialize, put_out, NULL, NULL, 0, false},
        {"factored_matvec+vecmat", NULL, call_matvec, put_out, NULL, NULL, 0, false},
        {"factored_corner+diagonal", NULL, call_corner_diag, put_out, NULL, NULL, 0, false},
        {"probe_fit logistic multinomial", setup_probe_data, call_probe_fit, digest_probe, NULL, NULL, 0, false},
        {"probe_fit linear ridge", setup_probe_data, call_probe_fit, digest_probe, NULL, NULL, 1, false},
        {"probe_fit linear least squares", setup_probe_data, call_probe_fit, digest_probe, NULL, NULL, 2, false},
        {"probe_load", setup_probe_file, call_probe_load, digest_probe, NULL, NULL, 0, false},
    };
    long total = 0;
    printf("%-36s %10s %10s\n", "operation", "sites", "(from k on)");
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        long once = run_op(f, &ops[i], true);
        long from = run_op(f, &ops[i], false);
        CHECK(once == from, "%s: %ld sites failing one, %ld failing all from k on", ops[i].name, once, from);
        printf("%-36s %10ld %10ld\n", ops[i].name, once, from);
        fflush(stdout);
        total += once;
    }
    printf("%zu operations, %ld allocation sites failed in turn (twice each)\n", sizeof ops / sizeof ops[0], total);
    remove_model_with_tokenizer(tokmodel);
    if (g_probe_path[0]) remove(g_probe_path);
    circuits_sae_free(g_sae);
    g_sae = NULL;
    remove_sae_dir(sae_gated);
    remove_sae_dir(sae_topk);
    circuits_sae_free(g_msae[0]), circuits_sae_free(g_msae[1]);
    g_msae[0] = g_msae[1] = NULL;
    remove_sae_dir(sae_m0);
    remove_sae_dir(sae_m1);
}

/* ---- hooks that fail or stop in the middle ---- */
typedef struct trap {
    long fire_at;   /* fail at this firing (counting from 0) */
    long fired;
    int result;     /* what to return then: a negative error or CIRCUITS_HOOK_STOP */
} trap;

static int hook_trap(const circuits_tensor *t, void *u)
{
    trap *tr = u;
    if (tr->fired++ != tr->fire_at) return CIRCUITS_HOOK_CONTINUE;
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    for (size_t i = 0; i < n; i++) t->data[i] = NAN; /* garbage left behind must not matter */
    return tr->result;
}

/* The baseline of one context: logits, a full cache, and a KV continuation. */
typedef struct run_result {
    bytes logits, cache, kv;
} run_result;

static void run_all(fx *f, circuits_context *ctx, circuits_cache *cache, circuits_kv_cache *kv, run_result *r, int *rcs)
{
    rcs[0] = circuits_context_forward(ctx, f->tokens, B, T, f->out, NULL, NULL);
    if (!rcs[0]) put(&r->logits, f->out, (size_t)(B * T * VOCAB) * sizeof(float));
    rcs[1] = circuits_context_run_with_cache(ctx, f->tokens, B, T, NULL, 0, cache, NULL, NULL, NULL);
    if (!rcs[1]) put_cache(cache, &r->cache);
    circuits_kv_cache_truncate(kv, 2);
    rcs[2] = circuits_context_forward_kv(ctx, kv, f->tokens, B, 3, f->out);
    if (!rcs[2]) {
        put(&r->kv, f->out, (size_t)(B * 3 * VOCAB) * sizeof(float));
        put_kv(kv, f->model, &r->kv);
    }
}

static void free_result(run_result *r)
{
    free(r->logits.p);
    free(r->cache.p);
    free(r->kv.p);
    memset(r, 0, sizeof *r);
}

static void test_hook_failures(fx *f)
{
    circuits_context *ctx = new_ctx(f->model, 1);
    circuits_cache *cache = NULL;
    circuits_kv_cache *kv = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_kv_cache_create(&kv, f->model, B, 8));
    CHECK_OK(circuits_context_forward_kv(ctx, kv, f->tokens, B, 2, NULL));
    run_result base = {0}, again = {0};
    int rcs[3];
    run_all(f, ctx, cache, kv, &base, rcs); /* warm: scratch and cache sized */
    free_result(&base);
    run_all(f, ctx, cache, kv, &base, rcs);
    CHECK(!rcs[0] && !rcs[1] && !rcs[2], "baseline runs -> %d %d %d", rcs[0], rcs[1], rcs[2]);
    size_t n_points = circuits_context_hook_point_count(ctx);
    /* a failed run_with_cache gives the cache's memory back: measure what a full cache holds */
    circuits_cache *probe = NULL;
    CHECK_OK(circuits_cache_create(&probe));
    long held = cx_live_allocations();
    long long held_bytes = cx_live_bytes();
    CHECK_OK(circuits_context_run_with_cache(ctx, f->tokens, B, T, NULL, 0, probe, NULL, NULL, NULL));
    held = cx_live_allocations() - held;
    held_bytes = cx_live_bytes() - held_bytes;
    circuits_cache_free(probe);
    const int results[] = {-1, -1000, CIRCUITS_HOOK_STOP};
    for (size_t ri = 0; ri < 3; ri++) {
        int want = results[ri] == CIRCUITS_HOOK_STOP ? CIRCUITS_E_STOPPED : CIRCUITS_E_CALLBACK;
        for (size_t i = 0; i < n_points; i++) {
            circuits_tensor p;
            CHECK_OK(circuits_context_hook_point(ctx, i, B, T, &p));
            trap tr = {0, 0, results[ri]};
            circuits_hook_id id;
            CHECK_OK(circuits_context_add_hook(ctx, p.name, hook_trap, &tr, &id));
            long live_hooked = cx_live_allocations();
            long long bytes_hooked = cx_live_bytes();
            circuits_clear_error();
            int rc = circuits_context_forward(ctx, f->tokens, B, T, f->out, NULL, NULL);
            CHECK(rc == want && strstr(circuits_last_error(), p.name), "forward failing at %s -> %d (%s)", p.name, rc,
                  circuits_last_error());
            CHECK(cx_live_allocations() == live_hooked && cx_live_bytes() == bytes_hooked,
                  "forward failing at %s: live %ld -> %ld", p.name, live_hooked, cx_live_allocations());
            tr.fired = 0;
            rc = circuits_context_run_with_cache(ctx, f->tokens, B, T, NULL, 0, cache, NULL, NULL, NULL);
            CHECK(rc == want && circuits_cache_count(cache) == 0 && circuits_cache_nbytes(cache) == 0,
                  "run_with_cache failing at %s -> %d, %zu entries left", p.name, rc, circuits_cache_count(cache));
            tr.fired = 0;
            CHECK_OK(circuits_kv_cache_truncate(kv, 2));
            rc = circuits_context_forward_kv(ctx, kv, f->tokens, B, 3, f->out);
            CHECK(rc == want && circuits_kv_cache_length(kv) == 2, "forward_kv failing at %s -> %d, length %lld", p.name,
                  rc, (long long)circuits_kv_cache_length(kv));
            CHECK(cx_live_allocations() == live_hooked - held && cx_live_bytes() == bytes_hooked - held_bytes,
                  "failing at %s: live %ld -> %ld, want %ld (the cache's %ld given back)", p.name, live_hooked,
                  cx_live_allocations(), live_hooked - held, held);
            CHECK_OK(circuits_context_remove_hook(ctx, id));
            run_all(f, ctx, cache, kv, &again, rcs);
            CHECK(!rcs[0] && !rcs[1] && !rcs[2] && same(&again.logits, &base.logits) && same(&again.cache, &base.cache) &&
                      same(&again.kv, &base.kv),
                  "after a run failing at %s (%d) the next runs differ from the baseline", p.name, results[ri]);
            free_result(&again);

        }
    }
    /* a pattern-registered hook failing at its k-th firing */
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(f->model, &c));
    for (long k = 0; k < c.n_layers; k++) {
        trap tr = {k, 0, -3};
        circuits_hook_id id;
        CHECK_OK(circuits_context_add_hook(ctx, "blocks.*.attn.hook_pattern", hook_trap, &tr, &id));
        char want_name[64];
        snprintf(want_name, sizeof want_name, "blocks.%ld.attn.hook_pattern", k);
        int rc = circuits_context_run_with_cache(ctx, f->tokens, B, T, NULL, 0, cache, f->out, NULL, NULL);
        CHECK(rc == CIRCUITS_E_CALLBACK && strstr(circuits_last_error(), want_name) && tr.fired == k + 1,
              "pattern hook failing at firing %ld -> %d (%s), fired %ld", k, rc, circuits_last_error(), tr.fired);
        CHECK(circuits_cache_count(cache) == 0, "a failed run left %zu cache entries", circuits_cache_count(cache));
        CHECK_OK(circuits_context_remove_hook(ctx, id));
        run_all(f, ctx, cache, kv, &again, rcs);
        CHECK(same(&again.logits, &base.logits) && same(&again.cache, &base.cache) && same(&again.kv, &base.kv),
              "after the pattern hook failed at firing %ld the next runs differ", k);
        free_result(&again);
    }
    printf("hook failures: %ld hook points x (2 errors + stop) x (forward, run_with_cache, forward_kv), "
           "and a pattern hook failing at each of %d firings: clean\n",
           (long)n_points, c.n_layers);
    free_result(&base);
    circuits_cache_free(cache);
    circuits_kv_cache_free(kv);
    circuits_context_free(ctx);
}

/* A generation callback failing or stopping at each step. */
typedef struct step_trap {
    int64_t at;
    int result;
} step_trap;

static int on_step_trap(int64_t step, const int32_t *tokens, const float *logits, int64_t batch, void *u)
{
    (void)tokens, (void)logits, (void)batch;
    step_trap *s = u;
    return step == s->at ? s->result : 0;
}

static void test_generate_failures(fx *f)
{
    circuits_context *ctx = new_ctx(f->model, 0);
    circuits_generate_options o;
    circuits_generate_options_init(&o);
    o.max_new_tokens = 5;
    o.stop_at_eos = 0;
    o.seed = 3;
    int32_t base[B * 9], out[B * 9];
    int64_t len = 0;
    CHECK_OK(circuits_context_generate(ctx, f->tokens, B, 4, &o, base, &len));
    long live = cx_live_allocations();
    for (int64_t s = 0; s < 5; s++)
        for (int stop = 0; stop < 2; stop++) {
            step_trap tr = {s, stop ? CIRCUITS_HOOK_STOP : -1};
            o.on_step = on_step_trap;
            o.user_data = &tr;
            memset(out, 0xff, sizeof out);
            int rc = circuits_context_generate(ctx, f->tokens, B, 4, &o, out, &len);
            if (stop) {
                /* a stop is a success: the columns up to the stop are the baseline's */
                CHECK(rc == CIRCUITS_OK && len == 4 + s + 1, "stop at step %lld -> %d, len %lld", (long long)s, rc,
                      (long long)len);
            } else {
                CHECK(rc == CIRCUITS_E_CALLBACK, "on_step failing at step %lld -> %d", (long long)s, rc);
            }
            for (int64_t b = 0; b < B; b++)
                CHECK(memcmp(out + b * 9, base + b * 9, (size_t)(4 + s) * sizeof *out) == 0,
                      "step %lld: generated columns differ from the baseline", (long long)s);
            CHECK(cx_live_allocations() == live, "generation failing at step %lld leaked", (long long)s);
            o.on_step = NULL;
            CHECK_OK(circuits_context_generate(ctx, f->tokens, B, 4, &o, out, &len));
            CHECK(memcmp(out, base, sizeof out) == 0, "after a failed generation the next one differs");
        }
    circuits_context_free(ctx);
}

/* ---- cache reuse: a refill of the same layout allocates nothing but the selection mask ---- */
static void test_cache_reuse(fx *f)
{
    circuits_context *ctx = new_ctx(f->model, 0);
    circuits_cache *reused = NULL, *fresh = NULL;
    CHECK_OK(circuits_cache_create(&reused));
    CHECK_OK(circuits_context_forward(ctx, f->tokens, B, T, NULL, NULL, NULL));
    const char *const all[] = {"*"};
    struct {
        const char *const *filter;
        size_t n;
        int64_t batch, pos;
    } runs[] = {{all, 1, B, T},         {all, 1, B, T}, {FILTER_SMALL, 1, 1, 3}, {FILTER_SOME, 3, B, T},
                {FILTER_SOME, 3, B, T}, {all, 1, 1, T}, {all, 1, B, T}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        long before = cx_fault_allocations();
        CHECK_OK(circuits_context_run_with_cache(ctx, f->tokens, runs[r].batch, runs[r].pos, runs[r].filter, runs[r].n,
                                                 reused, NULL, NULL, NULL));
        long made = cx_fault_allocations() - before;
        /* run 0 builds the cache; every later one fits its block; runs 1, 4 and 6 also have the
         * names of the run before (a new name is copied) */
        if (r == 1 || r == 4 || r == 6) CHECK(made == 1, "refill %zu of a layout that fits made %ld allocations, want 1", r, made);
        CHECK_OK(circuits_cache_create(&fresh));
        CHECK_OK(circuits_context_run_with_cache(ctx, f->tokens, runs[r].batch, runs[r].pos, runs[r].filter, runs[r].n,
                                                 fresh, NULL, NULL, NULL));
        bytes a = {0}, b = {0};
        put_cache(reused, &a);
        put_cache(fresh, &b);
        CHECK(same(&a, &b), "run %zu: the reused cache differs from a fresh one", r);
        circuits_tensor t;
        CHECK_FAILS(circuits_cache_at(reused, circuits_cache_count(reused), &t), CIRCUITS_E_RANGE, "out of range");
        free(a.p);
        free(b.p);
        circuits_cache_free(fresh);
    }
    circuits_cache_free(reused);
    circuits_context_free(ctx);
}

/* A tokenizer whose tokenizer_config.json loads and whose special_tokens_map.json is broken:
 * the load fails half-way through its side files (it once freed the first one twice). */
static void test_broken_side_file(void)
{
    char dir[64] = "/tmp/circuits-side-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    const char *names[] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
    char src[1024], dst[1024], abs[4096];
    for (int i = 0; i < 3; i++) {
        snprintf(src, sizeof src, "%s/toy/%s", g_tokdata, names[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, names[i]);
        CHECK(realpath(src, abs) && symlink(abs, dst) == 0, "cannot link %s", src);
    }
    snprintf(dst, sizeof dst, "%s/special_tokens_map.json", dir);
    FILE *f = fopen(dst, "w");
    if (f) {
        fputs("{\"bos_token\": ", f);
        fclose(f);
    }
    long live = cx_live_allocations();
    circuits_tokenizer *t = (circuits_tokenizer *)&SENTINEL;
    CHECK_FAILS(circuits_tokenizer_load(&t, dir), CIRCUITS_E_FORMAT, "special_tokens_map.json");
    CHECK(t == NULL && cx_live_allocations() == live, "a broken side file left %ld allocations",
          cx_live_allocations() - live);
    for (int i = 0; i < 3; i++) {
        snprintf(dst, sizeof dst, "%s/%s", dir, names[i]);
        unlink(dst);
    }
    snprintf(dst, sizeof dst, "%s/special_tokens_map.json", dir);
    unlink(dst);
    rmdir(dir);
}

/* A callback that refills the cache its own run is filling, through another context. */
typedef struct refill {
    circuits_context *other;
    circuits_cache *cache;
    const int32_t *tokens;
    int rc;
} refill;

static int hook_refill(const circuits_tensor *t, void *u)
{
    (void)t;
    refill *r = u;
    r->rc = circuits_context_run_with_cache(r->other, r->tokens, 1, 3, NULL, 0, r->cache, NULL, NULL, NULL);
    return CIRCUITS_HOOK_CONTINUE;
}

static void test_cache_in_use(fx *f)
{
    circuits_context *ctx = new_ctx(f->model, 0), *other = new_ctx(f->model, 0);
    circuits_cache *cache = NULL, *fresh = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_cache_create(&fresh));
    refill r = {other, cache, f->tokens, 0};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.2.hook_resid_pre", hook_refill, &r, NULL));
    CHECK_OK(circuits_context_run_with_cache(ctx, f->tokens, B, T, NULL, 0, cache, NULL, NULL, NULL));
    CHECK(r.rc == CIRCUITS_E_INVALID_ARGUMENT, "refilling the cache in use -> %d", r.rc);
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_run_with_cache(ctx, f->tokens, B, T, NULL, 0, fresh, NULL, NULL, NULL));
    bytes a = {0}, b = {0};
    put_cache(cache, &a);
    put_cache(fresh, &b);
    CHECK(same(&a, &b), "the cache a callback tried to refill differs from a clean run's");
    free(a.p);
    free(b.p);
    circuits_cache_free(cache);
    circuits_cache_free(fresh);
    circuits_context_free(other);
    circuits_context_free(ctx);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s <tests/reference/cases> <examples/models> <tests/tokenizer/data>\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    g_models = argv[2];
    g_tokdata = argv[3];
    circuits_set_num_threads(1); /* tiny matrices: OpenBLAS's threads would only spin */
    fx f = {0};
    f.out = calloc(OUT_FLOATS, sizeof *f.out);
    char path[1024];
    snprintf(path, sizeof path, "%s/hf_tiny_random_gpt2", g_cases);
    CHECK_OK(circuits_model_load(&f.model, path, NULL));
    snprintf(path, sizeof path, "%s/tiny-random-gpt2", g_models);
    CHECK_OK(circuits_model_load(&f.tok_model, path, NULL));
    if (!f.model || !f.tok_model) return tu_finish("failure_injection");
    f.tok = circuits_model_tokenizer(f.tok_model);
    CHECK(f.tok != NULL, "%s has no tokenizer", path);
    snprintf(path, sizeof path, "%s/gguf/ggml-vocab-gpt-neox.gguf", g_tokdata);
    CHECK_OK(circuits_tokenizer_load(&f.tok_nfc, path));
    if (!f.tok || !f.tok_nfc) return tu_finish("failure_injection");
    CHECK_OK(circuits_model_ov(f.model, -1, -1, &f.ov));
    CHECK_OK(circuits_model_qk(f.model, -1, -1, &f.qk));
    for (int i = 0; i < B * T; i++) f.tokens[i] = (int32_t)((i * 7919 + 13) % VOCAB);

    test_broken_side_file();
    test_cache_reuse(&f);
    test_cache_in_use(&f);
    test_hook_failures(&f);
    test_generate_failures(&f);
    fs_prepare(&f);
    test_operations(&f);
    fs_cleanup();

    circuits_factored_free(f.ov);
    circuits_factored_free(f.qk);
    circuits_model_free(f.tok_model);
    circuits_tokenizer_free(f.tok_nfc);
    circuits_model_free(f.model);
    free(f.out);
    CHECK(cx_live_allocations() == 0 && cx_live_bytes() == 0, "at exit the library still holds %ld allocations",
          cx_live_allocations());
    return tu_finish("failure_injection");
}
