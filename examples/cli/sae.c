/* The SAE commands (docs/saes.md "The command line", docs/cli.md):
 *   circuits sae-stats MODEL SAE_DIR (TOKENS.npy | --text FILE) [-o STATS.safetensors]
 *       feature statistics of an SAE over a token dataset, in one streaming pass
 *   circuits sae-show STATS [--model MODEL] [--latent I ...] [--top N] [--png FILE.png]
 *       a statistics file as text (frequencies, means, maxima, top contexts) and a picture
 *       (the histogram of log10 firing frequency over latents)
 * and --sae SAE_DIR [--sae-error-term] for run and cache (attach_saes). */
#include "cli.h"
#ifdef CIRCUITS_CLI_CAIRO
#include "../plot.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- --sae for run and cache ---- */

int attach_saes(circuits_context *ctx, char *const *dirs, size_t n, bool error_term, circuits_sae ***saes)
{
    *saes = calloc(n ? n : 1, sizeof **saes);
    if (!*saes) return failure("out of memory");
    for (size_t i = 0; i < n; i++) {
        if (circuits_sae_load(&(*saes)[i], dirs[i]) != CIRCUITS_OK)
            return failure("cannot load the SAE '%s': %s", dirs[i], circuits_last_error());
        if (circuits_context_add_sae(ctx, (*saes)[i], error_term) != CIRCUITS_OK)
            return failure("cannot attach the SAE '%s': %s", dirs[i], circuits_last_error());
    }
    return 0;
}

void free_saes(circuits_sae **saes, size_t n)
{
    for (size_t i = 0; saes && i < n; i++) circuits_sae_free(saes[i]);
    free(saes);
}

/* ---- token files ---- */

/* A NumPy .npy file of int32 or int64 token ids, [n_rows, pos] (or [n] as one row), C order,
 * little-endian. *ids malloc'ed. 0 or EXIT_FAIL. */
static int read_npy_tokens(const char *path, int32_t **ids, int64_t *rows, int64_t *pos)
{
    FILE *f = fopen(path, "rb");
    if (!f) return failure("cannot open '%s'", path);
    unsigned char pre[12];
    int rc = 0;
    char *hdr = NULL;
    int64_t *wide = NULL;
    *ids = NULL;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        rc = failure("'%s' is not a NumPy .npy file", path);
        goto done;
    }
    size_t hl = (size_t)pre[8] | (size_t)pre[9] << 8;
    if (pre[6] >= 2) { /* versions 2 and 3: a 4-byte header length */
        if (fread(pre + 10, 1, 2, f) != 2) {
            rc = failure("'%s': truncated header", path);
            goto done;
        }
        hl |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    }
    if (hl > 1 << 20 || !(hdr = calloc(hl + 1, 1)) || fread(hdr, 1, hl, f) != hl) {
        rc = failure("'%s': bad or truncated header", path);
        goto done;
    }
    bool i4 = strstr(hdr, "'<i4'") != NULL, i8 = strstr(hdr, "'<i8'") != NULL;
    const char *sh = strstr(hdr, "'shape':");
    if ((!i4 && !i8) || strstr(hdr, "'fortran_order': True") || !sh) {
        rc = failure("'%s': tokens must be int32 or int64 ('<i4', '<i8') in C order", path);
        goto done;
    }
    long long d0 = -1, d1 = -1;
    int got = sscanf(strchr(sh, '(') ? strchr(sh, '(') : sh, "(%lld, %lld", &d0, &d1);
    if (got < 1 || d0 < 1 || (got == 2 && d1 < 1)) {
        rc = failure("'%s': shape must be (n_rows, pos) or (n,), with sizes of at least 1", path);
        goto done;
    }
    *rows = got == 2 ? d0 : 1;
    *pos = got == 2 ? d1 : d0;
    size_t n = (size_t)*rows * (size_t)*pos;
    if (n / (size_t)*pos != (size_t)*rows || n > ((size_t)1 << 34)) {
        rc = failure("'%s': %lld x %lld tokens is too many", path, (long long)*rows, (long long)*pos);
        goto done;
    }
    *ids = malloc(n * sizeof **ids);
    if (i8) wide = malloc(n * sizeof *wide);
    if (!*ids || (i8 && !wide)) {
        rc = failure("out of memory");
        goto done;
    }
    if (fread(i8 ? (void *)wide : (void *)*ids, i8 ? 8 : 4, n, f) != n) {
        rc = failure("'%s': truncated data (%zu tokens expected)", path, n);
        goto done;
    }
    for (size_t i = 0; i8 && i < n; i++) {
        if (wide[i] < INT32_MIN || wide[i] > INT32_MAX) {
            rc = failure("'%s': token %lld at %zu does not fit int32", path, (long long)wide[i], i);
            goto done;
        }
        (*ids)[i] = (int32_t)wide[i];
    }
