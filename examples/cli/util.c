/* Shared helpers of the `circuits` tool: messages, option parsing, model loading, tokens,
 * JSON strings and the progress bar. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


const char *cli_cmd = NULL;


/* One write per message, so that the lines of processes sharing stderr (MPI ranks) do not mix. */
static void vmessage(const char *fmt, va_list ap)
{
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "circuits%s%s: ", cli_cmd ? " " : "", cli_cmd ? cli_cmd : "");
    if (n < 0 || (size_t)n >= sizeof buf) n = 0;
    vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    strcat(buf, "\n");
    fputs(buf, stderr);
    fflush(stderr);
}

int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
    if (cli_cmd) fprintf(stderr, "Try 'circuits %s --help'.\n", cli_cmd);
    else fprintf(stderr, "Try 'circuits --help'.\n");
    return EXIT_USAGE;
}

int failure(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
    return EXIT_FAIL;
}

int lib_failure(const char *what)
{
    if (!what) return failure("%s", circuits_last_error());
    return failure("%s: %s", what, circuits_last_error());
}

/* ---- options ---- */

bool is_help(const char *s) { return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0; }

int opt_value(args *a, const char *name, const char **value)
{
    const char *s = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(s, name, n) != 0) return 0;
    if (s[n] == '=') {
        *value = s + n + 1;
        return 1;
    }
    if (s[n] != '\0') return 0;
    if (a->i + 1 >= a->argc) {
        usage_error("option '%s' needs a value", name);
        return -1;
    }
    *value = a->argv[++a->i];
    return 1;
}

int opt_flag(args *a, const char *name)
{
    const char *s = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(s, name, n) != 0) return 0;
    if (s[n] == '\0') return 1;
    if (s[n] == '=') {
        usage_error("option '%s' takes no value", name);
        return -1;
    }
    return 0;
}

int parse_int(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno == ERANGE) return usage_error("%s: '%s' is not an integer", opt, s);
    if (v < lo || v > hi) {
        if (hi >= INT32_MAX) return usage_error("%s: %lld is out of range (it must be at least %lld)", opt, v, lo);
        return usage_error("%s: %lld is out of range [%lld, %lld]", opt, v, lo, hi);
    }
    *out = v;
    return 0;
}

int parse_float(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || !isfinite(v)) return usage_error("%s: '%s' is not a number", opt, s);
    if (v < lo || v > hi) {
        if (hi >= 1e30) return usage_error("%s: %g is out of range (it must be at least %g)", opt, v, lo);
        return usage_error("%s: %g is out of range [%g, %g]", opt, v, lo, hi);
    }
    *out = v;
    return 0;
}

int parse_ids(const char *opt, const char *s, int32_t **ids, int64_t *n)
{
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return failure("out of memory");
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno == ERANGE || x < 0 || x > INT32_MAX || (*end && !strchr(" ,\t\n", *end))) {
            free(v);
            return usage_error("%s: '%s' is not a list of token ids (e.g. 464,3290,318)", opt, s);
        }
        if (k == cap) {
            int32_t *w = realloc(v, 2 * cap * sizeof *v);
            if (!w) {
                free(v);
                return failure("out of memory");
            }
            v = w;
            cap *= 2;
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    if (k == 0) {
        free(v);
        return usage_error("%s: no token ids given", opt);
    }
    *ids = v;
    *n = (int64_t)k;
    return 0;
}

int common_opt(args *a, common *c, bool input)
{
    int r;
    if ((r = opt_flag(a, "--json"))) return r < 0 ? -1 : (c->json = true, 1);
    if ((r = opt_flag(a, "--no-processing"))) return r < 0 ? -1 : (c->no_processing = true, 1);
    if ((r = opt_flag(a, "--no-mmap"))) return r < 0 ? -1 : (c->no_mmap = true, 1);
    if (!input) return 0;
    if ((r = opt_flag(a, "--no-bos"))) return r < 0 ? -1 : (c->no_bos = true, 1);
    if ((r = opt_value(a, "--prompt", &c->prompt))) return r;
    if ((r = opt_value(a, "--tokens", &c->tokens))) return r;
    return 0;
}

