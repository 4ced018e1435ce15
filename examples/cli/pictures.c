/* What the picture commands (attn, lens, patch) share: --png / --html / --tokenizer, the input
 * tokens as strings for axes and views, the subtitle naming model and input, output paths, and
 * the HTML page that holds several views. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef CIRCUITS_CLI_CAIRO
#include "../plot.h"
#endif

int picture_opt(args *a, picture_opts *p)
{
    int r;
    if ((r = opt_value(a, "--png", &p->png))) return r;
    if ((r = opt_value(a, "--html", &p->html))) return r;
    if ((r = opt_value(a, "--tokenizer", &p->tokenizer))) return r;
    return 0;
}

/* The directory path would be written into exists, checked before the work so that a long run
 * does not end in a file that cannot be written. */
static int out_dir(const char *opt, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return 0;
    char dir[4096];
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof dir) return failure("%s: the path '%s' is too long", opt, path);
    memcpy(dir, path, n);
    dir[n] = '\0';
    struct stat st;
    if (stat(dir, &st) != 0) return failure("%s: the directory '%s' does not exist (writing '%s')", opt, dir, path);
    if (!S_ISDIR(st.st_mode)) return failure("%s: '%s' is not a directory (writing '%s')", opt, dir, path);
    return 0;
}

int picture_check(const picture_opts *p)
{
    int rc;
    if (p->png && !*p->png) return usage_error("--png: the file name is empty");
    if (p->html && !*p->html) return usage_error("--html: the file name is empty");
#ifndef CIRCUITS_CLI_CAIRO
    if (p->png) return failure("--png: built without cairo: PNG output unavailable; install libcairo2-dev and rebuild");
#endif
    if (p->png && (rc = out_dir("--png", p->png))) return rc;
    if (p->html && (rc = out_dir("--html", p->html))) return rc;
    return 0;
}

int picture_tokenizer(const picture_opts *p, const circuits_model *m, circuits_tokenizer **owned,
                      const circuits_tokenizer **tok)
{
    *owned = NULL;
    *tok = circuits_model_tokenizer(m);
    if (!p->tokenizer) return 0;
    if (circuits_tokenizer_load(owned, p->tokenizer) != CIRCUITS_OK)
        return failure("--tokenizer: cannot load '%s': %s", p->tokenizer, circuits_last_error());
    *tok = *owned;
    return 0;
}

int picture_tokens(const char *model, const circuits_config *cfg, const circuits_tokenizer *tok, bool bos,
                   const char *text_opt, const char *text, const char *ids_opt, const char *ids_text, int32_t **ids,
                   int64_t *n)
{
    int rc = text ? tokenize_text(tok, model, text_opt, ids_opt, text, bos, ids, n)
                  : parse_ids(ids_opt, ids_text, ids, n);
    if (rc) return rc;
    const char *opt = text ? text_opt : ids_opt;
    for (int64_t i = 0; i < *n; i++)
        if ((*ids)[i] >= cfg->d_vocab) {
            rc = failure("%s: token id %d at position %lld is outside the vocabulary [0, %d)", opt, (*ids)[i],
                         (long long)i, cfg->d_vocab);
            break;
        }
    if (!rc && *n > cfg->n_ctx)
        rc = failure("%s: %lld tokens, more than the model's n_ctx %d", opt, (long long)*n, cfg->n_ctx);
    if (rc) {
        free(*ids);
        *ids = NULL;
    }
    return rc;
}

char **token_texts(const circuits_tokenizer *tok, const int32_t *ids, int64_t n)
{
    char **s = calloc((size_t)n, sizeof *s);
    for (int64_t i = 0; s && i < n; i++) {
        char raw[256];
        size_t k = tok ? token_bytes(tok, ids[i], raw, sizeof raw) : (size_t)snprintf(raw, sizeof raw, "%d", ids[i]);
        if (!(s[i] = malloc(k + 1))) {
            free_texts(s, n);
            return NULL;
        }
        memcpy(s[i], raw, k);
        s[i][k] = '\0';
    }
    return s;
}

