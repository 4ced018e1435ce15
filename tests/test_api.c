/* The public API's documented contract (include/circuits.h), property by property: versions,
 * errors, config and weight views, hook points and name resolution, hook semantics, stopping
 * and failing runs, caches, loss, concurrent contexts, batch independence, options and NULLs.
 * Usage: test_api CASES_DIR   (tests/reference/cases) */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "../lib/safetensors.h"

static const char *g_cases;

/* A failing call: the status, and a non-empty message (every failure sets one). */
#define CHECK_ERR(call, status)                                                             \
    do {                                                                                    \
        circuits_clear_error();                                                             \
        int rc_ = (call);                                                                   \
        CHECK(rc_ == (status), "%s -> %d, want %d (%s)", #call, rc_, (int)(status),         \
              circuits_last_error());                                                       \
        CHECK(circuits_last_error()[0] != '\0', "%s left no message", #call);              \
    } while (0)

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void case_dir(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", g_cases, name); }

static circuits_model *load_case(const char *name)
{
    char p[4096];
    case_dir(p, sizeof p, name);
    /* unprocessed: these tests check the weights against the files (processing: test_reference) */
    circuits_load_options raw;
    circuits_load_options_init(&raw);
    raw.fold_ln = raw.center_writing_weights = raw.center_unembed = raw.fold_value_biases = 0;
    circuits_model *m = NULL;
    int rc = circuits_model_load(&m, p, &raw);
    if (rc != CIRCUITS_OK || !m) {
        fprintf(stderr, "FATAL: cannot load %s: %s\n", p, circuits_last_error());
        exit(1);
    }
    return m;
}

static json_t *case_json(const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s/case.json", g_cases, name);
    json_error_t err;
    json_t *j = json_load_file(p, 0, &err);
    if (!j) {
        fprintf(stderr, "FATAL: %s: %s\n", p, err.text);
        exit(1);
    }
    return j;
}

static circuits_config config_of(const circuits_model *m)
{
    circuits_config c;
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    CHECK_OK(circuits_model_config(m, &c));
    return c;
}

static circuits_context *make_ctx(const circuits_model *m, int use_attn_result)
{
    circuits_context_options o;
    circuits_context_options_init(&o);
    o.use_attn_result = use_attn_result;
    circuits_context *ctx = NULL;
    int rc = circuits_context_create(&ctx, m, &o);
    if (rc != CIRCUITS_OK || !ctx) {
        fprintf(stderr, "FATAL: context: %s\n", circuits_last_error());
        exit(1);
    }
    return ctx;
}

static void make_tokens(int32_t *t, size_t n, int32_t vocab, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        t[i] = (int32_t)((s >> 8) % (uint32_t)vocab);
    }
}

static bool shape_is(const circuits_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}
#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

static bool contiguous(const circuits_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->strides[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

static size_t numel(const circuits_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

static float at2(const circuits_tensor *t, int64_t i, int64_t j) { return t->data[i * t->strides[0] + j * t->strides[1]]; }

static float at3(const circuits_tensor *t, int64_t i, int64_t j, int64_t k)
{
    return t->data[i * t->strides[0] + j * t->strides[1] + k * t->strides[2]];
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}

static int parse_layer(const char *name)
{
    int l;
    return sscanf(name, "blocks.%d.", &l) == 1 ? l : -1;
}

/* The head axis TransformerLens's hook shapes imply for a hook name. */
static int expected_head_axis(const char *name)
{
    const char *dot = strrchr(name, '.');
    const char *leaf = dot ? dot + 1 : name;
    if (strstr(name, ".attn.")) {
        if (!strcmp(leaf, "hook_q") || !strcmp(leaf, "hook_k") || !strcmp(leaf, "hook_v") || !strcmp(leaf, "hook_z") ||
            !strcmp(leaf, "hook_result"))
            return 2;
        if (!strcmp(leaf, "hook_pattern") || !strcmp(leaf, "hook_attn_scores")) return 1;
    }
    return -1;
}

static int hook_continue(const circuits_tensor *t, void *u)
{
    (void)t;
    (void)u;
    return CIRCUITS_HOOK_CONTINUE;
}

static int hook_count(const circuits_tensor *t, void *u)
{
    (void)t;
    (*(long *)u)++;
    return CIRCUITS_HOOK_CONTINUE;
}

/* A non-constant edit (a constant per row would be removed by the next LayerNorm). */
static int hook_edit(const circuits_tensor *t, void *u)
{
    (void)u;
    size_t n = numel(t);
    for (size_t i = 0; i < n; i++) t->data[i] += 0.25f * (float)(i % 5) - 0.3f * (float)(i % 3);
    return CIRCUITS_HOOK_CONTINUE;
}

/* ---------------------------------------------------------------------------------------- */
/* versions and errors                                                                       */
/* ---------------------------------------------------------------------------------------- */

typedef struct err_thread_arg {
    char seen_at_start[256];
    char own_message[256];
    int rc;
} err_thread_arg;

static void *err_thread(void *p)
{
    err_thread_arg *a = p;
    snprintf(a->seen_at_start, sizeof a->seen_at_start, "%s", circuits_last_error());
    char buf[4];
    a->rc = circuits_act_name("pattern", 1, NULL, buf, sizeof buf);
    snprintf(a->own_message, sizeof a->own_message, "%s", circuits_last_error());
    return NULL;
}

static void test_versions_errors(void)
{
    CHECK(circuits_version_number() == CIRCUITS_VERSION_NUMBER, "version %u vs header %d", circuits_version_number(),
          CIRCUITS_VERSION_NUMBER);
    CHECK(CIRCUITS_VERSION_NUMBER == CIRCUITS_VERSION_MAJOR * 10000 + CIRCUITS_VERSION_MINOR * 100 + CIRCUITS_VERSION_PATCH,
          "version number formula");
    CHECK(circuits_version_string() && strcmp(circuits_version_string(), CIRCUITS_VERSION_STRING) == 0,
          "version string '%s' vs header '%s'", circuits_version_string(), CIRCUITS_VERSION_STRING);
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", CIRCUITS_VERSION_MAJOR, CIRCUITS_VERSION_MINOR, CIRCUITS_VERSION_PATCH);
    CHECK(strcmp(circuits_version_string(), v) == 0, "version string '%s' vs MAJOR.MINOR.PATCH '%s'",
          circuits_version_string(), v);
    CHECK(circuits_abi_version() == CIRCUITS_ABI_VERSION, "abi %d vs %d", circuits_abi_version(), CIRCUITS_ABI_VERSION);

    static const struct { int status; const char *name; } st[] = {
        {CIRCUITS_OK, "CIRCUITS_OK"},
        {CIRCUITS_E_INVALID_ARGUMENT, "CIRCUITS_E_INVALID_ARGUMENT"},
        {CIRCUITS_E_OUT_OF_MEMORY, "CIRCUITS_E_OUT_OF_MEMORY"},
        {CIRCUITS_E_IO, "CIRCUITS_E_IO"},
        {CIRCUITS_E_FORMAT, "CIRCUITS_E_FORMAT"},
        {CIRCUITS_E_CONFIG, "CIRCUITS_E_CONFIG"},
        {CIRCUITS_E_UNSUPPORTED, "CIRCUITS_E_UNSUPPORTED"},
        {CIRCUITS_E_TENSOR_MISSING, "CIRCUITS_E_TENSOR_MISSING"},
        {CIRCUITS_E_TENSOR_UNEXPECTED, "CIRCUITS_E_TENSOR_UNEXPECTED"},
        {CIRCUITS_E_SHAPE, "CIRCUITS_E_SHAPE"},
        {CIRCUITS_E_DTYPE, "CIRCUITS_E_DTYPE"},
        {CIRCUITS_E_NOT_FOUND, "CIRCUITS_E_NOT_FOUND"},
        {CIRCUITS_E_RANGE, "CIRCUITS_E_RANGE"},
        {CIRCUITS_E_CALLBACK, "CIRCUITS_E_CALLBACK"},
        {CIRCUITS_E_STOPPED, "CIRCUITS_E_STOPPED"},
        {CIRCUITS_E_VERSION, "CIRCUITS_E_VERSION"},
    };
    size_t ns = sizeof st / sizeof st[0];
    CHECK(ns == 16 && st[ns - 1].status == -15, "the status table covers 0 .. -15");
    for (size_t i = 0; i < ns; i++) {
        const char *s = circuits_status_string(st[i].status);
        CHECK(s != NULL, "status %d has no string", st[i].status);
        if (!s) continue;
        size_t nl = strlen(st[i].name);
        CHECK(strncmp(s, st[i].name, nl) == 0 && (s[nl] == ':' || s[nl] == '\0'), "status %d string '%s' does not name %s",
              st[i].status, s, st[i].name);
        for (size_t j = 0; j < i; j++) {
            const char *o = circuits_status_string(st[j].status);
            CHECK(o && strcmp(s, o) != 0, "statuses %d and %d share the string '%s'", st[i].status, st[j].status, s);
        }
    }
    const int unknown[] = {1, 2, -16, -1000, 123456, (int)0x80000000u};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = circuits_status_string(unknown[i]);
        CHECK(s != NULL && s[0] != '\0', "unknown status %d: NULL or empty string", unknown[i]);
        for (size_t j = 0; s && j < ns; j++)
            CHECK(strcmp(s, circuits_status_string(st[j].status)) != 0, "unknown status %d reads as %s", unknown[i],
                  st[j].name);
    }

    /* per-thread messages */
    circuits_model *m = (circuits_model *)(uintptr_t)1; /* must be reset to NULL on failure */
    CHECK_FAILS(circuits_model_load(&m, "/nonexistent/libcircuits-model", NULL), CIRCUITS_E_IO, "/nonexistent/");
    CHECK(m == NULL, "a failed load leaves *out NULL");
    char mine[256];
    snprintf(mine, sizeof mine, "%s", circuits_last_error());
    err_thread_arg a;
    memset(&a, 0, sizeof a);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, err_thread, &a) == 0, "pthread_create");
    pthread_join(th, NULL);
    CHECK(a.seen_at_start[0] == '\0', "a new thread sees another thread's error '%s'", a.seen_at_start);
    CHECK(a.rc == CIRCUITS_E_RANGE, "act_name with a 4-byte buffer -> %d", a.rc);
    CHECK(strstr(a.own_message, "too small") != NULL, "the thread's own message: '%s'", a.own_message);
    CHECK(strcmp(circuits_last_error(), mine) == 0, "another thread's failure changed this thread's message to '%s'",
          circuits_last_error());
    circuits_clear_error();
    CHECK(circuits_last_error() != NULL && circuits_last_error()[0] == '\0', "clear_error leaves '%s'",
          circuits_last_error());
}

/* ---------------------------------------------------------------------------------------- */
/* config                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static void test_config(void)
{
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_config c = config_of(m);
    CHECK(c.size == sizeof c, "size %u", c.size);
    CHECK(c.n_layers == 5 && c.d_model == 32 && c.n_heads == 4 && c.d_head == 8 && c.d_mlp == 128, "dims %d %d %d %d %d",
          c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp);
    CHECK(c.d_vocab == 1000 && c.d_vocab_out == 1000 && c.n_ctx == 512, "vocab %d/%d n_ctx %d", c.d_vocab, c.d_vocab_out,
          c.n_ctx);
    CHECK(c.act_fn == CIRCUITS_ACT_GELU_NEW, "act_fn %d", c.act_fn);
    CHECK(c.normalization_type == CIRCUITS_NORM_LN, "normalization %d", c.normalization_type);
    CHECK(c.positional_embedding_type == CIRCUITS_POS_STANDARD, "pos embed %d", c.positional_embedding_type);
    CHECK(c.format == CIRCUITS_FORMAT_HF_GPT2, "format %d", c.format);
    CHECK(c.attn_only == 0 && c.scale_attn_by_inverse_layer_idx == 0, "attn_only %d, inverse idx %d", c.attn_only,
          c.scale_attn_by_inverse_layer_idx);
    CHECK(fabsf(c.eps - 1e-5f) < 1e-12f, "eps %g", (double)c.eps);
    CHECK(fabs(c.attn_scale - sqrt(8.0)) < 1e-6, "attn_scale %g", (double)c.attn_scale);

    /* a size that ends inside the struct is no published version: refused, nothing written */
    union { circuits_config c; unsigned char b[sizeof(circuits_config) + 16]; } u;
    memset(&u, 0xAB, sizeof u);
    u.c.size = (uint32_t)offsetof(circuits_config, n_heads);
    CHECK_FAILS(circuits_model_config(m, &u.c), CIRCUITS_E_VERSION, "out->size 12 is not one this library knows");
    bool untouched = true;
    for (size_t i = sizeof u.c.size; i < sizeof u; i++) untouched &= u.b[i] == 0xAB;
    CHECK(untouched && u.c.size == offsetof(circuits_config, n_heads), "a refused request wrote into the struct");
    /* a caller with a bigger (newer) struct gets this library's fields and size */
    memset(&u, 0xAB, sizeof u);
    u.c.size = (uint32_t)sizeof u;
    CHECK_OK(circuits_model_config(m, &u.c));
    CHECK(u.c.size == sizeof(circuits_config), "out->size %u for a bigger struct", u.c.size);
    CHECK(u.c.attn_scale == c.attn_scale && u.c.n_ctx == 512, "full copy");
    untouched = true;
    for (size_t i = sizeof(circuits_config); i < sizeof u; i++) untouched &= u.b[i] == 0xAB;
    CHECK(untouched, "bytes beyond sizeof(circuits_config) were written");
    circuits_config z;
    memset(&z, 0, sizeof z);
    CHECK_ERR(circuits_model_config(m, &z), CIRCUITS_E_VERSION);
    z.size = 2;
    CHECK_ERR(circuits_model_config(m, &z), CIRCUITS_E_VERSION);
    circuits_model_free(m);

    m = load_case("tl_1l_solu_ln");
    c = config_of(m);
    CHECK(c.n_layers == 1 && c.d_model == 16 && c.n_heads == 2 && c.d_head == 8 && c.d_mlp == 32, "TL dims %d %d %d %d %d",
          c.n_layers, c.d_model, c.n_heads, c.d_head, c.d_mlp);
    CHECK(c.d_vocab == 50 && c.d_vocab_out == 50 && c.n_ctx == 32, "TL vocab %d/%d n_ctx %d", c.d_vocab, c.d_vocab_out,
          c.n_ctx);
    CHECK(c.act_fn == CIRCUITS_ACT_SOLU_LN && c.normalization_type == CIRCUITS_NORM_LN &&
              c.positional_embedding_type == CIRCUITS_POS_STANDARD,
          "TL act %d norm %d pos %d", c.act_fn, c.normalization_type, c.positional_embedding_type);
    CHECK(c.format == CIRCUITS_FORMAT_TRANSFORMERLENS, "TL format %d", c.format);
    CHECK(fabs(c.attn_scale - 2.8284271247461903) < 1e-6 && fabsf(c.eps - 1e-5f) < 1e-12f, "TL attn_scale %g eps %g",
          (double)c.attn_scale, (double)c.eps);
    circuits_model_free(m);

    /* load options */
    char p[4096];
    case_dir(p, sizeof p, "tl_1l_solu_ln");
    circuits_load_options lo;
    memset(&lo, 0x55, sizeof lo);
    circuits_load_options_init(&lo);
    CHECK(lo.size == sizeof lo && lo.fold_ln == 1 && lo.center_writing_weights == 1 && lo.center_unembed == 1 &&
              lo.fold_value_biases == 1 && lo.refactor_factored_attn_matrices == 0, "load_options_init: TL defaults");
    m = NULL;
    CHECK_OK(circuits_model_load(&m, p, &lo));
    circuits_model_free(m);
    lo.size = 0;
    m = (circuits_model *)(uintptr_t)1;
    CHECK_ERR(circuits_model_load(&m, p, &lo), CIRCUITS_E_VERSION);
    CHECK(m == NULL, "a failed load leaves *out NULL");
    lo.size = sizeof lo + 8;
    CHECK_ERR(circuits_model_load(&m, p, &lo), CIRCUITS_E_VERSION);
    circuits_load_options_init(&lo);
    lo.fold_ln = 2;
    CHECK_ERR(circuits_model_load(&m, p, &lo), CIRCUITS_E_INVALID_ARGUMENT);
    CHECK(m == NULL, "a failed load leaves *out NULL");
}

