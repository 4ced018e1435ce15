/* Feature statistics of an SAE (or a transcoder's encoder) over a token dataset, in one
 * streaming pass with bounded memory (docs/saes.md "Feature statistics"): per latent the tokens
 * it fired on, the sum (for the mean over all counted tokens) and maximum of its activation, and
 * its top_k activating contexts with the token window around each.
 *
 * Each row of a batch runs through the one door alone (see the add) and only as far as the SAE's
 * hook point needs; an internal editor that only reads copies the point's activation (the value
 * run_with_cache keeps) into a buffer of the batch's size, and after the runs the rows are encoded with SAELens's pieces
 * (cx_sae_input, cx_sae_pre, cx_sae_post) a chunk at a time into buffers sized by the chunk. So
 * a failed run (a callback stopping it) leaves the statistics as they were, and memory does not
 * grow with the dataset.
 *
 * Determinism: the latents are split over the pool, each latent's updates made by one thread in
 * the dataset's order (row, position), so sums are added in one order whatever the batching or
 * the thread count. The top contexts are ordered by value, then (row, position): a total order,
 * so the top_k kept are the same whatever the batching. Tokens arrive in that order, so a new
 * one enters only with a value strictly above the k-th kept (or the threshold while fewer are
 * kept): gate[j].
 *
 * The point read must be the model's own: a point an attached SAE replaces is refused (its name
 * then names the SAE's hook_sae_* points; detach it to collect statistics there). SAEs attached
 * elsewhere run as in any run of the context: the statistics are then those of the spliced model.
 *
 * The file (circuits_feature_stats_save / _load) is documented in docs/saes.md "Feature
 * statistics file"; loading validates it as hostile input. */
#include "context.h"
#include "pool.h"
#include "sae.h"
#include "st_save.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Limits on the options (memory is d_sae * top_k * window tokens; these keep it sane). */
enum { MAX_TOP_K = 4096, MAX_CONTEXT = 4096 };
#define FORMAT_NAME "circuits-feature-stats"
#define FORMAT_VERSION "1"

struct circuits_feature_stats {
    const circuits_sae *sae;      /* NULL for statistics loaded from a file: they cannot grow */
    circuits_feature_stats_options o;
    char *hook_name, *architecture; /* copies: a save does not need the SAE */
    bool transcoder;
    bool broken;                  /* an add failed part-way (see there): no more adds */
    int64_t d_sae, n_tokens, n_rows;
    int64_t row_base;             /* the number of the first row (0; a job unit's: its first row) */
    int32_t k, W;                 /* top_k, window = left + 1 + right */
    int64_t *fires;               /* [d_sae] tokens with acts_post > threshold */
    double *sum;                  /* [d_sae] acts_post summed over the counted tokens */
    float *max;                   /* [d_sae] (-inf before any token) */
    float *gate;                  /* [d_sae] what a token must exceed to enter the top contexts */
    int32_t *n_top;               /* [d_sae] top contexts kept */
    float *top_val;               /* [d_sae, k] largest first */
    int64_t *top_row, *top_pos;   /* [d_sae, k] */
    int32_t *top_win;             /* [d_sae, k, W] tokens, -1 outside the row */
};

void circuits_feature_stats_options_init(circuits_feature_stats_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->top_k = 10;
    opts->context_left = 8;
    opts->context_right = 2;
    opts->threshold = 0.0f;
    opts->skip_positions = 0;
}

static const size_t options_versions[] = {sizeof(circuits_feature_stats_options)};

void circuits_feature_stats_free(circuits_feature_stats *st)
{
    if (!st) return;
    cx_free(st->hook_name);
    cx_free(st->architecture);
    cx_free(st->fires);
    cx_free(st->sum);
    cx_free(st->max);
    cx_free(st->gate);
    cx_free(st->n_top);
    cx_free(st->top_val);
    cx_free(st->top_row);
    cx_free(st->top_pos);
    cx_free(st->top_win);
    cx_free(st);
}

static int check_options(const circuits_feature_stats_options *o, const char *fn)
{
    if (o->top_k < 0 || o->top_k > MAX_TOP_K)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: top_k %d is not in 0 .. %d", fn, (int)o->top_k, MAX_TOP_K);
    if (o->context_left < 0 || o->context_left > MAX_CONTEXT || o->context_right < 0 || o->context_right > MAX_CONTEXT)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: context_left %d and context_right %d must be in 0 .. %d", fn,
                       (int)o->context_left, (int)o->context_right, MAX_CONTEXT);
    if (!isfinite(o->threshold))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: threshold %g is not a finite number", fn, (double)o->threshold);
    if (o->skip_positions < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: skip_positions %d is negative", fn, (int)o->skip_positions);
    return CIRCUITS_OK;
}