void free_texts(char **s, int64_t n)
{
    for (int64_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

int picture_model_name(const char *model, const char **name)
{
    size_t len = strlen(model);
    while (len > 1 && model[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && model[start - 1] != '/') start--;
    *name = model + start;
    return (int)(len - start);
}

void picture_subtitle(char *buf, size_t cap, const char *model, const char *text, int64_t n_tokens)
{
    const char *name;
    int name_len = picture_model_name(model, &name);
    int k = snprintf(buf, cap, "%.*s, ", name_len, name);
    if (k < 0 || (size_t)k >= cap) return;
    if (!text) {
        snprintf(buf + k, cap - (size_t)k, "%lld tokens given as ids", (long long)n_tokens);
        return;
    }
    /* the text in quotes, control bytes as spaces, cut at a character boundary after 60 bytes */
    size_t i = 0, o = (size_t)k, max = 60;
    if (o + 4 < cap) buf[o++] = '"';
    for (; text[i] && o + 8 < cap; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (i >= max && (ch & 0xC0) != 0x80) break;
        buf[o++] = ch < 0x20 ? ' ' : (char)ch;
    }
    if (text[i] && o + 8 < cap) {
        memcpy(buf + o, "\xe2\x80\xa6", 3); /* … */
        o += 3;
    }
    snprintf(buf + o, cap - o, "\" (%lld tokens)", (long long)n_tokens);
}

void picture_path(char *buf, size_t cap, const char *path, const char *suffix)
{
    if (!suffix) {
        snprintf(buf, cap, "%s", path);
        return;
    }
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) dot = path + strlen(path);
    snprintf(buf, cap, "%.*s-%s%s", (int)(dot - path), path, suffix, dot);
}

void json_grid(const float *v, int64_t rows, int64_t cols)
{
    putchar('[');
    for (int64_t r = 0; r < rows; r++) {
        printf("%s[", r ? "," : "");
        for (int64_t j = 0; j < cols; j++) {
            if (j) putchar(',');
            json_num(stdout, v[r * cols + j]);
        }
        putchar(']');
    }
    putchar(']');
}

void json_outputs(const char *png, const char *html)
{
    printf(",\"png\":");
    if (png) json_cstr(stdout, png);
    else printf("null");
    printf(",\"html\":");
    if (html) json_cstr(stdout, html);
    else printf("null");
    printf("}\n");
}

#ifdef CIRCUITS_CLI_CAIRO
/* n axis labels, each text made printable by plot_token_label; NULL when out of memory */
static char **picture_labels(char *const *texts, int64_t n)
{
    enum { CAP = 160 }; /* plot.c cuts what it shows to 40 bytes; the escapes may take 4 per byte */
    char **labels = calloc((size_t)n, sizeof *labels);
    for (int64_t i = 0; labels && i < n; i++) {
        if (!(labels[i] = malloc(CAP))) {
            free_texts(labels, n);
            return NULL;
        }
        plot_token_label(labels[i], CAP, texts[i]);
    }
    return labels;
}

int picture_heatmap(const char *path, plot_heatmap_spec *s, char *const *col_texts, bool rows_too)
{
    char **labels = picture_labels(col_texts, s->cols);
    if (!labels) return failure("out of memory");
    s->col_labels = (const char *const *)labels;
    if (rows_too) s->row_labels = s->col_labels;
    int rc = plot_heatmap(path, s) ? failure("cannot write the heatmap '%s'", path) : 0;
    free_texts(labels, s->cols);
    return rc;
}
#endif

void quoted(const circuits_tokenizer *tok, int32_t id, char *buf, size_t cap)
{
    char shown[256];
    if (tok) token_display(tok, id, shown, sizeof shown);
    else snprintf(shown, sizeof shown, "%d", id);
    snprintf(buf, cap, tok ? "'%s'" : "%s", shown);
}

int write_page(const char *path, char *html, size_t len)
{
    int rc = circuits_vis_save(html, len, path) == CIRCUITS_OK ? 0 : lib_failure("--html");
    circuits_vis_free(html);
    return rc;
}

/* s with & < > " as entities (a page title) */
static void put_escaped(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '&') fputs("&amp;", f);
        else if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

int write_views(const char *path, const char *title, char *const *fragments, const size_t *lens, int n)
{
    char *page = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&page, &len);
    if (!f) return failure("out of memory");
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>", f);
    put_escaped(f, title);
    fputs("</title>\n</head>\n<body>\n", f);
    for (int i = 0; i < n; i++) {
        fwrite(fragments[i], 1, lens[i], f);
        fputc('\n', f);
    }
    fputs("</body>\n</html>\n", f);
    if (fclose(f) != 0 || !page) {
        free(page);
        return failure("out of memory");
    }
    int rc = circuits_vis_save(page, len, path) == CIRCUITS_OK ? 0 : lib_failure("--html");
    free(page);
    return rc;
}
