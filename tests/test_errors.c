/* The public API's documented contract (include/circuits.h), part 1 of 6: versions, status
 * strings and per-thread error messages; the versioned options structs, NULL arguments and the
 * threads setting. Shared helpers: tests/testutil.h (TESTUTIL_API_HELPERS).
 * Usage: test_errors CASES_DIR   (tests/reference/cases) */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

#include <pthread.h>

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
    tu_cases_arg(argc, argv);
    test_versions_errors();
    test_options_nulls();
    return tu_finish("test_errors");
}
