/* Steering vectors, llama.cpp control vectors and contrastive vectors (lib/analysis/steer.c,
 * lib/io/control_vector.c; docs/steering.md):
 *   - a steering registration gives the logits of a hand-written hook adding the same scaled
 *     vector (bit for bit), at every position, at chosen ones (negative: from each run's end),
 *     at a 4-axis point (every head); removing it restores the plain logits bit for bit;
 *   - positions count from the sequence's start across a KV cache; greedy generation steered at
 *     absolute positions gives the same tokens with and without the KV cache;
 *   - control vectors: files written by the gguf package in llama.cpp's layout
 *     (tests/reference/control_vectors, generate_control_vectors.py) read as written; our save
 *     and load round trip bit for bit; add_control_vector = steering at blocks.N.hook_resid_post;
 *   - contrastive vectors against a hand computation from run_with_cache / captured activations
 *     (LAST and MEAN, left and right padding);
 *   - the refusals (named checks: docs/errors.md, "Steering and control vectors").
 * usage: test_steering CASES_DIR CONTROL_VECTORS_DIR [-v] */
#define TESTUTIL_API_HELPERS
#include "catalogue.h"
#include "gguf_write.h"
#include "st_write.h"

#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

enum { B = 2, T = 6 };

static circuits_model *model;
static circuits_context *ctx;
static circuits_config cfg;
static int32_t tokens[B * T];
static const char *g_cv;
static char g_root[] = "/tmp/circuits_steer_XXXXXX";

/* ---- the reference: a hook adding a vector (already scaled) at chosen positions ---- */
typedef struct manual {
    const float *vec; /* [dim] */
    int64_t dim;
    const int64_t *pos; /* absolute positions of this run (0 .. T-1 of its own), or NULL: all */
    int64_t n_pos;
} manual;

static int manual_add(const circuits_tensor *t, void *u)
{
    const manual *m = u;
    int64_t row = t->strides[0], Tn = t->shape[1], per_pos = t->strides[1];
    for (int64_t b = 0; b < t->shape[0]; b++)
        for (int64_t p = 0; p < Tn; p++) {
            bool sel = !m->pos;
            for (int64_t i = 0; m->pos && i < m->n_pos; i++) sel |= m->pos[i] == p;
            if (!sel) continue;
            for (int64_t i = 0; i < per_pos; i++) t->data[b * row + p * per_pos + i] += m->vec[i % m->dim];
        }
    return CIRCUITS_HOOK_CONTINUE;
}

static float *logits_now(const int32_t *tok, int64_t batch, int64_t pos)
{
    float *l = malloc((size_t)(batch * pos * cfg.d_vocab_out) * sizeof(float));
    CHECK_OK(circuits_context_forward(ctx, tok, batch, pos, l, NULL, NULL));
    return l;
}

static void random_vec(float *v, size_t n, uint32_t seed)
{
    uint32_t s = seed * 747796405u + 1u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        v[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 2.0f;
    }
}

/* steering at `hook` (scale, positions) against the manual hook at the same point */
static void same_as_hook(const char *what, const char *hook, int64_t dim, float scale, const int64_t *pos,
                         int64_t n_pos, const int64_t *abs_pos, int64_t n_abs)
{
    size_t n = (size_t)B * T * cfg.d_vocab_out;
    float *v = malloc((size_t)dim * sizeof(float)), *sv = malloc((size_t)dim * sizeof(float));
    random_vec(v, (size_t)dim, 11);
    for (int64_t i = 0; i < dim; i++) sv[i] = scale * v[i];
    float *plain = logits_now(tokens, B, T);
    circuits_steering_options o;
    circuits_steering_options_init(&o);
    o.scale = scale;
    o.positions = pos;
    o.n_positions = n_pos;
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_steering(ctx, hook, v, dim, &o, &id));
    float *got = logits_now(tokens, B, T);
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    float *after = logits_now(tokens, B, T);
    manual m = {sv, dim, abs_pos, n_abs};
    CHECK_OK(circuits_context_add_hook(ctx, hook, manual_add, &m, &id));
    float *want = logits_now(tokens, B, T);
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    CHECK(max_abs_diff(got, want, n) == 0.0, "%s: steered logits differ from the hook's by %g", what,
          max_abs_diff(got, want, n));
    CHECK(max_abs_diff(got, plain, n) > 1e-3, "%s: steering changed nothing", what);
    CHECK(memcmp(after, plain, n * sizeof(float)) == 0, "%s: removal did not restore the logits bit for bit", what);
    free(v);
    free(sv);
    free(plain);
    free(got);
    free(after);
    free(want);
}

