/* Splicing SAEs into a context (circuits_context_add_sae; docs/saes.md "Splicing"): the hook
 * points an attachment adds and removes, their firing order, the values each one sees against a
 * double-precision SAE written here, the error term (with and without an edited latent), several
 * SAEs at once, a transcoder, registrations across attach and detach, generation with a KV cache,
 * the run memory, and the refusals. The numbers against SAELens itself: test_sae_reference.
 * Usage: test_sae_splice MODEL_DIR (examples/models/mlp-2l). */
#include "catalogue.h"
#include "st_write.h"
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_model_dir;
static char g_root[] = "/tmp/circuits_sae_splice_XXXXXX";
static int64_t D, S = 48, DM; /* d_model, d_sae, d_mlp */

/* ---- SAEs written as SAELens saves them ---- */

typedef struct sae_w {
    float *W_enc, *W_dec, *b_enc, *b_dec; /* [d_in, S], [S, d_out], [S], [d_out] */
    int64_t d_in, d_out;
} sae_w;

static uint64_t g_rng = 12345;
static float rnd(void) /* uniform in [-1, 1) */
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

static sae_w make_w(int64_t d_in, int64_t d_out, float scale)
{
    sae_w w = {malloc(sizeof(float) * d_in * S), malloc(sizeof(float) * S * d_out), malloc(sizeof(float) * S),
               malloc(sizeof(float) * d_out), d_in, d_out};
    for (int64_t i = 0; i < d_in * S; i++) w.W_enc[i] = scale * rnd();
    for (int64_t i = 0; i < S * d_out; i++) w.W_dec[i] = 0.2f * rnd();
    for (int64_t i = 0; i < S; i++) w.b_enc[i] = 0.1f * rnd();
    for (int64_t i = 0; i < d_out; i++) w.b_dec[i] = 0.1f * rnd();
    return w;
}

static void free_w(sae_w *w)
{
    free(w->W_enc), free(w->W_dec), free(w->b_enc), free(w->b_dec);
}

/* Writes a standard SAE (or transcoder, when hook_out is given) directory; returns its path. */
static const char *write_sae(const char *name, const sae_w *w, const char *hook, const char *hook_out, int64_t d_in_cfg)
{
    static char dirs[8][512];
    static int next;
    char *dir = dirs[next++ % 8];
    snprintf(dir, 512, "%s/%s", g_root, name);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    char path[600];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(2); }
    if (hook_out)
        fprintf(f, "{\"d_in\": %lld, \"d_sae\": %lld, \"d_out\": %lld, \"dtype\": \"float32\", \"device\": \"cpu\", "
                "\"apply_b_dec_to_input\": false, \"normalize_activations\": \"none\", \"reshape_activations\": "
                "\"none\", \"metadata\": {\"sae_lens_version\": \"6.54.12\", \"hook_name\": \"%s\", \"hook_name_out\": \"%s\"}, \"architecture\": "
                "\"transcoder\"}", (long long)d_in_cfg, (long long)S, (long long)w->d_out, hook, hook_out);
    else
        fprintf(f, "{\"d_in\": %lld, \"d_sae\": %lld, \"dtype\": \"float32\", \"device\": \"cpu\", "
                "\"apply_b_dec_to_input\": true, \"normalize_activations\": \"none\", \"reshape_activations\": "
                "\"none\", \"metadata\": {\"sae_lens_version\": \"6.54.12\", \"hook_name\": \"%s\"}, "
                "\"architecture\": \"standard\"}", (long long)d_in_cfg, (long long)S, hook);
    fclose(f);
    st_entry t[4] = {{"W_dec", 2, {S, w->d_out}, w->W_dec}, {"W_enc", 2, {w->d_in, S}, w->W_enc},
                     {"b_dec", 1, {w->d_out}, w->b_dec}, {"b_enc", 1, {S}, w->b_enc}};
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    st_write(path, t, 4);
    return dir;
}

/* The SAE in double precision on one row: pre, post [S], out [d_out]. Standard: the input minus
 * b_dec (apply_b_dec_to_input) for an SAE, as is for the transcoder written above. */