/* ---------------------------------------------------------------------------------------- */
/* weight views                                                                              */
/* ---------------------------------------------------------------------------------------- */

static void check_enumeration(const circuits_model *m, size_t want_count, const char *label)
{
    size_t n = circuits_model_weight_count(m);
    CHECK(n == want_count, "%s: %zu weights, want %zu", label, n, want_count);
    for (size_t i = 0; i < n; i++) {
        circuits_tensor a, b;
        CHECK_OK(circuits_model_weight_at(m, i, &a));
        CHECK(a.name && a.data, "%s: weight %zu has no name or data", label, i);
        if (!a.name) continue;
        CHECK_OK(circuits_model_weight(m, a.name, &b));
        CHECK(b.data == a.data && b.ndim == a.ndim && !memcmp(b.shape, a.shape, sizeof a.shape) &&
                  !memcmp(b.strides, a.strides, sizeof a.strides) && b.layer == a.layer && b.head_axis == a.head_axis,
              "%s: weight_at(%zu) and weight('%s') differ", label, i, a.name);
        CHECK(a.layer == parse_layer(a.name), "%s: '%s' has layer %d", label, a.name, a.layer);
        CHECK(a.head == -1, "%s: '%s' has head %d", label, a.name, a.head);
        const char *dot = strrchr(a.name, '.');
        bool headed = false;
        static const char *const head_leaves[] = {".W_Q", ".W_K", ".W_V", ".W_O", ".b_Q", ".b_K", ".b_V"};
        for (size_t k = 0; dot && k < sizeof head_leaves / sizeof head_leaves[0]; k++)
            headed |= strcmp(dot, head_leaves[k]) == 0;
        CHECK(a.head_axis == (headed ? 0 : -1), "%s: '%s' has head_axis %d", label, a.name, a.head_axis);
        for (size_t j = 0; j < i; j++) {
            circuits_tensor o;
            if (circuits_model_weight_at(m, j, &o) == CIRCUITS_OK)
                CHECK(strcmp(o.name, a.name) != 0, "%s: '%s' listed twice", label, a.name);
        }
    }
    circuits_tensor t;
    CHECK_ERR(circuits_model_weight_at(m, n, &t), CIRCUITS_E_RANGE);
}

static circuits_tensor weight(const circuits_model *m, const char *name)
{
    circuits_tensor t;
    memset(&t, 0, sizeof t);
    CHECK_OK(circuits_model_weight(m, name, &t));
    return t;
}