static void test_steering(void)
{
    same_as_hook("resid_post every position", "blocks.0.hook_resid_post", cfg.d_model, 2.5f, NULL, 0, NULL, 0);
    int64_t pos[2] = {1, -1}, abs_pos[2] = {1, T - 1};
    same_as_hook("resid_pre at 1 and -1", "resid_pre1", cfg.d_model, -1.0f, pos, 2, abs_pos, 2);
    same_as_hook("every mlp_out (pattern)", "blocks.*.hook_mlp_out", cfg.d_model, 0.5f, NULL, 0, NULL, 0);
    int64_t one[1] = {-3}, one_abs[1] = {T - 3};
    same_as_hook("hook_q of every head at -3", "blocks.1.attn.hook_q", cfg.d_head, 3.0f, one, 1, one_abs, 1);
    /* a position past the run steers nothing there */
    int64_t far[1] = {T + 3};
    circuits_steering_options o;
    circuits_steering_options_init(&o);
    o.positions = far;
    o.n_positions = 1;
    float *v = malloc((size_t)cfg.d_model * sizeof(float));
    random_vec(v, (size_t)cfg.d_model, 3);
    float *plain = logits_now(tokens, B, T);
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_steering(ctx, "resid_post0", v, cfg.d_model, &o, &id));
    float *got = logits_now(tokens, B, T);
    CHECK(memcmp(got, plain, (size_t)B * T * cfg.d_vocab_out * sizeof(float)) == 0,
          "a position beyond the run changed the logits");
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    /* circuits_context_clear_hooks releases steering registrations too (ASan / valgrind see it) */
    CHECK_OK(circuits_context_add_steering(ctx, "resid_post0", v, cfg.d_model, NULL, NULL));
    circuits_context_clear_hooks(ctx);
    free(got);
    got = logits_now(tokens, B, T);
    CHECK(memcmp(got, plain, (size_t)B * T * cfg.d_vocab_out * sizeof(float)) == 0, "clear_hooks left steering");
    free(got);
    free(plain);
    free(v);
}

/* positions from the sequence's start across a KV cache: a run of 4 then 2 positions, steered at
 * absolute position 4 and at -1 (each run's last), against full runs steered by hand */
static void test_kv_positions(void)
{
    int64_t D = cfg.d_model, V = cfg.d_vocab_out;
    float *v = malloc((size_t)D * sizeof(float));
    random_vec(v, (size_t)D, 5);
    int64_t pos[1] = {4};
    circuits_steering_options o;
    circuits_steering_options_init(&o);
    o.positions = pos;
    o.n_positions = 1;
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_steering(ctx, "blocks.0.hook_resid_post", v, D, &o, &id));
    circuits_kv_cache *kv;
    CHECK_OK(circuits_kv_cache_create(&kv, model, 1, 0));
    float *a = malloc((size_t)(4 * V) * sizeof(float)), *b = malloc((size_t)(2 * V) * sizeof(float));
    CHECK_OK(circuits_context_forward_kv(ctx, kv, tokens, 1, 4, a));
    CHECK_OK(circuits_context_forward_kv(ctx, kv, tokens + 4, 1, 2, b));
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    int64_t abs4[1] = {4};
    manual m = {v, D, abs4, 1};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_post", manual_add, &m, &id));
    float *full = logits_now(tokens, 1, 6);
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    CHECK(max_abs_diff(a, full, (size_t)(4 * V)) < 1e-4, "KV steering at 4: first run off by %g",
          max_abs_diff(a, full, (size_t)(4 * V)));
    CHECK(max_abs_diff(b, full + 4 * V, (size_t)(2 * V)) < 1e-4, "KV steering at 4: second run off by %g",
          max_abs_diff(b, full + 4 * V, (size_t)(2 * V)));
    float *plain = logits_now(tokens, 1, 6);
    CHECK(max_abs_diff(b, plain + 4 * V, (size_t)(2 * V)) > 1e-3, "position 4 was not steered in the second run");
    CHECK(max_abs_diff(a, plain, (size_t)(4 * V)) < 1e-4, "the first run (positions 0-3) was steered");
    free(plain);
    free(full);
    free(a);
    free(b);
    circuits_kv_cache_free(kv);
    free(v);
}

/* greedy generation steered at absolute positions: the same tokens with and without a KV cache,
 * and other tokens than unsteered */