int common_positional(args *a, common *c)
{
    const char *s = a->argv[a->i];
    if (s[0] == '-' && s[1] != '\0') {
        usage_error("unknown option '%s'", s);
        return -1;
    }
    if (c->model) {
        usage_error("unexpected argument '%s' (the model is '%s')", s, c->model);
        return -1;
    }
    c->model = s;
    return 1;
}

int common_check(const common *c, bool input)
{
    if (!c->model) return usage_error("missing MODEL (a model directory or a GGUF file)");
    if (!input) return 0;
    if (c->prompt && c->tokens) return usage_error("give --prompt or --tokens, not both");
    if (!c->prompt && !c->tokens) return usage_error("needs --prompt TEXT or --tokens IDS");
    if (c->prompt && !*c->prompt) return usage_error("--prompt: the text is empty");
    return 0;
}

/* ---- models and tokens ---- */

int load_model(const common *c, circuits_model **m, circuits_config *cfg)
{
    circuits_load_options o;
    circuits_load_options_init(&o);
    if (c->no_processing)
        o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases =
            o.refactor_factored_attn_matrices = 0;
    o.read_into_memory = c->no_mmap;
    o.keep_stored_dtype = c->keep_stored;
    if (circuits_model_load(m, c->model, &o) != CIRCUITS_OK)
        return failure("cannot load model '%s': %s", c->model, circuits_last_error());
    cfg->size = sizeof *cfg;
    if (circuits_model_config(*m, cfg) != CIRCUITS_OK) {
        circuits_model_free(*m);
        *m = NULL;
        return lib_failure("config");
    }
    return 0;
}

int tokenize_text(const circuits_tokenizer *tok, const char *model, const char *opt, const char *ids_opt,
                  const char *text, bool bos, int32_t **ids, int64_t *n)
{
    if (!tok)
        return failure("the model '%s' has no tokenizer (tokenizer.json, vocab.json + merges.txt, ...), so %s "
                       "cannot be used; pass %s IDS instead",
                       model, opt, ids_opt);
    char what[64];
    snprintf(what, sizeof what, "tokenize %s", opt);
    circuits_encode_options eo;
    size_t need = 0, len = strlen(text);
    circuits_encode_options_init(&eo);
    eo.prepend_bos = bos && circuits_tokenizer_bos_id(tok) >= 0;
    int rc = circuits_tokenizer_encode(tok, text, len, &eo, NULL, 0, &need);
    if (rc != CIRCUITS_OK && rc != CIRCUITS_E_RANGE) return lib_failure(what);
    if (need == 0) return failure("%s: the text gives no tokens", opt);
    *ids = malloc(need * sizeof **ids);
    if (!*ids) return failure("out of memory");
    if (circuits_tokenizer_encode(tok, text, len, &eo, *ids, need, &need) != CIRCUITS_OK) {
        free(*ids);
        *ids = NULL;
        return lib_failure(what);
    }
    *n = (int64_t)need;
    return 0;
}

int input_tokens(const common *c, const circuits_model *m, int32_t **ids, int64_t *n)
{
    if (c->tokens) {
        int rc = parse_ids("--tokens", c->tokens, ids, n);
        return rc ? rc : 0;
    }
    return tokenize_text(circuits_model_tokenizer(m), c->model, "--prompt", "--tokens", c->prompt, !c->no_bos, ids, n);
}

size_t token_bytes(const circuits_tokenizer *tok, int32_t id, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    if (!tok || circuits_tokenizer_token(tok, id, buf, cap, &n) != CIRCUITS_OK) {
        buf[0] = '\0';
        return 0;
    }
    return n;
}

void token_display(const circuits_tokenizer *tok, int32_t id, char *out, size_t cap)
{
    char raw[256];
    if (!tok) {
        snprintf(out, cap, "?");
        return;
    }
    size_t n = token_bytes(tok, id, raw, sizeof raw), k = 0;
    for (size_t i = 0; i < n && k + 5 < cap; i++) {
        unsigned char ch = (unsigned char)raw[i];
        if (ch == '\n') k += (size_t)snprintf(out + k, cap - k, "\\n");
        else if (ch == '\t') k += (size_t)snprintf(out + k, cap - k, "\\t");
        else if (ch == '\\') k += (size_t)snprintf(out + k, cap - k, "\\\\");
        else if (ch < 0x20 || ch == 0x7f) k += (size_t)snprintf(out + k, cap - k, "\\x%02x", ch);
        else out[k++] = (char)ch;
    }
    out[k < cap ? k : cap - 1] = '\0';
}