static void test_weights(void)
{
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    const int64_t D = 32, H = 4, dh = 8, V = 1000, M = 128, C = 512;
    check_enumeration(m, 2 + 5 * 16 + 2 + 2, "hf_tiny_random_gpt2");
    circuits_tensor WE = weight(m, "embed.W_E"), Wpos = weight(m, "pos_embed.W_pos"), WU = weight(m, "unembed.W_U"),
                    bU = weight(m, "unembed.b_U");
    CHECK(shape_is(&WE, SHAPE(V, D)) && contiguous(&WE), "W_E shape/strides");
    CHECK(shape_is(&Wpos, SHAPE(C, D)), "W_pos shape");
    CHECK(shape_is(&WU, SHAPE(D, V)), "W_U shape");
    CHECK(shape_is(&bU, SHAPE(V)), "b_U shape");
    CHECK(WE.layer == -1 && WE.head_axis == -1, "W_E layer %d head_axis %d", WE.layer, WE.head_axis);
    /* the tied unembedding is the embedding's memory, transposed */
    CHECK(WU.data == WE.data, "tied W_U does not share W_E's memory");
    CHECK(WU.strides[0] == 1 && WU.strides[1] == D, "tied W_U strides [%lld, %lld]", (long long)WU.strides[0],
          (long long)WU.strides[1]);
    bool transposed = true;
    for (int64_t i = 0; i < D && WU.ndim == 2; i++)
        for (int64_t v = 0; v < V; v++) transposed &= at2(&WU, i, v) == at2(&WE, v, i);
    CHECK(transposed, "W_U[i][v] != W_E[v][i]");
    bool zeros = true;
    for (int64_t v = 0; v < V && bU.ndim == 1; v++) zeros &= bU.data[v * bU.strides[0]] == 0.0f;
    CHECK(zeros, "GPT-2 has no b_U: it must read as zeros");

    char p[4096];
    snprintf(p, sizeof p, "%s/hf_tiny_random_gpt2/model.safetensors", g_cases);
    cx_st_set *file = NULL;
    CHECK_OK(cx_st_open_file(&file, p));
    for (int l = 0; l < 5; l += 4) {
        char nm[96];
        circuits_tensor W[3];
        for (int k = 0; k < 3; k++) {
            snprintf(nm, sizeof nm, "blocks.%d.attn.W_%c", l, "QKV"[k]);
            W[k] = weight(m, nm);
            CHECK(shape_is(&W[k], SHAPE(H, D, dh)), "%s shape", nm);
            CHECK(W[k].strides[0] == dh && W[k].strides[1] == 3 * D && W[k].strides[2] == 1,
                  "%s is not a zero-copy view of c_attn: strides [%lld, %lld, %lld]", nm, (long long)W[k].strides[0],
                  (long long)W[k].strides[1], (long long)W[k].strides[2]);
            CHECK(W[k].layer == l && W[k].head_axis == 0, "%s layer %d head_axis %d", nm, W[k].layer, W[k].head_axis);
            CHECK(W[k].data == W[0].data + k * D, "%s does not sit at offset %lld of c_attn", nm, (long long)(k * D));
        }
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_attn.weight", l);
        const cx_st_tensor *ca = file ? cx_st_find(file, nm) : NULL;
        CHECK(ca != NULL, "no %s in the file", nm);
        if (ca && W[1].ndim == 3) {
            bool same = true;
            for (int k = 0; k < 3; k++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t i = 0; i < D; i++)
                        for (int64_t j = 0; j < dh; j++)
                            same &= at3(&W[k], h, i, j) == cx_st_read_f32(ca, (size_t)(i * 3 * D + k * D + h * dh + j));
            CHECK(same, "W_{Q,K,V}[h][i][j] != c_attn.weight[i][k*D + h*dh + j]");
        }
        snprintf(nm, sizeof nm, "blocks.%d.attn.W_O", l);
        circuits_tensor WO = weight(m, nm);
        CHECK(shape_is(&WO, SHAPE(H, dh, D)), "W_O shape");
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_proj.weight", l);
        const cx_st_tensor *cp = file ? cx_st_find(file, nm) : NULL;
        if (cp && WO.ndim == 3) {
            bool same = true;
            for (int64_t h = 0; h < H; h++)
                for (int64_t k = 0; k < dh; k++)
                    for (int64_t j = 0; j < D; j++)
                        same &= at3(&WO, h, k, j) == cx_st_read_f32(cp, (size_t)((h * dh + k) * D + j));
            CHECK(same, "W_O[h][k][j] != c_proj.weight[h*dh + k][j]");
        }
        snprintf(nm, sizeof nm, "blocks.%d.attn.b_K", l);
        circuits_tensor bK = weight(m, nm);
        CHECK(shape_is(&bK, SHAPE(H, dh)), "b_K shape");
        snprintf(nm, sizeof nm, "transformer.h.%d.attn.c_attn.bias", l);
        const cx_st_tensor *cb = file ? cx_st_find(file, nm) : NULL;
        if (cb && bK.ndim == 2) {
            bool same = true;
            for (int64_t h = 0; h < H; h++)
                for (int64_t j = 0; j < dh; j++) same &= at2(&bK, h, j) == cx_st_read_f32(cb, (size_t)(D + h * dh + j));
            CHECK(same, "b_K[h][j] != c_attn.bias[D + h*dh + j]");
        }
        snprintf(nm, sizeof nm, "blocks.%d.mlp.W_in", l);
        circuits_tensor Win = weight(m, nm);
        snprintf(nm, sizeof nm, "blocks.%d.mlp.W_out", l);
        circuits_tensor Wout = weight(m, nm);
        CHECK(shape_is(&Win, SHAPE(D, M)) && contiguous(&Win), "W_in shape/strides");
        CHECK(shape_is(&Wout, SHAPE(M, D)) && contiguous(&Wout), "W_out shape/strides");
        snprintf(nm, sizeof nm, "blocks.%d.ln1.w", l);
        circuits_tensor ln = weight(m, nm);
        CHECK(shape_is(&ln, SHAPE(D)) && ln.layer == l, "ln1.w shape/layer");
    }
    cx_st_close(file);
    circuits_tensor t;
    CHECK_FAILS(circuits_model_weight(m, "blocks.0.attn.W_X", &t), CIRCUITS_E_NOT_FOUND, "blocks.0.attn.W_X");
    CHECK_ERR(circuits_model_weight(m, "blocks.5.attn.W_Q", &t), CIRCUITS_E_NOT_FOUND);
    CHECK_ERR(circuits_model_weight(m, "", &t), CIRCUITS_E_NOT_FOUND);
    CHECK_ERR(circuits_model_weight(m, "transformer.wte.weight", &t), CIRCUITS_E_NOT_FOUND);
    circuits_model_free(m);

    /* untied: W_U is lm_head.weight transposed, not W_E */
    m = load_case("hf_random_untied");
    check_enumeration(m, 2 + 2 * 16 + 2 + 2, "hf_random_untied");
    WE = weight(m, "embed.W_E");
    WU = weight(m, "unembed.W_U");
    CHECK(shape_is(&WU, SHAPE(16, 64)) && WU.strides[0] == 1 && WU.strides[1] == 16, "untied W_U shape/strides");
    CHECK(WU.data != WE.data, "untied W_U aliases W_E");
    snprintf(p, sizeof p, "%s/hf_random_untied/model.safetensors", g_cases);
    file = NULL;
    CHECK_OK(cx_st_open_file(&file, p));
    const cx_st_tensor *lm = file ? cx_st_find(file, "lm_head.weight") : NULL;
    CHECK(lm != NULL, "no lm_head.weight");
    if (lm && WU.ndim == 2) {
        bool same = true, differs = false;
        for (int64_t i = 0; i < 16; i++)
            for (int64_t v = 0; v < 64; v++) {
                same &= at2(&WU, i, v) == cx_st_read_f32(lm, (size_t)(v * 16 + i));
                differs |= at2(&WU, i, v) != at2(&WE, v, i);
            }
        CHECK(same, "untied W_U[i][v] != lm_head.weight[v][i]");
        CHECK(differs, "untied W_U equals W_E^T: the test model does not exercise untying");
    }
    cx_st_close(file);
    circuits_model_free(m);

    /* TransformerLens layout: contiguous views of the stored tensors */
    m = load_case("tl_1l_solu_ln");
    check_enumeration(m, 2 + 18 + 2 + 2, "tl_1l_solu_ln");
    snprintf(p, sizeof p, "%s/tl_1l_solu_ln/model.safetensors", g_cases);
    file = NULL;
    CHECK_OK(cx_st_open_file(&file, p));
    for (size_t i = 0; file && i < circuits_model_weight_count(m); i++) {
        circuits_tensor w;
        if (circuits_model_weight_at(m, i, &w) != CIRCUITS_OK) continue;
        CHECK(contiguous(&w), "TL weight '%s' is not contiguous", w.name);
        const cx_st_tensor *s = cx_st_find(file, w.name);
        CHECK(s != NULL, "TL weight '%s' not stored under its name", w.name);
        if (!s) continue;
        bool same = s->ndim == w.ndim && s->numel == numel(&w);
        for (size_t k = 0; same && k < s->numel; k++) same = w.data[k] == cx_st_read_f32(s, k);
        CHECK(same, "TL weight '%s' differs from the stored tensor", w.name);
    }
    circuits_tensor WQ = weight(m, "blocks.0.attn.W_Q");
    CHECK(shape_is(&WQ, SHAPE(2, 16, 8)), "TL W_Q shape");
    circuits_tensor mln = weight(m, "blocks.0.mlp.ln.w");
    CHECK(shape_is(&mln, SHAPE(32)), "solu_ln mlp.ln.w shape");
    cx_st_close(file);
    circuits_model_free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* hook points                                                                               */
/* ---------------------------------------------------------------------------------------- */

static void check_hook_points(const char *case_name)
{
    json_t *cj = case_json(case_name);
    json_t *order = json_object_get(cj, "hook_names_in_order");
    int uar = json_is_true(json_object_get(cj, "use_attn_result"));
    circuits_model *m = load_case(case_name);
    circuits_context *ctx = make_ctx(m, uar);
    size_t n = circuits_context_hook_point_count(ctx);
    CHECK(n == json_array_size(order), "%s: %zu hook points, TransformerLens has %zu", case_name, n,
          json_array_size(order));
    for (size_t i = 0; i < n && i < json_array_size(order); i++) {
        const char *want = json_string_value(json_array_get(order, i));
        circuits_tensor t;
        memset(&t, 0x5A, sizeof t);
        CHECK_OK(circuits_context_hook_point(ctx, i, 2, 5, &t));
        CHECK(t.name && strcmp(t.name, want) == 0, "%s: point %zu is '%s', want '%s'", case_name, i, t.name, want);
        CHECK(t.layer == parse_layer(want), "%s: '%s' layer %d", case_name, want, t.layer);
        CHECK(t.head == -1 && t.head_axis == expected_head_axis(want), "%s: '%s' head %d head_axis %d", case_name, want,
              t.head, t.head_axis);
        CHECK(t.data == NULL, "%s: '%s' data is not NULL before any run", case_name, want);
        CHECK(t.ndim >= 3 && t.ndim <= 4 && contiguous(&t), "%s: '%s' ndim %d / strides not contiguous", case_name,
              want, t.ndim);
        CHECK(t.shape[0] == 2 && (t.head_axis == 1 || t.shape[1] == 5), "%s: '%s' leading dims", case_name, want);
    }
    circuits_tensor t;
    CHECK_ERR(circuits_context_hook_point(ctx, n, 2, 5, &t), CIRCUITS_E_RANGE);
    CHECK_ERR(circuits_context_hook_point(ctx, 0, 0, 5, &t), CIRCUITS_E_SHAPE);
    CHECK_ERR(circuits_context_hook_point(ctx, 0, 2, 0, &t), CIRCUITS_E_SHAPE);
    circuits_context_free(ctx);
    circuits_model_free(m);
    json_decref(cj);
}

static bool point_named(const circuits_context *ctx, const char *name, circuits_tensor *out)
{
    for (size_t i = 0; i < circuits_context_hook_point_count(ctx); i++)
        if (circuits_context_hook_point(ctx, i, 2, 5, out) == CIRCUITS_OK && strcmp(out->name, name) == 0) return true;
    return false;
}

static void test_hook_points(void)
{
    check_hook_points("hf_tiny_random_gpt2");
    check_hook_points("tl_1l_solu_ln");
    check_hook_points("hf_random_untied");
    check_hook_points("tl_gelu_new_attn_result");
    check_hook_points("tl_attn_only_2l_none");
    check_hook_points("tl_shortformer_relu");

    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_context *ctx = make_ctx(m, 0);
    circuits_tensor t;
    CHECK(point_named(ctx, "blocks.0.attn.hook_q", &t) && shape_is(&t, SHAPE(2, 5, 4, 8)) && t.head_axis == 2,
          "hook_q shape/head_axis");
    CHECK(point_named(ctx, "blocks.3.attn.hook_z", &t) && shape_is(&t, SHAPE(2, 5, 4, 8)) && t.head_axis == 2 &&
              t.layer == 3,
          "hook_z");
    CHECK(point_named(ctx, "blocks.1.attn.hook_pattern", &t) && shape_is(&t, SHAPE(2, 4, 5, 5)) && t.head_axis == 1 &&
              t.strides[0] == 100 && t.strides[1] == 25 && t.strides[2] == 5 && t.strides[3] == 1,
          "hook_pattern shape/strides");
    CHECK(point_named(ctx, "blocks.0.attn.hook_attn_scores", &t) && shape_is(&t, SHAPE(2, 4, 5, 5)), "attn_scores");
    CHECK(point_named(ctx, "blocks.0.ln1.hook_scale", &t) && shape_is(&t, SHAPE(2, 5, 1)) && t.head_axis == -1,
          "ln1 scale shape");
    CHECK(point_named(ctx, "ln_final.hook_scale", &t) && shape_is(&t, SHAPE(2, 5, 1)) && t.layer == -1, "ln_final scale");
    CHECK(point_named(ctx, "blocks.4.hook_resid_post", &t) && shape_is(&t, SHAPE(2, 5, 32)), "resid_post");
    CHECK(point_named(ctx, "blocks.2.mlp.hook_post", &t) && shape_is(&t, SHAPE(2, 5, 128)), "mlp post");
    CHECK(point_named(ctx, "unembed.hook_out", &t) && shape_is(&t, SHAPE(2, 5, 1000)), "unembed.hook_out");
    CHECK(point_named(ctx, "hook_embed", &t) && shape_is(&t, SHAPE(2, 5, 32)) && t.layer == -1, "hook_embed");
    for (size_t i = 0; i < circuits_context_hook_point_count(ctx); i++)
        if (circuits_context_hook_point(ctx, i, 1, 1, &t) == CIRCUITS_OK)
            CHECK(strstr(t.name, "hook_result") == NULL, "'%s' exists without use_attn_result", t.name);
    size_t n0 = circuits_context_hook_point_count(ctx);
    circuits_context *ctx1 = make_ctx(m, 1);
    CHECK(circuits_context_hook_point_count(ctx1) == n0 + 5, "use_attn_result adds one point per layer (%zu vs %zu)",
          circuits_context_hook_point_count(ctx1), n0);
    CHECK(point_named(ctx1, "blocks.2.attn.hook_result", &t) && shape_is(&t, SHAPE(2, 5, 4, 32)) && t.head_axis == 2 &&
              t.layer == 2,
          "hook_result shape [batch, pos, head, d_model]");
    /* hook_result fires between hook_z and hook_attn_out */
    for (size_t i = 1; i + 1 < circuits_context_hook_point_count(ctx1); i++) {
        circuits_tensor a, b;
        if (circuits_context_hook_point(ctx1, i, 1, 1, &t) || !strstr(t.name, "hook_result")) continue;
        circuits_context_hook_point(ctx1, i - 1, 1, 1, &a);
        circuits_context_hook_point(ctx1, i + 1, 1, 1, &b);
        CHECK(strstr(a.name, "attn.hook_z") && strstr(b.name, "hook_attn_out"), "'%s' between '%s' and '%s'", t.name,
              a.name, b.name);
    }
    circuits_context_free(ctx1);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* name resolution                                                                           */
/* ---------------------------------------------------------------------------------------- */

static void check_resolves(const circuits_context *ctx, const char *name, const char *want)
{
    char buf[128] = "";
    size_t count = 99;
    circuits_clear_error();
    int rc = circuits_context_resolve_hook_name(ctx, name, 0, buf, sizeof buf, &count);
    CHECK(rc == CIRCUITS_OK && count == 1 && strcmp(buf, want) == 0, "'%s' -> %d, %zu points, '%s'; want '%s' (%s)",
          name, rc, count, buf, want, circuits_last_error());
}

static void check_act_name(const char *name, int32_t layer, const char *type, const char *want)
{
    char buf[128] = "";
    int rc = circuits_act_name(name, layer, type, buf, sizeof buf);
    CHECK(rc == CIRCUITS_OK && strcmp(buf, want) == 0, "act_name('%s', %d, %s) -> %d '%s', want '%s'", name, layer,
          type ? type : "NULL", rc, buf, want);
}

static void test_names(void)
{
    json_t *cj = case_json("hf_tiny_random_gpt2");
    json_t *order = json_object_get(cj, "hook_names_in_order");
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_context *ctx = make_ctx(m, 0);
    size_t np = circuits_context_hook_point_count(ctx);

    for (size_t i = 0; i < json_array_size(order); i++) {
        const char *nm = json_string_value(json_array_get(order, i));
        check_resolves(ctx, nm, nm);
    }
    check_resolves(ctx, "pattern0", "blocks.0.attn.hook_pattern");
    check_resolves(ctx, "pattern4", "blocks.4.attn.hook_pattern");
    check_resolves(ctx, "resid_pre0", "blocks.0.hook_resid_pre");
    check_resolves(ctx, "resid_post3", "blocks.3.hook_resid_post");
    check_resolves(ctx, "k0a", "blocks.0.attn.hook_k");
    check_resolves(ctx, "q2", "blocks.2.attn.hook_q");
    check_resolves(ctx, "attn_scores1", "blocks.1.attn.hook_attn_scores");
    check_resolves(ctx, "scale0ln1", "blocks.0.ln1.hook_scale");
    check_resolves(ctx, "normalized2ln2", "blocks.2.ln2.hook_normalized");
    check_resolves(ctx, "normalized", "ln_final.hook_normalized");
    check_resolves(ctx, "scale", "ln_final.hook_scale");
    check_resolves(ctx, "embed", "hook_embed");
    check_resolves(ctx, "pos_embed", "hook_pos_embed");
    check_resolves(ctx, "mlp_out0", "blocks.0.hook_mlp_out");
    check_resolves(ctx, "attn_out1", "blocks.1.hook_attn_out");
    check_resolves(ctx, "post3", "blocks.3.mlp.hook_post");
    check_resolves(ctx, "hook_embed", "hook_embed");

    check_act_name("k", 6, "a", "blocks.6.attn.hook_k");
    check_act_name("pre", 2, NULL, "blocks.2.mlp.hook_pre");
    check_act_name("embed", -1, NULL, "hook_embed");
    check_act_name("normalized", 27, "ln2", "blocks.27.ln2.hook_normalized");
    check_act_name("resid_pre", 3, NULL, "blocks.3.hook_resid_pre");
    check_act_name("attn", 1, NULL, "blocks.1.attn.hook_pattern");
    check_act_name("scale", -1, NULL, "ln_final.hook_scale");
    check_act_name("pattern", 1, NULL, "blocks.1.attn.hook_pattern");
    check_act_name("scale", 4, "ln1", "blocks.4.ln1.hook_scale");
    check_act_name("blocks.0.hook_resid_pre", -1, NULL, "blocks.0.hook_resid_pre");
    check_act_name("hook_pos_embed", -1, NULL, "hook_pos_embed");
    char small[32];
    CHECK_FAILS(circuits_act_name("k", 6, "a", small, 20), CIRCUITS_E_RANGE, "too small"); /* needs 21 */
    CHECK_OK(circuits_act_name("k", 6, "a", small, 21));
    CHECK(strcmp(small, "blocks.6.attn.hook_k") == 0, "exact-size buffer: '%s'", small);
    CHECK_ERR(circuits_act_name("k", 6, "a", small, 0), CIRCUITS_E_RANGE);

    /* patterns */
    size_t count = 0;
    char buf[128];
    CHECK_OK(circuits_context_resolve_hook_name(ctx, "blocks.*.attn.hook_pattern", 0, buf, sizeof buf, &count));
    CHECK(count == 5, "blocks.*.attn.hook_pattern selects %zu", count);
    for (size_t i = 0; i < count; i++) {
        char want[64];
        snprintf(want, sizeof want, "blocks.%zu.attn.hook_pattern", i);
        CHECK_OK(circuits_context_resolve_hook_name(ctx, "blocks.*.attn.hook_pattern", i, buf, sizeof buf, NULL));
        CHECK(strcmp(buf, want) == 0, "pattern match %zu is '%s'", i, buf);
    }
    CHECK_ERR(circuits_context_resolve_hook_name(ctx, "blocks.*.attn.hook_pattern", 5, buf, sizeof buf, NULL),
              CIRCUITS_E_RANGE);
    CHECK_OK(circuits_context_resolve_hook_name(ctx, "*", 0, buf, sizeof buf, &count));
    CHECK(count == np && count == json_array_size(order), "'*' selects %zu of %zu", count, np);
    for (size_t i = 0; i < count && i < json_array_size(order); i++) {
        CHECK_OK(circuits_context_resolve_hook_name(ctx, "*", i, buf, sizeof buf, NULL));
        CHECK(strcmp(buf, json_string_value(json_array_get(order, i))) == 0, "'*' match %zu is '%s'", i, buf);
    }
    CHECK_OK(circuits_context_resolve_hook_name(ctx, "*hook_scale", 0, buf, sizeof buf, &count));
    CHECK(count == 11, "'*hook_scale' selects %zu (ln1, ln2 per layer and ln_final)", count);
    CHECK_OK(circuits_context_resolve_hook_name(ctx, "blocks.1.*", 0, buf, sizeof buf, &count));
    CHECK(count == 17 && strcmp(buf, "blocks.1.hook_resid_pre") == 0, "'blocks.1.*' selects %zu, first '%s'", count, buf);
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "*", 0, buf, 5, NULL), CIRCUITS_E_RANGE, "hook_embed");

    /* not found */
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "blocks.0.attn.hook_nope", 0, buf, sizeof buf, NULL),
                CIRCUITS_E_NOT_FOUND, "blocks.0.attn.hook_nope");
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "nonsense", 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND,
                "nonsense");
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "pattern5", 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND,
                "pattern5");
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "blocks.*.hook_nothing", 0, buf, sizeof buf, NULL),
                CIRCUITS_E_NOT_FOUND, "blocks.*.hook_nothing");
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "", 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND, "no hook");
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "blocks.0.attn.hook_result", 0, buf, sizeof buf, NULL),
                CIRCUITS_E_NOT_FOUND, "use_attn_result");
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "result0", 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND,
                "use_attn_result");
    char longname[400];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_ERR(circuits_context_resolve_hook_name(ctx, longname, 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND);
    long calls = 0;
    CHECK_FAILS(circuits_context_add_hook(ctx, "blocks.0.attn.hook_result", hook_count, &calls, NULL),
                CIRCUITS_E_NOT_FOUND, "use_attn_result");
    CHECK_FAILS(circuits_context_add_hook(ctx, "blocks.9.*", hook_count, &calls, NULL), CIRCUITS_E_NOT_FOUND,
                "blocks.9.*");
    CHECK_ERR(circuits_context_add_hook(ctx, longname, hook_count, &calls, NULL), CIRCUITS_E_NOT_FOUND);
    int32_t tok[5] = {1, 2, 3, 4, 5};
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 5, NULL, NULL, NULL));
    CHECK(calls == 0, "a failed add_hook left a registration (%ld calls)", calls);

    /* with use_attn_result, hook_result resolves */
    circuits_context *ctx1 = make_ctx(m, 1);
    check_resolves(ctx1, "blocks.0.attn.hook_result", "blocks.0.attn.hook_result");
    check_resolves(ctx1, "result4", "blocks.4.attn.hook_result");
    circuits_context_free(ctx1);
    circuits_context_free(ctx);
    circuits_model_free(m);

    /* a model without LayerNorm has no ln hooks, and says so */
    m = load_case("tl_attn_only_2l_none");
    ctx = make_ctx(m, 0);
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, "scale0ln1", 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND,
                "LayerNorm");
    CHECK_ERR(circuits_context_resolve_hook_name(ctx, "mlp_out0", 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND);
    CHECK_ERR(circuits_context_resolve_hook_name(ctx, "*ln*", 0, buf, sizeof buf, NULL), CIRCUITS_E_NOT_FOUND);
    circuits_context_free(ctx);
    circuits_model_free(m);
    json_decref(cj);
}

