/* Every circuit analysis of a grouped-query model equals the same analysis of the model with
 * its K/V heads repeated to n_heads (what TransformerLens computes them from: its W_K / W_V
 * properties repeat_interleave the K/V heads). test_circuits checks QK/OV eigenvalues, SVDs,
 * norms, copying and composition scores against TransformerLens on the GQA cases; this covers
 * the rest as well: full OV/QK, composition circuits, virtual heads, virtual weights into K and
 * V, MLP composition scores and the rotary QK circuit.
 * Usage: test_circuits_gqa CASES_DIR */
#include "testutil.h"

#include <math.h>

#include "kv_expand.h"

#define TOL 1e-5

enum { N_RESULTS = 20 };

typedef struct results {
    float *v[N_RESULTS];
    size_t n[N_RESULTS];
} results;

/* fp: read after the call that filled it (not an argument evaluated beside that call) */
static void keep_factored(results *r, int k, int rc, circuits_factored **fp)
{
    circuits_factored *f = *fp;
    *fp = NULL;
    CHECK(rc == CIRCUITS_OK, "result %d: %s", k, circuits_last_error());
    if (rc) return;
    int64_t shape[4];
    int32_t nd = 0;
    int64_t md = 0;
    CHECK_OK(circuits_factored_shape(f, shape, &nd, &md));
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)shape[i];
    r->v[k] = malloc(n * sizeof(float));
    r->n[k] = n;
    CHECK_OK(circuits_factored_materialize(f, r->v[k], n));
    circuits_factored_free(f);
}

static void keep_scores(results *r, int k, size_t n, int rc, float *v)
{
    CHECK(rc == CIRCUITS_OK, "result %d: %s", k, circuits_last_error());
    r->v[k] = v;
    r->n[k] = n;
}

static void compute(const circuits_model *m, results *r)
{
    const circuits_config *c = &m->cfg;
    int32_t L = c->n_layers, H = c->n_heads, last = L - 1, hb = H - 1;
    size_t LH = (size_t)(L * H);
    circuits_factored *f = NULL;
    int k = 0;
    int (*per_head[])(const circuits_model *, int32_t, int32_t, circuits_factored **) = {
        circuits_model_ov, circuits_model_qk, circuits_model_full_ov, circuits_model_full_qk};
    for (int i = 0; i < 4; i++, k++) {
        int rc = per_head[i](m, -1, -1, &f);
        keep_factored(r, k, rc, &f);
    }
    for (int32_t mode = 0; mode < 3; mode++, k++) {
        int rc = circuits_model_composition_circuit(m, mode, 0, 1, last, hb, &f);
        keep_factored(r, k, rc, &f);
    }
    keep_factored(r, k, circuits_model_virtual_ov(m, 0, 1, last, hb, &f), &f);
    k++;
    keep_factored(r, k, circuits_model_virtual_weights(m, CIRCUITS_WRITER_HEAD, 0, 1, CIRCUITS_READER_K, last, hb, &f), &f);
    k++;
    keep_factored(r, k, circuits_model_virtual_weights(m, CIRCUITS_WRITER_EMBED, 0, 0, CIRCUITS_READER_V, last, hb, &f), &f);
    k++;
    for (int32_t mode = 0; mode < 3; mode++, k++) {
        float *v = malloc(LH * LH * sizeof *v);
        keep_scores(r, k, LH * LH, circuits_model_composition_scores(m, mode, v), v);
    }
    if (!c->attn_only)
        for (int32_t mode = 0; mode < 3; mode++, k++) {
            float *v = malloc((size_t)L * LH * sizeof *v);
            keep_scores(r, k, (size_t)L * LH, circuits_model_mlp_composition_scores(m, mode, v), v);
        }
    float *cs = malloc(LH * sizeof *cs);
    keep_scores(r, k++, LH, circuits_model_copying_scores(m, 0, cs), cs);
    if (c->positional_embedding_type == CIRCUITS_POS_ROTARY) {
        keep_factored(r, k, circuits_model_rotary_qk(m, last, hb, 6, &f), &f);
        k++;
    }
}

static void test_case(const char *cases, const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", cases, name);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, p, NULL));
    if (!m) return;
    int32_t KV = m->cfg.n_key_value_heads;
    CHECK(KV < m->cfg.n_heads, "%s is not grouped", name);
    results grouped, repeated;
    memset(&grouped, 0, sizeof grouped);
    memset(&repeated, 0, sizeof repeated);
    compute(m, &grouped);
    const circuits_tensor **saved = kv_expand_model(m);
    compute(m, &repeated);
    kv_restore_model(m, saved, KV);
    double worst = 0;
    int compared = 0;
    for (int k = 0; k < N_RESULTS; k++) {
        CHECK(grouped.n[k] == repeated.n[k], "%s: result %d has %zu vs %zu values", name, k, grouped.n[k], repeated.n[k]);
        if (grouped.v[k] && repeated.v[k] && grouped.n[k] == repeated.n[k]) {
            double d = 0, scale = 0;
            for (size_t i = 0; i < grouped.n[k]; i++) {
                d = fmax(d, fabs((double)grouped.v[k][i] - repeated.v[k][i]));
                scale = fmax(scale, fabs((double)repeated.v[k][i]));
            }
            CHECK(d <= TOL * fmax(1.0, scale), "%s: result %d: grouped vs repeated K/V differ by %g", name, k, d);
            worst = fmax(worst, d / fmax(1.0, scale));
            compared += grouped.n[k] > 0;
        }
        free(grouped.v[k]);
        free(repeated.v[k]);
    }
    printf("%s: %d analyses, grouped vs repeated K/V heads: max error %.3g\n", name, compared, worst);
    CHECK(compared >= 15, "%s: only %d analyses compared", name, compared);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASES_DIR\n", argv[0]);
        return 2;
    }
    static const char *const cases[] = {"tl_gqa_rotary_rms", "tl_local_alternating_rotary", "tl_rope_linear_mqa",
                                        "tl_rope_llama3"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_case(argv[1], cases[i]);
    return tu_finish("circuits_gqa");
}