/* ---- JSON ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) len = 2, cp = s[0] & 0x1F;
    else if ((s[0] & 0xF0) == 0xE0) len = 3, cp = s[0] & 0x0F;
    else if ((s[0] & 0xF8) == 0xF0) len = 4, cp = s[0] & 0x07;
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void json_str(FILE *f, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char ch = u[i];
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch == '\t') fputs("\\t", f);
        else if (ch == '\r') fputs("\\r", f);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else {
            size_t l = utf8_len(u + i, n - i);
            if (l == 0) {
                fputs("\\ufffd", f);
                i++;
                continue;
            }
            fwrite(u + i, 1, l, f);
            i += l;
            continue;
        }
        i++;
    }
    fputc('"', f);
}

void json_cstr(FILE *f, const char *s) { json_str(f, s, strlen(s)); }

void json_num(FILE *f, double x)
{
    if (!isfinite(x)) fputs("null", f);
    else fprintf(f, "%.9g", x);
}

/* ---- progress ---- */

double cli_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_begin(progress *p, const char *label, int64_t total)
{
    const char *env = getenv("CIRCUITS_PROGRESS");
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total > 0 ? total : 1;
    p->start = cli_now();
    p->delay = 1.0;
    p->enabled = isatty(2);
    if (env && strcmp(env, "never") == 0) p->enabled = false;
    if (env && strcmp(env, "always") == 0) {
        p->enabled = true;
        p->delay = 0.0; /* draw at once */
    }
}

void progress_counted(progress *p, const char *unit, int64_t base, bool force)
{
    const char *env = getenv("CIRCUITS_PROGRESS");
    p->unit = unit;
    p->base = p->done = base;
    if (force && !(env && strcmp(env, "never") == 0)) {
        p->enabled = true;
        p->lines = !isatty(2);
        p->delay = 0.0;
    }
}

/* "12/100 units, 3.4/s, ETA 26s" into buf. */
static void counted(const progress *p, double t, char *buf, size_t cap)
{
    double el = t - p->start, rate = el > 0 ? (double)(p->done - p->base) / el : 0;
    int n = snprintf(buf, cap, "%lld/%lld %s, %.3g/s", (long long)p->done, (long long)p->total, p->unit, rate);
    if (n > 0 && (size_t)n < cap && p->done < p->total && rate > 0)
        snprintf(buf + n, cap - (size_t)n, ", ETA %.0fs", (double)(p->total - p->done) / rate);
}

static void draw(progress *p, double t)
{
    const int width = 30;
    int64_t done = p->done < p->total ? p->done : p->total;
    int fill = (int)(width * done / p->total);
    char extra[96] = "";
    if (p->unit) counted(p, t, extra, sizeof extra);
    if (p->lines) {
        fprintf(stderr, "%s: %s\n", p->label, extra);
    } else {
        fprintf(stderr, "\r%s [", p->label);
        for (int i = 0; i < width; i++) fputc(i < fill ? '#' : '.', stderr);
        if (p->unit) fprintf(stderr, "] %s\033[K", extra);
        else fprintf(stderr, "] %3d%% %.1fs", (int)(100 * done / p->total), t - p->start);
    }
    fflush(stderr);
    p->drawn = true;
    p->last = t;
}

void progress_set(progress *p, int64_t done)
{
    p->done = done;
    if (!p->enabled) return;
    double t = cli_now();
    double every = p->lines ? 5.0 : 0.1;
    if (t - p->start < p->delay || (p->drawn && t - p->last < every && done < p->total)) return;
    draw(p, t);
}

void progress_end(progress *p)
{
    if (p->drawn && !p->lines) {
        p->done = p->total;
        draw(p, cli_now());
        fprintf(stderr, "\r\033[K"); /* erase the line */
        fflush(stderr);
    }
    p->drawn = false;
}

static int layer_done(const circuits_tensor *t, void *user)
{
    (void)t;
    progress *p = user;
    progress_set(p, p->done + 1);
    return CIRCUITS_HOOK_CONTINUE;
}

int progress_hook_layers(circuits_context *ctx, progress *p)
{
    return circuits_context_add_hook(ctx, "blocks.*.hook_resid_post", layer_done, p, NULL);
}
