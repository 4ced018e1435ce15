/* A minimal test harness: CHECK records a failure and carries on; main returns the count. */
#ifndef CIRCUITS_TESTUTIL_H
#define CIRCUITS_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "circuits.h"

static int tu_failures = 0, tu_checks = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        tu_checks++;                                                           \
        if (!(cond)) {                                                         \
            tu_failures++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
        }                                                                      \
    } while (0)

/* A call that must succeed; prints the library's message otherwise. */
#define CHECK_OK(call)                                                         \
    do {                                                                       \
        int rc_ = (call);                                                      \
        CHECK(rc_ == CIRCUITS_OK, "%s -> %d (%s)", #call, rc_, circuits_last_error()); \
    } while (0)

/* A call that must fail with `status` and a message containing `needle`. */
#define CHECK_FAILS(call, status, needle)                                      \
    do {                                                                       \
        circuits_clear_error();                                                \
        int rc_ = (call);                                                      \
        CHECK(rc_ == (status), "%s -> %d, want %d (%s)", #call, rc_, (int)(status), circuits_last_error()); \
        CHECK(strstr(circuits_last_error(), (needle)) != NULL,                 \
              "message '%s' lacks '%s'", circuits_last_error(), (needle));     \
    } while (0)

static inline int tu_finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The API contract tests' helpers (test_errors, test_load, test_hooks, test_cache,          */
/* test_forward, test_contexts: one concern each). Opt-in with #define TESTUTIL_API_HELPERS  */
/* before this header, because other programs define functions of the same names for their  */
/* own needs (load_case, hook_edit, max_abs_diff, CHECK_ERR). The program sets g_cases to    */
/* its CASES_DIR argument (tests/reference/cases).                                           */
/* ---------------------------------------------------------------------------------------- */
#ifdef TESTUTIL_API_HELPERS

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static const char *g_cases;

/* main's one argument, CASES_DIR (tests/reference/cases), into g_cases; exits 2 without it. */
static inline void tu_cases_arg(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASES_DIR\n", argv[0]);
        exit(2);
    }
    g_cases = argv[1];
}

/* A failing call: the status, and a non-empty message (every failure sets one). */
#define CHECK_ERR(call, status)                                                             \
    do {                                                                                    \
        circuits_clear_error();                                                             \
        int rc_ = (call);                                                                   \
        CHECK(rc_ == (status), "%s -> %d, want %d (%s)", #call, rc_, (int)(status),         \
              circuits_last_error());                                                       \
        CHECK(circuits_last_error()[0] != '\0', "%s left no message", #call);              \
    } while (0)

static inline void case_dir(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", g_cases, name); }

static inline circuits_model *load_case(const char *name)
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

static inline json_t *case_json(const char *name)
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

static inline circuits_config config_of(const circuits_model *m)
{
    circuits_config c;
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    CHECK_OK(circuits_model_config(m, &c));
    return c;
}

static inline circuits_context *make_ctx(const circuits_model *m, int use_attn_result)
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

static inline void make_tokens(int32_t *t, size_t n, int32_t vocab, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        t[i] = (int32_t)((s >> 8) % (uint32_t)vocab);
    }
}

static inline bool shape_is(const circuits_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}
#define SHAPE(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

static inline bool contiguous(const circuits_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->strides[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

static inline size_t numel(const circuits_tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

static inline double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}

static inline int parse_layer(const char *name)
{
    int l;
    return sscanf(name, "blocks.%d.", &l) == 1 ? l : -1;
}

/* The head axis TransformerLens's hook shapes imply for a hook name. */
static inline int expected_head_axis(const char *name)
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

static inline int hook_count(const circuits_tensor *t, void *u)
{
    (void)t;
    (*(long *)u)++;
    return CIRCUITS_HOOK_CONTINUE;
}

/* A non-constant edit (a constant per row would be removed by the next LayerNorm). */
static inline int hook_edit(const circuits_tensor *t, void *u)
{
    (void)u;
    size_t n = numel(t);
    for (size_t i = 0; i < n; i++) t->data[i] += 0.25f * (float)(i % 5) - 0.3f * (float)(i % 3);
    return CIRCUITS_HOOK_CONTINUE;
}

static inline bool point_named(const circuits_context *ctx, const char *name, circuits_tensor *out)
{
    for (size_t i = 0; i < circuits_context_hook_point_count(ctx); i++)
        if (circuits_context_hook_point(ctx, i, 2, 5, out) == CIRCUITS_OK && strcmp(out->name, name) == 0) return true;
    return false;
}

#endif /* TESTUTIL_API_HELPERS */

#endif
