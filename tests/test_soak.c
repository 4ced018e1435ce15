/* 10,000 runs with hooks and caches hold no more memory than 100 (issue 7 §2).
 *
 * On the bundled attn-only-2l model, 10,000 runs mix forward passes with hooks that read and
 * edit, run_with_cache into one reused cache (with changing filters and shapes) and into fresh
 * caches, and hooks added and removed. After a warm-up of 100 runs (every shape and filter
 * seen once) the library's live allocations and bytes (counted by the fault-injection
 * allocator, lib/base/fault.h) must be exactly what they were after run 100, at every 100th run and
 * at the end; and the process's resident set after the last run must be within RSS_BOUND of
 * what it was after run 100. Under AddressSanitizer the resident set says nothing (freed memory
 * sits in ASan's quarantine), so there the RSS bound is not asserted (the output says so) and
 * LeakSanitizer checks leaks at exit instead; the exact allocation counts are asserted in both.
 *
 * usage: test_soak <examples/models/attn-only-2l> */
#include "fault.h"
#include "testutil.h"

#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

enum { RUNS = 10000, WARMUP = 100, MAX_B = 2, MAX_T = 24 };
static const long RSS_BOUND = 1L << 20; /* bytes */

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = -1, resident = -1;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
        fclose(f);
    }
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

typedef struct stats {
    long reads, edits;
    double sum;
} stats;

static int hook_read(const circuits_tensor *t, void *u)
{
    stats *s = u;
    s->reads++;
    s->sum += t->data[0];
    return CIRCUITS_HOOK_CONTINUE;
}

/* Scales one position of the activation: an edit that flows downstream. */
static int hook_edit(const circuits_tensor *t, void *u)
{
    stats *s = u;
    s->edits++;
    int64_t row = 1;
    for (int d = 1; d < t->ndim; d++) row *= t->shape[d];
    for (int64_t i = 0; i < row; i++) t->data[i] *= 0.9f;
    return CIRCUITS_HOOK_CONTINUE;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <examples/models/attn-only-2l>\n", argv[0]);
        return 2;
    }
    /* the runs are tiny: OpenBLAS's threads would spin on the shared machine for nothing */
    circuits_set_num_threads(1);
    circuits_model *m = NULL;
    circuits_context *ctx = NULL;
    circuits_cache *reused = NULL;
    CHECK_OK(circuits_model_load(&m, argv[1], NULL));
    if (m) CHECK_OK(circuits_context_create(&ctx, m, NULL));
    CHECK_OK(circuits_cache_create(&reused));
    if (!ctx || !reused) return tu_finish("soak");
    circuits_config c = {.size = sizeof c};
    CHECK_OK(circuits_model_config(m, &c));

    int32_t tokens[MAX_B * MAX_T];
    for (int i = 0; i < MAX_B * MAX_T; i++) tokens[i] = (int32_t)((i * 37 + 5) % c.d_vocab);
    float *logits = malloc((size_t)(MAX_B * MAX_T) * (size_t)c.d_vocab_out * sizeof *logits);
    stats st = {0};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.*.attn.hook_pattern", hook_read, &st, NULL));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_post", hook_edit, &st, NULL));

    /* Shapes, kinds of run and filters cycle with period 100 = WARMUP: the warm-up sees them all,
     * and every 100th run ends in the same state (the reused cache holds the same entries). */
    static const int64_t shapes[][2] = {{1, 8}, {2, 16}, {1, 24}, {2, 24}, {2, 5}};
    static const char *const filters[][2] = {{"blocks.*.attn.hook_pattern", "resid_post1"},
                                            {"hook_embed", "blocks.1.*"},
                                            {"*", NULL}};
    static const size_t n_filter[] = {2, 2, 1};
    static const size_t filter_of[5] = {0, 1, 2, 1, 0}; /* by (run / 20) % 5 */
    long live_warm = 0, rss_warm = 0;
    long long bytes_warm = 0;
    double loss_sum = 0;
    int failures_before = tu_failures;
    for (int run = 1; run <= RUNS && tu_failures - failures_before < 10; run++) {
        int64_t B = shapes[run % 5][0], T = shapes[run % 5][1];
        int kind = (run / 5) % 4;
        float loss = 0;
        if (kind == 0) { /* forward with the reading and editing hooks */
            CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, &loss, NULL));
        } else if (kind == 1) { /* into the reused cache */
            size_t f = filter_of[(run / 20) % 5];
            CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, filters[f], n_filter[f], reused, logits, &loss,
                                                     NULL));
            CHECK(circuits_cache_count(reused) > 0, "run %d: empty cache", run);
        } else if (kind == 2) { /* into a fresh cache */
            circuits_cache *fresh = NULL;
            CHECK_OK(circuits_cache_create(&fresh));
            CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, filters[0], n_filter[0], fresh, NULL, &loss, NULL));
            circuits_tensor t;
            CHECK_OK(circuits_cache_get(fresh, "pattern1", &t));
            circuits_cache_free(fresh);
        } else { /* a hook added for one run, then removed */
            circuits_hook_id id;
            CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.attn.hook_z", hook_edit, &st, &id));
            CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, &loss, NULL));
            CHECK_OK(circuits_context_remove_hook(ctx, id));
        }
        loss_sum += loss;
        if (run == WARMUP) {
            live_warm = cx_live_allocations();
            bytes_warm = cx_live_bytes();
            rss_warm = rss_bytes();
        } else if (run > WARMUP && (run % 100 == 0 || run == RUNS)) {
            CHECK(cx_live_allocations() == live_warm && cx_live_bytes() == bytes_warm,
                  "run %d: the library holds %ld allocations, %lld bytes; after run %d: %ld, %lld", run,
                  cx_live_allocations(), cx_live_bytes(), WARMUP, live_warm, bytes_warm);
        }
    }
    long rss_end = rss_bytes();
    CHECK(st.reads > 0 && st.edits > 0 && loss_sum > 0, "hooks ran %ld / %ld times", st.reads, st.edits);
    printf("%d runs: the library holds %ld allocations (%lld bytes) after run %d and after run %d\n", RUNS,
           live_warm, bytes_warm, WARMUP, RUNS);
    if (UNDER_ASAN) {
        printf("RSS after run %d: %ld KiB, after run %d: %ld KiB: not asserted under AddressSanitizer (its "
               "quarantine holds freed memory); LeakSanitizer checks for leaks at exit instead\n",
               WARMUP, rss_warm >> 10, RUNS, rss_end >> 10);
    } else {
        CHECK(rss_warm > 0 && rss_end > 0, "cannot read /proc/self/statm");
        CHECK(rss_end - rss_warm <= RSS_BOUND, "RSS grew by %ld KiB between run %d and run %d (bound %ld KiB)",
              (rss_end - rss_warm) >> 10, WARMUP, RUNS, RSS_BOUND >> 10);
        printf("RSS after run %d: %ld KiB, after run %d: %ld KiB (%+ld KiB; bound +%ld KiB)\n", WARMUP, rss_warm >> 10,
               RUNS, rss_end >> 10, (rss_end - rss_warm) >> 10, RSS_BOUND >> 10);
    }
    free(logits);
    circuits_cache_free(reused);
    circuits_context_free(ctx);
    circuits_model_free(m);
    CHECK(cx_live_allocations() == 0, "after freeing everything the library holds %ld allocations",
          cx_live_allocations());
    return tu_finish("soak");
}
