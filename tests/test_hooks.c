/* The public API's documented contract (include/circuits.h), part 3 of 6: hook points and
 * their descriptors, name resolution (full names, short names, patterns), hook semantics
 * (firing order, several hooks at a point, removal, edits flowing downstream), and stopping,
 * failing and reentering runs. Shared helpers: tests/testutil.h (TESTUTIL_API_HELPERS).
 * Usage: test_hooks CASES_DIR   (tests/reference/cases) */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

static int hook_continue(const circuits_tensor *t, void *u)
{
    (void)t;
    (void)u;
    return CIRCUITS_HOOK_CONTINUE;
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

int main(int argc, char **argv)
{
    tu_cases_arg(argc, argv);
    test_hook_points();
    test_names();
    test_hook_semantics();
    test_stop_fail();
    return tu_finish("test_hooks");
}
