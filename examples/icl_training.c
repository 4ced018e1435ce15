/* circuits-icl: in-context learning across a training run (Olsson et al., "In-context Learning
 * and Induction Heads"), over a series of checkpoints of a byte-level model.
 *
 * For every checkpoint: validation loss, the ICL score (loss at a late token minus the mean loss
 * at an early one: tokens 500 and 50 for n_ctx >= 512, the same ratio of positions otherwise),
 * and the induction score of every head on repeated random tokens. At the last checkpoint: the
 * effect of zero-ablating each head on the ICL score. And the paper's three steps: per-token loss
 * vectors of every checkpoint on the same tokens, reduced jointly to 2-D by PCA (LAPACKE SVD),
 * drawn as a trajectory. PNGs go to --out.
 *
 * Usage: circuits-icl [CHECKPOINT_DIR] [--text FILE] [--out DIR] [--batch B] [--bos ID]
 *                     [--alphabet CHARS]   (random tokens for the induction score; "" = whole vocab)
 * CHECKPOINT_DIR holds one model directory per checkpoint (sorted by name = by step); FILE is
 * UTF-8 text whose bytes are the token ids (the bundled models are byte-level). */
#include <circuits.h>

#include <dirent.h>
#include <errno.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plot.h"

#ifndef DEFAULT_CHECKPOINTS
#define DEFAULT_CHECKPOINTS "examples/models/attn-only-2l-checkpoints"
#endif
#ifndef DEFAULT_TEXT
#define DEFAULT_TEXT "examples/train/validation.txt"
#endif

#define MAX_CKPT 256

static void die(const char *what)
{
    fprintf(stderr, "circuits-icl: %s: %s\n", what, circuits_last_error());
    exit(1);
}

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s);
    if (!p) {
        fprintf(stderr, "circuits-icl: out of memory\n");
        exit(1);
    }
    return p;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int zero_head(const circuits_tensor *z, void *u)
{
    int h = *(const int *)u; /* z [batch, pos, head, d_head] */
    for (int64_t b = 0; b < z->shape[0]; b++)
        for (int64_t p = 0; p < z->shape[1]; p++)
            memset(z->data + b * z->strides[0] + p * z->strides[1] + h * z->strides[2], 0, sizeof(float) * z->shape[3]);
    return CIRCUITS_HOOK_CONTINUE;
}

/* mean per-position loss [T-1] over the batch, and the mean overall */
static double run_loss(circuits_context *ctx, const int32_t *tok, int B, int T, float *ptl, float *by_pos)
{
    float loss;
    if (circuits_context_forward(ctx, tok, B, T, NULL, &loss, ptl)) die("forward");
    for (int i = 0; i < T - 1; i++) {
        by_pos[i] = 0;
        for (int b = 0; b < B; b++) by_pos[i] += ptl[b * (T - 1) + i] / B;
    }
    return loss;
}