static void ref_sae(const sae_w *w, bool sub_b_dec, const float *x, double *pre, double *post, double *out,
                    int64_t zero_latent)
{
    for (int64_t j = 0; j < S; j++) {
        double h = w->b_enc[j];
        for (int64_t i = 0; i < w->d_in; i++) h += ((double)x[i] - (sub_b_dec ? w->b_dec[i] : 0.0)) * w->W_enc[i * S + j];
        pre[j] = h;
        post[j] = h > 0 ? h : 0;
        if (j == zero_latent) post[j] = 0;
    }
    for (int64_t k = 0; k < w->d_out; k++) {
        double o = w->b_dec[k];
        for (int64_t j = 0; j < S; j++) o += post[j] * w->W_dec[j * w->d_out + k];
        out[k] = o;
    }
}

/* ---- hooks used below ---- */

typedef struct order_rec {
    char names[16][128];
    int n;
    const float *data[16];
} order_rec;

static int record(const circuits_tensor *t, void *u)
{
    order_rec *r = u;
    if (r->n < 16) {
        snprintf(r->names[r->n], 128, "%s", t->name);
        r->data[r->n] = t->data;
    }
    r->n++;
    return CIRCUITS_HOOK_CONTINUE;
}

static int zero_latent_3(const circuits_tensor *t, void *u)
{
    (void)u;
    int64_t rows = t->shape[0] * t->shape[1];
    for (int64_t r = 0; r < rows; r++) t->data[r * t->shape[2] + 3] = 0.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

typedef struct nested {
    circuits_context *ctx;
    const circuits_sae *sae;
    int rc;
} nested;

static int add_from_callback(const circuits_tensor *t, void *u)
{
    (void)t;
    nested *n = u;
    n->rc = circuits_context_add_sae(n->ctx, n->sae, 0);
    return CIRCUITS_HOOK_CONTINUE;
}

static float max_diff(const float *a, const float *b, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

static const float *cache_data(const circuits_cache *c, const char *name, size_t *numel)
{
    circuits_tensor t;
    if (circuits_cache_get(c, name, &t)) {
        CHECK(0, "cache lacks %s (%s)", name, circuits_last_error());
        return NULL;
    }
    size_t n = 1;
    for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
    if (numel) *numel = n;
    return t.data;
}

enum { B = 2, T = 7 };

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    cat_verbose = argc > 2 && strcmp(argv[2], "-v") == 0;
    g_model_dir = argv[1];
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = g_root;
    circuits_model *m;
    CHECK_OK(circuits_model_load(&m, g_model_dir, NULL));
    if (!m) return tu_finish("test_sae_splice");
    circuits_config cfg = {.size = sizeof cfg};
    CHECK_OK(circuits_model_config(m, &cfg));
    D = cfg.d_model, DM = cfg.d_mlp;
    int64_t V = cfg.d_vocab_out;
    int32_t tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (i * 37 + 11) % cfg.d_vocab;

    circuits_context *ctx;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    size_t n_points0 = circuits_context_hook_point_count(ctx);
    float *logits0 = malloc(sizeof(float) * B * T * V), *logits = malloc(sizeof(float) * B * T * V);
    circuits_cache *plain, *cache;
    CHECK_OK(circuits_cache_create(&plain));
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, plain, logits0, NULL, NULL));

    sae_w w0 = make_w(D, D, 0.3f), w1 = make_w(D, D, 0.3f), wt = make_w(D, D, 0.3f);
    const char *d0 = write_sae("sae0", &w0, "blocks.0.hook_resid_post", NULL, D);
    const char *d1 = write_sae("sae1", &w1, "blocks.1.hook_mlp_out", NULL, D);
    const char *dt = write_sae("tc", &wt, "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", D);
    circuits_sae *s0 = NULL, *s1 = NULL, *st = NULL;
    CHECK_OK(circuits_sae_load(&s0, d0));
    CHECK_OK(circuits_sae_load(&s1, d1));
    CHECK_OK(circuits_sae_load(&st, dt));
    if (!s0 || !s1 || !st) return tu_finish("test_sae_splice");
    const char *R0 = "blocks.0.hook_resid_post";

    /* ---- one SAE without the error term: points, order, values ---- */
    CHECK_OK(circuits_context_add_sae(ctx, s0, 0));
    CHECK(circuits_context_sae_count(ctx) == 1, "count %zu", circuits_context_sae_count(ctx));
    CHECK(circuits_context_hook_point_count(ctx) == n_points0 + 4, "points %zu, want %zu",
          circuits_context_hook_point_count(ctx), n_points0 + 4);
    char buf[160];
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, R0, 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND,
                "an attached SAE replaces it");
    order_rec rec = {0};
    circuits_hook_id rid;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_post.hook_sae_*", record, &rec, &rid));
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, NULL, NULL));
    static const char *const want[] = {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
                                       "hook_sae_output"};
    CHECK(rec.n == 5, "%d firings", rec.n);
    for (int i = 0; i < 5 && i < rec.n; i++) {
        snprintf(buf, sizeof buf, "%s.%s", R0, want[i]);
        CHECK(strcmp(rec.names[i], buf) == 0, "firing %d is %s, want %s", i, rec.names[i], buf);
    }
    CHECK(circuits_cache_get(cache, R0, &(circuits_tensor){0}) == CIRCUITS_E_NOT_FOUND,
          "the replaced point is absent from the cache, as in SAELens's");
    {
        size_t n;
        const float *x = cache_data(plain, R0, &n), *in = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_input", NULL),
                    *pre = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_acts_pre", NULL),
                    *post = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_acts_post", NULL),
                    *rc = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_recons", NULL),
                    *out = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_output", NULL);
        if (x && in && pre && post && rc && out) {
            CHECK(max_diff(x, in, n) == 0.0f, "hook_sae_input is the point's value");
            double e_pre = 0, e_post = 0, e_out = 0, dpre[64], dpost[64], dout[256];
            for (int64_t r = 0; r < B * T; r++) {
                ref_sae(&w0, true, x + r * D, dpre, dpost, dout, -1);
                for (int64_t j = 0; j < S; j++) {
                    e_pre = fmax(e_pre, fabs(pre[r * S + j] - dpre[j]));
                    e_post = fmax(e_post, fabs(post[r * S + j] - dpost[j]));
                }
                for (int64_t k = 0; k < D; k++) e_out = fmax(e_out, fabs(rc[r * D + k] - dout[k]));
            }
            CHECK(e_pre < 2e-5 && e_post < 2e-5 && e_out < 2e-5, "pre %.2g post %.2g recons %.2g", e_pre, e_post, e_out);
            CHECK(max_diff(rc, out, n) == 0.0f, "without the error term the output is the reconstruction");
        }
    }
    /* the model goes on with the reconstruction: the same as a hook writing it at the point */
    CHECK_OK(circuits_context_remove_hook(ctx, rid));
    float *l_sae = malloc(sizeof(float) * B * T * V);
    memcpy(l_sae, logits, sizeof(float) * B * T * V);

    /* ---- the error term: the model's own output back; with an edited latent, the clean error ---- */
    CHECK_OK(circuits_context_add_sae(ctx, s0, 1)); /* replaces the attachment at the same hook */
    CHECK(circuits_context_sae_count(ctx) == 1, "replaced, count %zu", circuits_context_sae_count(ctx));
    CHECK(circuits_context_hook_point_count(ctx) == n_points0 + 5, "points with the error term");
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, NULL, NULL));
    CHECK(max_diff(logits, logits0, (size_t)(B * T * V)) < 1e-5f, "error term: logits %.3g from the model's",
          max_diff(logits, logits0, (size_t)(B * T * V)));
    {
        size_t n;
        const float *x = cache_data(plain, R0, &n), *rc = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_recons", NULL),
                    *err = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_error", NULL);
        float e = 0;
        for (size_t i = 0; x && rc && err && i < n; i++) e = fmaxf(e, fabsf(err[i] - (x[i] - rc[i])));
        CHECK(e < 1e-6f, "hook_sae_error = x - recons (%.3g)", e);
    }
    circuits_hook_id zid;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_post.hook_sae_acts_post", zero_latent_3, NULL, &zid));
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, NULL, NULL));
    {
        size_t n;
        const float *x = cache_data(plain, R0, &n), *err = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_error", NULL),
                    *out = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_output", NULL);
        double e_err = 0, e_out = 0, dpre[64], dpost[64], clean[256], edited[256];
        for (int64_t r = 0; x && err && out && r < B * T; r++) {
            ref_sae(&w0, true, x + r * D, dpre, dpost, clean, -1);
            ref_sae(&w0, true, x + r * D, dpre, dpost, edited, 3);
            for (int64_t k = 0; k < D; k++) {
                e_err = fmax(e_err, fabs(err[r * D + k] - (x[r * D + k] - clean[k])));
                e_out = fmax(e_out, fabs(out[r * D + k] - (x[r * D + k] + edited[k] - clean[k])));
            }
        }
        CHECK(e_err < 2e-5 && e_out < 2e-5, "edited latent: error %.3g (the clean one), output %.3g", e_err, e_out);
    }
    CHECK_OK(circuits_context_remove_hook(ctx, zid));

    /* ---- refusals (the catalogue of bad input) ---- */
    circuits_hook_id hid;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.hook_mlp_out", record, &rec, &hid));
    CALL_FAILS("sae_point_has_callbacks", circuits_context_add_sae(ctx, s1, 0), CIRCUITS_E_INVALID_ARGUMENT,
               "callbacks are registered at 'blocks.1.hook_mlp_out'");
    CHECK_OK(circuits_context_remove_hook(ctx, hid));
    CALL_FAILS("sae_null", circuits_context_add_sae(ctx, NULL, 0), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("sae_error_term_flag", circuits_context_add_sae(ctx, s1, 2), CIRCUITS_E_INVALID_ARGUMENT,
               "use_error_term must be 0 or 1");
    CALL_FAILS("sae_remove_not_attached", circuits_context_remove_sae(ctx, "blocks.1.hook_resid_pre"),
               CIRCUITS_E_NOT_FOUND, "no SAE is attached at 'blocks.1.hook_resid_pre'");
    CALL_FAILS("sae_at_range", circuits_context_sae_at(ctx, 5, &(const circuits_sae *){NULL}, NULL), CIRCUITS_E_RANGE,
               "index 5 with 1 SAEs attached");
    {
        sae_w wn = make_w(D / 2, D / 2, 0.3f);
        circuits_sae *sn = NULL, *sp = NULL, *sm = NULL, *sx = NULL;
        CHECK_OK(circuits_sae_load(&sn, write_sae("narrow", &wn, "blocks.1.hook_resid_pre", NULL, D / 2)));
        CHECK_OK(circuits_sae_load(&sp, write_sae("pattern", &wn, "blocks.0.attn.hook_pattern", NULL, D / 2)));
        CHECK_OK(circuits_sae_load(&sm, write_sae("mlpin", &w0, "blocks.0.mlp.hook_in", NULL, D)));
        CHECK_OK(circuits_sae_load(&sx, write_sae("nowhere", &w0, "blocks.9.hook_resid_pre", NULL, D)));
        if (sn && sp && sm && sx) {
            CALL_FAILS("sae_width", circuits_context_add_sae(ctx, sn, 0), CIRCUITS_E_SHAPE,
                       "'blocks.1.hook_resid_pre' is [batch, pos, 128] but the SAE's d_out is 64");
            CALL_FAILS("sae_point_axes", circuits_context_add_sae(ctx, sp, 0), CIRCUITS_E_UNSUPPORTED,
                       "'blocks.0.attn.hook_pattern' has 4 axes");
            CALL_FAILS("sae_mlp_hook_in", circuits_context_add_sae(ctx, sm, 0), CIRCUITS_E_NOT_FOUND,
                       "is a point HookedSAETransformer adds");
            CALL_FAILS("sae_hook_unknown", circuits_context_add_sae(ctx, sx, 0), CIRCUITS_E_NOT_FOUND,
                       "'blocks.9.hook_resid_pre' is not a hook point of this model");
        }
        CHECK(circuits_context_sae_count(ctx) == 1, "refusals changed nothing");
        circuits_sae_free(sn), circuits_sae_free(sp), circuits_sae_free(sm), circuits_sae_free(sx);
        free_w(&wn);
    }
    {
        nested nst = {ctx, s1, 0};
        CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", add_from_callback, &nst, &hid));
        CHECK_OK(circuits_context_forward(ctx, tokens, B, T, NULL, NULL, NULL));
        CHECK(nst.rc == CIRCUITS_E_INVALID_ARGUMENT && strstr(circuits_last_error(), "callback of the same context"),
              "add_sae from a callback: %d", nst.rc);
        CHECK_OK(circuits_context_remove_hook(ctx, hid));
    }
    {
        circuits_metric mt = {.size = sizeof mt};
        mt.kind = CIRCUITS_METRIC_LOSS;
        mt.tokens = tokens;
        float v;
        CALL_FAILS("sae_backward", circuits_context_backward(ctx, NULL, tokens, B, T, &mt, &v, NULL, NULL, NULL),
                   CIRCUITS_E_UNSUPPORTED, "gradients through attached SAEs are not implemented");
    }

    /* ---- several SAEs and a transcoder; registrations survive attach and detach ---- */
    order_rec keep = {0};
    circuits_hook_id kid;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.hook_resid_pre", record, &keep, &kid));
    CHECK_OK(circuits_context_add_sae(ctx, s1, 0));
    {
        circuits_sae *sln = NULL, *smo = NULL;
        CHECK_OK(circuits_sae_load(&sln, write_sae("ln2", &w0, "blocks.0.ln2.hook_normalized", NULL, D)));
        CHECK_OK(circuits_sae_load(&smo, write_sae("mlpout", &w0, "blocks.0.hook_mlp_out", NULL, D)));
        circuits_sae *sy = NULL;
        CHECK_OK(circuits_sae_load(&sy, write_sae("y", &wt, "blocks.0.hook_resid_mid", "blocks.0.ln2.hook_normalized", D)));
        if (sln && smo && sy) {
            /* keyed by the input hook, as SAELens: the transcoder reading ln2's output replaces the SAE there */
            CHECK_OK(circuits_context_add_sae(ctx, sln, 0));
            CHECK_OK(circuits_context_add_sae(ctx, st, 0));
            const circuits_sae *at = NULL;
            CHECK(circuits_context_sae_count(ctx) == 3 && circuits_context_sae_at(ctx, 2, &at, NULL) == 0 && at == st,
                  "the transcoder took the ln2 SAE's place");
            CALL_FAILS("sae_writes_transcoder_input", circuits_context_add_sae(ctx, sy, 0), CIRCUITS_E_INVALID_ARGUMENT,
                       "'blocks.0.ln2.hook_normalized' is the input of the transcoder writing 'blocks.0.hook_mlp_out'");
            CHECK_OK(circuits_context_remove_sae(ctx, "blocks.0.ln2.hook_normalized"));
            CHECK_OK(circuits_context_add_sae(ctx, sy, 0));
            CALL_FAILS("sae_transcoder_input_replaced", circuits_context_add_sae(ctx, st, 0),
                       CIRCUITS_E_INVALID_ARGUMENT, "the transcoder reads 'blocks.0.ln2.hook_normalized', which the SAE");
            CHECK_OK(circuits_context_remove_sae(ctx, "blocks.0.hook_resid_mid"));
            CHECK_OK(circuits_context_remove_sae(ctx, "blocks.1.hook_mlp_out"));
            CHECK_OK(circuits_context_remove_sae(ctx, R0));
            CHECK_OK(circuits_context_add_sae(ctx, st, 0));
            CALL_FAILS("sae_output_taken", circuits_context_add_sae(ctx, smo, 0), CIRCUITS_E_INVALID_ARGUMENT,
                       "'blocks.0.hook_mlp_out' is replaced already by the SAE reading 'blocks.0.ln2.hook_normalized'");
        }
        circuits_sae_free(sy);
        circuits_sae_free(sln), circuits_sae_free(smo);
    }
    CHECK_OK(circuits_context_add_sae(ctx, s1, 1));
    CHECK(circuits_context_sae_count(ctx) == 2, "two attached");
    const circuits_sae *got = NULL;
    int32_t et = -1;
    CHECK_OK(circuits_context_sae_at(ctx, 1, &got, &et));
    CHECK(got == s1 && et == 1, "sae_at");
    keep.n = 0;
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, NULL, NULL));
    CHECK(keep.n == 1, "a registration made before attaching still fires (%d)", keep.n);
    {
        size_t n;
        const float *x = cache_data(plain, "blocks.0.ln2.hook_normalized", &n);
        const float *xin = cache_data(cache, "blocks.0.ln2.hook_normalized", NULL); /* the input point stays */
        const float *in = cache_data(cache, "blocks.0.hook_mlp_out.hook_sae_input", NULL),
                    *out = cache_data(cache, "blocks.0.hook_mlp_out.hook_sae_output", NULL);
        if (x && xin && in && out) {
            CHECK(max_diff(x, xin, n) == 0.0f && max_diff(x, in, n) == 0.0f, "the transcoder reads ln2's output");
            double e = 0, dpre[64], dpost[64], dout[256];
            for (int64_t r = 0; r < B * T; r++) {
                ref_sae(&wt, false, x + r * D, dpre, dpost, dout, -1);
                for (int64_t k = 0; k < D; k++) e = fmax(e, fabs(out[r * D + k] - dout[k]));
            }
            CHECK(e < 2e-5, "transcoder output %.3g", e);
        }
        CHECK(cache_data(cache, "blocks.1.hook_mlp_out.hook_sae_error", NULL) != NULL, "second SAE's error point");
    }
    /* generation with a KV cache runs the SAEs per position as the whole-sequence runs do */
    {
        circuits_generate_options go;
        circuits_generate_options_init(&go);
        go.do_sample = 0, go.max_new_tokens = 5, go.stop_at_eos = 0;
        int32_t a[B * (T + 5)], b[B * (T + 5)];
        CHECK_OK(circuits_context_generate(ctx, tokens, B, T, &go, a, NULL));
        go.use_kv_cache = 0;
        CHECK_OK(circuits_context_generate(ctx, tokens, B, T, &go, b, NULL));
        CHECK(memcmp(a, b, sizeof a) == 0, "KV-cache generation with SAEs equals whole-sequence generation");
    }
    /* the SAE points' data lie in the run memory */
    {
        order_rec r2 = {0};
        CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_mlp_out.hook_sae_*", record, &r2, &hid));
        CHECK_OK(circuits_context_forward(ctx, tokens, B, T, NULL, NULL, NULL));
        circuits_run_memory *mem = NULL;
        CHECK_OK(circuits_context_take_run_memory(ctx, &mem));
        const char *lo = circuits_run_memory_data(mem), *hi = lo + circuits_run_memory_nbytes(mem);
        for (int i = 0; i < r2.n && i < 16; i++)
            CHECK((const char *)r2.data[i] >= lo && (const char *)r2.data[i] < hi, "%s data in the run memory",
                  r2.names[i]);
        circuits_run_memory_free(mem);
        CHECK_OK(circuits_context_remove_hook(ctx, hid));
    }
    /* detaching every SAE gives the model back, bit for bit; the kept registration still fires */
    CHECK_OK(circuits_context_remove_sae(ctx, NULL));
    CHECK(circuits_context_sae_count(ctx) == 0 && circuits_context_hook_point_count(ctx) == n_points0, "all detached");
    keep.n = 0;
    CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL));
    CHECK(memcmp(logits, logits0, sizeof(float) * B * T * V) == 0, "detached: the model's logits exactly");
    CHECK(keep.n == 1, "kept registration fires after detach");
    CHECK_OK(circuits_context_remove_hook(ctx, kid));
    CHECK_OK(circuits_context_remove_sae(ctx, NULL)); /* reset with none attached: nothing to do */

    /* a transcoder whose hook_name_out is its hook_name reads the point it replaces */
    {
        circuits_sae *ss = NULL;
        CHECK_OK(circuits_sae_load(&ss, write_sae("tsame", &wt, "blocks.1.hook_resid_pre", "blocks.1.hook_resid_pre", D)));
        if (ss) {
            CHECK_OK(circuits_context_add_sae(ctx, ss, 0));
            CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, NULL, NULL, NULL));
            size_t n;
            const float *x = cache_data(plain, "blocks.1.hook_resid_pre", &n),
                        *out = cache_data(cache, "blocks.1.hook_resid_pre.hook_sae_output", NULL);
            double e = 0, dpre[64], dpost[64], dout[256];
            for (int64_t r = 0; x && out && r < B * T; r++) {
                ref_sae(&wt, false, x + r * D, dpre, dpost, dout, -1);
                for (int64_t k = 0; k < D; k++) e = fmax(e, fabs(out[r * D + k] - dout[k]));
            }
            CHECK(x && out && e < 2e-5, "transcoder on one point: %.3g", e);
            CHECK_OK(circuits_context_remove_sae(ctx, "blocks.1.hook_resid_pre"));
        }
        circuits_sae_free(ss);
    }

    /* without the error term the spliced model is the model with the reconstruction written in */
    CHECK_OK(circuits_context_add_sae(ctx, s0, 0));
    CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL));
    CHECK(memcmp(logits, l_sae, sizeof(float) * B * T * V) == 0, "the same SAE spliced again gives the same logits");
    CHECK_OK(circuits_context_remove_sae(ctx, R0));

    /* ---- transcoders and the points they read ---- */
    {
        /* hook_name_out equal to hook_name: it reads the point it replaces (SAELens's wrapper
         * then encodes the point's own value) */
        circuits_sae *ss = NULL, *sb = NULL, *sl = NULL, *se = NULL;
        CHECK_OK(circuits_sae_load(&ss, write_sae("tcsame", &wt, R0, R0, D)));
        CHECK_OK(circuits_sae_load(&sb, write_sae("tcback", &wt, "blocks.1.hook_resid_pre", "blocks.0.hook_mlp_out", D)));
        CHECK_OK(circuits_sae_load(&sl, write_sae("tclate", &wt, "blocks.0.ln2.hook_normalized", "blocks.1.hook_mlp_out", D)));
        CHECK_OK(circuits_sae_load(&se, write_sae("tcembed", &wt, "hook_embed", "blocks.0.hook_resid_pre", D)));
        if (ss && sb && sl && se) {
            CHECK_OK(circuits_context_add_sae(ctx, ss, 0));
            CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, NULL, NULL));
            size_t n;
            const float *x = cache_data(plain, R0, &n), *out = cache_data(cache, "blocks.0.hook_resid_post.hook_sae_output", NULL);
            double e = 0, dpre[64], dpost[64], dout[256];
            for (int64_t r = 0; x && out && r < B * T; r++) {
                ref_sae(&wt, false, x + r * D, dpre, dpost, dout, -1);
                for (int64_t k = 0; k < D; k++) e = fmax(e, fabs(out[r * D + k] - dout[k]));
            }
            CHECK(x && out && e < 2e-5, "a transcoder writing the point it reads encodes that point's value (%.3g)", e);
            CHECK_OK(circuits_context_remove_sae(ctx, NULL));
            /* an output point the forward computes before the input point: nothing to read yet */
            CALL_FAILS("sae_transcoder_order", circuits_context_add_sae(ctx, sb, 0), CIRCUITS_E_INVALID_ARGUMENT,
                       "the transcoder writes 'blocks.0.hook_mlp_out', which the forward pass computes before");
            CHECK(circuits_context_sae_count(ctx) == 0, "refused: nothing attached");
            /* a run that skips the input point but reaches the output point */
            float *resid = calloc((size_t)(B * T * D), sizeof(float));
            circuits_run_options ro;
            circuits_run_options_init(&ro);
            ro.start_at_layer = 1;
            ro.input = resid;
            CHECK_OK(circuits_context_add_sae(ctx, sl, 0));
            CALL_FAILS("sae_transcoder_input_skipped", circuits_context_run(ctx, &ro, NULL, B, T, logits),
                       CIRCUITS_E_INVALID_ARGUMENT, "reads 'blocks.0.ln2.hook_normalized', which this run does not compute");
            ro.start_at_layer = CIRCUITS_LAYER_NONE, ro.input = NULL, ro.stop_at_layer = 1;
            CHECK_OK(circuits_context_run(ctx, &ro, tokens, B, T, resid)); /* the output point is not reached */
            CHECK_OK(circuits_context_remove_sae(ctx, NULL));
            CHECK_OK(circuits_context_add_sae(ctx, se, 0));
            circuits_run_options_init(&ro);
            ro.start_at_layer = 0;
            ro.input = resid;
            CHECK_FAILS(circuits_context_run(ctx, &ro, NULL, B, T, logits), CIRCUITS_E_INVALID_ARGUMENT,
                        "reads 'hook_embed', which this run does not compute");
            CHECK_OK(circuits_context_run(ctx, NULL, tokens, B, T, logits));
            CHECK_OK(circuits_context_remove_sae(ctx, NULL));
            free(resid);
        }
        circuits_sae_free(ss), circuits_sae_free(sb), circuits_sae_free(sl), circuits_sae_free(se);
    }

    /* ---- the library's editors at an SAE's points: ablating a latent, its mean ---- */
    {
        CHECK_OK(circuits_context_add_sae(ctx, s0, 1));
        float *zeroed = malloc(sizeof(float) * B * T * V);
        circuits_hook_id zid2;
        CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_post.hook_sae_acts_post", zero_latent_3, NULL, &zid2));
        CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, zeroed, NULL, NULL));
        CHECK_OK(circuits_context_remove_hook(ctx, zid2));
        CHECK(max_diff(zeroed, logits0, (size_t)(B * T * V)) > 1e-4f, "zeroing latent 3 changes the logits");
        circuits_ablation ab;
        circuits_ablation_init(&ab);
        ab.hook = "blocks.0.hook_resid_post.hook_sae_acts_post";
        ab.neuron = 3;
        CHECK_OK(circuits_context_run_ablated(ctx, &ab, 1, tokens, B, T, logits, NULL));
        CHECK(max_diff(logits, zeroed, (size_t)(B * T * V)) < 1e-5f, "run_ablated at hook_sae_acts_post zeroes the latent "
              "as a hook does (%.3g from it)", max_diff(logits, zeroed, (size_t)(B * T * V)));
        float *mean = malloc(sizeof(float) * T * S);
        const char *mh[] = {"blocks.0.hook_resid_post.hook_sae_acts_post"};
        float *means[] = {mean};
        CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, NULL, NULL, NULL));
        const float *post = cache_data(cache, mh[0], NULL);
        CHECK_OK(circuits_context_mean_activations(ctx, mh, 1, tokens, B, T, 1, means));
        /* relative to the largest mean: mean_activations ran batches of 1 row, the cache one of B,
         * and OpenBLAS's kernels (chosen per CPU) may round those differently (2.4e-6 seen on one machine) */
        double e = 0, top = 0;
        for (int64_t i = 0; post && i < T * S; i++) {
            double sum = 0;
            for (int64_t b = 0; b < B; b++) sum += post[b * T * S + i];
            e = fmax(e, fabs(sum / B - mean[i]));
            top = fmax(top, fabs(sum / B));
        }
        CHECK(post && top > 0 && e < 1e-6 * fmax(1, top), "mean_activations at hook_sae_acts_post (%.3g from the cache's, "
              "largest mean %.3g)", e, top);
        CHECK_OK(circuits_context_remove_sae(ctx, NULL));
        free(zeroed), free(mean);
    }

    circuits_context_free(ctx);
    circuits_sae_free(s0), circuits_sae_free(s1), circuits_sae_free(st);
    circuits_cache_free(plain), circuits_cache_free(cache);
    circuits_model_free(m);
    free(logits0), free(logits), free(l_sae);
    free_w(&w0), free_w(&w1), free_w(&wt);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return tu_finish("test_sae_splice");
}