/* An empty statistics object for d_sae latents and options o (checked); names copied. */
static int make(circuits_feature_stats **out, int64_t d_sae, const circuits_feature_stats_options *o,
                const char *hook_name, const char *architecture, bool transcoder, const char *fn)
{
    size_t topn, winn;
    int32_t W = o->context_left + 1 + o->context_right;
    if (d_sae < 1 || !cx_mul_size((size_t)d_sae, (size_t)o->top_k, &topn) || !cx_mul_size(topn, (size_t)W, &winn) ||
        !cx_mul_size(winn, sizeof(int32_t), &(size_t){0}))
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld latents x top_k %d x window %d is too large", fn, (long long)d_sae,
                       (int)o->top_k, (int)W);
    circuits_feature_stats *st = cx_calloc(1, sizeof *st);
    if (!st) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    st->o = *o;
    st->d_sae = d_sae;
    st->k = o->top_k;
    st->W = W;
    st->transcoder = transcoder;
    size_t n = (size_t)d_sae, t1 = topn ? topn : 1, w1 = winn ? winn : 1;
    st->hook_name = cx_strdup(hook_name ? hook_name : "");
    st->architecture = cx_strdup(architecture ? architecture : "");
    st->fires = cx_calloc(n, sizeof *st->fires);
    st->sum = cx_calloc(n, sizeof *st->sum);
    st->max = cx_malloc(n * sizeof *st->max);
    st->gate = cx_malloc(n * sizeof *st->gate);
    st->n_top = cx_calloc(n, sizeof *st->n_top);
    st->top_val = cx_calloc(t1, sizeof *st->top_val);
    st->top_row = cx_calloc(t1, sizeof *st->top_row);
    st->top_pos = cx_calloc(t1, sizeof *st->top_pos);
    st->top_win = cx_calloc(w1, sizeof *st->top_win);
    if (!st->hook_name || !st->architecture || !st->fires || !st->sum || !st->max || !st->gate || !st->n_top ||
        !st->top_val || !st->top_row || !st->top_pos || !st->top_win) {
        circuits_feature_stats_free(st);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    for (size_t j = 0; j < n; j++) {
        st->max[j] = -INFINITY;
        st->gate[j] = o->threshold;
    }
    *out = st;
    return CIRCUITS_OK;
}

int cx_feature_stats_options_resolve(circuits_feature_stats_options *o, const circuits_feature_stats_options *opts,
                                     const char *fn)
{
    circuits_feature_stats_options_init(o);
    int rc;
    if (opts && (rc = cx_options_copy(o, opts, options_versions, CX_COUNT(options_versions), fn))) return rc;
    return check_options(o, fn);
}

int cx_feature_stats_make(circuits_feature_stats **out, int64_t d_sae, const circuits_feature_stats_options *o,
                          const char *hook_name, const char *architecture, bool transcoder, const char *fn)
{
    *out = NULL;
    int rc = check_options(o, fn);
    return rc ? rc : make(out, d_sae, o, hook_name, architecture, transcoder, fn);
}

int cx_feature_stats_set_row_base(circuits_feature_stats *st, int64_t row0, const char *fn)
{
    if (st->n_rows || row0 < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: rows can be renumbered only before any is added (row %lld)",
                       fn, (long long)row0);
    st->row_base = row0;
    return CIRCUITS_OK;
}

int circuits_feature_stats_create(circuits_feature_stats **out, const circuits_sae *sae,
                                  const circuits_feature_stats_options *opts)
{
    const char *fn = "circuits_feature_stats_create";
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out is NULL", fn);
    *out = NULL;
    if (!sae) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: sae is NULL", fn);
    circuits_feature_stats_options o;
    int rc;
    if ((rc = cx_feature_stats_options_resolve(&o, opts, fn))) return rc;
    if ((rc = make(out, sae->d_sae, &o, sae->hook_name, sae->arch_name, sae->transcoder, fn))) return rc;
    (*out)->sae = sae;
    return CIRCUITS_OK;
}

/* ---- adding a batch ---- */

/* The editor: copies the point's activation of the batch (it only reads). */
typedef struct grab {
    float *dst;
    size_t numel;
} grab;

static int grab_point(const circuits_tensor *t, void *user)
{
    grab *g = user;
    memcpy(g->dst, t->data, g->numel * sizeof(float));
    return CIRCUITS_HOOK_CONTINUE;
}

/* One chunk of counted tokens: post [n, d_sae], their rows (in the batch) and positions. */
typedef struct chunk_job {
    circuits_feature_stats *st;
    const float *post;
    int64_t n;
    const int64_t *b, *t;  /* [n] batch row and position of each chunk row */
    const int32_t *tokens; /* [batch, pos] */
    int64_t pos, row0;     /* positions per row; the dataset row number of batch row 0 */
} chunk_job;