/* ---------------------------------------------------------------------------------------- */
/* hook semantics                                                                            */
/* ---------------------------------------------------------------------------------------- */

typedef struct rec_entry {
    char name[96];
    int32_t layer, head, head_axis, ndim;
    int64_t shape[CIRCUITS_MAX_DIMS], strides[CIRCUITS_MAX_DIMS];
    bool has_data;
} rec_entry;

typedef struct recorder {
    rec_entry e[256];
    size_t n;
} recorder;

static int hook_record(const circuits_tensor *t, void *u)
{
    recorder *r = u;
    if (r->n < sizeof r->e / sizeof r->e[0]) {
        rec_entry *e = &r->e[r->n];
        snprintf(e->name, sizeof e->name, "%s", t->name);
        e->layer = t->layer;
        e->head = t->head;
        e->head_axis = t->head_axis;
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, sizeof e->shape);
        memcpy(e->strides, t->strides, sizeof e->strides);
        e->has_data = t->data != NULL;
    }
    r->n++;
    return CIRCUITS_HOOK_CONTINUE;
}

typedef struct order_log {
    char tags[64];
    size_t n;
    float seen[64];
} order_log;

typedef struct tagged {
    order_log *log;
    char tag;
} tagged;

/* Logs its tag and the first value it sees, then adds 1 to it. */
static int hook_tagged(const circuits_tensor *t, void *u)
{
    tagged *g = u;
    if (g->log->n < sizeof g->log->seen / sizeof g->log->seen[0]) {
        g->log->tags[g->log->n] = g->tag;
        g->log->seen[g->log->n] = t->data[0];
        g->log->n++;
        g->log->tags[g->log->n] = '\0';
    }
    t->data[0] += 1.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

static void test_hook_semantics(void)
{
    json_t *cj = case_json("hf_tiny_random_gpt2");
    json_t *order = json_object_get(cj, "hook_names_in_order");
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_context *ctx = make_ctx(m, 0);
    const int64_t B = 2, T = 5, V = 1000;
    int32_t tok[10];
    make_tokens(tok, 10, 1000, 7);
    float *base = malloc((size_t)(B * T * V) * sizeof *base), *lg = malloc((size_t)(B * T * V) * sizeof *lg);
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, base, NULL, NULL));

    /* descriptors and firing order, with every point hooked */
    recorder *rec = calloc(1, sizeof *rec);
    circuits_hook_id id_all = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "*", hook_record, rec, &id_all));
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL));
    CHECK(rec->n == json_array_size(order), "'*' hook called %zu times, %zu points", rec->n, json_array_size(order));
    for (size_t i = 0; i < rec->n && i < json_array_size(order); i++) {
        rec_entry *e = &rec->e[i];
        const char *want = json_string_value(json_array_get(order, i));
        CHECK(strcmp(e->name, want) == 0, "call %zu at '%s', TransformerLens fires '%s'", i, e->name, want);
        circuits_tensor d;
        CHECK_OK(circuits_context_hook_point(ctx, i, B, T, &d));
        CHECK(e->layer == d.layer && e->layer == parse_layer(want), "'%s' layer %d", want, e->layer);
        CHECK(e->head == -1 && e->head_axis == d.head_axis, "'%s' head %d head_axis %d", want, e->head, e->head_axis);
        CHECK(e->ndim == d.ndim && !memcmp(e->shape, d.shape, sizeof(int64_t) * (size_t)d.ndim) &&
                  !memcmp(e->strides, d.strides, sizeof(int64_t) * (size_t)d.ndim),
              "'%s' descriptor differs from circuits_context_hook_point", want);
        CHECK(e->has_data, "'%s' fired with NULL data", want);
    }
    CHECK(memcmp(lg, base, (size_t)(B * T * V) * sizeof *lg) == 0, "a read-only hook changed the logits");
    CHECK_OK(circuits_context_remove_hook(ctx, id_all));
    rec->n = 0;
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL));
    CHECK(rec->n == 0, "'*' hook still called %zu times after removal by its id", rec->n);
    CHECK_ERR(circuits_context_remove_hook(ctx, id_all), CIRCUITS_E_NOT_FOUND);

    /* several hooks at one point: registration order, each sees the previous edit; exact names,
     * short names and patterns interleave by registration */
    order_log log;
    memset(&log, 0, sizeof log);
    tagged A = {&log, 'A'}, Bt = {&log, 'B'}, Ct = {&log, 'C'}, Dt = {&log, 'D'};
    circuits_hook_id ia, ib, ic, id;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", hook_tagged, &A, &ia));
    CHECK_OK(circuits_context_add_hook(ctx, "resid_pre0", hook_tagged, &Bt, &ib));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.*", hook_tagged, &Ct, &ic));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", hook_tagged, &Dt, &id));
    CHECK(ia > 0 && ib != ia && ic != ib && ic != ia && id != ic && id != ib && id != ia, "ids not distinct: %lld %lld %lld %lld",
          (long long)ia, (long long)ib, (long long)ic, (long long)id);
    CHECK_OK(circuits_context_forward(ctx, tok, 1, T, NULL, NULL, NULL));
    CHECK(log.n >= 4 && strncmp(log.tags, "ABCD", 4) == 0, "order at resid_pre0: '%s'", log.tags);
    for (size_t i = 1; i < 4 && i < log.n; i++)
        CHECK(log.seen[i] == log.seen[i - 1] + 1.0f, "hook %c saw %g, not the previous hook's edit %g", log.tags[i],
              (double)log.seen[i], (double)(log.seen[i - 1] + 1.0f));
    /* C (blocks.0.*) fires at every later block-0 point: 17 points in all */
    size_t nC = 0;
    for (size_t i = 0; i < log.n; i++) nC += log.tags[i] == 'C';
    CHECK(nC == 17 && log.n == 20, "blocks.0.* fired %zu times (log %zu)", nC, log.n);
    CHECK_OK(circuits_context_remove_hook(ctx, ib));
    memset(&log, 0, sizeof log);
    CHECK_OK(circuits_context_forward(ctx, tok, 1, T, NULL, NULL, NULL));
    CHECK(strncmp(log.tags, "ACD", 3) == 0 && log.n == 19, "after removing B: '%s'", log.tags);
    CHECK_OK(circuits_context_remove_hook(ctx, ic)); /* one id removes the pattern from all 17 points */
    memset(&log, 0, sizeof log);
    CHECK_OK(circuits_context_forward(ctx, tok, 1, T, NULL, NULL, NULL));
    CHECK(strcmp(log.tags, "AD") == 0, "after removing the pattern: '%s'", log.tags);
    CHECK_ERR(circuits_context_remove_hook(ctx, ic), CIRCUITS_E_NOT_FOUND);
    CHECK_FAILS(circuits_context_remove_hook(ctx, 987654), CIRCUITS_E_NOT_FOUND, "987654");
    CHECK_ERR(circuits_context_remove_hook(ctx, 0), CIRCUITS_E_NOT_FOUND);
    CHECK_ERR(circuits_context_remove_hook(ctx, -1), CIRCUITS_E_NOT_FOUND);
    circuits_context_clear_hooks(ctx);
    memset(&log, 0, sizeof log);
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL));
    CHECK(log.n == 0, "clear_hooks left hooks (%zu calls)", log.n);
    CHECK(memcmp(lg, base, (size_t)(B * T * V) * sizeof *lg) == 0, "logits after clear_hooks differ from before");
    CHECK_ERR(circuits_context_remove_hook(ctx, ia), CIRCUITS_E_NOT_FOUND);
    /* ids are not reused after clear_hooks */
    circuits_hook_id inew;
    CHECK_OK(circuits_context_add_hook(ctx, "embed", hook_continue, NULL, &inew));
    CHECK(inew != ia && inew != ib && inew != ic && inew != id && inew != id_all, "id %lld reused", (long long)inew);
    CHECK_OK(circuits_context_add_hook(ctx, "embed", hook_continue, NULL, NULL)); /* out_id may be NULL */
    circuits_context_clear_hooks(ctx);

    /* an edit flows downstream, and run_with_cache stores the edited value */
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    const char *filt[] = {"resid_pre0", "hook_embed", "hook_pos_embed"};
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, filt, 3, cache, lg, NULL, NULL));
    CHECK(memcmp(lg, base, (size_t)(B * T * V) * sizeof *lg) == 0, "run_with_cache logits differ from forward");
    circuits_tensor r0, e0, p0;
    CHECK_OK(circuits_cache_get(cache, "resid_pre0", &r0));
    CHECK_OK(circuits_cache_get(cache, "hook_embed", &e0));
    CHECK_OK(circuits_cache_get(cache, "hook_pos_embed", &p0));
    size_t nr = numel(&r0);
    bool sum_ok = nr == (size_t)(B * T * 32);
    for (size_t i = 0; sum_ok && i < nr; i++) sum_ok = r0.data[i] == e0.data[i] + p0.data[i];
    CHECK(sum_ok, "resid_pre0 != hook_embed + hook_pos_embed");
    float *resid_plain = malloc(nr * sizeof *resid_plain);
    memcpy(resid_plain, r0.data, nr * sizeof *resid_plain);

    circuits_hook_id ie;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", hook_edit, NULL, &ie));
    float *edited = malloc((size_t)(B * T * V) * sizeof *edited);
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, edited, NULL, NULL));
    double d = max_abs_diff(edited, base, (size_t)(B * T * V));
    CHECK(d > 1e-3, "an edit at resid_pre0 changed the logits by only %g", d);
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, filt, 3, cache, lg, NULL, NULL));
    CHECK(memcmp(lg, edited, (size_t)(B * T * V) * sizeof *lg) == 0, "run_with_cache with the edit: logits differ");
    CHECK_OK(circuits_cache_get(cache, "blocks.0.hook_resid_pre", &r0));
    float *want = malloc(nr * sizeof *want);
    memcpy(want, resid_plain, nr * sizeof *want);
    circuits_tensor wt = r0;
    wt.data = want;
    hook_edit(&wt, NULL);
    CHECK(numel(&r0) == nr && memcmp(r0.data, want, nr * sizeof *want) == 0,
          "the cached resid_pre0 is not the value after the user's edit");
    CHECK_OK(circuits_context_remove_hook(ctx, ie));
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL));
    CHECK(memcmp(lg, base, (size_t)(B * T * V) * sizeof *lg) == 0, "removing the edit restores the logits");

    free(want);
    free(edited);
    free(resid_plain);
    circuits_cache_free(cache);
    free(rec);
    free(lg);
    free(base);
    circuits_context_free(ctx);
    circuits_model_free(m);
    json_decref(cj);
}