done:
    if (rc) {
        free(*ids);
        *ids = NULL;
    }
    free(wide);
    free(hdr);
    fclose(f);
    return rc;
}

/* A text file tokenized with the model's tokenizer, cut into rows of `pos` tokens (each row
 * starting with BOS unless no_bos); the tail shorter than a row is dropped. */
static int text_tokens(const char *path, const circuits_model *m, int64_t pos, bool no_bos, int32_t **ids,
                       int64_t *rows)
{
    const circuits_tokenizer *tok = circuits_model_tokenizer(m);
    if (!tok) return failure("--text: the model has no tokenizer; pass a TOKENS.npy file instead");
    FILE *f = fopen(path, "rb");
    if (!f) return failure("cannot open '%s'", path);
    size_t cap = 1 << 16, len = 0, r;
    char *text = malloc(cap);
    while (text && (r = fread(text + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            char *g = realloc(text, cap *= 2);
            if (!g) free(text);
            text = g;
        }
    }
    fclose(f);
    if (!text) return failure("out of memory");
    circuits_encode_options eo;
    circuits_encode_options_init(&eo);
    eo.prepend_bos = 0;
    size_t need = 0;
    int lrc = circuits_tokenizer_encode(tok, text, len, &eo, NULL, 0, &need);
    int32_t *all = NULL;
    if ((lrc == CIRCUITS_OK || lrc == CIRCUITS_E_RANGE) && need) {
        all = malloc(need * sizeof *all);
        lrc = all ? circuits_tokenizer_encode(tok, text, len, &eo, all, need, &need) : CIRCUITS_E_OUT_OF_MEMORY;
    }
    free(text);
    if (lrc != CIRCUITS_OK || !need) {
        free(all);
        return lrc != CIRCUITS_OK ? lib_failure("tokenize --text") : failure("--text: '%s' gives no tokens", path);
    }
    int32_t bos = no_bos ? -1 : circuits_tokenizer_bos_id(tok);
    int64_t per = bos >= 0 ? pos - 1 : pos;
    if (per < 1) {
        free(all);
        return usage_error("--pos %lld leaves no room after BOS", (long long)pos);
    }
    *rows = (int64_t)need / per;
    if (*rows < 1) {
        free(all);
        return failure("--text: '%s' gives %zu tokens, fewer than one row of %lld", path, need, (long long)pos);
    }
    *ids = malloc((size_t)(*rows * pos) * sizeof **ids);
    if (!*ids) {
        free(all);
        return failure("out of memory");
    }
    for (int64_t i = 0; i < *rows; i++) {
        int32_t *row = *ids + i * pos;
        if (bos >= 0) *row++ = bos;
        memcpy(row, all + i * per, (size_t)per * sizeof *row);
    }
    free(all);
    return 0;
}

/* ---- sae-stats ---- */

static void stats_usage(void)
{
    printf("usage: circuits sae-stats MODEL SAE_DIR (TOKENS.npy | --text FILE [--pos N] [--no-bos])\n"
           "                          [-o STATS.safetensors] [--batch B] [--top-k K] [--left L] [--right R]\n"
           "                          [--threshold X] [--skip-positions S] [--no-processing] [--no-mmap]\n"
           "\n"
           "Feature statistics of an SAE (or a transcoder's encoder) over a token dataset, in one\n"
           "streaming pass with bounded memory: each latent's firing frequency (acts_post > X), mean and\n"
           "maximum activation and its top K activating contexts. The model runs only as far as the\n"
           "SAE's hook point. Prints a summary; -o writes the statistics file (docs/saes.md), which\n"
           "'circuits sae-show' reads.\n"
           "\n"
           "  TOKENS.npy          int32 or int64 token ids [n_rows, pos] (or [n]: one row)\n"
           "  --text FILE         a text file instead, tokenized with the model's tokenizer and cut\n"
           "                      into rows of --pos tokens (default 128), each starting with BOS\n"
           "                      unless --no-bos\n"
           "  -o, --out FILE      write the statistics (.safetensors)\n"
           "  --batch B           rows per call (default 8): memory, not results (these do not\n"
           "                      depend on the batching)\n"
           "  --top-k K           contexts kept per latent (default 10)\n"
           "  --left L, --right R tokens kept before and after the activating one (default 8, 2)\n"
           "  --threshold X       a latent fires where its activation exceeds X (default 0)\n"
           "  --skip-positions S  leave the first S positions of each row out (1: BOS; default 0)\n"
           "  --no-processing     load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap           read the weight files into memory instead of mapping them\n");
}

/* The firing-frequency summary shared by sae-stats and sae-show. */
static int64_t count_dead(const float *freq, int64_t d)
{
    int64_t dead = 0;
    for (int64_t j = 0; j < d; j++) dead += freq[j] == 0.0f;
    return dead;
}

/* Latents ordered by frequency, densest first (ties: lower index). */
static const float *g_sort_key;
static int by_key_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (g_sort_key[x] != g_sort_key[y]) return g_sort_key[x] > g_sort_key[y] ? -1 : 1;
    return (x > y) - (x < y);
}