/* Latent j's top contexts get (v, row, position, the window around it), v > gate[j]. */
static void insert(circuits_feature_stats *st, int64_t j, float v, int64_t row, int64_t p, const int32_t *toks,
                   int64_t pos)
{
    int32_t k = st->k, cnt = st->n_top[j], W = st->W;
    float *val = st->top_val + j * k;
    int64_t *rows = st->top_row + j * k, *ps = st->top_pos + j * k;
    int32_t *win = st->top_win + j * k * W;
    int32_t i = 0;
    while (i < cnt && val[i] >= v) i++; /* equal values kept earlier come first: (row, position) */
    int32_t last = cnt < k ? cnt : k - 1; /* the slot the shift ends in (the k-th drops out) */
    for (int32_t m = last; m > i; m--) {
        val[m] = val[m - 1];
        rows[m] = rows[m - 1];
        ps[m] = ps[m - 1];
        memcpy(win + (size_t)m * W, win + (size_t)(m - 1) * W, (size_t)W * sizeof *win);
    }
    val[i] = v;
    rows[i] = row;
    ps[i] = p;
    int32_t *w = win + (size_t)i * W;
    for (int32_t q = 0; q < W; q++) {
        int64_t at = p - st->o.context_left + q;
        w[q] = at >= 0 && at < pos ? toks[at] : -1;
    }
    if (cnt < k) st->n_top[j] = ++cnt;
    if (cnt == k) st->gate[j] = val[k - 1];
}

static void chunk_task(void *arg, int64_t j0, int64_t j1)
{
    const chunk_job *c = arg;
    circuits_feature_stats *st = c->st;
    int64_t d = st->d_sae;
    float thr = st->o.threshold;
    int64_t *fires = st->fires;
    double *sum = st->sum;
    float *mx = st->max;
    const float *gate = st->gate;
    for (int64_t i = 0; i < c->n; i++) {
        const float *r = c->post + i * d;
        for (int64_t j = j0; j < j1; j++) {
            float v = r[j];
            sum[j] += (double)v;
            mx[j] = v > mx[j] ? v : mx[j];
            fires[j] += v > thr;
        }
        if (!st->k) continue;
        for (int64_t j = j0; j < j1; j++)
            if (r[j] > gate[j])
                insert(st, j, r[j], c->row0 + c->b[i], c->t[i], c->tokens + c->b[i] * c->pos, c->pos);
    }
}

/* Rows per chunk: pre and post of a chunk stay near 16 MiB whatever d_sae. */
static int64_t chunk_rows(int64_t d_sae)
{
    int64_t n = ((int64_t)1 << 21) / d_sae;
    n = n / 16 * 16;
    return n < 16 ? 16 : n > 512 ? 512 : n;
}

/* The SAE's hook point in ctx: the model's own, as wide as the SAE reads. */
static int sae_point(const circuits_context *ctx, const circuits_sae *s, const char *fn, const cx_hook_point **out)
{
    for (size_t i = 0; i < ctx->n_saes; i++)
        if (strcmp(ctx->saes[i].sae->hook_name_out, s->hook_name) == 0)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: '%s' is replaced by an attached SAE (its name now names the "
                           "SAE's hook_sae_* points): detach it (circuits_context_remove_sae) to collect statistics "
                           "there", fn, s->hook_name);
    int32_t idx;
    int rc = cx_hook_one(ctx, fn, s->hook_name, &idx);
    if (rc) return rc;
    const cx_hook_point *p = &ctx->hooks.points[idx];
    int64_t sh[CIRCUITS_MAX_DIMS];
    int32_t ha;
    int nd = cx_hook_shape(ctx, p, 1, 1, 0, sh, &ha);
    if (p->kind == HK_TOKENS)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: '%s' holds token ids, not activations", fn, p->name);
    if (!s->reshape_hook_z && nd != 3)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: '%s' has %d axes; an SAE reads [batch, pos, d] points (hook_z with "
                       "reshape_activations 'hook_z' excepted)", fn, p->name, nd);
    if (s->reshape_hook_z && p->kind != HK_Z)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: reshape_activations 'hook_z' at '%s' (SAELens allows it at attn.hook_z "
                       "only)", fn, p->name);
    if (s->reshape_hook_z ? sh[2] * sh[3] != s->d_in : sh[2] != s->d_in)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the SAE reads %lld values per token at '%s'%s, which has %lld", fn,
                       (long long)s->d_in, p->name, s->reshape_hook_z ? " (hook_z read flat)" : "",
                       (long long)(nd == 4 ? sh[2] * sh[3] : nd == 3 ? sh[2] : 0));
    *out = p;
    return CIRCUITS_OK;
}

int cx_feature_stats_check_point(const circuits_context *ctx, const circuits_sae *s, const char *fn)
{
    const cx_hook_point *p;
    return sae_point(ctx, s, fn, &p);
}