int main(int argc, char **argv)
{
    const char *dir = DEFAULT_CHECKPOINTS, *text_path = DEFAULT_TEXT, *out = "icl-out";
    int B = 128, bos = -1;
    const char *alphabet = "abcdefghijklmnopqrstuvwxyz"; /* tokens a byte-level English model has seen */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text") && i + 1 < argc) text_path = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bos") && i + 1 < argc) bos = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--alphabet") && i + 1 < argc) alphabet = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s [CHECKPOINT_DIR] [--text FILE] [--out DIR] [--batch B] [--bos ID] [--alphabet CHARS]\n",
                   argv[0]);
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "circuits-icl: unknown option %s (try --help)\n", argv[i]);
            return 2;
        } else dir = argv[i];
    }
    /* checkpoints: the subdirectories, in name order */
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "circuits-icl: cannot open %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char *names[MAX_CKPT];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_CKPT) {
        char sub[4096];
        struct stat st;
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    if (n < 2) {
        fprintf(stderr, "circuits-icl: %s holds %d checkpoints; need at least 2\n", dir, n);
        return 1;
    }
    /* validation tokens: the bytes of the text, cut into B sequences of n_ctx */
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[0]);
    circuits_model *m;
    if (circuits_model_load(&m, path, NULL)) die("load");
    circuits_config c = {.size = sizeof c};
    circuits_model_config(m, &c);
    circuits_model_free(m);
    int T = c.n_ctx, NL = c.n_layers, H = c.n_heads, LH = NL * H;
    int late = T >= 512 ? 500 : (int)lround(T * 500.0 / 512.0), early = T >= 512 ? 50 : (int)lround(T * 50.0 / 512.0);
    FILE *f = fopen(text_path, "rb");
    if (!f) {
        fprintf(stderr, "circuits-icl: cannot open %s: %s\n", text_path, strerror(errno));
        return 1;
    }
    int32_t *tok = xcalloc((size_t)B * T, sizeof *tok);
    int body = bos >= 0 ? T - 1 : T;
    for (int b = 0; b < B; b++) {
        int32_t *row = tok + (size_t)b * T;
        if (bos >= 0) *row++ = bos;
        for (int i = 0; i < body; i++) {
            int ch = fgetc(f);
            if (ch == EOF) {
                fprintf(stderr, "circuits-icl: %s is too short for %d sequences of %d bytes\n", text_path, B, body);
                return 1;
            }
            row[i] = ch;
        }
    }
    fclose(f);
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "circuits-icl: cannot create %s: %s\n", out, strerror(errno));
        return 1;
    }
    int L = T / 4 < 50 ? T / 4 : 50; /* repeated random tokens for the induction score */
    int32_t *rep = xcalloc((size_t)B * 2 * L, sizeof *rep);
    int n_alpha = (int)strlen(alphabet);
    if (circuits_repeated_tokens(B, L, n_alpha ? n_alpha : c.d_vocab, 3, -1, rep)) die("tokens");
    for (int i = 0; n_alpha && i < B * 2 * L; i++) rep[i] = (unsigned char)alphabet[rep[i]];

    printf("%d checkpoints in %s; validation: %d x %d bytes of %s\n", n, dir, B, T, text_path);
    printf("ICL score = loss at token %d - loss at token %d%s\n", late, early,
           T >= 512 ? "" : " (n_ctx < 512: the same ratio of positions as 500 and 50)");
    printf("induction scores on %d random tokens%s%s%s repeated twice\n\n", L, n_alpha ? " from \"" : "",
           n_alpha ? alphabet : "", n_alpha ? "\"" : "");
    printf("%-16s %8s %8s   induction score per head\n", "checkpoint", "loss", "ICL");
    float *ptl = xcalloc((size_t)B * (T - 1), sizeof *ptl), *bypos = xcalloc((size_t)T, sizeof *bypos);
    float *loss_vec = xcalloc((size_t)n * (T - 1), sizeof *loss_vec); /* [checkpoint, position] */
    float *xs = xcalloc((size_t)n, sizeof *xs), *icl = xcalloc((size_t)n, sizeof *icl), *vl = xcalloc((size_t)n, sizeof *vl);
    float *ind = xcalloc((size_t)n * LH, sizeof *ind);
    circuits_model *last = NULL;
    for (int k = 0; k < n; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        if (circuits_model_load(&m, path, NULL)) die(path);
        circuits_context *ctx;
        if (circuits_context_create(&ctx, m, NULL)) die("context");
        vl[k] = (float)run_loss(ctx, tok, B, T, ptl, bypos);
        memcpy(loss_vec + (size_t)k * (T - 1), bypos, sizeof(float) * (T - 1));
        /* by_pos[i] is the loss predicting token i + 1 */
        icl[k] = bypos[late - 1] - bypos[early - 1];
        if (circuits_context_induction_scores(ctx, rep, B, 2 * L, L, ind + (size_t)k * LH, NULL, NULL)) die("induction");
        const char *step = strchr(names[k], '-') ? strchr(names[k], '-') + 1 : names[k];
        xs[k] = (float)atof(step);
        printf("%-16s %8.3f %8.3f  ", names[k], vl[k], icl[k]);
        for (int h = 0; h < LH; h++) printf(" L%dH%d %.2f", h / H, h % H, ind[(size_t)k * LH + h]);
        printf("\n");
        circuits_context_free(ctx);
        if (k == n - 1) last = m;
        else circuits_model_free(m);
    }

    /* ablations at the end of training */
    printf("\nAt %s, zero-ablating each head (change in the ICL score; more negative = more ICL):\n", names[n - 1]);
    circuits_context *ctx;
    if (circuits_context_create(&ctx, last, NULL)) die("context");
    for (int k = 0; k < LH; k++) {
        int h = k % H;
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.attn.hook_z", k / H);
        circuits_hook_id id;
        if (circuits_context_add_hook(ctx, name, zero_head, &h, &id)) die("hook");
        run_loss(ctx, tok, B, T, ptl, bypos);
        circuits_context_remove_hook(ctx, id);
        float a = bypos[late - 1] - bypos[early - 1];
        printf("  L%dH%d: ICL score %.3f -> %.3f (%+.3f)\n", k / H, h, icl[n - 1], a, a - icl[n - 1]);
    }
    circuits_context_free(ctx);
    circuits_model_free(last);

    /* PCA of the per-token loss vectors: centre over checkpoints, SVD, project on 2 components */
    int P = T - 1;
    float *X = xcalloc((size_t)n * P, sizeof *X), *S = xcalloc((size_t)n, sizeof *S), *U = xcalloc((size_t)n * n, sizeof *U);
    float *Vt = xcalloc((size_t)n * P, sizeof *Vt), *sup = xcalloc((size_t)n, sizeof *sup);
    for (int j = 0; j < P; j++) {
        double mean = 0;
        for (int k = 0; k < n; k++) mean += loss_vec[(size_t)k * P + j] / n;
        for (int k = 0; k < n; k++) X[(size_t)k * P + j] = loss_vec[(size_t)k * P + j] - (float)mean;
    }
    int kmin = n < P ? n : P;
    if (LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'S', 'S', n, P, X, P, S, U, kmin, Vt, P, sup) != 0) {
        fprintf(stderr, "circuits-icl: PCA did not converge\n");
        return 1;
    }
    float *pc1 = xcalloc((size_t)n, sizeof *pc1), *pc2 = xcalloc((size_t)n, sizeof *pc2);
    double total = 0;
    for (int k = 0; k < kmin; k++) total += (double)S[k] * S[k];
    for (int k = 0; k < n; k++) {
        pc1[k] = U[(size_t)k * kmin] * S[0];
        pc2[k] = kmin > 1 ? U[(size_t)k * kmin + 1] * S[1] : 0;
    }
    printf("\nPCA of per-token loss vectors: PC1 %.0f%%, PC2 %.0f%% of the variance\n", 100 * S[0] * S[0] / total,
           kmin > 1 ? 100 * S[1] * S[1] / total : 0.0);

    /* the phase change: the steepest rise (per training step) of the largest induction score of any
     * head between consecutive checkpoints; marked at the middle of that interval */
    int pc = -1;
    double best_rate = 0;
    float *mx = xcalloc((size_t)n, sizeof *mx);
    for (int k = 0; k < n; k++) {
        mx[k] = -INFINITY;
        for (int h = 0; h < LH; h++) mx[k] = fmaxf(mx[k], ind[(size_t)k * LH + h]);
    }
    for (int k = 0; k + 1 < n; k++) {
        double rate = xs[k + 1] > xs[k] ? (mx[k + 1] - mx[k]) / (xs[k + 1] - xs[k]) : 0;
        if (rate > best_rate) best_rate = rate, pc = k;
    }
    char pc_label[96];
    plot_vline phase = {0, pc_label};
    if (pc >= 0) {
        phase.x = (xs[pc] + xs[pc + 1]) / 2;
        snprintf(pc_label, sizeof pc_label, "phase change (steps %.0f-%.0f)", xs[pc], xs[pc + 1]);
        printf("Phase change: the largest induction score of any head rises fastest between %s and %s "
               "(%.2f -> %.2f, %+.3f per 100 steps)\n",
               names[pc], names[pc + 1], mx[pc], mx[pc + 1], 100 * best_rate);
    } else {
        printf("Phase change: none (the largest induction score of any head never rises)\n");
    }
    int n_phase = pc >= 0;

    char file[4096], sub[1024];
    const char *model = strrchr(dir, '/') && strrchr(dir, '/')[1] ? strrchr(dir, '/') + 1 : dir;
    const char *text_name = strrchr(text_path, '/') ? strrchr(text_path, '/') + 1 : text_path;
    char **steps = xcalloc((size_t)n, sizeof *steps);
    for (int k = 0; k < n; k++) {
        steps[k] = xcalloc(24, 1);
        snprintf(steps[k], 24, "%.0f", xs[k]);
    }
    plot_series tr = {.label = "checkpoint (step)", .x = pc1, .y = pc2, .n = n, .point_labels = (const char *const *)steps};
    snprintf(sub, sizeof sub, "%s, %d checkpoints; per-token loss on %d x %d bytes of %s", model, n, B, T, text_name);
    char pc_axis[2][48];
    snprintf(pc_axis[0], sizeof pc_axis[0], "PC1 (%.0f%% of the variance)", 100 * S[0] * S[0] / total);
    double v2 = kmin > 1 ? 100 * S[1] * S[1] / total : 0.0;
    snprintf(pc_axis[1], sizeof pc_axis[1], "PC2 (%.*f%%)", v2 < 1 ? 1 : 0, v2);
    plot_lines_spec trs = {.title = "Training trajectory: PCA of the per-token loss vectors", .subtitle = sub,
                           .series = &tr, .n_series = 1, .x_label = pc_axis[0], .y_label = pc_axis[1]};
    /* not to scale: PC2 holds a small share of the variance, and at equal aspect the trajectory
     * would be a flat line with its checkpoints on top of each other */
    snprintf(file, sizeof file, "%s/pca_trajectory.png", out);
    int failed = plot_written(plot_lines(file, &trs), "circuits-icl", file);

    char icl_label[96];
    snprintf(icl_label, sizeof icl_label, "ICL score (loss at token %d - at token %d)", late, early);
    plot_series lv = {.label = "validation loss", .x = xs, .y = vl, .n = n};
    plot_series is_ = {.label = icl_label, .x = xs, .y = icl, .n = n};
    plot_lines_spec panels[2] = {
        {.series = &lv, .n_series = 1, .y_label = "loss (nats)", .vlines = &phase, .n_vlines = n_phase},
        {.series = &is_, .n_series = 1, .y_label = "ICL score (nats)", .x_label = "training step"}};
    snprintf(file, sizeof file, "%s/loss_and_icl.png", out);
    failed |= plot_written(plot_panels(file, "Loss and in-context learning across training", sub, panels, 2),
                           "circuits-icl", file);

    plot_series *is = xcalloc((size_t)LH + 1, sizeof *is);
    char **lab = xcalloc((size_t)LH, sizeof *lab);
    float *col = xcalloc((size_t)LH * n, sizeof *col);
    for (int h = 0; h < LH; h++) {
        lab[h] = xcalloc(24, 1);
        snprintf(lab[h], 24, "L%dH%d", h / H, h % H);
        for (int k = 0; k < n; k++) col[(size_t)h * n + k] = ind[(size_t)k * LH + h];
        is[h] = (plot_series){.label = lab[h], .x = xs, .y = col + (size_t)h * n, .n = n};
    }
    snprintf(sub, sizeof sub, "%s, %d checkpoints; %d random tokens%s%s%s repeated twice", model, n, L,
             n_alpha ? " from \"" : "", n_alpha ? alphabet : "", n_alpha ? "\"" : "");
    plot_lines_spec iss = {.title = "Induction score of each head across training", .subtitle = sub, .series = is,
                           .n_series = LH, .x_label = "training step", .y_label = "induction score",
                           .vlines = &phase, .n_vlines = n_phase};
    snprintf(file, sizeof file, "%s/induction_scores.png", out);
    failed |= plot_written(plot_lines(file, &iss), "circuits-icl", file);
    if (!plot_available())
        printf("Pictures: none (%s)\n", PLOT_NO_CAIRO);
    else if (!failed) /* else each picture not written was named on stderr */
        printf("Pictures: %s/loss_and_icl.png, %s/induction_scores.png, %s/pca_trajectory.png\n", out, out, out);
    for (int k = 0; k < n; k++) free(steps[k]);
    free(steps), free(mx);
    for (int k = 0; k < n; k++) free(names[k]);
    for (int h = 0; h < LH; h++) free(lab[h]);
    free(lab), free(is), free(col), free(tok), free(rep), free(ptl), free(bypos), free(loss_vec), free(xs), free(icl);
    free(vl), free(ind), free(X), free(S), free(U), free(Vt), free(sup), free(pc1), free(pc2);
    plot_release_fonts();
    return failed ? 1 : 0;
}