/* ---------------------------------------------------------------------------------------- */
/* stopping, failing and reentrancy                                                          */
/* ---------------------------------------------------------------------------------------- */

static int hook_stop(const circuits_tensor *t, void *u)
{
    (void)t;
    (*(long *)u)++;
    return CIRCUITS_HOOK_STOP;
}

static int hook_fail(const circuits_tensor *t, void *u)
{
    (void)t;
    (*(long *)u)++;
    return -7;
}

/* Writes garbage before failing: the context must still be usable afterwards. */
static int hook_trash_fail(const circuits_tensor *t, void *u)
{
    (void)u;
    size_t n = numel(t);
    for (size_t i = 0; i < n; i++) t->data[i] = NAN;
    return -1;
}

typedef struct reenter {
    circuits_context *ctx, *other;
    circuits_cache *cache;
    const int32_t *tok;
    int rc_forward, rc_add, rc_remove, rc_cache, rc_resolve, rc_other;
    long calls, stray;
} reenter;

static int hook_reenter(const circuits_tensor *t, void *u)
{
    (void)t;
    reenter *r = u;
    r->calls++;
    r->rc_forward = circuits_context_forward(r->ctx, r->tok, 1, 3, NULL, NULL, NULL);
    r->rc_add = circuits_context_add_hook(r->ctx, "*", hook_count, &r->stray, NULL);
    r->rc_remove = circuits_context_remove_hook(r->ctx, 1);
    r->rc_cache = circuits_context_run_with_cache(r->ctx, r->tok, 1, 3, NULL, 0, r->cache, NULL, NULL, NULL);
    char buf[96];
    r->rc_resolve = circuits_context_resolve_hook_name(r->ctx, "pattern0", 0, buf, sizeof buf, NULL);
    /* another context is another matter: allowed */
    r->rc_other = circuits_context_forward(r->other, r->tok, 1, 3, NULL, NULL, NULL);
    return CIRCUITS_HOOK_CONTINUE;
}