int circuits_context_feature_stats_add(circuits_context *ctx, circuits_feature_stats *st, const int32_t *tokens,
                                       int64_t batch, int64_t pos)
{
    const char *fn = "circuits_context_feature_stats_add";
    if (!ctx || !st || !tokens)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, st and tokens must not be NULL", fn);
    if (!st->sae)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: statistics loaded from a file have no SAE: nothing can be added "
                       "to them", fn);
    if (st->broken)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: an earlier add failed part-way: these statistics are "
                       "incomplete", fn);
    const circuits_config *c = &ctx->model->cfg;
    int rc = cx_tokens_shape_check(c, batch, pos, fn);
    if (rc) return rc;
    const circuits_sae *s = st->sae;
    const cx_hook_point *p = NULL;
    if ((rc = sae_point(ctx, s, fn, &p))) return rc;
    size_t N, numel;
    if (!cx_mul_size((size_t)batch, (size_t)pos, &N) || !cx_mul_size(N, (size_t)s->d_in, &numel) ||
        !cx_mul_size(numel, sizeof(float), &(size_t){0}) || st->row_base + st->n_rows > INT64_MAX - batch)
        return cx_fail(CIRCUITS_E_RANGE, "%s: a batch of %lld x %lld is too large", fn, (long long)batch,
                       (long long)pos);
    int64_t skip = st->o.skip_positions < pos ? st->o.skip_positions : pos;
    int64_t counted = batch * (pos - skip), CH = chunk_rows(s->d_sae);
    float *acts = cx_malloc(numel * sizeof(float));
    float *x = cx_malloc((size_t)CH * (size_t)s->d_in * sizeof(float));
    float *coeff = cx_malloc((size_t)CH * 2 * sizeof(float));
    float *pre = cx_malloc((size_t)CH * (size_t)s->d_sae * sizeof(float));
    float *post = cx_malloc((size_t)CH * (size_t)s->d_sae * sizeof(float));
    int64_t *bt = cx_malloc((size_t)CH * 2 * sizeof(int64_t));
    if (!acts || !x || !coeff || !pre || !post || !bt) {
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        goto done;
    }
    /* One pass per row: BLAS products give a row bits that depend on how many rows share the
     * product, so a row always runs alone (and is encoded in chunks that start at its first
     * counted position), and the statistics do not depend on how the dataset is batched. The
     * activations of all rows are kept until every pass has succeeded: a failed add changes
     * nothing. */
    size_t row_numel = numel / (size_t)batch;
    grab g = {acts, row_numel};
    cx_edit edit = {p->layer, p->kind, grab_point, &g, true, 0}; /* the value run_with_cache keeps */
    cx_edit_point(ctx, p, &edit);
    /* the blocks the point needs: up to its own; all of them for a point after the last block */
    int32_t stop = p->layer >= 0 ? p->layer + 1 : p->kind >= HK_LNF_SCALE ? c->n_layers + 1 : 0;
    /* blocks.L.hook_resid_pre with nothing registered there is the value blocks.(L-1).hook_resid_post
     * passed on (after its callbacks, or its SAE's output): read that, and block L need not run */
    int32_t prev = p->kind == HK_RESID_PRE && p->layer > 0 ? cx_hook_index(&ctx->hooks, p->layer - 1, HK_RESID_POST) : -1;
    if (prev >= 0 && p->n_regs == 0 && p->sae < 0) {
        edit.layer = p->layer - 1;
        edit.kind = HK_RESID_POST;
        stop = p->layer;
    }
    for (int64_t b = 0; b < batch && !rc; b++) {
        cx_run r = cx_run_init(ctx, fn, tokens + b * pos, 1, pos);
        r.edits = &edit;
        r.n_edits = 1;
        if (stop <= c->n_layers) {
            r.stop = stop;
            r.stop_at_layer = true;
        }
        g.dst = acts + (size_t)b * row_numel;
        rc = cx_context_run(ctx, &r);
    }
    if (rc) goto done;
    /* encode the counted tokens a chunk at a time, in the dataset's order */
    int64_t *cb = bt, *ct = bt + CH;
    for (int64_t b = 0; b < batch && !rc; b++)
        for (int64_t t0 = skip; t0 < pos && !rc; t0 += CH) {
            int64_t n = pos - t0 < CH ? pos - t0 : CH;
            memcpy(x, acts + (size_t)(b * pos + t0) * s->d_in, (size_t)(n * s->d_in) * sizeof(float));
            for (int64_t i = 0; i < n; i++) cb[i] = b, ct[i] = t0 + i;
            if (!(rc = cx_sae_input(s, x, n, coeff)) && !(rc = cx_sae_pre(s, x, n, pre)) &&
                !(rc = cx_sae_post(s, x, pre, n, post))) {
                chunk_job job = {st, post, n, cb, ct, tokens, pos, st->row_base + st->n_rows};
                cx_parallel_for(s->d_sae, 64, chunk_task, &job);
            }
        }
    if (rc) {
        /* the encoder's pieces compute on buffers given to them and have no failure this can
         * reach; if one ever did, the statistics hold part of a batch: say so, never hide it */
        st->broken = true;
        cx_fail(rc, "%s: encoding failed part-way; these statistics are incomplete and accept no more batches", fn);
        goto done;
    }
    st->n_rows += batch;
    st->n_tokens += counted;
done:
    cx_free(acts);
    cx_free(x);
    cx_free(coeff);
    cx_free(pre);
    cx_free(post);
    cx_free(bt);
    return rc;
}

/* ---- reading ---- */