int cmd_sae_stats(int argc, char **argv)
{
    common c = {0};
    const char *sae_dir = NULL, *tokens_path = NULL, *text = NULL, *out = NULL;
    long long batch = 8, top_k = 10, left = 8, right = 2, skip = 0, pos = 128;
    double threshold = 0;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return stats_usage(), 0;
        if ((r = common_opt(&a, &c, false))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--out", &v)) || (r = opt_value(&a, "-o", &v))) {
            if (r < 0) return EXIT_USAGE;
            out = v;
        } else if ((r = opt_value(&a, "--text", &v))) {
            if (r < 0) return EXIT_USAGE;
            text = v;
        } else if ((r = opt_value(&a, "--batch", &v))) {
            if (r < 0 || parse_int("--batch", v, 1, 1 << 20, &batch)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--top-k", &v))) {
            if (r < 0 || parse_int("--top-k", v, 0, 4096, &top_k)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--left", &v))) {
            if (r < 0 || parse_int("--left", v, 0, 4096, &left)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--right", &v))) {
            if (r < 0 || parse_int("--right", v, 0, 4096, &right)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--skip-positions", &v))) {
            if (r < 0 || parse_int("--skip-positions", v, 0, 1 << 30, &skip)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--pos", &v))) {
            if (r < 0 || parse_int("--pos", v, 1, 1 << 20, &pos)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--threshold", &v))) {
            if (r < 0 || parse_float("--threshold", v, -1e30, 1e30, &threshold)) return EXIT_USAGE;
        } else if ((r = opt_flag(&a, "--no-bos"))) {
            if (r < 0) return EXIT_USAGE;
            c.no_bos = true;
        } else if (argv[a.i][0] == '-' && argv[a.i][1]) {
            return usage_error("unknown option '%s'", argv[a.i]);
        } else if (!c.model) {
            c.model = argv[a.i];
        } else if (!sae_dir) {
            sae_dir = argv[a.i];
        } else if (!tokens_path) {
            tokens_path = argv[a.i];
        } else {
            return usage_error("unexpected argument '%s'", argv[a.i]);
        }
    }
    if (!c.model || !sae_dir) return usage_error("needs MODEL and SAE_DIR");
    if (!tokens_path == !text) return usage_error("needs the tokens: a TOKENS.npy file or --text FILE (one of them)");
    int32_t *ids = NULL;
    int64_t rows = 0, T = pos;
    if (tokens_path && read_npy_tokens(tokens_path, &ids, &rows, &T)) return EXIT_FAIL;
    circuits_model *m = NULL;
    circuits_config cfg;
    circuits_sae *sae = NULL;
    circuits_context *ctx = NULL;
    circuits_feature_stats *st = NULL;
    float *freq = NULL, *mean = NULL, *mx = NULL;
    int64_t *order = NULL;
    int rc;
    if ((rc = load_model(&c, &m, &cfg))) goto done;
    if (text && (rc = text_tokens(text, m, pos, c.no_bos, &ids, &rows))) goto done;
    if (circuits_sae_load(&sae, sae_dir) != CIRCUITS_OK) {
        rc = failure("cannot load the SAE '%s': %s", sae_dir, circuits_last_error());
        goto done;
    }
    circuits_feature_stats_options o;
    circuits_feature_stats_options_init(&o);
    o.top_k = (int32_t)top_k;
    o.context_left = (int32_t)left;
    o.context_right = (int32_t)right;
    o.threshold = (float)threshold;
    o.skip_positions = (int32_t)skip;
    if (circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK || circuits_feature_stats_create(&st, sae, &o) != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    progress pg;
    progress_begin(&pg, "sae-stats", rows);
    for (int64_t r0 = 0; r0 < rows; r0 += batch) {
        int64_t b = rows - r0 < batch ? rows - r0 : batch;
        if (circuits_context_feature_stats_add(ctx, st, ids + r0 * T, b, T) != CIRCUITS_OK) {
            progress_end(&pg);
            rc = failure("rows %lld .. %lld: %s", (long long)r0, (long long)(r0 + b - 1), circuits_last_error());
            goto done;
        }
        progress_set(&pg, r0 + b);
    }
    progress_end(&pg);
    int64_t n_tokens, d;
    int32_t k, W;
    circuits_feature_stats_dims(st, &n_tokens, &d, &k, &W);
    freq = malloc(sizeof(float) * (size_t)d);
    mean = malloc(sizeof(float) * (size_t)d);
    mx = malloc(sizeof(float) * (size_t)d);
    order = malloc(sizeof(int64_t) * (size_t)d);
    if (!freq || !mean || !mx || !order) {
        rc = failure("out of memory");
        goto done;
    }
    circuits_feature_stats_get(st, freq, mean, mx);
    int64_t dead = count_dead(freq, d);
    printf("%lld tokens (%lld rows of %lld), %lld latents: %lld never fired (%.1f%%)\n", (long long)n_tokens,
           (long long)rows, (long long)T, (long long)d, (long long)dead, 100.0 * (double)dead / (double)d);
    for (int64_t j = 0; j < d; j++) order[j] = j;
    g_sort_key = freq;
    qsort(order, (size_t)d, sizeof *order, by_key_desc);
    printf("densest latents:\n  %8s  %10s  %10s  %10s\n", "latent", "frequency", "mean", "max");
    for (int64_t i = 0; i < d && i < 5; i++)
        printf("  %8lld  %10.6f  %10.5f  %10.5f\n", (long long)order[i], (double)freq[order[i]],
               (double)mean[order[i]], (double)mx[order[i]]);
    if (out) {
        if (circuits_feature_stats_save(st, out) != CIRCUITS_OK) {
            rc = lib_failure("write the statistics");
            goto done;
        }
        printf("wrote %s\n", out);
    }
done:
    free(order);
    free(freq);
    free(mean);
    free(mx);
    circuits_feature_stats_free(st);
    circuits_context_free(ctx);
    circuits_sae_free(sae);
    circuits_model_free(m);
    free(ids);
    return rc;
}

/* ---- sae-show ---- */

static void show_usage(void)
{
    printf("usage: circuits sae-show STATS [--model MODEL] [--latent I ...] [--top N] [--png FILE.png]\n"
           "\n"
           "Shows a feature statistics file (from 'circuits sae-stats -o'): the number of tokens and\n"
           "latents, the dead latents, a histogram of log10 firing frequency, and the densest latents;\n"
           "with --latent, each one's frequency, mean and maximum and its top contexts.\n"
           "\n"
           "  --model MODEL    decode the contexts with this model's tokenizer (else token ids)\n"
           "  --latent I ...   latents to show in detail (repeated, or comma-separated)\n"
           "  --top N          contexts per latent, and densest latents listed (default 10)\n"
           "  --png FILE.png   the histogram of log10 firing frequency as a picture (needs cairo)\n");
}

enum { BINS = 24 };
static const double LOG_LO = -6.0, LOG_HI = 0.0; /* log10 frequency axis: 1e-6 .. 1 */

static void histogram(const float *freq, int64_t d, int64_t *counts, int64_t *below)
{
    memset(counts, 0, sizeof(int64_t) * BINS);
    *below = 0;
    for (int64_t j = 0; j < d; j++) {
        if (freq[j] <= 0) continue; /* dead: counted apart */
        double l = log10((double)freq[j]);
        if (l < LOG_LO) {
            (*below)++;
            continue;
        }
        int b = (int)((l - LOG_LO) / (LOG_HI - LOG_LO) * BINS);
        counts[b >= BINS ? BINS - 1 : b]++;
    }
}

/* One context: its tokens, the activating one between >> <<, decoded or as ids. */
static void print_window(const circuits_tokenizer *tok, const int32_t *w, int32_t W, int32_t at)
{
    char buf[512];
    for (int32_t q = 0; q < W; q++) {
        if (w[q] < 0) continue;
        if (q == at) fputs(" >>", stdout);
        if (tok) {
            token_display(tok, w[q], buf, sizeof buf);
            fputs(buf, stdout);
        } else {
            printf(" %d", w[q]);
        }
        if (q == at) fputs("<< ", stdout);
    }
}

int cmd_sae_show(int argc, char **argv)
{
    common c = {0};
    const char *path = NULL, *png = NULL;
    long long top = 10;
    int32_t *latents = NULL;
    int64_t n_latents = 0;
    args a = {argc, argv, 1};
    int rc = 0;
    for (; a.i < argc && !rc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) {
            show_usage();
            goto out;
        }
        if ((r = opt_value(&a, "--model", &v))) {
            if (r < 0) rc = EXIT_USAGE;
            c.model = v;
        } else if ((r = opt_value(&a, "--png", &v))) {
            if (r < 0) rc = EXIT_USAGE;
            png = v;
        } else if ((r = opt_value(&a, "--top", &v))) {
            if (r < 0 || parse_int("--top", v, 1, 1000000, &top)) rc = EXIT_USAGE;
        } else if ((r = opt_value(&a, "--latent", &v))) {
            /* this value and the following non-options */
            for (; r > 0 && !rc;) {
                int32_t *more;
                int64_t n;
                if (parse_ids("--latent", v, &more, &n)) {
                    rc = EXIT_USAGE;
                    break;
                }
                int32_t *g = realloc(latents, (size_t)(n_latents + n) * sizeof *g);
                if (!g) {
                    free(more);
                    rc = failure("out of memory");
                    break;
                }
                latents = g;
                memcpy(latents + n_latents, more, (size_t)n * sizeof *more);
                n_latents += n;
                free(more);
                if (a.i + 1 < argc && argv[a.i + 1][0] != '-') v = argv[++a.i];
                else break;
            }
            if (r < 0) rc = EXIT_USAGE;
        } else if (argv[a.i][0] == '-' && argv[a.i][1]) {
            rc = usage_error("unknown option '%s'", argv[a.i]);
        } else if (!path) {
            path = argv[a.i];
        } else {
            rc = usage_error("unexpected argument '%s'", argv[a.i]);
        }
    }
    if (rc) goto out;
    if (!path) {
        rc = usage_error("needs STATS (a file from 'circuits sae-stats -o')");
        goto out;
    }
#ifndef CIRCUITS_CLI_CAIRO
    if (png) {
        rc = failure("--png: built without cairo: PNG output unavailable; install libcairo2-dev and rebuild");
        goto out;
    }
#endif
    circuits_feature_stats *st = NULL;
    circuits_model *m = NULL;
    float *freq = NULL, *mean = NULL, *mx = NULL, *vals = NULL;
    int64_t *order = NULL, *rows = NULL, *ps = NULL;
    int32_t *wins = NULL;
    if (circuits_feature_stats_load(&st, path) != CIRCUITS_OK) {
        rc = failure("cannot read '%s': %s", path, circuits_last_error());
        goto done;
    }
    circuits_config cfg;
    if (c.model && (rc = load_model(&c, &m, &cfg))) goto done;
    const circuits_tokenizer *tok = m ? circuits_model_tokenizer(m) : NULL;
    int64_t n_tokens, d;
    int32_t k, W;
    circuits_feature_stats_dims(st, &n_tokens, &d, &k, &W);
    circuits_feature_stats_options so = {.size = sizeof so};
    circuits_feature_stats_get_options(st, &so);
    for (int64_t i = 0; i < n_latents; i++)
        if (latents[i] < 0 || latents[i] >= d) {
            rc = usage_error("--latent %d: the statistics have latents 0 .. %lld", latents[i], (long long)d - 1);
            goto done;
        }
    freq = malloc(sizeof(float) * (size_t)d);
    mean = malloc(sizeof(float) * (size_t)d);
    mx = malloc(sizeof(float) * (size_t)d);
    order = malloc(sizeof(int64_t) * (size_t)d);
    vals = malloc(sizeof(float) * (size_t)k + 1);
    rows = malloc(sizeof(int64_t) * (size_t)k + 1);
    ps = malloc(sizeof(int64_t) * (size_t)k + 1);
    wins = malloc(sizeof(int32_t) * (size_t)k * (size_t)W + 1);
    if (!freq || !mean || !mx || !order || !vals || !rows || !ps || !wins) {
        rc = failure("out of memory");
        goto done;
    }
    circuits_feature_stats_get(st, freq, mean, mx);
    int64_t dead = count_dead(freq, d), counts[BINS], below, most = 1;
    histogram(freq, d, counts, &below);
    for (int b = 0; b < BINS; b++) most = counts[b] > most ? counts[b] : most;
    /* the picture first: a failure prints nothing on stdout */
#ifdef CIRCUITS_CLI_CAIRO
    if (png) {
        float x[BINS], y[BINS];
        for (int b = 0; b < BINS; b++) {
            x[b] = (float)(LOG_LO + (LOG_HI - LOG_LO) * (b + 0.5) / BINS);
            y[b] = (float)counts[b];
        }
        plot_series s = {.label = "latents", .x = x, .y = y, .n = BINS};
        char title[512];
        snprintf(title, sizeof title, "Firing frequency of %lld latents over %lld tokens (%lld dead)", (long long)d,
                 (long long)n_tokens, (long long)dead);
        plot_lines_spec spec = {.title = title, .subtitle = path, .series = &s, .n_series = 1,
                                .x_label = "log10 firing frequency", .y_label = "latents"};
        int r = plot_lines(png, &spec);
        plot_release_fonts();
        if (r) {
            rc = failure("cannot write the picture '%s'", png);
            goto done;
        }
    }
#endif
    printf("%s: %lld tokens, %lld latents, top %d contexts of %d tokens each\n", path, (long long)n_tokens,
           (long long)d, (int)k, (int)W);
    printf("never fired: %lld (%.1f%%); below 1e-6: %lld\n", (long long)dead, 100.0 * (double)dead / (double)d,
           (long long)below);
    printf("log10 firing frequency:\n");
    for (int b = 0; b < BINS; b++) {
        double lo = LOG_LO + (LOG_HI - LOG_LO) * b / BINS;
        int bar = (int)(40 * counts[b] / most);
        printf("  %5.2f .. %5.2f  %8lld  %.*s\n", lo, lo + (LOG_HI - LOG_LO) / BINS, (long long)counts[b], bar,
               "########################################");
    }
    if (!n_latents) {
        for (int64_t j = 0; j < d; j++) order[j] = j;
        g_sort_key = freq;
        qsort(order, (size_t)d, sizeof *order, by_key_desc);
        printf("densest latents:\n  %8s  %10s  %10s  %10s\n", "latent", "frequency", "mean", "max");
        for (int64_t i = 0; i < d && i < top; i++)
            printf("  %8lld  %10.6f  %10.5f  %10.5f\n", (long long)order[i], (double)freq[order[i]],
                   (double)mean[order[i]], (double)mx[order[i]]);
    }
    if (png) printf("wrote %s\n", png);
    for (int64_t i = 0; i < n_latents; i++) {
        int32_t j = latents[i], cnt;
        circuits_feature_stats_top(st, j, vals, rows, ps, wins, &cnt);
        printf("\nlatent %d: frequency %.6f, mean %.5f, max %.5f; top %d contexts:\n", j, (double)freq[j],
               (double)mean[j], (double)mx[j], (int)(cnt < top ? cnt : top));
        for (int32_t q = 0; q < cnt && q < top; q++) {
            printf("  %9.4f  row %lld pos %lld: ", (double)vals[q], (long long)rows[q], (long long)ps[q]);
            print_window(tok, wins + (size_t)q * W, W, so.context_left);
            printf("\n");
        }
    }
done:
    free(freq);
    free(mean);
    free(mx);
    free(order);
    free(vals);
    free(rows);
    free(ps);
    free(wins);
    circuits_model_free(m);
    circuits_feature_stats_free(st);
out:
    free(latents);
    return rc;
}
