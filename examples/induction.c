/* circuits-induction: the induction circuit of a 2-layer attention-only model, found three ways.
 *
 *   weights      K-composition scores against the random baseline, OV copying scores, the
 *                positional QK stripe of the previous-token head, the diagonal of the full
 *                K-composition circuit
 *   behaviour    previous-token and induction scores of every head on repeated random tokens,
 *                loss on the repeated half against the first half
 *   intervention zero- and mean-ablating each head: change in the repeated-half loss
 *
 * and writes PNGs: attention patterns of the key heads, the K-composition heatmap, the
 * per-position loss. Usage: circuits-induction [MODEL_DIR] [--out DIR] [--seq N] [--batch B]
 * [--seed S] [--alphabet CHARS] (default: the bundled 2-layer attention-only model, pictures in
 * ./induction-out). --alphabet draws the random tokens from the bytes of CHARS (for byte-level
 * models: tokens the model saw in training) instead of the whole vocabulary. */
#include <circuits.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plot.h"

#ifndef DEFAULT_INDUCTION_MODEL
#define DEFAULT_INDUCTION_MODEL "examples/models/attn-only-2l"
#endif

#define TRY(call, what)                                                          \
    do {                                                                         \
        if ((call) != CIRCUITS_OK) {                                             \
            fprintf(stderr, "circuits-induction: %s: %s\n", what, circuits_last_error()); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    if (!p) {
        fprintf(stderr, "circuits-induction: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- ablation hooks on hook_z [batch, pos, head, d_head] ---- */
typedef struct ablation {
    int head;
    const float *mean; /* [d_head] for mean ablation, NULL for zero */
} ablation;

static int ablate(const circuits_tensor *z, void *u)
{
    const ablation *a = u;
    for (int64_t b = 0; b < z->shape[0]; b++)
        for (int64_t p = 0; p < z->shape[1]; p++) {
            float *v = z->data + b * z->strides[0] + p * z->strides[1] + a->head * z->strides[2];
            for (int64_t d = 0; d < z->shape[3]; d++) v[d] = a->mean ? a->mean[d] : 0.0f;
        }
    return CIRCUITS_HOOK_CONTINUE;
}

/* the mean of each layer's z over batch and positions: [n_layers, n_heads, d_head] */
typedef struct zmean {
    float *acc;
    int H, dh;
} zmean;

static int collect_z(const circuits_tensor *z, void *u)
{
    zmean *m = u;
    int64_t n = z->shape[0] * z->shape[1];
    for (int64_t i = 0; i < n; i++)
        for (int h = 0; h < m->H; h++)
            for (int d = 0; d < m->dh; d++)
                m->acc[((size_t)z->layer * m->H + h) * m->dh + d] += z->data[i * m->H * m->dh + h * m->dh + d] / (float)n;
    return CIRCUITS_HOOK_CONTINUE;
}

/* the pattern of every head on sequence 0: [n_layers, n_heads, T, T] */
typedef struct patterns {
    float *data;
    int H, T;
} patterns;

static int keep_pattern(const circuits_tensor *p, void *u)
{
    patterns *s = u;
    memcpy(s->data + (size_t)p->layer * s->H * s->T * s->T, p->data, sizeof(float) * s->H * s->T * s->T);
    return CIRCUITS_HOOK_CONTINUE;
}

static double repeat_loss(const float *ptl, int B, int T, int L, int off)
{
    /* per_token_loss[b, i] predicts token i + 1: the repeat's tokens 2..L */
    double s = 0;
    for (int b = 0; b < B; b++)
        for (int k = 1; k < L; k++) s += ptl[b * (T - 1) + off + L + k - 1];
    return s / (B * (L - 1));
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_INDUCTION_MODEL, *out = "induction-out", *alphabet = NULL;
    int L = 50, B = 16;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--alphabet") && i + 1 < argc) alphabet = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s [MODEL_DIR] [--out DIR] [--seq N] [--batch B] [--seed S] [--alphabet CHARS]\n", argv[0]);
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "circuits-induction: unknown option %s (try --help)\n", argv[i]);
            return 2;
        } else path = argv[i];
    }
    circuits_model *m;
    TRY(circuits_model_load(&m, path, NULL), "load");
    circuits_config c = {.size = sizeof c};
    circuits_model_config(m, &c);
    const int NL = c.n_layers, H = c.n_heads, LH = NL * H, dh = c.d_head;
    if (L < 2 || 2 * L > c.n_ctx || B < 1) {
        fprintf(stderr, "circuits-induction: need --seq in [2, n_ctx/2 = %d] and --batch >= 1\n", c.n_ctx / 2);
        return 2;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "circuits-induction: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    printf("model %s: %d layers x %d heads (d_head %d), d_model %d, vocab %d, n_ctx %d, %s\n\n", path, NL, H, dh,
           c.d_model, c.d_vocab, c.n_ctx, c.attn_only ? "attention-only" : "with MLPs");
    char **label = xcalloc((size_t)LH, sizeof *label);
    for (int k = 0; k < LH; k++) {
        label[k] = xcalloc(24, 1);
        snprintf(label[k], 24, "L%dH%d", k / H, k % H);
    }

    /* ---------------- behaviour ---------------- */
    circuits_context *ctx;
    TRY(circuits_context_create(&ctx, m, NULL), "context");
    int T = 2 * L;
    int32_t *tok = xcalloc((size_t)B * T, sizeof *tok);
    int n_alpha = alphabet ? (int)strlen(alphabet) : 0;
    TRY(circuits_repeated_tokens(B, L, n_alpha ? n_alpha : c.d_vocab, seed, -1, tok), "tokens");
    for (int i = 0; n_alpha && i < B * T; i++) {
        tok[i] = (unsigned char)alphabet[tok[i]];
        if (tok[i] >= c.d_vocab) {
            fprintf(stderr, "circuits-induction: --alphabet byte %d is outside the vocabulary\n", tok[i]);
            return 2;
        }
    }
    float *ind = xcalloc((size_t)LH, sizeof *ind), *prev = xcalloc((size_t)LH, sizeof *prev), lf, lr;
    TRY(circuits_context_induction_scores(ctx, tok, B, T, L, ind, &lf, &lr), "induction scores");
    TRY(circuits_context_detect_heads(ctx, tok, B, T, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, NULL, prev), "detect");
    int pt = 0, ih = H; /* the previous-token head in layer 0, the induction head in a later layer */
    for (int k = 0; k < H; k++)
        if (prev[k] > prev[pt]) pt = k;
    for (int k = H; k < LH; k++)
        if (ind[k] > ind[ih]) ih = k;

    /* ---------------- weights ---------------- */
    float *comp = xcalloc((size_t)LH * LH, sizeof *comp), base, base_sd;
    TRY(circuits_model_composition_scores(m, CIRCUITS_COMPOSITION_K, comp), "composition scores");
    TRY(circuits_composition_baseline(c.d_model, c.d_head, 0, 200, 7, &base, &base_sd), "baseline");
    int best = 0;
    for (int k = 0; k < LH * LH; k++)
        if (comp[k] > comp[best]) best = k;
    float *copy = xcalloc((size_t)LH, sizeof *copy);
    TRY(circuits_model_copying_scores(m, 1, copy), "copying scores");

    printf("From the weights alone\n");
    printf("  K-composition: top pair %s -> %s, score %.3f; random baseline %.3f +- %.3f (%.1fx)\n",
           label[best / LH], label[best % LH], comp[best], base, base_sd, comp[best] / base);
    printf("  K-composition of %s -> %s: %.3f\n", label[pt], label[ih], comp[pt * LH + ih]);
    /* positional QK of the previous-token head: does query i prefer key i - 1? */
    circuits_factored *pq;
    TRY(circuits_model_pos_qk(m, pt / H, pt % H, &pq), "positional QK");
    float *pqm = xcalloc((size_t)c.n_ctx * c.n_ctx, sizeof *pqm);
    TRY(circuits_factored_materialize(pq, pqm, (size_t)c.n_ctx * c.n_ctx), "materialise");
    int stripe = 0;
    for (int i = 1; i < c.n_ctx; i++) {
        int arg = 0;
        for (int j = 1; j <= i; j++)
            if (pqm[(size_t)i * c.n_ctx + j] > pqm[(size_t)i * c.n_ctx + arg]) arg = j;
        stripe += arg == i - 1;
    }
    printf("  positional QK of %s: key i-1 is the top key (of 0..i) for %.0f%% of query positions\n", label[pt],
           100.0 * stripe / (c.n_ctx - 1));
    /* the full K-composition circuit W_E QK^B (OV^A)^T W_E^T: an induction head's query token t
     * should prefer keys whose previous token was t, i.e. the diagonal */
    circuits_factored *kc;
    TRY(circuits_model_composition_circuit(m, CIRCUITS_COMPOSITION_K, pt / H, pt % H, ih / H, ih % H, &kc),
        "composition circuit");
    float *diag = xcalloc((size_t)c.d_vocab, sizeof *diag), *row = xcalloc((size_t)c.d_vocab, sizeof *row);
    TRY(circuits_factored_diagonal(kc, diag), "diagonal");
    /* over the alphabet's tokens when one is given (rows and columns), else the whole vocabulary */
    int top1 = 0, nt = n_alpha ? n_alpha : c.d_vocab;
    double dmean = 0, omean = 0;
    float *x = xcalloc((size_t)c.d_vocab, sizeof *x);
    for (int a = 0; a < nt; a++) {
        int t = n_alpha ? (unsigned char)alphabet[a] : a;
        x[t] = 1.0f; /* row t = e_t^T M */
        TRY(circuits_factored_vecmat(x, kc, row), "row");
        x[t] = 0.0f;
        int arg = t;
        double s = 0;
        for (int b2 = 0; b2 < nt; b2++) {
            int j = n_alpha ? (unsigned char)alphabet[b2] : b2;
            if (row[j] > row[arg]) arg = j;
            s += row[j];
        }
        top1 += arg == t;
        dmean += diag[t];
        omean += (s - diag[t]) / (nt - 1);
    }
    printf("  full K-composition circuit %s -> %s: the diagonal is the row maximum for %d of %d tokens "
           "(mean diagonal %.2f vs off-diagonal %.2f)\n",
           label[pt], label[ih], top1, nt, dmean / nt, omean / nt);
    printf("  OV copying score (full OV circuit): %s %.2f, %s %.2f (+1: copies, -1: suppresses)\n", label[ih], copy[ih],
           label[pt], copy[pt]);

    printf("\nFrom behaviour (%d random tokens%s%s%s repeated twice, batch %d, seed %llu)\n", L, n_alpha ? " from \"" : "",
           n_alpha ? alphabet : "", n_alpha ? "\"" : "", B, seed);
    printf("  loss: first half %.3f, repeated half %.3f (in-context gain %.3f nats)\n", lf, lr, lf - lr);
    printf("  head    prev-token  induction  copying\n");
    for (int k = 0; k < LH; k++)
        printf("  %-6s %10.3f %10.3f %8.2f%s\n", label[k], prev[k], ind[k], copy[k],
               k == pt ? "   <- previous-token head" : k == ih ? "   <- induction head" : "");

    /* ---------------- intervention ---------------- */
    zmean zm = {xcalloc((size_t)LH * dh, sizeof(float)), H, dh};
    circuits_hook_id id;
    TRY(circuits_context_add_hook(ctx, "blocks.*.attn.hook_z", collect_z, &zm, &id), "hook");
    float *ptl = xcalloc((size_t)B * (T - 1), sizeof *ptl);
    TRY(circuits_context_forward(ctx, tok, B, T, NULL, NULL, ptl), "forward");
    circuits_context_remove_hook(ctx, id);
    double base_loss = repeat_loss(ptl, B, T, L, 0);
    printf("\nBy intervention (change in the repeated-half loss, base %.3f)\n  head     zero-ablate  mean-ablate\n",
           base_loss);
    float *dz = xcalloc((size_t)LH, sizeof *dz);
    for (int k = 0; k < LH; k++) {
        double d[2];
        for (int mode = 0; mode < 2; mode++) {
            ablation a = {k % H, mode ? zm.acc + (size_t)k * dh : NULL};
            char name[64];
            snprintf(name, sizeof name, "blocks.%d.attn.hook_z", k / H);
            TRY(circuits_context_add_hook(ctx, name, ablate, &a, &id), "hook");
            TRY(circuits_context_forward(ctx, tok, B, T, NULL, NULL, ptl), "forward");
            circuits_context_remove_hook(ctx, id);
            d[mode] = repeat_loss(ptl, B, T, L, 0) - base_loss;
        }
        dz[k] = (float)d[0];
        printf("  %-6s %+12.3f %+12.3f\n", label[k], d[0], d[1]);
    }

    /* ---------------- pictures ---------------- */
    char file[4096], sub[512];
    const char *model = strrchr(path, '/') && strrchr(path, '/')[1] ? strrchr(path, '/') + 1 : path;
    patterns pat = {xcalloc((size_t)NL * H * T * T, sizeof(float)), H, T};
    TRY(circuits_context_add_hook(ctx, "blocks.*.attn.hook_pattern", keep_pattern, &pat, &id), "hook");
    TRY(circuits_context_forward(ctx, tok, 1, T, NULL, NULL, ptl), "forward");
    circuits_context_remove_hook(ctx, id);
    /* sequence 0's tokens as axis labels: the tokenizer's when the model has one, else the byte
     * (byte-level models), else the id */
    circuits_tokenizer *tz = NULL;
    if (circuits_tokenizer_load(&tz, path) != CIRCUITS_OK) tz = NULL;
    char **tl = xcalloc((size_t)T, sizeof *tl);
    for (int i = 0; i < T; i++) {
        char raw[64];
        size_t got;
        if (tz && circuits_tokenizer_token(tz, tok[i], raw, sizeof raw, &got) == CIRCUITS_OK) raw[got] = 0;
        else if (c.d_vocab <= 256) raw[0] = (char)tok[i], raw[1] = 0;
        else snprintf(raw, sizeof raw, "#%d", tok[i]);
        tl[i] = xcalloc(64, 1);
        plot_token_label(tl[i], 64, raw);
    }
    circuits_tokenizer_free(tz);
    char input[160];
    snprintf(input, sizeof input, "%d random tokens%s%s%s repeated twice", L, n_alpha ? " from \"" : "",
             n_alpha ? alphabet : "", n_alpha ? "\"" : "");
    int key[2] = {pt, ih}, failed = 0;
    const char *role[2] = {"previous-token head", "induction head"};
    for (int q = 0; q < 2; q++) {
        char title[128];
        snprintf(title, sizeof title, "Attention pattern of %s (%s)", label[key[q]], role[q]);
        snprintf(sub, sizeof sub, "%s; sequence 1 of %d: %s (seed %llu)", model, B, input, seed);
        snprintf(file, sizeof file, "%s/pattern_%s.png", out, label[key[q]]);
        plot_heatmap_spec hs = {.title = title, .subtitle = sub, .data = pat.data + (size_t)key[q] * T * T, .rows = T,
                                .cols = T, .row_labels = (const char *const *)tl, .col_labels = (const char *const *)tl,
                                .x_label = "key (source) token", .y_label = "query (destination) token",
                                .value_label = "attention", .scale = PLOT_SCALE_SEQUENTIAL, .has_range = 1, .vmin = 0,
                                .vmax = 1, .mask_upper = 1};
        failed |= plot_written(plot_heatmap(file, &hs), "circuits-induction", file);
    }
    /* K-composition: writers in layers 0..NL-2 down, readers in layers 1..NL-1 across; pairs that
     * cannot compose (the reader not in a later layer) are NaN; white at the random baseline */
    int nw = (NL - 1) * H;
    float *kg = xcalloc((size_t)nw * nw + 1, sizeof *kg);
    for (int i = 0; i < nw; i++)
        for (int j = 0; j < nw; j++)
            kg[(size_t)i * nw + j] = i / H < 1 + j / H ? comp[(size_t)i * LH + H + j] : NAN;
    char mark_label[64];
    snprintf(mark_label, sizeof mark_label, "random baseline %.3f", base);
    snprintf(sub, sizeof sub, "%s, from the weights; white: the score of random matrices of the same shapes", model);
    snprintf(file, sizeof file, "%s/k_composition.png", out);
    plot_heatmap_spec ks = {.title = "K-composition scores between heads", .subtitle = sub, .data = kg, .rows = nw,
                            .cols = nw, .row_labels = (const char *const *)label,
                            .col_labels = (const char *const *)label + H, .x_label = "reader head (later layer)",
                            .y_label = "writer head", .value_label = "K-composition score",
                            .scale = PLOT_SCALE_DIVERGING, .centre = base, .has_mark = 1, .mark = base,
                            .mark_label = mark_label};
    if (NL >= 2) failed |= plot_written(plot_heatmap(file, &ks), "circuits-induction", file);
    /* per-position loss on the repeated tokens, with and without the induction head */
    TRY(circuits_context_forward(ctx, tok, B, T, NULL, NULL, ptl), "forward");
    float *xs = xcalloc((size_t)T, sizeof *xs), *y0 = xcalloc((size_t)T, sizeof *y0), *y1 = xcalloc((size_t)T, sizeof *y1);
    for (int i = 0; i < T - 1; i++) {
        xs[i] = (float)(i + 1);
        for (int b = 0; b < B; b++) y0[i] += ptl[b * (T - 1) + i] / B;
    }
    ablation a = {ih % H, NULL};
    char name[64];
    snprintf(name, sizeof name, "blocks.%d.attn.hook_z", ih / H);
    TRY(circuits_context_add_hook(ctx, name, ablate, &a, &id), "hook");
    TRY(circuits_context_forward(ctx, tok, B, T, NULL, NULL, ptl), "forward");
    circuits_context_remove_hook(ctx, id);
    for (int i = 0; i < T - 1; i++)
        for (int b = 0; b < B; b++) y1[i] += ptl[b * (T - 1) + i] / B;
    char lab[64];
    snprintf(lab, sizeof lab, "%s zero-ablated", label[ih]);
    plot_series series[2] = {{.label = "model", .x = xs, .y = y0, .n = T - 1},
                             {.label = lab, .x = xs, .y = y1, .n = T - 1}};
    plot_vline rep_start = {(float)L, "the repeat begins"};
    snprintf(sub, sizeof sub, "%s; mean over %d sequences of %s", model, B, input);
    snprintf(file, sizeof file, "%s/loss_by_position.png", out);
    plot_lines_spec lsp = {.title = "Loss per position", .subtitle = sub, .series = series, .n_series = 2,
                           .x_label = "position of the predicted token", .y_label = "loss (nats)",
                           .vlines = &rep_start, .n_vlines = 1};
    failed |= plot_written(plot_lines(file, &lsp), "circuits-induction", file);
    if (!plot_available())
        printf("\nPictures: none (%s)\n", PLOT_NO_CAIRO);
    else if (!failed) /* else each picture not written was named on stderr */
        printf("\nPictures: %s/pattern_%s.png, %s/pattern_%s.png, %s/k_composition.png, %s/loss_by_position.png\n", out,
               label[pt], out, label[ih], out, out);

    for (int i = 0; i < T; i++) free(tl[i]);
    free(tl), free(kg);
    for (int k = 0; k < LH; k++) free(label[k]);
    free(label), free(tok), free(ind), free(prev), free(comp), free(copy), free(pqm), free(diag), free(row), free(x);
    free(zm.acc), free(ptl), free(dz), free(pat.data), free(xs), free(y0), free(y1);
    circuits_factored_free(pq);
    circuits_factored_free(kc);
    circuits_context_free(ctx);
    circuits_model_free(m);
    plot_release_fonts();
    return failed ? 1 : 0;
}