static void test_stop_fail(void)
{
    json_t *cj = case_json("hf_tiny_random_gpt2");
    json_t *order = json_object_get(cj, "hook_names_in_order");
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_context *ctx = make_ctx(m, 0);
    const int64_t B = 2, T = 6, V = 1000;
    const size_t NL = (size_t)(B * T * V);
    int32_t tok[12];
    make_tokens(tok, 12, 1000, 3);
    float *base = malloc(NL * sizeof *base), *lg = malloc(NL * sizeof *lg), loss0 = 0, loss = 0;
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, base, &loss0, NULL));

    /* stop at blocks.1.attn.hook_q: earlier hooks ran, nothing after */
    size_t stop_at = 0;
    while (stop_at < json_array_size(order) &&
           strcmp(json_string_value(json_array_get(order, stop_at)), "blocks.1.attn.hook_q") != 0)
        stop_at++;
    recorder *rec = calloc(1, sizeof *rec);
    long nstop = 0, nafter = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "*", hook_record, rec, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "q1", hook_stop, &nstop, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.attn.hook_q", hook_count, &nafter, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "unembed.hook_out", hook_count, &nafter, NULL));
    CHECK_FAILS(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL), CIRCUITS_E_STOPPED, "blocks.1.attn.hook_q");
    CHECK(nstop == 1, "stop hook called %ld times", nstop);
    CHECK(nafter == 0, "%ld hooks ran after a stop", nafter);
    CHECK(rec->n == stop_at + 1 && rec->n > 0 && strcmp(rec->e[rec->n - 1].name, "blocks.1.attn.hook_q") == 0,
          "recorded %zu calls up to the stop (want %zu)", rec->n, stop_at + 1);
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, &loss, NULL));
    CHECK(memcmp(lg, base, NL * sizeof *lg) == 0 && loss == loss0, "after a stopped run the logits differ");

    /* a negative return fails the run with the hook's name */
    long nfail = 0;
    nafter = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.2.hook_mlp_out", hook_fail, &nfail, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.2.hook_mlp_out", hook_count, &nafter, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "resid_post2", hook_count, &nafter, NULL));
    CHECK_FAILS(circuits_context_forward(ctx, tok, B, T, lg, &loss, NULL), CIRCUITS_E_CALLBACK, "blocks.2.hook_mlp_out");
    CHECK(nfail == 1 && nafter == 0, "fail hook %ld calls, %ld later calls", nfail, nafter);
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, &loss, NULL));
    CHECK(memcmp(lg, base, NL * sizeof *lg) == 0 && loss == loss0, "after a failed run the logits differ");
    CHECK_OK(circuits_context_add_hook(ctx, "pattern3", hook_trash_fail, NULL, NULL));
    CHECK_ERR(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL), CIRCUITS_E_CALLBACK);
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL));
    CHECK(memcmp(lg, base, NL * sizeof *lg) == 0, "after a run that trashed its scratch the logits differ");

    /* a failed run_with_cache leaves the cache empty */
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, NULL, NULL, NULL));
    CHECK(circuits_cache_count(cache) == json_array_size(order), "full cache count %zu", circuits_cache_count(cache));
    nstop = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.3.hook_resid_mid", hook_stop, &nstop, NULL));
    CHECK_ERR(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, lg, NULL, NULL), CIRCUITS_E_STOPPED);
    circuits_tensor t;
    CHECK(circuits_cache_count(cache) == 0 && circuits_cache_nbytes(cache) == 0, "a stopped run left %zu entries, %zu bytes",
          circuits_cache_count(cache), circuits_cache_nbytes(cache));
    CHECK_ERR(circuits_cache_at(cache, 0, &t), CIRCUITS_E_RANGE);
    CHECK_ERR(circuits_cache_get(cache, "hook_embed", &t), CIRCUITS_E_NOT_FOUND);
    circuits_context_clear_hooks(ctx);
    const char *filt[] = {"blocks.*.attn.hook_z"};
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, (const char *const[]){"embed"}, 1, cache, NULL, NULL, NULL));
    CHECK(circuits_cache_count(cache) == 1, "embed-only cache");
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.attn.hook_z", hook_fail, &nfail, NULL));
    CHECK_ERR(circuits_context_run_with_cache(ctx, tok, B, T, filt, 1, cache, lg, NULL, NULL), CIRCUITS_E_CALLBACK);
    CHECK(circuits_cache_count(cache) == 0 && circuits_cache_nbytes(cache) == 0, "a failed run left %zu entries",
          circuits_cache_count(cache));
    circuits_context_clear_hooks(ctx);
    /* other failures of run_with_cache: bad filter, bad token */
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, filt, 1, cache, NULL, NULL, NULL));
    CHECK(circuits_cache_count(cache) == 5, "hook_z cache count %zu", circuits_cache_count(cache));
    CHECK_FAILS(circuits_context_run_with_cache(ctx, tok, B, T, (const char *const[]){"embed", "bogus"}, 2, cache, lg,
                                                NULL, NULL),
                CIRCUITS_E_NOT_FOUND, "bogus");
    CHECK(circuits_cache_count(cache) == 0 && circuits_cache_nbytes(cache) == 0, "a bad filter left %zu entries",
          circuits_cache_count(cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, filt, 1, cache, NULL, NULL, NULL));
    int32_t bad[12];
    memcpy(bad, tok, sizeof bad);
    bad[7] = 1000;
    CHECK_FAILS(circuits_context_run_with_cache(ctx, bad, B, T, filt, 1, cache, lg, NULL, NULL), CIRCUITS_E_RANGE, "1000");
    CHECK(circuits_cache_count(cache) == 0 && circuits_cache_nbytes(cache) == 0, "a bad token left %zu entries",
          circuits_cache_count(cache));
    /* after all that the context is fine */
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, lg, &loss, NULL));
    CHECK(memcmp(lg, base, NL * sizeof *lg) == 0 && loss == loss0, "after failed cached runs the logits differ");

    /* reentrancy: calls into the same context from its callback are refused */
    circuits_context *other = make_ctx(m, 0);
    circuits_cache *cache2 = NULL;
    CHECK_OK(circuits_cache_create(&cache2));
    reenter r = {ctx, other, cache2, tok, 0, 0, 0, 0, 0, 0, 0, 0};
    circuits_hook_id rid;
    CHECK_OK(circuits_context_add_hook(ctx, "pattern1", hook_reenter, &r, &rid));
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, &loss, NULL));
    CHECK(r.calls == 1, "reentering hook called %ld times", r.calls);
    CHECK(r.rc_forward == CIRCUITS_E_INVALID_ARGUMENT, "reentrant forward -> %d", r.rc_forward);
    CHECK(r.rc_add == CIRCUITS_E_INVALID_ARGUMENT, "reentrant add_hook -> %d", r.rc_add);
    CHECK(r.rc_remove == CIRCUITS_E_INVALID_ARGUMENT, "reentrant remove_hook -> %d", r.rc_remove);
    CHECK(r.rc_cache == CIRCUITS_E_INVALID_ARGUMENT, "reentrant run_with_cache -> %d", r.rc_cache);
    CHECK(r.rc_resolve == CIRCUITS_OK, "resolve_hook_name (read-only) from a callback -> %d", r.rc_resolve);
    CHECK(r.rc_other == CIRCUITS_OK, "forward on another context from a callback -> %d", r.rc_other);
    CHECK(memcmp(lg, base, NL * sizeof *lg) == 0 && loss == loss0, "the outer run's logits differ");
    CHECK(circuits_cache_count(cache2) == 0, "the refused run_with_cache filled its cache");
    /* the refused add_hook registered nothing: only the reentering hook is there */
    CHECK_OK(circuits_context_remove_hook(ctx, rid));
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, NULL, NULL));
    CHECK(r.stray == 0 && r.calls == 1, "after reentrancy: %ld stray calls, %ld reentering calls", r.stray, r.calls);
    /* a reentering hook under run_with_cache: the outer cache is intact */
    circuits_context_clear_hooks(ctx);
    r.cache = cache;
    CHECK_OK(circuits_context_add_hook(ctx, "pattern1", hook_reenter, &r, NULL));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, lg, NULL, NULL));
    CHECK(r.rc_cache == CIRCUITS_E_INVALID_ARGUMENT, "nested run_with_cache on the outer cache -> %d", r.rc_cache);
    CHECK(circuits_cache_count(cache) == json_array_size(order), "outer cache count %zu", circuits_cache_count(cache));
    CHECK_OK(circuits_cache_get(cache, "unembed.hook_out", &t));
    CHECK(numel(&t) == NL && memcmp(t.data, base, NL * sizeof *lg) == 0, "outer cache's hook_out != logits");
    circuits_context_clear_hooks(ctx);

    circuits_cache_free(cache2);
    circuits_cache_free(cache);
    circuits_context_free(other);
    free(rec);
    free(lg);
    free(base);
    circuits_context_free(ctx);
    circuits_model_free(m);
    json_decref(cj);
}