int circuits_feature_stats_dims(const circuits_feature_stats *st, int64_t *n_tokens, int64_t *d_sae, int32_t *top_k,
                                int32_t *window)
{
    if (!st) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_feature_stats_dims: st is NULL");
    if (n_tokens) *n_tokens = st->n_tokens;
    if (d_sae) *d_sae = st->d_sae;
    if (top_k) *top_k = st->k;
    if (window) *window = st->W;
    return CIRCUITS_OK;
}

int circuits_feature_stats_get_options(const circuits_feature_stats *st, circuits_feature_stats_options *out)
{
    const char *fn = "circuits_feature_stats_get_options";
    if (!st || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: st and out must not be NULL", fn);
    int rc = cx_struct_size_check(out->size, options_versions, CX_COUNT(options_versions), fn, true);
    if (rc) return rc;
    uint32_t size = out->size;
    size_t n = size < sizeof st->o ? size : sizeof st->o;
    memcpy(out, &st->o, n);
    out->size = (uint32_t)n;
    return CIRCUITS_OK;
}

int circuits_feature_stats_get(const circuits_feature_stats *st, float *frequency, float *mean, float *max)
{
    if (!st) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_feature_stats_get: st is NULL");
    double n = (double)st->n_tokens;
    for (int64_t j = 0; j < st->d_sae; j++) {
        if (frequency) frequency[j] = n > 0 ? (float)((double)st->fires[j] / n) : 0.0f;
        if (mean) mean[j] = n > 0 ? (float)(st->sum[j] / n) : 0.0f;
        if (max) max[j] = n > 0 ? st->max[j] : 0.0f;
    }
    return CIRCUITS_OK;
}

int circuits_feature_stats_top(const circuits_feature_stats *st, int64_t latent, float *values, int64_t *rows,
                               int64_t *positions, int32_t *windows, int32_t *count)
{
    const char *fn = "circuits_feature_stats_top";
    if (!st) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: st is NULL", fn);
    if (latent < 0 || latent >= st->d_sae)
        return cx_fail(CIRCUITS_E_RANGE, "%s: latent %lld is not in 0 .. %lld", fn, (long long)latent,
                       (long long)st->d_sae - 1);
    int32_t k = st->k, W = st->W, cnt = st->n_top[latent];
    for (int32_t i = 0; i < k; i++) { /* slots past the count: 0 and -1 */
        size_t at = (size_t)latent * k + i;
        if (values) values[i] = i < cnt ? st->top_val[at] : 0.0f;
        if (rows) rows[i] = i < cnt ? st->top_row[at] : -1;
        if (positions) positions[i] = i < cnt ? st->top_pos[at] : -1;
        for (int32_t q = 0; windows && q < W; q++) windows[(size_t)i * W + q] = i < cnt ? st->top_win[at * W + q] : -1;
    }
    if (count) *count = cnt;
    return CIRCUITS_OK;
}

/* ---- the file ---- */

void cx_feature_stats_tensors(const circuits_feature_stats *st, cx_st_out *t)
{
    int64_t d = st->d_sae, k = st->k, W = st->W;
    cx_st_out all[CX_FEATURE_STATS_TENSORS] = {
        {"fire_count", CX_DT_I64, 1, {d}, st->fires},
        {"act_sum", CX_DT_F64, 1, {d}, st->sum},
        {"act_max", CX_DT_F32, 1, {d}, st->max},
        {"top_count", CX_DT_I32, 1, {d}, st->n_top},
        {"top_values", CX_DT_F32, 2, {d, k}, st->top_val},
        {"top_rows", CX_DT_I64, 2, {d, k}, st->top_row},
        {"top_positions", CX_DT_I64, 2, {d, k}, st->top_pos},
        {"top_windows", CX_DT_I32, 3, {d, k, W}, st->top_win},
    };
    memcpy(t, all, sizeof all);
}

int cx_feature_stats_write(const circuits_feature_stats *st, const char *path, const char *const *extra,
                           size_t n_extra, const char *fn)
{
    if (st->row_base)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: statistics of rows numbered from %lld cannot be saved (the "
                       "file's rows start at 0)", fn, (long long)st->row_base);
    cx_st_out t[CX_FEATURE_STATS_TENSORS];
    cx_feature_stats_tensors(st, t);
    char num[7][32];
    snprintf(num[0], sizeof num[0], "%lld", (long long)st->n_tokens);
    snprintf(num[1], sizeof num[1], "%lld", (long long)st->n_rows);
    snprintf(num[2], sizeof num[2], "%lld", (long long)st->d_sae);
    snprintf(num[3], sizeof num[3], "%d", (int)st->k);
    snprintf(num[4], sizeof num[4], "%d", (int)st->o.context_left);
    snprintf(num[5], sizeof num[5], "%d", (int)st->o.context_right);
    snprintf(num[6], sizeof num[6], "%d", (int)st->o.skip_positions);
    char thr[48];
    snprintf(thr, sizeof thr, "%.9g", (double)st->o.threshold); /* 9 digits: a float read back exactly */
    const char *base[] = {
        "format", FORMAT_NAME, "format_version", FORMAT_VERSION, "n_tokens", num[0], "n_rows", num[1],
        "d_sae", num[2], "top_k", num[3], "context_left", num[4], "context_right", num[5], "threshold", thr,
        "skip_positions", num[6], "hook_name", st->hook_name, "architecture", st->architecture,
        "transcoder", st->transcoder ? "true" : "false", "library_version", CIRCUITS_VERSION_STRING,
    };
    size_t nb = CX_COUNT(base);
    const char **meta = cx_malloc((nb + 2 * n_extra) * sizeof *meta);
    if (!meta) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    memcpy(meta, base, sizeof base);
    if (n_extra) memcpy(meta + nb, extra, 2 * n_extra * sizeof *meta);
    int rc = cx_st_write(path, t, CX_FEATURE_STATS_TENSORS, meta, nb / 2 + n_extra, fn);
    cx_free(meta);
    return rc;
}

int circuits_feature_stats_save(const circuits_feature_stats *st, const char *path)
{
    const char *fn = "circuits_feature_stats_save";
    if (!st || !path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: st and path must not be NULL", fn);
    return cx_feature_stats_write(st, path, NULL, 0, fn);
}

/* Metadata string `key`, or a FORMAT failure naming it. */
static int meta_str(json_t *md, const char *key, const char *path, const char **out, const char *fn)
{
    json_t *v = json_object_get(md, key);
    if (!json_is_string(v))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: metadata '%s' is missing or not a string", fn, path, key);
    *out = json_string_value(v);
    return CIRCUITS_OK;
}

/* Metadata integer `key` (decimal digits, optional '-') within [lo, hi]. */
static int meta_int(json_t *md, const char *key, int64_t lo, int64_t hi, const char *path, int64_t *out,
                    const char *fn)
{
    const char *s = NULL;
    int rc = meta_str(md, key, path, &s, fn);
    if (rc) return rc;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: metadata '%s' is \"%.40s\", not an integer in %lld .. %lld", fn,
                       path, key, s, (long long)lo, (long long)hi);
    *out = v;
    return CIRCUITS_OK;
}

/* Tensor `name` with exactly this dtype and shape. */
static int want(const cx_st_set *set, const char *name, cx_dtype dt, int ndim, const int64_t *shape,
                const char *path, const cx_st_tensor **out, const char *fn)
{
    cx_st_tensor *t = cx_st_find(set, name);
    if (!t) return cx_fail(CIRCUITS_E_TENSOR_MISSING, "%s: %s has no tensor '%s'", fn, path, name);
    if (t->dtype != dt)
        return cx_fail(CIRCUITS_E_DTYPE, "%s: %s: '%s' is %s, not %s", fn, path, name, cx_dtype_name(t->dtype),
                       cx_dtype_name(dt));
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char got[128] = "", exp[128] = "";
        size_t a = 0, b = 0;
        for (int d = 0; d < t->ndim && a < sizeof got; d++)
            a += (size_t)snprintf(got + a, sizeof got - a, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        for (int d = 0; d < ndim && b < sizeof exp; d++)
            b += (size_t)snprintf(exp + b, sizeof exp - b, "%s%lld", d ? ", " : "", (long long)shape[d]);
        return cx_fail(CIRCUITS_E_SHAPE, "%s: %s: '%s' is [%s], not [%s] as the metadata says", fn, path, name, got,
                       exp);
    }
    t->used = true;
    *out = t;
    return CIRCUITS_OK;
}

/* Little-endian element copies out of the file's image. */
static void copy_le(void *dst, const unsigned char *src, size_t n, size_t size)
{
    unsigned char *d = dst;
    const uint16_t one = 1;
    if (*(const uint8_t *)&one == 1) {
        memcpy(d, src, n * size);
        return;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < size; j++) d[i * size + j] = src[i * size + size - 1 - j];
}

/* The contents' own consistency: counts within the token count, the top contexts ordered and in
 * the rows and positions counted, windows of token ids or -1. */
static int check_contents(const circuits_feature_stats *st, const char *path, const char *fn)
{
    int32_t k = st->k, W = st->W;
    for (int64_t j = 0; j < st->d_sae; j++) {
        if (st->fires[j] < 0 || st->fires[j] > st->n_tokens)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: fire_count[%lld] = %lld is not in 0 .. n_tokens %lld", fn, path,
                           (long long)j, (long long)st->fires[j], (long long)st->n_tokens);
        int32_t cnt = st->n_top[j];
        if (cnt < 0 || cnt > k || cnt > st->fires[j])
            return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: top_count[%lld] = %d is not in 0 .. min(top_k, fire_count)", fn,
                           path, (long long)j, (int)cnt);
        for (int32_t i = 0; i < k; i++) {
            size_t at = (size_t)j * k + i;
            if (i >= cnt) continue;
            float v = st->top_val[at];
            int64_t r = st->top_row[at], p = st->top_pos[at];
            bool ordered = i == 0 || st->top_val[at - 1] > v ||
                           (st->top_val[at - 1] == v && (st->top_row[at - 1] < r ||
                                                         (st->top_row[at - 1] == r && st->top_pos[at - 1] < p)));
            if (!(v > st->o.threshold) || !(v <= st->max[j]) || !ordered)
                return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: top_values[%lld, %d] = %g is not above the threshold, at most "
                               "act_max and in order", fn, path, (long long)j, (int)i, (double)v);
            if (r < st->row_base || r - st->row_base >= st->n_rows || p < st->o.skip_positions || p > INT32_MAX) {
                char rows[64] = ""; /* a unit's rows do not start at 0: say where they start */
                if (st->row_base) snprintf(rows, sizeof rows, " from row %lld", (long long)st->row_base);
                return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: top context %d of latent %lld is at row %lld position %lld, "
                               "outside the %lld rows%s and the positions counted", fn, path, (int)i, (long long)j,
                               (long long)r, (long long)p, (long long)st->n_rows, rows);
            }
            for (int32_t q = 0; q < W; q++)
                if (st->top_win[at * W + q] < -1)
                    return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: top_windows[%lld, %d, %d] = %d is neither a token id "
                                   "nor -1", fn, path, (long long)j, (int)i, (int)q, (int)st->top_win[at * W + q]);
        }
        st->gate[j] = cnt == k && k ? st->top_val[(size_t)j * k + k - 1] : st->o.threshold;
    }
    return CIRCUITS_OK;
}