static void test_generation(void)
{
    enum { P = 3, NEW = 8 };
    int64_t D = cfg.d_model;
    float *v = malloc((size_t)D * sizeof(float));
    random_vec(v, (size_t)D, 9);
    int64_t pos[3] = {1, P, P + 2};
    int32_t out[3][2 * (P + NEW)];
    for (int k = 0; k < 3; k++) {
        circuits_hook_id id = -1;
        if (k < 2) {
            circuits_steering_options o;
            circuits_steering_options_init(&o);
            o.scale = 8.0f;
            o.positions = pos;
            o.n_positions = 3;
            CHECK_OK(circuits_context_add_steering(ctx, "blocks.0.hook_resid_post", v, D, &o, &id));
        }
        circuits_generate_options g;
        circuits_generate_options_init(&g);
        g.max_new_tokens = NEW;
        g.do_sample = 0;
        g.stop_at_eos = 0;
        g.use_kv_cache = k != 1;
        int64_t n = 0;
        CHECK_OK(circuits_context_generate(ctx, tokens, 2, P, &g, out[k], &n));
        CHECK(n == P + NEW, "generated %lld columns", (long long)n);
        if (id >= 0) CHECK_OK(circuits_context_remove_hook(ctx, id));
    }
    CHECK(memcmp(out[0], out[1], sizeof out[0]) == 0, "steered generation differs with and without the KV cache");
    CHECK(memcmp(out[0], out[2], sizeof out[0]) != 0, "steering did not change the generated tokens");
    free(v);
}

/* ---- control vectors ---- */

static void path_in(char *buf, size_t n, const char *dir, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* the gguf package's files (llama.cpp's layout) against expected.json */
static void test_reference_files(void)
{
    char p[4096];
    path_in(p, sizeof p, g_cv, "expected.json");
    json_error_t err;
    json_t *root = json_load_file(p, 0, &err);
    CHECK(root != NULL, "%s: %s", p, err.text);
    if (!root) return;
    const char *name;
    json_t *f;
    int files = 0;
    json_object_foreach(json_object_get(root, "files"), name, f)
    {
        int32_t L = (int32_t)json_integer_value(json_object_get(f, "n_layers"));
        int64_t D = json_integer_value(json_object_get(f, "d_model"));
        float *got = malloc((size_t)(L * D) * sizeof(float)), *want = calloc((size_t)(L * D), sizeof(float));
        const char *k;
        json_t *vals;
        json_object_foreach(json_object_get(f, "directions"), k, vals)
        {
            int N = atoi(k);
            for (int64_t j = 0; j < D; j++) want[N * D + j] = (float)json_real_value(json_array_get(vals, (size_t)j));
        }
        path_in(p, sizeof p, g_cv, name);
        CHECK_OK(circuits_control_vector_load(p, L, D, got));
        CHECK(memcmp(got, want, (size_t)(L * D) * sizeof(float)) == 0, "%s: read %g off the gguf package's values", name,
              max_abs_diff(got, want, (size_t)(L * D)));
        /* our save of what we read, read again: the same */
        char q[4096];
        snprintf(q, sizeof q, "%s/resaved_%s", g_root, name);
        CHECK_OK(circuits_control_vector_save(q, got, L, D, "llama"));
        float *again = malloc((size_t)(L * D) * sizeof(float));
        CHECK_OK(circuits_control_vector_load(q, L, D, again));
        CHECK(memcmp(again, want, (size_t)(L * D) * sizeof(float)) == 0, "%s: save + load changed values", name);
        /* a model with more blocks reads the same file, the extra rows zero */
        float *more = malloc((size_t)((L + 2) * D) * sizeof(float));
        memset(more, 0x7f, (size_t)((L + 2) * D) * sizeof(float));
        CHECK_OK(circuits_control_vector_load(p, L + 2, D, more));
        CHECK(memcmp(more, want, (size_t)(L * D) * sizeof(float)) == 0, "%s: read into more layers differs", name);
        bool zero = true;
        for (int64_t j = L * D; j < (L + 2) * D; j++) zero &= more[j] == 0.0f;
        CHECK(zero, "%s: layers the file has none for are not zero", name);
        free(more);
        free(again);
        free(got);
        free(want);
        files++;
    }
    CHECK(files == 2, "expected.json lists %d files", files);
    json_decref(root);
    path_in(p, sizeof p, g_cv, "f16.gguf");
    float buf[5 * 16];
    CALL_FAILS("cv_f16", circuits_control_vector_load(p, 5, 16, buf), CIRCUITS_E_DTYPE, "control vectors are F32");
}

/* the bytes of our file: llama.cpp's layout, field by field */
static void test_save_layout(void)
{
    enum { L = 3, D = 4 };
    float dirs[L * D] = {0};
    for (int i = D; i < L * D; i++) dirs[i] = (float)i * 0.5f - 3.0f;
    char p[4096];
    snprintf(p, sizeof p, "%s/layout.gguf", g_root);
    CHECK_OK(circuits_control_vector_save(p, dirs, L, D, "gpt2"));
    FILE *f = fopen(p, "rb");
    unsigned char buf[1024];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    CHECK(n > 24 && memcmp(buf, "GGUF", 4) == 0 && buf[4] == 3, "not a GGUF v3 file");
    /* header counts: 2 tensors, 3 key-values */
    CHECK(n > 24 && buf[8] == 2 && buf[16] == 3, "tensor / kv counts %d %d", buf[8], buf[16]);
    /* the data section: 32-aligned, the directions in order */
    CHECK(n % 32 == 0 && n >= 2 * 32, "file size %zu", n);
    if (n >= 64) {
        float last[D];
        memcpy(last, buf + n - 32, sizeof last);
        CHECK(memcmp(last, dirs + 2 * D, sizeof last) == 0, "direction.2 is not the last 32-byte block");
    }
}