/* ---------------------------------------------------------------------------------------- */
/* caches                                                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef struct copy_arg {
    float *dst;
    size_t n;
} copy_arg;

static int hook_copy(const circuits_tensor *t, void *u)
{
    copy_arg *c = u;
    c->n = numel(t);
    c->dst = malloc(c->n * sizeof *c->dst);
    if (c->dst) memcpy(c->dst, t->data, c->n * sizeof *c->dst);
    return CIRCUITS_HOOK_CONTINUE;
}

static void test_cache(void)
{
    json_t *cj = case_json("hf_tiny_random_gpt2");
    json_t *order = json_object_get(cj, "hook_names_in_order");
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_context *ctx = make_ctx(m, 0);
    const int64_t B = 2, T = 7, V = 1000, H = 4;
    int32_t tok[14], tok2[14];
    make_tokens(tok, 14, 1000, 11);
    make_tokens(tok2, 14, 1000, 12);
    float *lg = malloc((size_t)(B * T * V) * sizeof *lg);
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK(circuits_cache_count(cache) == 0 && circuits_cache_nbytes(cache) == 0, "a new cache is empty");
    circuits_tensor t;
    CHECK_ERR(circuits_cache_at(cache, 0, &t), CIRCUITS_E_RANGE);

    copy_arg cp = {NULL, 0};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.attn.hook_pattern", hook_copy, &cp, NULL));
    const char *filt[] = {"pattern0", "blocks.*.hook_resid_post", "embed", "blocks.0.attn.hook_pattern", "scale"};
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, filt, 5, cache, lg, NULL, NULL));
    circuits_context_clear_hooks(ctx);
    const char *want[] = {"hook_embed",
                          "blocks.0.attn.hook_pattern",
                          "blocks.0.hook_resid_post",
                          "blocks.1.hook_resid_post",
                          "blocks.2.hook_resid_post",
                          "blocks.3.hook_resid_post",
                          "blocks.4.hook_resid_post",
                          "ln_final.hook_scale"};
    size_t nw = sizeof want / sizeof want[0];
    CHECK(circuits_cache_count(cache) == nw, "filtered cache holds %zu entries, want %zu (duplicates once)",
          circuits_cache_count(cache), nw);
    size_t bytes = 0;
    for (size_t i = 0; i < circuits_cache_count(cache); i++) {
        CHECK_OK(circuits_cache_at(cache, i, &t));
        CHECK(i >= nw || strcmp(t.name, want[i]) == 0, "entry %zu is '%s'", i, t.name);
        CHECK(contiguous(&t) && t.data != NULL && t.layer == parse_layer(t.name) && t.head == -1 &&
                  t.head_axis == expected_head_axis(t.name),
              "entry '%s' descriptor", t.name);
        circuits_tensor d;
        CHECK(point_named(ctx, t.name, &d), "entry '%s' is no hook point", t.name);
        bytes += 4 * numel(&t);
    }
    CHECK(circuits_cache_nbytes(cache) == bytes, "nbytes %zu, entries hold %zu", circuits_cache_nbytes(cache), bytes);
    CHECK_ERR(circuits_cache_at(cache, nw, &t), CIRCUITS_E_RANGE);
    circuits_tensor a, b;
    CHECK_OK(circuits_cache_get(cache, "pattern0", &a));
    CHECK_OK(circuits_cache_get(cache, "blocks.0.attn.hook_pattern", &b));
    CHECK(a.data == b.data && shape_is(&a, SHAPE(B, H, T, T)) && a.head_axis == 1 && a.layer == 0,
          "pattern0 by short and full name");
    bool causal = a.ndim == 4;
    for (int64_t bb = 0; causal && bb < B; bb++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                double s = 0.0;
                for (int64_t j = 0; j < T; j++) {
                    float p = a.data[bb * a.strides[0] + h * a.strides[1] + i * a.strides[2] + j * a.strides[3]];
                    if (j > i && p != 0.0f) causal = false;
                    s += p;
                }
                if (fabs(s - 1.0) > 1e-5) causal = false;
            }
    CHECK(causal, "the cached pattern is not a causal distribution");
    CHECK(cp.dst && cp.n == numel(&a) && memcmp(cp.dst, a.data, cp.n * sizeof *cp.dst) == 0,
          "the cache differs from what the hook saw");
    free(cp.dst);
    CHECK_OK(circuits_cache_get(cache, "resid_post4", &a));
    CHECK(shape_is(&a, SHAPE(B, T, 32)) && a.layer == 4, "resid_post4");
    CHECK_OK(circuits_cache_get(cache, "scale", &a));
    CHECK(shape_is(&a, SHAPE(B, T, 1)) && strcmp(a.name, "ln_final.hook_scale") == 0, "ln_final scale");
    CHECK_FAILS(circuits_cache_get(cache, "pattern1", &t), CIRCUITS_E_NOT_FOUND, "pattern1");
    CHECK_FAILS(circuits_cache_get(cache, "bogus", &t), CIRCUITS_E_NOT_FOUND, "bogus");
    char longname[400];
    memset(longname, 'y', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_ERR(circuits_cache_get(cache, longname, &t), CIRCUITS_E_NOT_FOUND);

    /* a forward after run_with_cache does not write into the cache */
    CHECK_OK(circuits_cache_get(cache, "embed", &a));
    float *embed_copy = malloc(numel(&a) * sizeof *embed_copy);
    memcpy(embed_copy, a.data, numel(&a) * sizeof *embed_copy);
    CHECK_OK(circuits_context_forward(ctx, tok2, B, T, lg, NULL, NULL));
    CHECK(memcmp(embed_copy, a.data, numel(&a) * sizeof *embed_copy) == 0, "a later forward changed the cache");
    free(embed_copy);

    /* a second run replaces the contents */
    CHECK_OK(circuits_context_run_with_cache(ctx, tok2, 1, 3, (const char *const[]){"q0"}, 1, cache, NULL, NULL, NULL));
    CHECK(circuits_cache_count(cache) == 1 && circuits_cache_nbytes(cache) == 4 * 1 * 3 * 4 * 8,
          "second run: %zu entries, %zu bytes", circuits_cache_count(cache), circuits_cache_nbytes(cache));
    CHECK_OK(circuits_cache_get(cache, "q0", &a));
    CHECK(shape_is(&a, SHAPE(1, 3, 4, 8)) && a.head_axis == 2, "q0 of a [1, 3] run");
    CHECK_ERR(circuits_cache_get(cache, "pattern0", &t), CIRCUITS_E_NOT_FOUND);

    /* no filter: everything, with hook_out equal to the logits */
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, lg, NULL, NULL));
    CHECK(circuits_cache_count(cache) == json_array_size(order), "full cache: %zu entries", circuits_cache_count(cache));
    bytes = 0;
    for (size_t i = 0; i < circuits_cache_count(cache); i++) {
        CHECK_OK(circuits_cache_at(cache, i, &t));
        CHECK(strcmp(t.name, json_string_value(json_array_get(order, i))) == 0, "full cache entry %zu '%s'", i, t.name);
        bytes += 4 * numel(&t);
    }
    CHECK(circuits_cache_nbytes(cache) == bytes, "full cache nbytes %zu vs %zu", circuits_cache_nbytes(cache), bytes);
    CHECK_OK(circuits_cache_get(cache, "unembed.hook_out", &a));
    CHECK(numel(&a) == (size_t)(B * T * V) && memcmp(a.data, lg, numel(&a) * sizeof *lg) == 0, "hook_out != logits");

    /* the cache owns its copies: it outlives the context */
    circuits_context_free(ctx);
    CHECK_OK(circuits_cache_get(cache, "unembed.hook_out", &a));
    CHECK(memcmp(a.data, lg, numel(&a) * sizeof *lg) == 0, "the cache changed when its context was freed");

    circuits_cache_free(cache);
    free(lg);
    circuits_model_free(m);
    json_decref(cj);
}

/* ---------------------------------------------------------------------------------------- */
/* loss and forward arguments                                                                */
/* ---------------------------------------------------------------------------------------- */

static void test_loss(void)
{
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_context *ctx = make_ctx(m, 0);
    const int64_t B = 3, T = 7, V = 1000;
    int32_t tok[21];
    make_tokens(tok, 21, 1000, 5);
    float *lg = malloc((size_t)(B * T * V) * sizeof *lg), ptl[18], loss = NAN, loss2 = NAN, ptl2[18];
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, &loss, ptl));
    double mean = 0.0, worst = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i + 1 < T; i++) {
            const float *row = lg + (b * T + i) * V;
            double mx = -INFINITY, s = 0.0;
            for (int64_t v = 0; v < V; v++) mx = fmax(mx, row[v]);
            for (int64_t v = 0; v < V; v++) s += exp((double)row[v] - mx);
            double nll = -((double)row[tok[b * T + i + 1]] - mx - log(s));
            worst = fmax(worst, fabs(nll - ptl[b * (T - 1) + i]));
            mean += ptl[b * (T - 1) + i];
        }
    mean /= (double)(B * (T - 1));
    CHECK(worst < 1e-5, "per_token_loss differs from -log_softmax by %g", worst);
    CHECK(fabs(mean - loss) < 1e-5 * fmax(1.0, fabs(mean)), "loss %g, mean per-token loss %g", (double)loss, mean);
    CHECK(loss > 0 && isfinite(loss), "loss %g", (double)loss);
    /* without a logits buffer: the same numbers */
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, &loss2, ptl2));
    CHECK(loss2 == loss && memcmp(ptl, ptl2, sizeof ptl) == 0, "loss without a logits buffer differs");
    loss2 = NAN;
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, &loss2, NULL));
    CHECK(loss2 == loss, "loss alone differs");
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, NULL, ptl2));
    CHECK(memcmp(ptl, ptl2, sizeof ptl) == 0, "per-token loss alone differs");

    /* pos 1: logits fine, loss impossible */
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 1, lg, NULL, NULL));
    CHECK_ERR(circuits_context_forward(ctx, tok, 1, 1, lg, &loss, NULL), CIRCUITS_E_SHAPE);
    CHECK_ERR(circuits_context_forward(ctx, tok, 2, 1, NULL, NULL, ptl), CIRCUITS_E_SHAPE);

    /* bad shapes and tokens */
    CHECK_ERR(circuits_context_forward(ctx, tok, 0, 7, lg, NULL, NULL), CIRCUITS_E_SHAPE);
    CHECK_ERR(circuits_context_forward(ctx, tok, 1, 0, lg, NULL, NULL), CIRCUITS_E_SHAPE);
    CHECK_ERR(circuits_context_forward(ctx, tok, -1, 7, lg, NULL, NULL), CIRCUITS_E_SHAPE);
    int32_t *longtok = calloc(513, sizeof *longtok);
    CHECK_FAILS(circuits_context_forward(ctx, longtok, 1, 513, NULL, NULL, NULL), CIRCUITS_E_RANGE, "n_ctx");
    CHECK_OK(circuits_context_forward(ctx, longtok, 1, 512, NULL, NULL, NULL));
    free(longtok);
    int32_t bad[7] = {1, 2, 3, -1, 4, 5, 6};
    CHECK_ERR(circuits_context_forward(ctx, bad, 1, 7, lg, NULL, NULL), CIRCUITS_E_RANGE);
    bad[3] = 1000;
    CHECK_FAILS(circuits_context_forward(ctx, bad, 1, 7, lg, NULL, NULL), CIRCUITS_E_RANGE, "1000");
    bad[3] = 999;
    CHECK_OK(circuits_context_forward(ctx, bad, 1, 7, lg, &loss, NULL));

    circuits_context_free(ctx);
    free(lg);
    circuits_model_free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* threads: one model, four contexts, four threads                                           */
/* ---------------------------------------------------------------------------------------- */

#define N_THREADS 4
#define N_ITERS 20
#define TB 2
#define TT 6

typedef struct job {
    int id;
    const circuits_model *model;
    circuits_context *ctx;
    int32_t tokens[TB * TT];
    bool edit, count;
    const float *ref; /* [TB, TT, V] expected logits */
    size_t nlogits;
    /* results */
    double max_diff;
    int errors;       /* unexpected return codes */
    int msg_errors;   /* error messages that were not this thread's own */
    long hook_calls, runs;
    char first_error[256];
} job;

static void job_hooks(job *j, circuits_context *ctx)
{
    if (j->edit && circuits_context_add_hook(ctx, "blocks.*.hook_resid_pre", hook_edit, NULL, NULL)) j->errors++;
    if (j->count && circuits_context_add_hook(ctx, "*", hook_count, &j->hook_calls, NULL)) j->errors++;
}

static void *job_run(void *p)
{
    job *j = p;
    float *lg = malloc(j->nlogits * sizeof *lg);
    circuits_cache *cache = NULL;
    if (!lg || circuits_cache_create(&cache)) {
        j->errors++;
        free(lg);
        return NULL;
    }
    job_hooks(j, j->ctx);
    for (int it = 0; it < N_ITERS; it++) {
        int rc;
        if (it % 7 == 3) {
            /* a failure of this thread's own, with its own message */
            int32_t bad[TT];
            memcpy(bad, j->tokens, sizeof bad);
            bad[2] = 100000 + j->id;
            rc = circuits_context_forward(j->ctx, bad, 1, TT, lg, NULL, NULL);
            char own[32];
            snprintf(own, sizeof own, "%d", 100000 + j->id);
            if (rc != CIRCUITS_E_RANGE) j->errors++;
            if (!strstr(circuits_last_error(), own)) j->msg_errors++;
            continue;
        }
        if (it % 5 == 4)
            rc = circuits_context_run_with_cache(j->ctx, j->tokens, TB, TT, (const char *const[]){"pattern0", "resid_post1"},
                                                 2, cache, lg, NULL, NULL);
        else
            rc = circuits_context_forward(j->ctx, j->tokens, TB, TT, lg, NULL, NULL);
        if (rc) {
            if (!j->errors) snprintf(j->first_error, sizeof j->first_error, "%s", circuits_last_error());
            j->errors++;
            continue;
        }
        j->runs++;
        double d = max_abs_diff(lg, j->ref, j->nlogits);
        if (d > j->max_diff) j->max_diff = d;
    }
    circuits_cache_free(cache);
    free(lg);
    return NULL;
}