int cx_feature_stats_read(circuits_feature_stats *st, const cx_st_set *set, const char *path, int64_t n_tokens,
                          int64_t n_rows, int64_t row_base, const char *fn)
{
    st->n_tokens = n_tokens;
    st->n_rows = n_rows;
    st->row_base = row_base;
    cx_st_out o[CX_FEATURE_STATS_TENSORS];
    cx_feature_stats_tensors(st, o);
    const cx_st_tensor *t[CX_FEATURE_STATS_TENSORS];
    int rc;
    for (int i = 0; i < CX_FEATURE_STATS_TENSORS; i++)
        if ((rc = want(set, o[i].name, o[i].dtype, o[i].ndim, o[i].shape, path, &t[i], fn))) return rc;
    for (int i = 0; i < CX_FEATURE_STATS_TENSORS; i++)
        copy_le((void *)o[i].data, t[i]->data, t[i]->numel, cx_dtype_size(t[i]->dtype));
    if (n_tokens == 0)
        for (int64_t j = 0; j < st->d_sae; j++) st->max[j] = -INFINITY; /* as made; the file holds what get() gives */
    return check_contents(st, path, fn);
}

/* True if context (va, ra, pa) comes before (vb, rb, pb) in the top contexts' total order. */
static bool before(float va, int64_t ra, int64_t pa, float vb, int64_t rb, int64_t pb)
{
    return va > vb || (va == vb && (ra < rb || (ra == rb && pa < pb)));
}