/* add_control_vector: the same logits as steering each block's output by hand */
static void test_add_control_vector(void)
{
    int32_t L = cfg.n_layers;
    int64_t D = cfg.d_model;
    float *dirs = calloc((size_t)(L * D), sizeof(float));
    random_vec(dirs + D, (size_t)((L - 1) * D), 21); /* block 0: none (as a file has) */
    char p[4096];
    snprintf(p, sizeof p, "%s/model.gguf", g_root);
    CHECK_OK(circuits_control_vector_save(p, dirs, L, D, NULL));
    float *read = malloc((size_t)(L * D) * sizeof(float));
    CHECK_OK(circuits_control_vector_load(p, L, D, read));
    CHECK(memcmp(read, dirs, (size_t)(L * D) * sizeof(float)) == 0, "round trip changed the directions");
    size_t n = (size_t)B * T * cfg.d_vocab_out;
    float *plain = logits_now(tokens, B, T);
    circuits_steering_options o;
    circuits_steering_options_init(&o);
    o.scale = 1.5f;
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_control_vector(ctx, read, L, D, &o, &id));
    float *got = logits_now(tokens, B, T);
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    float *sv = malloc((size_t)(L * D) * sizeof(float));
    for (int64_t i = 0; i < L * D; i++) sv[i] = 1.5f * read[i];
    manual *m = calloc((size_t)L, sizeof *m);
    circuits_hook_id ids[16];
    for (int32_t l = 1; l < L; l++) {
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.hook_resid_post", l);
        m[l] = (manual){sv + l * D, D, NULL, 0};
        CHECK_OK(circuits_context_add_hook(ctx, name, manual_add, &m[l], &ids[l]));
    }
    float *want = logits_now(tokens, B, T);
    for (int32_t l = 1; l < L; l++) CHECK_OK(circuits_context_remove_hook(ctx, ids[l]));
    CHECK(max_abs_diff(got, want, n) == 0.0, "control vector differs from hand steering by %g", max_abs_diff(got, want, n));
    CHECK(max_abs_diff(got, plain, n) > 1e-3, "the control vector changed nothing");
    float *after = logits_now(tokens, B, T);
    CHECK(memcmp(after, plain, n * sizeof(float)) == 0, "removal did not restore the logits");
    free(after);
    free(want);
    free(m);
    free(sv);
    free(got);
    free(plain);
    free(read);
    free(dirs);
}

/* ---- contrastive vectors ---- */

/* the activation of `hook` [batch, pos, D] of a masked run, captured by a hook */
typedef struct capture {
    float *dst;
} capture;
static int capture_hook(const circuits_tensor *t, void *u)
{
    memcpy(((capture *)u)->dst, t->data, numel(t) * sizeof(float));
    return CIRCUITS_HOOK_CONTINUE;
}

static void captured(const char *hook, const int32_t *tok, const int32_t *mask, int64_t batch, int64_t pos, float *dst)
{
    capture c = {dst};
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_hook(ctx, hook, capture_hook, &c, &id));
    circuits_run_options o;
    circuits_run_options_init(&o);
    o.attention_mask = mask;
    CHECK_OK(circuits_context_run(ctx, &o, tok, batch, pos, NULL));
    CHECK_OK(circuits_context_remove_hook(ctx, id));
}

/* reduce of row b of act [batch, pos, D] by the mask, in double */
static void reduce_row(const float *act, const int32_t *mask, int64_t pos, int64_t D, int64_t b, int reduce, double *out)
{
    const int32_t *m = mask ? mask + b * pos : NULL;
    int64_t last = pos - 1, n = 0;
    while (m && !m[last]) last--;
    for (int64_t t = 0; t < pos; t++) n += !m || m[t];
    for (int64_t i = 0; i < D; i++) {
        double s = 0;
        if (reduce == CIRCUITS_CONTRAST_LAST) s = act[(b * pos + last) * D + i];
        else
            for (int64_t t = 0; t < pos; t++)
                if (!m || m[t]) s += act[(b * pos + t) * D + i];
        out[i] = reduce == CIRCUITS_CONTRAST_LAST ? s : s / (double)n;
    }
}