static void test_threads(void)
{
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_config c = config_of(m);
    size_t nl = (size_t)TB * TT * (size_t)c.d_vocab_out;
    job jobs[N_THREADS];
    float *refs[N_THREADS];
    circuits_context *ref_ctx = make_ctx(m, 0);
    for (int i = 0; i < N_THREADS; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->id = i;
        j->model = m;
        j->edit = i % 2 == 1;
        j->count = i >= 2;
        make_tokens(j->tokens, TB * TT, c.d_vocab, 100 + (uint32_t)i);
        j->nlogits = nl;
        refs[i] = malloc(nl * sizeof *refs[i]);
        /* the single-threaded result with the same hooks */
        long dummy = 0;
        if (j->edit) CHECK_OK(circuits_context_add_hook(ref_ctx, "blocks.*.hook_resid_pre", hook_edit, NULL, NULL));
        if (j->count) CHECK_OK(circuits_context_add_hook(ref_ctx, "*", hook_count, &dummy, NULL));
        CHECK_OK(circuits_context_forward(ref_ctx, j->tokens, TB, TT, refs[i], NULL, NULL));
        circuits_context_clear_hooks(ref_ctx);
        j->ref = refs[i];
        j->ctx = make_ctx(m, 0);
    }
    /* the edit does change the result (so the comparison tests it) */
    float *plain = malloc(nl * sizeof *plain);
    CHECK_OK(circuits_context_forward(ref_ctx, jobs[1].tokens, TB, TT, plain, NULL, NULL));
    CHECK(max_abs_diff(plain, refs[1], nl) > 1e-3, "the threads' edit hook has no effect");
    free(plain);
    circuits_context_free(ref_ctx);

    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) CHECK(pthread_create(&th[i], NULL, job_run, &jobs[i]) == 0, "pthread_create %d", i);
    for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
    size_t np = circuits_context_hook_point_count(jobs[0].ctx);
    for (int i = 0; i < N_THREADS; i++) {
        job *j = &jobs[i];
        CHECK(j->errors == 0, "thread %d: %d unexpected failures (%s)", i, j->errors, j->first_error);
        CHECK(j->msg_errors == 0, "thread %d: %d error messages were not its own", i, j->msg_errors);
        CHECK(j->runs == N_ITERS - 3, "thread %d: %ld successful runs", i, j->runs);
        CHECK(j->max_diff <= 1e-6, "thread %d: logits differ from the single-threaded run by %g", i, j->max_diff);
        if (j->count)
            CHECK(j->hook_calls == j->runs * (long)np, "thread %d: %ld hook calls for %ld runs of %zu points", i,
                  j->hook_calls, j->runs, np);
        circuits_context_free(j->ctx);
        free(refs[i]);
    }
    circuits_model_free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* batch independence                                                                        */
/* ---------------------------------------------------------------------------------------- */

static void check_batch_independence(const char *case_name, int use_attn_result)
{
    circuits_model *m = load_case(case_name);
    circuits_config c = config_of(m);
    circuits_context *ctx = make_ctx(m, use_attn_result);
    const int64_t T = 7, V = c.d_vocab_out;
    int32_t tok[2 * 7];
    make_tokens(tok, 14, c.d_vocab, 77);
    float *both = malloc((size_t)(2 * T * V) * sizeof *both), *one = malloc((size_t)(T * V) * sizeof *one);
    float loss_both, ptl_both[12], ptl_one[6];
    CHECK_OK(circuits_context_forward(ctx, tok, 2, T, both, &loss_both, ptl_both));
    double worst = 0.0, worst_loss = 0.0;
    for (int b = 0; b < 2; b++) {
        CHECK_OK(circuits_context_forward(ctx, tok + b * T, 1, T, one, NULL, ptl_one));
        worst = fmax(worst, max_abs_diff(one, both + b * T * V, (size_t)(T * V)));
        worst_loss = fmax(worst_loss, max_abs_diff(ptl_one, ptl_both + b * (T - 1), (size_t)(T - 1)));
    }
    CHECK(worst <= 1e-5, "%s: batch row logits differ from the sequence alone by %g", case_name, worst);
    CHECK(worst_loss <= 1e-5, "%s: batch row per-token loss differs by %g", case_name, worst_loss);
    /* a shorter prefix gives the same logits at its positions (causality) */
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 4, one, NULL, NULL));
    double d = max_abs_diff(one, both, (size_t)(4 * V));
    CHECK(d <= 1e-5, "%s: prefix logits differ by %g", case_name, d);
    free(both);
    free(one);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

static void test_batch_independence(void)
{
    check_batch_independence("hf_tiny_random_gpt2", 0);
    check_batch_independence("tl_gelu_new_attn_result", 1);
    check_batch_independence("tl_shortformer_relu", 0);
    check_batch_independence("tl_1l_solu_ln", 0);
}

/* ---------------------------------------------------------------------------------------- */
/* options, NULL arguments, threads setting                                                  */
/* ---------------------------------------------------------------------------------------- */

static void test_options_nulls(void)
{
    circuits_model *m = load_case("tl_1l_solu_ln");
    circuits_context_options o;
    memset(&o, 0x77, sizeof o);
    circuits_context_options_init(&o);
    CHECK(o.size == sizeof o && o.use_attn_result == 0, "context_options_init");
    circuits_context *ctx = (circuits_context *)(uintptr_t)1;
    o.size = 0;
    CHECK_FAILS(circuits_context_create(&ctx, m, &o), CIRCUITS_E_VERSION, "size");
    CHECK(ctx == NULL, "a failed create leaves *out NULL");
    o.size = 2;
    CHECK_ERR(circuits_context_create(&ctx, m, &o), CIRCUITS_E_VERSION);
    o.size = sizeof o + 4;
    CHECK_ERR(circuits_context_create(&ctx, m, &o), CIRCUITS_E_VERSION);
    circuits_context_options_init(&o);
    o.use_attn_result = 2;
    CHECK_FAILS(circuits_context_create(&ctx, m, &o), CIRCUITS_E_INVALID_ARGUMENT, "use_attn_result");
    o.use_attn_result = -1;
    CHECK_ERR(circuits_context_create(&ctx, m, &o), CIRCUITS_E_INVALID_ARGUMENT);
    CHECK(ctx == NULL, "a failed create leaves *out NULL");
    /* a size no release published (the size field alone) is refused, not half-read */
    o.size = sizeof(uint32_t);
    o.use_attn_result = 1;
    CHECK_FAILS(circuits_context_create(&ctx, m, &o), CIRCUITS_E_VERSION, "options size 4 is not one this library knows");
    CHECK(ctx == NULL, "a refused size leaves *out NULL");
    circuits_tensor t;
    char buf[96];
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    if (!ctx) {
        circuits_model_free(m);
        return;
    }
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    int32_t tok[4] = {1, 2, 3, 4};
    circuits_config c;
    c.size = sizeof c;
    long calls = 0;

    /* NULL arguments never crash */
    CHECK_FAILS(circuits_model_load(NULL, "x", NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    circuits_model *m2 = (circuits_model *)(uintptr_t)1;
    CHECK_FAILS(circuits_model_load(&m2, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK(m2 == NULL, "load with a NULL path leaves *out NULL");
    CHECK_FAILS(circuits_model_config(NULL, &c), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_model_config(m, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_model_weight(NULL, "embed.W_E", &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_model_weight(m, NULL, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_model_weight(m, "embed.W_E", NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK(circuits_model_weight_count(NULL) == 0, "weight_count(NULL)");
    CHECK_FAILS(circuits_model_weight_at(NULL, 0, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_model_weight_at(m, 0, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_create(NULL, m, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    circuits_context *c2 = (circuits_context *)(uintptr_t)1;
    CHECK_FAILS(circuits_context_create(&c2, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK(c2 == NULL, "create with a NULL model leaves *out NULL");
    CHECK(circuits_context_hook_point_count(NULL) == 0, "hook_point_count(NULL)");
    CHECK_FAILS(circuits_context_hook_point(NULL, 0, 1, 1, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_hook_point(ctx, 0, 1, 1, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_add_hook(NULL, "embed", hook_count, &calls, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_add_hook(ctx, NULL, hook_count, &calls, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_add_hook(ctx, "embed", NULL, &calls, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_OK(circuits_context_add_hook(ctx, "embed", hook_count, NULL, NULL)); /* user_data may be NULL... */
    circuits_context_clear_hooks(ctx);                                        /* ...but hook_count needs it */
    CHECK_FAILS(circuits_context_remove_hook(NULL, 1), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    circuits_context_clear_hooks(NULL);
    CHECK_FAILS(circuits_act_name(NULL, 0, NULL, buf, sizeof buf), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_act_name("k", 0, NULL, NULL, 16), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_resolve_hook_name(NULL, "embed", 0, buf, sizeof buf, NULL), CIRCUITS_E_INVALID_ARGUMENT,
                "NULL");
    CHECK_FAILS(circuits_context_resolve_hook_name(ctx, NULL, 0, buf, sizeof buf, NULL), CIRCUITS_E_INVALID_ARGUMENT,
                "NULL");
    size_t count = 0;
    circuits_clear_error();
    int rc = circuits_context_resolve_hook_name(ctx, "blocks.*", 0, NULL, 0, &count);
    CHECK(rc == CIRCUITS_E_RANGE || rc == CIRCUITS_OK, "resolve with a NULL buffer -> %d", rc);
    CHECK(count == 20, "resolve with a NULL buffer still counts: %zu", count);
    CHECK_FAILS(circuits_context_forward(NULL, tok, 1, 4, NULL, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_forward(ctx, NULL, 1, 4, NULL, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_cache_create(NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK(circuits_cache_count(NULL) == 0 && circuits_cache_nbytes(NULL) == 0, "cache count/nbytes of NULL");
    CHECK_FAILS(circuits_cache_at(NULL, 0, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_cache_at(cache, 0, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_cache_get(NULL, "embed", &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_cache_get(cache, NULL, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_cache_get(cache, "embed", NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_run_with_cache(NULL, tok, 1, 4, NULL, 0, cache, NULL, NULL, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_run_with_cache(ctx, tok, 1, 4, NULL, 0, NULL, NULL, NULL, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_run_with_cache(ctx, tok, 1, 4, NULL, 2, cache, NULL, NULL, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_context_run_with_cache(ctx, tok, 1, 4, (const char *const[]){"embed", NULL}, 2, cache, NULL,
                                                NULL, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK(circuits_cache_count(cache) == 0, "a NULL filter entry left %zu entries", circuits_cache_count(cache));
    CHECK_FAILS(circuits_context_run_with_cache(ctx, NULL, 1, 4, NULL, 0, cache, NULL, NULL, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK(circuits_cache_count(cache) == 0 && circuits_cache_nbytes(cache) == 0, "NULL tokens left a cache");
    circuits_model_free(NULL);
    circuits_context_free(NULL);
    circuits_cache_free(NULL);
    circuits_load_options_init(NULL);
    circuits_context_options_init(NULL);
    /* the context still works after all of that */
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 4, NULL, NULL, NULL));

    /* OpenBLAS threads */
    int initial = circuits_get_num_threads();
    CHECK(initial >= 1, "get_num_threads %d", initial);
    circuits_set_num_threads(1);
    CHECK(circuits_get_num_threads() == 1, "set 1 -> get %d", circuits_get_num_threads());
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 4, NULL, NULL, NULL));
    circuits_set_num_threads(0);
    CHECK(circuits_get_num_threads() == initial, "set 0 restores %d, got %d", initial, circuits_get_num_threads());
    circuits_set_num_threads(1);
    circuits_set_num_threads(-3);
    CHECK(circuits_get_num_threads() == initial, "set -3 restores %d, got %d", initial, circuits_get_num_threads());

    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASES_DIR\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    test_versions_errors();
    test_config();
    test_weights();
    test_hook_points();
    test_names();
    test_hook_semantics();
    test_stop_fail();
    test_cache();
    test_loss();
    test_threads();
    test_batch_independence();
    test_options_nulls();
    return tu_finish("test_api");
}