int cx_feature_stats_merge(circuits_feature_stats *dst, const circuits_feature_stats *src, const char *fn)
{
    const circuits_feature_stats_options *a = &dst->o, *b = &src->o;
    if (dst->d_sae != src->d_sae || a->top_k != b->top_k || a->context_left != b->context_left ||
        a->context_right != b->context_right || memcmp(&a->threshold, &b->threshold, sizeof a->threshold) != 0 ||
        a->skip_positions != b->skip_positions)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: merging feature statistics of other latents or options", fn);
    if (dst->broken || src->broken)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: merging incomplete feature statistics", fn);
    if (src->row_base != dst->row_base + dst->n_rows)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: merging rows from %lld after rows %lld .. %lld: rows must "
                       "follow on", fn, (long long)src->row_base, (long long)dst->row_base,
                       (long long)(dst->row_base + dst->n_rows));
    if (src->n_tokens > INT64_MAX - dst->n_tokens || src->n_rows > INT64_MAX - dst->n_rows - dst->row_base)
        return cx_fail(CIRCUITS_E_RANGE, "%s: the merged token count overflows", fn);
    int32_t k = dst->k, W = dst->W;
    size_t kk = k ? (size_t)k : 1;
    float *val = cx_malloc(kk * sizeof *val);
    int64_t *row = cx_malloc(kk * 2 * sizeof *row), *ps = row + kk;
    int32_t *win = cx_malloc(kk * (size_t)W * sizeof *win);
    if (!val || !row || !win) {
        cx_free(val), cx_free(row), cx_free(win);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    for (int64_t j = 0; j < dst->d_sae; j++) {
        dst->fires[j] += src->fires[j];
        dst->sum[j] += src->sum[j];
        dst->max[j] = src->max[j] > dst->max[j] ? src->max[j] : dst->max[j];
        /* the two lists are each in the total order: their merge truncated at k is the top k of
         * the union, what one pass over both sets of rows keeps */
        size_t at = (size_t)j * k;
        int32_t na = dst->n_top[j], nb = src->n_top[j], ia = 0, ib = 0, n = 0;
        while (n < k && (ia < na || ib < nb)) {
            bool take_a = ib >= nb || (ia < na && before(dst->top_val[at + ia], dst->top_row[at + ia],
                                                         dst->top_pos[at + ia], src->top_val[at + ib],
                                                         src->top_row[at + ib], src->top_pos[at + ib]));
            const circuits_feature_stats *f = take_a ? dst : src;
            size_t from = at + (size_t)(take_a ? ia++ : ib++);
            val[n] = f->top_val[from];
            row[n] = f->top_row[from];
            ps[n] = f->top_pos[from];
            memcpy(win + (size_t)n * W, f->top_win + from * W, (size_t)W * sizeof *win);
            n++;
        }
        memcpy(dst->top_val + at, val, (size_t)n * sizeof *val);
        memcpy(dst->top_row + at, row, (size_t)n * sizeof *row);
        memcpy(dst->top_pos + at, ps, (size_t)n * sizeof *ps);
        memcpy(dst->top_win + at * W, win, (size_t)n * W * sizeof *win);
        dst->n_top[j] = n;
        dst->gate[j] = n == k && k ? val[k - 1] : dst->o.threshold;
    }
    dst->n_tokens += src->n_tokens;
    dst->n_rows += src->n_rows;
    cx_free(val), cx_free(row), cx_free(win);
    return CIRCUITS_OK;
}