static void test_contrastive(void)
{
    enum { CB = 3, CT = 5 };
    int64_t D = cfg.d_model;
    int32_t pos_tok[CB * CT], neg_tok[CB * CT];
    make_tokens(pos_tok, CB * CT, cfg.d_vocab, 31);
    make_tokens(neg_tok, CB * CT, cfg.d_vocab, 32);
    /* positive left-padded, negative right-padded */
    const int32_t pmask[CB * CT] = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1};
    const int32_t nmask[CB * CT] = {1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    const char *hooks[2] = {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"};
    float *pa = malloc((size_t)(CB * CT * D) * sizeof(float)), *na = malloc((size_t)(CB * CT * D) * sizeof(float));
    float *got = malloc((size_t)(2 * D) * sizeof(float));
    double *rp = malloc((size_t)D * sizeof(double)), *rn = malloc((size_t)D * sizeof(double));
    for (int reduce = 0; reduce < 2; reduce++)
        for (int masked = 0; masked < 2; masked++) {
            circuits_contrast_options o;
            circuits_contrast_options_init(&o);
            o.reduce = reduce;
            o.positive_mask = masked ? pmask : NULL;
            o.negative_mask = masked ? nmask : NULL;
            CHECK_OK(circuits_context_contrastive_vector(ctx, "blocks.*.hook_resid_post", pos_tok, neg_tok, CB, CT, &o,
                                                         got, (size_t)(2 * D)));
            double worst = 0;
            for (int k = 0; k < 2; k++) {
                if (masked) {
                    captured(hooks[k], pos_tok, pmask, CB, CT, pa);
                    captured(hooks[k], neg_tok, nmask, CB, CT, na);
                } else { /* from run_with_cache */
                    circuits_cache *cache;
                    CHECK_OK(circuits_cache_create(&cache));
                    circuits_tensor t;
                    CHECK_OK(circuits_context_run_with_cache(ctx, pos_tok, CB, CT, &hooks[k], 1, cache, NULL, NULL, NULL));
                    CHECK_OK(circuits_cache_get(cache, hooks[k], &t));
                    memcpy(pa, t.data, (size_t)(CB * CT * D) * sizeof(float));
                    CHECK_OK(circuits_context_run_with_cache(ctx, neg_tok, CB, CT, &hooks[k], 1, cache, NULL, NULL, NULL));
                    CHECK_OK(circuits_cache_get(cache, hooks[k], &t));
                    memcpy(na, t.data, (size_t)(CB * CT * D) * sizeof(float));
                    circuits_cache_free(cache);
                }
                double *want = calloc((size_t)D, sizeof(double));
                for (int64_t b = 0; b < CB; b++) {
                    reduce_row(pa, masked ? pmask : NULL, CT, D, b, reduce, rp);
                    reduce_row(na, masked ? nmask : NULL, CT, D, b, reduce, rn);
                    for (int64_t i = 0; i < D; i++) want[i] += (rp[i] - rn[i]) / CB;
                }
                for (int64_t i = 0; i < D; i++) worst = fmax(worst, fabs(want[i] - got[k * D + i]));
                free(want);
            }
            CHECK(worst < 1e-5, "contrastive reduce %d masked %d: off by %g", reduce, masked, worst);
        }
    free(rp);
    free(rn);
    free(got);
    free(pa);
    free(na);
}

/* ---- with an SAE attached (lib/sae/splice.c) ---- */

/* A standard SAE (SAELens's layout) of 8 latents at blocks.1.hook_resid_post: feature steering at
 * its hook_sae_acts_post equals a hand-written hook; a control vector for the block it replaces
 * and a contrastive vector of its points are refused. */
static void test_with_sae(void)
{
    enum { S = 8 };
    int64_t D = cfg.d_model;
    char dir[4096], p[4200];
    snprintf(dir, sizeof dir, "%s/sae", g_root);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    snprintf(p, sizeof p, "%s/cfg.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return;
    fprintf(f, "{\"d_in\": %lld, \"d_sae\": %d, \"dtype\": \"float32\", \"device\": \"cpu\", "
               "\"apply_b_dec_to_input\": true, \"normalize_activations\": \"none\", \"reshape_activations\": "
               "\"none\", \"metadata\": {\"sae_lens_version\": \"6.54.12\", \"hook_name\": "
               "\"blocks.1.hook_resid_post\"}, \"architecture\": \"standard\"}", (long long)D, S);
    fclose(f);
    float *We = malloc(sizeof(float) * (size_t)(D * S)), *Wd = malloc(sizeof(float) * (size_t)(S * D));
    float be[S], *bd = malloc(sizeof(float) * (size_t)D);
    random_vec(We, (size_t)(D * S), 41);
    random_vec(Wd, (size_t)(S * D), 42);
    random_vec(be, S, 43);
    random_vec(bd, (size_t)D, 44);
    st_entry t[4] = {{"W_dec", 2, {S, D}, Wd}, {"W_enc", 2, {D, S}, We}, {"b_dec", 1, {D}, bd}, {"b_enc", 1, {S}, be}};
    snprintf(p, sizeof p, "%s/sae_weights.safetensors", dir);
    st_write(p, t, 4);
    circuits_sae *sae = NULL;
    CHECK_OK(circuits_sae_load(&sae, dir));
    circuits_context *sctx = make_ctx(model, 0);
    if (sae) CHECK_OK(circuits_context_add_sae(sctx, sae, 0));
    /* feature steering: latents 2 and 5 pushed up at the last position */
    float v[S] = {0};
    v[2] = 1.5f;
    v[5] = -0.75f;
    const char *acts = "blocks.1.hook_resid_post.hook_sae_acts_post";
    size_t n = (size_t)B * T * cfg.d_vocab_out;
    float *plain = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    CHECK_OK(circuits_context_forward(sctx, tokens, B, T, plain, NULL, NULL));
    int64_t last[1] = {-1}, last_abs[1] = {T - 1};
    circuits_steering_options o;
    circuits_steering_options_init(&o);
    o.scale = 2.0f;
    o.positions = last;
    o.n_positions = 1;
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_steering(sctx, acts, v, S, &o, &id));
    CHECK_OK(circuits_context_forward(sctx, tokens, B, T, got, NULL, NULL));
    CHECK_OK(circuits_context_remove_hook(sctx, id));
    float sv[S];
    for (int i = 0; i < S; i++) sv[i] = 2.0f * v[i];
    manual m = {sv, S, last_abs, 1};
    CHECK_OK(circuits_context_add_hook(sctx, acts, manual_add, &m, &id));
    CHECK_OK(circuits_context_forward(sctx, tokens, B, T, want, NULL, NULL));
    CHECK_OK(circuits_context_remove_hook(sctx, id));
    CHECK(max_abs_diff(got, want, n) == 0.0, "feature steering differs from the hook's by %g", max_abs_diff(got, want, n));
    CHECK(max_abs_diff(got, plain, n) > 1e-4, "feature steering changed nothing");
    float *dirs = calloc((size_t)(cfg.n_layers * D), sizeof(float));
    dirs[1 * D + 3] = 1.0f;
    CALL_FAILS("cvec_sae_replaced", circuits_context_add_control_vector(sctx, dirs, cfg.n_layers, D, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "blocks.1.hook_resid_post");
    float out[64];
    CALL_FAILS("contrast_sae_point",
               circuits_context_contrastive_vector(sctx, acts, tokens, tokens, B, T, NULL, out, 64),
               CIRCUITS_E_UNSUPPORTED, "an attached SAE's point");
    free(dirs);
    free(plain);
    free(got);
    free(want);
    circuits_context_free(sctx);
    circuits_sae_free(sae);
    free(We);
    free(Wd);
    free(bd);
}

/* ---- refusals ---- */

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

/* a GGUF file of direction tensors named names[i] (F32 [D] unless type/ndim say otherwise) */
static void bad_file(const char *path, const char *arch, const char *const *names, size_t n, int64_t D, int type,
                     int ndim)
{
    static float data[8][64];
    gw_file f;
    gw_init(&f);
    if (arch) gw_kv_str(&f, "general.architecture", arch);
    gw_kv_u32(&f, "controlvector.layer_count", (uint32_t)n); /* (a key-value section never empty) */
    for (size_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < D; j++) data[i][j] = (float)(i + 1) + (float)j / 8.0f;
        int64_t ne[2] = {D, 1};
        size_t bytes = (size_t)D * (type == GW_F16 ? 2 : 4);
        gw_tensor(&f, names[i], (uint32_t)ndim, ne, (uint32_t)type, data[i], bytes);
    }
    gw_finish(&f);
    write_bytes(path, f.buf, f.len);
    gw_free(&f);
}

static void test_refusals(void)
{
    char p[4096];
    float buf[8 * 16];
    const int64_t D = 16;
    const char *ok1[1] = {"direction.1"};
#define BAD(name) (snprintf(p, sizeof p, "%s/%s.gguf", g_root, name), p)
    bad_file(BAD("arch"), "llama", ok1, 1, D, GW_F32, 1);
    CALL_FAILS("cv_not_controlvector", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_FORMAT,
               "is not a control vector (general.architecture is 'llama'");
    bad_file(BAD("noarch"), NULL, ok1, 1, D, GW_F32, 1);
    CALL_FAILS("cv_no_architecture", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_FORMAT,
               "no general.architecture");
    bad_file(BAD("f16"), "controlvector", ok1, 1, D, GW_F16, 1);
    CALL_FAILS("cv_wrong_dtype", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_DTYPE, "control vectors are F32");
    bad_file(BAD("nembd"), "controlvector", ok1, 1, D, GW_F32, 1);
    CALL_FAILS("cv_wrong_n_embd", circuits_control_vector_load(p, 5, 8, buf), CIRCUITS_E_SHAPE,
               "the model's d_model is 8");
    bad_file(BAD("twod"), "controlvector", ok1, 1, D, GW_F32, 2);
    CALL_FAILS("cv_not_1d", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_SHAPE, "has 2 dimensions");
    const char *zero[1] = {"direction.0"};
    bad_file(BAD("zero"), "controlvector", zero, 1, D, GW_F32, 1);
    CALL_FAILS("cv_layer_zero", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_FORMAT, "layer index 0");
    const char *five[1] = {"direction.5"};
    bad_file(BAD("five"), "controlvector", five, 1, D, GW_F32, 1);
    CALL_FAILS("cv_layer_beyond", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_RANGE,
               "would be added after block 5; the model has blocks 0 .. 4");
    const char *odd[1] = {"direction.01"};
    bad_file(BAD("odd"), "controlvector", odd, 1, D, GW_F32, 1);
    CALL_FAILS("cv_bad_name", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_FORMAT, "is not named direction.N");
    const char *dup[2] = {"direction.2", "direction.2"};
    bad_file(BAD("dup"), "controlvector", dup, 2, D, GW_F32, 1);
    CALL_FAILS("cv_duplicate_layer", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_FORMAT, "defined twice");
    /* truncated: the valid reference file cut short */
    {
        char src[4096];
        path_in(src, sizeof src, g_cv, "full.gguf");
        FILE *f = fopen(src, "rb");
        unsigned char img[4096];
        size_t n = f ? fread(img, 1, sizeof img, f) : 0;
        if (f) fclose(f);
        write_bytes(BAD("truncated"), img, n - 40);
        CALL_FAILS("cv_truncated", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_FORMAT, "run past the data section");
        /* a NaN in the data: direction.3[2] (the data blocks are the last 4 x 64 bytes) */
        float nan = NAN;
        memcpy(img + n - 64 * 2 + 8, &nan, 4);
        write_bytes(BAD("nan"), img, n);
        CALL_FAILS("cv_not_finite", circuits_control_vector_load(p, 5, D, buf), CIRCUITS_E_FORMAT, "is not finite");
    }
    CALL_FAILS("cv_load_missing", circuits_control_vector_load(BAD("absent"), 5, D, buf), CIRCUITS_E_IO, "absent.gguf");
    CALL_FAILS("cv_load_null", circuits_control_vector_load(NULL, 5, D, buf), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("cv_load_shape", circuits_control_vector_load(p, 0, D, buf), CIRCUITS_E_SHAPE, "must be at least 1");
    /* save */
    float dirs[3 * 4] = {0};
    dirs[5] = 1.0f;
    dirs[1] = 0.5f;
    CALL_FAILS("cv_save_layer_zero", circuits_control_vector_save(BAD("s"), dirs, 3, 4, NULL), CIRCUITS_E_RANGE,
               "directions[0] is not zero");
    CHECK(access(p, F_OK) != 0, "a refused save left a file");
    dirs[1] = 0.0f;
    dirs[6] = NAN;
    CALL_FAILS("cv_save_not_finite", circuits_control_vector_save(BAD("s"), dirs, 3, 4, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "directions[1, 2] is not finite");
    dirs[6] = 0.0f;
    CALL_FAILS("cv_save_one_layer", circuits_control_vector_save(BAD("s"), dirs, 1, 4, NULL), CIRCUITS_E_SHAPE,
               "at least 2");
    CALL_FAILS("cv_save_unwritable", circuits_control_vector_save("/nonexistent-dir/x.gguf", dirs, 3, 4, NULL),
               CIRCUITS_E_IO, "cannot create");
    CALL_FAILS("cv_save_null", circuits_control_vector_save(NULL, dirs, 3, 4, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "must not be NULL");
#undef BAD

    /* steering */
    int64_t Dm = cfg.d_model;
    float *v = calloc((size_t)Dm * 4, sizeof(float));
    v[0] = 1.0f;
    circuits_steering_options o;
    circuits_steering_options_init(&o);
    CALL_FAILS("steer_null", circuits_context_add_steering(ctx, NULL, v, Dm, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "must not be NULL");
    CALL_FAILS("steer_dim", circuits_context_add_steering(ctx, "resid_post0", v, 0, NULL, NULL), CIRCUITS_E_SHAPE,
               "dim 0 must be at least 1");
    CALL_FAILS("steer_dim_mismatch", circuits_context_add_steering(ctx, "blocks.*.mlp.hook_post", v, Dm, NULL, NULL),
               CIRCUITS_E_SHAPE, "'blocks.0.mlp.hook_post' has a last axis of");
    CALL_FAILS("steer_unknown_point", circuits_context_add_steering(ctx, "blocks.9.hook_nothing", v, Dm, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "blocks.9.hook_nothing");
    CALL_FAILS("steer_pattern", circuits_context_add_steering(ctx, "pattern0", v, T, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "attention over key positions");
    o.scale = INFINITY;
    CALL_FAILS("steer_scale", circuits_context_add_steering(ctx, "resid_post0", v, Dm, &o, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "is not finite");
    o.scale = 1.0f;
    o.n_positions = 2;
    CALL_FAILS("steer_positions_null", circuits_context_add_steering(ctx, "resid_post0", v, Dm, &o, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "positions and n_positions 2 disagree");
    int64_t far[1] = {cfg.n_ctx};
    o.positions = far;
    o.n_positions = 1;
    CALL_FAILS("steer_position_range", circuits_context_add_steering(ctx, "resid_post0", v, Dm, &o, NULL),
               CIRCUITS_E_RANGE, "is outside");
    circuits_steering_options_init(&o);
    o.size = 0;
    CALL_FAILS("steer_options_size", circuits_context_add_steering(ctx, "resid_post0", v, Dm, &o, NULL),
               CIRCUITS_E_VERSION, "circuits_context_add_steering");
    v[1] = NAN;
    CALL_FAILS("steer_not_finite", circuits_context_add_steering(ctx, "resid_post0", v, Dm, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "value 1 is not finite");
    v[1] = 0.0f;
    CALL_FAILS("cvec_shape", circuits_context_add_control_vector(ctx, v, cfg.n_layers + 1, Dm, NULL, NULL),
               CIRCUITS_E_SHAPE, "the model's [n_layers, d_model]");
    /* nothing registered by the refusals: the logits are the plain ones */
    CHECK(circuits_context_remove_hook(ctx, 0) == CIRCUITS_E_NOT_FOUND, "a refused registration left a hook");

    /* contrastive */
    float out[64];
    circuits_contrast_options c;
    circuits_contrast_options_init(&c);
    c.reduce = 2;
    CALL_FAILS("contrast_reduce", circuits_context_contrastive_vector(ctx, "resid_post0", tokens, tokens, B, T, &c, out, 64),
               CIRCUITS_E_INVALID_ARGUMENT, "reduce 2");
    circuits_contrast_options_init(&c);
    CALL_FAILS("contrast_out_small",
               circuits_context_contrastive_vector(ctx, "blocks.*.hook_resid_post", tokens, tokens, B, T, &c, out, 16),
               CIRCUITS_E_RANGE, "out holds 16 floats");
    int32_t mask[B * T];
    for (int i = 0; i < B * T; i++) mask[i] = 1;
    mask[3] = 2;
    c.positive_mask = mask;
    CALL_FAILS("contrast_mask_value", circuits_context_contrastive_vector(ctx, "resid_post0", tokens, tokens, B, T, &c, out, 64),
               CIRCUITS_E_INVALID_ARGUMENT, "positive_mask[0, 3] = 2");
    for (int i = 0; i < T; i++) mask[i] = 0;
    c.positive_mask = NULL;
    c.negative_mask = mask;
    CALL_FAILS("contrast_mask_empty_row",
               circuits_context_contrastive_vector(ctx, "resid_post0", tokens, tokens, B, T, &c, out, 64),
               CIRCUITS_E_INVALID_ARGUMENT, "negative row 0 has no real token");
    circuits_contrast_options_init(&c);
    CALL_FAILS("contrast_4d_point", circuits_context_contrastive_vector(ctx, "q0", tokens, tokens, B, T, &c, out, 64),
               CIRCUITS_E_INVALID_ARGUMENT, "is not [batch, pos, d] activations");
    CALL_FAILS("contrast_mixed_d",
               circuits_context_contrastive_vector(ctx, "blocks.0.*", tokens, tokens, B, T, &c, out, 64),
               CIRCUITS_E_SHAPE, "out [n_points, d] needs one d");
    CALL_FAILS("contrast_shape", circuits_context_contrastive_vector(ctx, "resid_post0", tokens, tokens, 0, T, &c, out, 64),
               CIRCUITS_E_SHAPE, "");
    CALL_FAILS("contrast_null", circuits_context_contrastive_vector(ctx, "resid_post0", NULL, tokens, B, T, &c, out, 64),
               CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    free(v);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CASES_DIR CONTROL_VECTORS_DIR [-v]\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    g_cv = argv[2];
    cat_verbose = argc > 3 && strcmp(argv[3], "-v") == 0;
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = g_root;
    cat_data = g_cv;
    model = load_case("tl_2l_lnpre_gelu");
    ctx = make_ctx(model, 0);
    cfg = config_of(model);
    make_tokens(tokens, B * T, cfg.d_vocab, 7);
    test_steering();
    test_kv_positions();
    test_generation();
    test_reference_files();
    test_save_layout();
    test_add_control_vector();
    test_contrastive();
    test_with_sae();
    test_refusals();
    circuits_context_free(ctx);
    circuits_model_free(model);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return tu_finish("steering");
}