int circuits_feature_stats_load(circuits_feature_stats **out, const char *path)
{
    const char *fn = "circuits_feature_stats_load";
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out is NULL", fn);
    *out = NULL;
    if (!path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: path is NULL", fn);
    cx_st_set *set = NULL;
    json_t *md = NULL;
    circuits_feature_stats *st = NULL;
    int rc = cx_st_open(&set, path, CX_ST_READ);
    if (rc) return rc;
    if ((rc = cx_st_metadata(&set->maps[0], &md, fn))) goto done;
    const char *format = NULL, *version = NULL, *hook = NULL, *arch = NULL, *transcoder = NULL;
    if (!md) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s has no __metadata__: not a feature statistics file", fn, path);
        goto done;
    }
    if ((rc = meta_str(md, "format", path, &format, fn))) goto done;
    if (strcmp(format, FORMAT_NAME) != 0) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: metadata format is \"%.40s\", not \"" FORMAT_NAME "\"", fn, path, format);
        goto done;
    }
    if ((rc = meta_str(md, "format_version", path, &version, fn))) goto done;
    if (strcmp(version, FORMAT_VERSION) != 0) {
        rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s: format_version \"%.40s\" (this library reads " FORMAT_VERSION ")",
                     fn, path, version);
        goto done;
    }
    int64_t n_tokens, n_rows, d_sae, k, left, right, skip;
    const char *thr_s = NULL;
    if ((rc = meta_int(md, "n_tokens", 0, INT64_MAX, path, &n_tokens, fn)) ||
        (rc = meta_int(md, "n_rows", 0, INT64_MAX, path, &n_rows, fn)) ||
        (rc = meta_int(md, "d_sae", 1, INT32_MAX, path, &d_sae, fn)) ||
        (rc = meta_int(md, "top_k", 0, MAX_TOP_K, path, &k, fn)) ||
        (rc = meta_int(md, "context_left", 0, MAX_CONTEXT, path, &left, fn)) ||
        (rc = meta_int(md, "context_right", 0, MAX_CONTEXT, path, &right, fn)) ||
        (rc = meta_int(md, "skip_positions", 0, INT32_MAX, path, &skip, fn)) ||
        (rc = meta_str(md, "threshold", path, &thr_s, fn)) || (rc = meta_str(md, "hook_name", path, &hook, fn)) ||
        (rc = meta_str(md, "architecture", path, &arch, fn)) || (rc = meta_str(md, "transcoder", path, &transcoder, fn)))
        goto done;
    char *end;
    float thr = strtof(thr_s, &end);
    if (!*thr_s || *end || !isfinite(thr)) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: metadata 'threshold' is \"%.40s\", not a finite number", fn, path, thr_s);
        goto done;
    }
    if (strcmp(transcoder, "true") != 0 && strcmp(transcoder, "false") != 0) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: metadata 'transcoder' is \"%.40s\", not true or false", fn, path,
                     transcoder);
        goto done;
    }
    circuits_feature_stats_options o;
    circuits_feature_stats_options_init(&o);
    o.top_k = (int32_t)k;
    o.context_left = (int32_t)left;
    o.context_right = (int32_t)right;
    o.threshold = thr;
    o.skip_positions = (int32_t)skip;
    if ((rc = make(&st, d_sae, &o, hook, arch, strcmp(transcoder, "true") == 0, fn))) goto done;
    if ((rc = cx_feature_stats_read(st, set, path, n_tokens, n_rows, 0, fn))) goto done;
    for (size_t i = 0; i < set->n_tensors; i++)
        if (!set->tensors[i].used) {
            rc = cx_fail(CIRCUITS_E_TENSOR_UNEXPECTED, "%s: %s: unexpected tensor '%s'", fn, path, set->tensors[i].name);
            goto done;
        }
    *out = st;
    st = NULL;
done:
    circuits_feature_stats_free(st);
    json_decref(md);
    cx_st_close(set);
    return rc;
}
