/* Hostile and malformed inputs: every one must be refused with a specific status and a message
 * naming the problem, never crash, and leave *out == NULL. The model directories are written
 * here, by hand, into a temporary directory (safetensors: 8-byte little-endian header length,
 * JSON header, data).
 * Usage: test_bad_input [-v]   (-v prints every check's status and message, for docs/errors.md) */
#include "catalogue.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <stddef.h>
#include <unistd.h>

static char g_root[256];

/* ---------------------------------------------------------------------------------------- */
/* Files                                                                                     */
/* ---------------------------------------------------------------------------------------- */

static void die(const char *what)
{
    fprintf(stderr, "test_bad_input: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void join(char *buf, const char *dir, const char *file)
{
    if ((size_t)snprintf(buf, 4096, "%s/%s", dir, file) >= 4096) die("path too long");
}

static void write_bytes(const char *dir, const char *file, const void *p, size_t n)
{
    char path[4096];
    join(path, dir, file);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) die(path);
}

static void write_text(const char *dir, const char *file, const char *text)
{
    write_bytes(dir, file, text, strlen(text));
}

/* A fresh directory g_root/name; its path goes to dir (4096 bytes). */
static void new_case(char *dir, const char *name)
{
    join(dir, g_root, name);
    if (mkdir(dir, 0700) != 0) die(dir);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* ---------------------------------------------------------------------------------------- */
/* Safetensors writing                                                                       */
/* ---------------------------------------------------------------------------------------- */

typedef struct tdesc {
    char name[128];
    const char *long_name; /* used instead of name when set */
    char dtype[16];
    int ndim;
    int64_t shape[10];
} tdesc;

typedef struct tlist {
    tdesc t[64];
    int n;
} tlist;

static void tl_add(tlist *l, const char *name, const char *dtype, int ndim, const int64_t *shape)
{
    tdesc *t = &l->t[l->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->long_name = NULL;
}

#define TADD(l, name, ...)                                                                 \
    do {                                                                                   \
        const int64_t d_[] = {__VA_ARGS__};                                                \
        tl_add((l), (name), "F32", (int)(sizeof d_ / sizeof d_[0]), d_);                   \
    } while (0)

static tdesc *tl_find(tlist *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->t[i].name, name) == 0) return &l->t[i];
    fprintf(stderr, "test_bad_input: no tensor %s in the list\n", name);
    exit(2);
}

static void tl_remove(tlist *l, const char *name)
{
    tdesc *t = tl_find(l, name);
    int i = (int)(t - l->t);
    memmove(&l->t[i], &l->t[i + 1], (size_t)(l->n - i - 1) * sizeof *t);
    l->n--;
}

static size_t dtype_size(const char *dt)
{
    if (strcmp(dt, "F64") == 0 || strcmp(dt, "I64") == 0 || strcmp(dt, "U64") == 0) return 8;
    if (strcmp(dt, "F16") == 0 || strcmp(dt, "BF16") == 0 || strcmp(dt, "I16") == 0) return 2;
    if (strcmp(dt, "U8") == 0 || strcmp(dt, "I8") == 0 || strcmp(dt, "BOOL") == 0) return 1;
    return 4;
}

static size_t numel_of(const tdesc *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

/* A safetensors file as a real writer makes it: contiguous data in list order, the header
 * padded with spaces to a multiple of 8. Returns the total size; *out is malloc'd. */
static size_t st_build(const tlist *l, unsigned char **out)
{
    size_t cap = 64, hl = 0, off = 0;
    for (int i = 0; i < l->n; i++) cap += 256 + (l->t[i].long_name ? strlen(l->t[i].long_name) : 0);
    char *h = malloc(cap);
    if (!h) die("malloc");
    hl += (size_t)snprintf(h + hl, cap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < l->n; i++) {
        const tdesc *t = &l->t[i];
        size_t nb = numel_of(t) * dtype_size(t->dtype);
        hl += (size_t)snprintf(h + hl, cap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                               t->long_name ? t->long_name : t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++)
            hl += (size_t)snprintf(h + hl, cap - hl, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        hl += (size_t)snprintf(h + hl, cap - hl, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
    }
    hl += (size_t)snprintf(h + hl, cap - hl, "}");
    while (hl % 8) h[hl++] = ' ';
    size_t total = 8 + hl + off;
    unsigned char *buf = calloc(1, total);
    if (!buf) die("calloc");
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, h, hl);
    free(h);
    /* Small deterministic values; F32 only (other dtypes stay zero). */
    unsigned char *p = buf + 8 + hl;
    for (int i = 0; i < l->n; i++) {
        const tdesc *t = &l->t[i];
        size_t n = numel_of(t), es = dtype_size(t->dtype);
        if (strcmp(t->dtype, "F32") == 0)
            for (size_t k = 0; k < n; k++) {
                float v = 0.05f * (float)((int)((k * 37 + (size_t)i * 11) % 17) - 8);
                if (strstr(t->name, "ln") && (strstr(t->name, ".weight") || strstr(t->name, ".w"))) v = 1.0f;
                memcpy(p + 4 * k, &v, 4);
            }
        p += n * es;
    }
    *out = buf;
    return total;
}

static void write_st(const char *dir, const char *file, const tlist *l)
{
    unsigned char *buf;
    size_t n = st_build(l, &buf);
    write_bytes(dir, file, buf, n);
    free(buf);
}

/* A file with the given header length field, header text and data_len zero bytes of data. */
static void write_st_raw(const char *dir, const char *file, uint64_t hlen, const char *header, size_t data_len)
{
    size_t hl = strlen(header), total = 8 + hl + data_len;
    unsigned char *buf = calloc(1, total);
    if (!buf) die("calloc");
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + 8, header, hl);
    write_bytes(dir, file, buf, total);
    free(buf);
}

/* The usual case: header length = strlen(header). */
static void write_st_header(const char *dir, const char *header, size_t data_len)
{
    write_st_raw(dir, "model.safetensors", strlen(header), header, data_len);
}

/* ---------------------------------------------------------------------------------------- */
/* The two valid models                                                                      */
/* ---------------------------------------------------------------------------------------- */

#define GPT2_CONFIG \
    "{\"model_type\":\"gpt2\",\"n_embd\":4,\"n_head\":2,\"n_layer\":1,\"vocab_size\":8,\"n_positions\":8}"

static void gpt2_tensors(tlist *l)
{
    l->n = 0;
    TADD(l, "transformer.wte.weight", 8, 4);
    TADD(l, "transformer.wpe.weight", 8, 4);
    TADD(l, "transformer.h.0.ln_1.weight", 4);
    TADD(l, "transformer.h.0.ln_1.bias", 4);
    TADD(l, "transformer.h.0.attn.c_attn.weight", 4, 12);
    TADD(l, "transformer.h.0.attn.c_attn.bias", 12);
    TADD(l, "transformer.h.0.attn.c_proj.weight", 4, 4);
    TADD(l, "transformer.h.0.attn.c_proj.bias", 4);
    TADD(l, "transformer.h.0.ln_2.weight", 4);
    TADD(l, "transformer.h.0.ln_2.bias", 4);
    TADD(l, "transformer.h.0.mlp.c_fc.weight", 4, 16);
    TADD(l, "transformer.h.0.mlp.c_fc.bias", 16);
    TADD(l, "transformer.h.0.mlp.c_proj.weight", 16, 4);
    TADD(l, "transformer.h.0.mlp.c_proj.bias", 4);
    TADD(l, "transformer.ln_f.weight", 4);
    TADD(l, "transformer.ln_f.bias", 4);
}

/* A GPT-2 directory with the given config text and tensors. */
static void gpt2_case(char *dir, const char *name, const char *config, const tlist *l)
{
    new_case(dir, name);
    write_text(dir, "config.json", config);
    write_st(dir, "model.safetensors", l);
}

/* A GPT-2 directory with the valid config and a hand-written safetensors header. */
static void st_case(char *dir, const char *name, const char *header, size_t data_len)
{
    new_case(dir, name);
    write_text(dir, "config.json", GPT2_CONFIG);
    write_st_header(dir, header, data_len);
}

#define TL_CONFIG tl_config_with(NULL, NULL)

static void tl_tensors(tlist *l)
{
    l->n = 0;
    TADD(l, "embed.W_E", 8, 4);
    TADD(l, "pos_embed.W_pos", 8, 4);
    TADD(l, "blocks.0.ln1.w", 4);
    TADD(l, "blocks.0.ln1.b", 4);
    TADD(l, "blocks.0.ln2.w", 4);
    TADD(l, "blocks.0.ln2.b", 4);
    TADD(l, "blocks.0.attn.W_Q", 2, 4, 2);
    TADD(l, "blocks.0.attn.W_O", 2, 2, 4);
    TADD(l, "blocks.0.attn.b_Q", 2, 2);
    TADD(l, "blocks.0.attn.b_O", 4);
    TADD(l, "blocks.0.attn.W_K", 2, 4, 2);
    TADD(l, "blocks.0.attn.W_V", 2, 4, 2);
    TADD(l, "blocks.0.attn.b_K", 2, 2);
    TADD(l, "blocks.0.attn.b_V", 2, 2);
    TADD(l, "blocks.0.mlp.W_in", 4, 16);
    TADD(l, "blocks.0.mlp.b_in", 16);
    TADD(l, "blocks.0.mlp.W_out", 16, 4);
    TADD(l, "blocks.0.mlp.b_out", 4);
    TADD(l, "ln_final.w", 4);
    TADD(l, "ln_final.b", 4);
    TADD(l, "unembed.W_U", 4, 8);
    TADD(l, "unembed.b_U", 8);
}

static void tl_case(char *dir, const char *name, const char *config, const tlist *l)
{
    new_case(dir, name);
    write_text(dir, "tl_config.json", config);
    write_st(dir, "model.safetensors", l);
}

/* A JSON object from parallel key/value lists, without the keys in `drop` (space-separated)
 * and with the raw "key":value fragment `field` appended. Returns a static buffer. */
static const char *config_with(const char *const *keys, const char *const *vals, size_t n, const char *drop,
                               const char *field)
{
    static char buf[1024];
    size_t k = (size_t)snprintf(buf, sizeof buf, "{");
    for (size_t i = 0; i < n; i++) {
        char word[64], list[256];
        snprintf(word, sizeof word, " %s ", keys[i]);
        snprintf(list, sizeof list, " %s ", drop ? drop : "");
        if (strstr(list, word)) continue;
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s\"%s\":%s", k > 1 ? "," : "", keys[i], vals[i]);
    }
    if (field) k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", k > 1 ? "," : "", field);
    snprintf(buf + k, sizeof buf - k, "}");
    return buf;
}

/* The GPT-2 config without `drop`, plus `field`. */
static const char *gpt2_config_with(const char *drop, const char *field)
{
    static const char *const keys[] = {"model_type", "n_embd", "n_head", "n_layer", "vocab_size", "n_positions"};
    static const char *const vals[] = {"\"gpt2\"", "4", "2", "1", "8", "8"};
    return config_with(keys, vals, 6, drop, field);
}

/* A config.json of the family model_type (llama-like fields; gpt_neox reads the same names)
 * without `drop`, plus `field`: 2 layers, hidden 4, 2 heads of 2. */
static const char *family_config_with(const char *model_type, const char *drop, const char *field)
{
    static char mt[64];
    snprintf(mt, sizeof mt, "\"%s\"", model_type);
    static const char *const keys[] = {"model_type", "hidden_size", "num_attention_heads", "num_hidden_layers",
                                       "intermediate_size", "max_position_embeddings", "vocab_size"};
    const char *vals[] = {mt, "4", "2", "2", "8", "8", "8"};
    return config_with(keys, vals, 7, drop, field);
}

/* The TL config without `drop`, plus `field`. */
static const char *tl_config_with(const char *drop, const char *field)
{
    static const char *const keys[] = {"d_model", "d_head", "n_heads", "n_layers", "n_ctx", "d_vocab", "d_mlp",
                                       "act_fn", "normalization_type"};
    static const char *const vals[] = {"4", "2", "2", "1", "8", "8", "16", "\"gelu_new\"", "\"LN\""};
    return config_with(keys, vals, 9, drop, field);
}

/* ---------------------------------------------------------------------------------------- */
/* Checking                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static char sentinel_byte;
#define SENTINEL ((circuits_model *)(void *)&sentinel_byte)

/* circuits_model_load(dir, opts) must fail with status and a message containing needle,
 * and leave *out NULL. */
#define LOAD_FAILS(name, dir, opts, status, needle)                                        \
    do {                                                                                   \
        int f0_ = tu_failures;                                                             \
        circuits_model *m_ = SENTINEL;                                                     \
        CHECK_FAILS(circuits_model_load(&m_, (dir), (opts)), (status), (needle));          \
        CHECK(m_ == NULL, "*out is %p, not NULL", (void *)m_);                             \
        if (m_ && m_ != SENTINEL) circuits_model_free(m_);                                 \
        cat_row((name), NULL, (status));                                                   \
        CAT_NOTE_FAIL((name), f0_);                                                        \
    } while (0)

/* The directory must load; runs one forward to prove the model is usable. */
static void load_ok(const char *name, const char *dir, const circuits_load_options *opts)
{
    int f0 = tu_failures;
    circuits_model *m = SENTINEL;
    CHECK_OK(circuits_model_load(&m, dir, opts));
    if (m == SENTINEL) m = NULL;
    CHECK(m != NULL, "no model");
    if (m) {
        circuits_context *ctx = NULL;
        CHECK_OK(circuits_context_create(&ctx, m, NULL));
        int32_t tok[4] = {1, 2, 3, 7};
        float logits[4 * 8], loss = NAN;
        if (ctx) CHECK_OK(circuits_context_forward(ctx, tok, 1, 4, logits, &loss, NULL));
        CHECK(isfinite(loss), "loss %f", (double)loss);
        circuits_context_free(ctx);
        circuits_model_free(m);
    }
    CAT_NOTE_FAIL(name, f0);
}

/* Default options, but the files read into memory instead of mapped. */
static const circuits_load_options *read_opts(void)
{
    static circuits_load_options o;
    circuits_load_options_init(&o);
    o.read_into_memory = 1;
    return &o;
}

/* ---------------------------------------------------------------------------------------- */
/* The checks                                                                                */
/* ---------------------------------------------------------------------------------------- */

static void positive_controls(void)
{
    char dir[4096];
    tlist l;
    gpt2_tensors(&l);
    gpt2_case(dir, "ok_gpt2", GPT2_CONFIG, &l);
    load_ok("ok_gpt2", dir, NULL);
    load_ok("ok_gpt2_read", dir, read_opts());

    tl_tensors(&l);
    tl_case(dir, "ok_tl", TL_CONFIG, &l);
    load_ok("ok_tl", dir, NULL);

    /* TL-layout files may omit biases (TL fills zeros) */
    tl_remove(&l, "blocks.0.attn.b_Q");
    tl_case(dir, "ok_tl_no_b_Q", TL_CONFIG, &l);
    load_ok("ok_tl_no_b_Q", dir, NULL);

    /* a trailing slash on the directory */
    gpt2_tensors(&l);
    gpt2_case(dir, "ok_gpt2_trailing_slash", GPT2_CONFIG, &l);
    strcat(dir, "/");
    load_ok("ok_gpt2_trailing_slash", dir, NULL);

    /* F32 data at an address that is not a multiple of 4 (header length 8k + 1): converted */
    {
        unsigned char *buf;
        size_t n = st_build(&l, &buf);
        unsigned char *odd = malloc(n + 1);
        if (!odd) die("malloc");
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = (hl << 8) | buf[i];
        for (int i = 0; i < 8; i++) odd[i] = (unsigned char)((hl + 1) >> (8 * i));
        memcpy(odd + 8, buf + 8, hl);
        odd[8 + hl] = ' ';
        memcpy(odd + 9 + hl, buf + 8 + hl, n - 8 - hl);
        new_case(dir, "ok_gpt2_misaligned");
        write_text(dir, "config.json", GPT2_CONFIG);
        write_bytes(dir, "model.safetensors", odd, n + 1);
        free(odd);
        free(buf);
        load_ok("ok_gpt2_misaligned", dir, NULL);
        load_ok("ok_gpt2_misaligned_read", dir, read_opts());
    }

    /* F16 and BF16 weights are converted */
    snprintf(tl_find(&l, "transformer.wte.weight")->dtype, 16, "F16");
    snprintf(tl_find(&l, "transformer.h.0.mlp.c_fc.weight")->dtype, 16, "BF16");
    gpt2_case(dir, "ok_gpt2_f16_bf16", GPT2_CONFIG, &l);
    load_ok("ok_gpt2_f16_bf16", dir, NULL);

    /* untied with lm_head */
    gpt2_tensors(&l);
    TADD(&l, "lm_head.weight", 8, 4);
    gpt2_case(dir, "ok_gpt2_untied", gpt2_config_with(NULL, "\"tie_word_embeddings\":false"), &l);
    load_ok("ok_gpt2_untied", dir, NULL);
}

/* Every activation name the loader accepts, and only those, is what its error message lists
 * (docs/loading.md lists the same): each loads from a TL config (act_fn) and a GPT-2 config
 * (activation_function), maps to its circuits_act_fn and runs a forward. */
static void activation_names(void)
{
    static const struct { const char *name; int32_t act; } acts[] = {
        {"relu", CIRCUITS_ACT_RELU},          {"gelu", CIRCUITS_ACT_GELU},
        {"gelu_new", CIRCUITS_ACT_GELU_NEW},  {"gelu_pytorch_tanh", CIRCUITS_ACT_GELU_NEW},
        {"gelu_fast", CIRCUITS_ACT_GELU_FAST}, {"silu", CIRCUITS_ACT_SILU},
        {"swish", CIRCUITS_ACT_SILU},         {"solu_ln", CIRCUITS_ACT_SOLU_LN},
    };
    const size_t n = sizeof acts / sizeof acts[0];
    char dir[4096], field[128], name[64];
    tlist l;

    /* the message's list, in order */
    tl_tensors(&l);
    tl_case(dir, "act_list", tl_config_with("act_fn", "\"act_fn\":\"tanh\""), &l);
    circuits_model *m = NULL;
    CHECK(circuits_model_load(&m, dir, NULL) == CIRCUITS_E_UNSUPPORTED, "act_fn 'tanh' loads");
    circuits_model_free(m);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", circuits_last_error());
    char *open_ = strrchr(msg, '('), *close_ = strrchr(msg, ')');
    CHECK(open_ && close_ && close_ > open_, "no (list) in '%s'", msg);
    if (open_ && close_ && close_ > open_) {
        *close_ = 0;
        size_t k = 0;
        for (char *tok = strtok(open_ + 1, ", "); tok; tok = strtok(NULL, ", "), k++)
            CHECK(k < n && strcmp(tok, acts[k].name) == 0, "the message lists '%s' as activation %zu, want '%s'", tok, k,
                  k < n ? acts[k].name : "(none)");
        CHECK(k == n, "the message lists %zu activations, the loader accepts %zu", k, n);
    }

    for (size_t i = 0; i < n; i++) {
        for (int hf = 0; hf < 2; hf++) {
            if (hf && acts[i].act == CIRCUITS_ACT_SOLU_LN) continue; /* refused: cfg_activation_solu_ln */
            snprintf(field, sizeof field, "\"%s\":\"%s\"", hf ? "activation_function" : "act_fn", acts[i].name);
            snprintf(name, sizeof name, "ok_act_%s_%s", hf ? "hf" : "tl", acts[i].name);
            if (hf) {
                gpt2_tensors(&l);
                gpt2_case(dir, name, gpt2_config_with(NULL, field), &l);
            } else {
                tl_tensors(&l);
                if (acts[i].act == CIRCUITS_ACT_SOLU_LN) {
                    TADD(&l, "blocks.0.mlp.ln.w", 16);
                    TADD(&l, "blocks.0.mlp.ln.b", 16);
                }
                tl_case(dir, name, tl_config_with("act_fn", field), &l);
            }
            load_ok(name, dir, NULL);
            m = NULL;
            if (circuits_model_load(&m, dir, NULL) == CIRCUITS_OK) {
                circuits_config c = {.size = sizeof c};
                CHECK_OK(circuits_model_config(m, &c));
                CHECK(c.act_fn == acts[i].act, "%s: act_fn %d, want %d", name, c.act_fn, acts[i].act);
            }
            circuits_model_free(m);
        }
    }
}

static void safetensors_checks(void)
{
    char dir[4096], path[4096];
    const char *T8x4 = "\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[0,128]";
    char h[1024];

    new_case(dir, "st_empty_file");
    write_text(dir, "config.json", GPT2_CONFIG);
    write_bytes(dir, "model.safetensors", "", 0);
    LOAD_FAILS("st_empty_file", dir, NULL, CIRCUITS_E_FORMAT, "truncated: 0 bytes");

    new_case(dir, "st_5_bytes");
    write_text(dir, "config.json", GPT2_CONFIG);
    write_bytes(dir, "model.safetensors", "\x10\0\0\0\0", 5);
    LOAD_FAILS("st_5_bytes", dir, NULL, CIRCUITS_E_FORMAT, "truncated: 5 bytes");

    new_case(dir, "st_header_past_eof");
    write_text(dir, "config.json", GPT2_CONFIG);
    write_st_raw(dir, "model.safetensors", 1000, "{}", 0);
    LOAD_FAILS("st_header_past_eof", dir, NULL, CIRCUITS_E_FORMAT, "runs past the end of the file");

    new_case(dir, "st_header_len_2p63");
    write_text(dir, "config.json", GPT2_CONFIG);
    write_st_raw(dir, "model.safetensors", UINT64_C(1) << 63, "{}", 0);
    LOAD_FAILS("st_header_len_2p63", dir, NULL, CIRCUITS_E_FORMAT, "runs past the end of the file");

    new_case(dir, "st_header_len_all_ones");
    write_text(dir, "config.json", GPT2_CONFIG);
    write_st_raw(dir, "model.safetensors", UINT64_MAX, "{}", 0);
    LOAD_FAILS("st_header_len_all_ones", dir, NULL, CIRCUITS_E_FORMAT, "runs past the end of the file");

    /* 150 MB header length in a 200 MB sparse file: over the 100 MB limit */
    new_case(dir, "st_header_over_limit");
    write_text(dir, "config.json", GPT2_CONFIG);
    write_st_raw(dir, "model.safetensors", 150u << 20, "{}", 0);
    join(path, dir, "model.safetensors");
    if (truncate(path, 200 << 20) != 0) die(path);
    LOAD_FAILS("st_header_over_limit", dir, NULL, CIRCUITS_E_FORMAT, "exceeds the 104857600-byte limit");

    st_case(dir, "st_header_not_json", "hello, world", 0);
    LOAD_FAILS("st_header_not_json", dir, NULL, CIRCUITS_E_FORMAT, "header is not valid JSON");

    st_case(dir, "st_header_empty", "", 16);
    LOAD_FAILS("st_header_empty", dir, NULL, CIRCUITS_E_FORMAT, "header is not valid JSON");

    st_case(dir, "st_header_not_object", "[1, 2, 3]", 0);
    LOAD_FAILS("st_header_not_object", dir, NULL, CIRCUITS_E_FORMAT, "header is not a JSON object");

    st_case(dir, "st_header_string", "\"transformer.wte.weight\"", 0);
    LOAD_FAILS("st_header_string", dir, NULL, CIRCUITS_E_FORMAT, "header is not valid JSON");

    st_case(dir, "st_header_truncated_json", "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"sha", 0);
    LOAD_FAILS("st_header_truncated_json", dir, NULL, CIRCUITS_E_FORMAT, "header is not valid JSON");

    /* a NUL byte inside the header */
    new_case(dir, "st_header_nul_byte");
    write_text(dir, "config.json", GPT2_CONFIG);
    write_bytes(dir, "model.safetensors", "\x06\0\0\0\0\0\0\0{\"a\0\":1}", 14);
    LOAD_FAILS("st_header_nul_byte", dir, NULL, CIRCUITS_E_FORMAT, "header is not valid JSON");

    {
        size_t n = 100000;
        char *deep = malloc(n + 8);
        if (!deep) die("malloc");
        memset(deep, '[', n);
        deep[n] = '\0';
        st_case(dir, "st_deep_nesting", deep, 0);
        LOAD_FAILS("st_deep_nesting", dir, NULL, CIRCUITS_E_FORMAT, "header is not valid JSON");
        /* the same inside an object, closed properly */
        memcpy(deep, "{\"a\":", 5);
        memset(deep + 5, '[', n - 5);
        deep[n] = '\0';
        char *closed = malloc(2 * n + 8);
        if (!closed) die("malloc");
        memcpy(closed, deep, n);
        memset(closed + n, ']', n - 5);
        strcpy(closed + 2 * n - 5, "}");
        st_case(dir, "st_deep_nesting_closed", closed, 0);
        LOAD_FAILS("st_deep_nesting_closed", dir, NULL, CIRCUITS_E_FORMAT, "header is not valid JSON");
        free(closed);
        free(deep);
    }

    st_case(dir, "st_entry_not_object", "{\"transformer.wte.weight\":[8,4]}", 0);
    LOAD_FAILS("st_entry_not_object", dir, NULL, CIRCUITS_E_FORMAT, "header entry is not an object");

    st_case(dir, "st_metadata_not_object", "{\"__metadata__\":7}", 0);
    LOAD_FAILS("st_metadata_not_object", dir, NULL, CIRCUITS_E_FORMAT, "__metadata__ is not an object");

    st_case(dir, "st_missing_dtype",
            "{\"transformer.wte.weight\":{\"shape\":[8,4],\"data_offsets\":[0,128]}}", 128);
    LOAD_FAILS("st_missing_dtype", dir, NULL, CIRCUITS_E_FORMAT, "needs string 'dtype'");

    st_case(dir, "st_missing_shape",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"data_offsets\":[0,128]}}", 128);
    LOAD_FAILS("st_missing_shape", dir, NULL, CIRCUITS_E_FORMAT, "array 'shape'");

    st_case(dir, "st_missing_data_offsets", "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4]}}", 128);
    LOAD_FAILS("st_missing_data_offsets", dir, NULL, CIRCUITS_E_FORMAT, "array 'data_offsets'");

    st_case(dir, "st_dtype_not_string",
            "{\"transformer.wte.weight\":{\"dtype\":32,\"shape\":[8,4],\"data_offsets\":[0,128]}}", 128);
    LOAD_FAILS("st_dtype_not_string", dir, NULL, CIRCUITS_E_FORMAT, "needs string 'dtype'");

    st_case(dir, "st_unknown_dtype",
            "{\"transformer.wte.weight\":{\"dtype\":\"F7\",\"shape\":[8,4],\"data_offsets\":[0,128]}}", 128);
    LOAD_FAILS("st_unknown_dtype", dir, NULL, CIRCUITS_E_DTYPE, "unknown dtype 'F7'");

    {
        tlist l;
        gpt2_tensors(&l);
        snprintf(tl_find(&l, "transformer.wte.weight")->dtype, 16, "I64");
        gpt2_case(dir, "st_dtype_i64_weight", GPT2_CONFIG, &l);
        LOAD_FAILS("st_dtype_i64_weight", dir, NULL, CIRCUITS_E_DTYPE, "has dtype I64; weights must be F32, F16 or BF16");
    }

    st_case(dir, "st_negative_shape",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[-8,4],\"data_offsets\":[0,128]}}", 128);
    LOAD_FAILS("st_negative_shape", dir, NULL, CIRCUITS_E_FORMAT, "shape[0] is not a non-negative integer");

    st_case(dir, "st_shape_real",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,1.5],\"data_offsets\":[0,48]}}", 48);
    LOAD_FAILS("st_shape_real", dir, NULL, CIRCUITS_E_FORMAT, "shape[1] is not a non-negative integer");

    st_case(dir, "st_shape_string",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,\"4\"],\"data_offsets\":[0,128]}}", 128);
    LOAD_FAILS("st_shape_string", dir, NULL, CIRCUITS_E_FORMAT, "shape[1] is not a non-negative integer");

    st_case(dir, "st_shape_2p63",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807],\"data_offsets\":[0,128]}}", 128);
    LOAD_FAILS("st_shape_2p63", dir, NULL, CIRCUITS_E_FORMAT, "shape[0] is not a non-negative integer");

    st_case(dir, "st_shape_beyond_int64",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],\"data_offsets\":[0,128]}}", 128);
    LOAD_FAILS("st_shape_beyond_int64", dir, NULL, CIRCUITS_E_FORMAT, "header is not valid JSON");

    st_case(dir, "st_offsets_reversed",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[128,0]}}", 128);
    LOAD_FAILS("st_offsets_reversed", dir, NULL, CIRCUITS_E_FORMAT, "data_offsets [128, 0] outside the data section");

    st_case(dir, "st_offsets_out_of_bounds",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[64,192]}}", 128);
    LOAD_FAILS("st_offsets_out_of_bounds", dir, NULL, CIRCUITS_E_FORMAT, "outside the data section (128 bytes)");

    st_case(dir, "st_offsets_negative",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[-128,0]}}", 128);
    LOAD_FAILS("st_offsets_negative", dir, NULL, CIRCUITS_E_FORMAT, "data_offsets must be two non-negative integers");

    st_case(dir, "st_offsets_three",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[0,64,128]}}", 128);
    LOAD_FAILS("st_offsets_three", dir, NULL, CIRCUITS_E_FORMAT, "data_offsets must be two non-negative integers");

    st_case(dir, "st_offsets_length_mismatch",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[0,100]}}", 128);
    LOAD_FAILS("st_offsets_length_mismatch", dir, NULL, CIRCUITS_E_FORMAT,
               "100 bytes at data_offsets, but dtype F32 x shape needs 128");

    snprintf(h, sizeof h,
             "{\"transformer.wte.weight\":{%s},"
             "\"transformer.wpe.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[64,192]}}",
             T8x4);
    st_case(dir, "st_overlap", h, 192);
    LOAD_FAILS("st_overlap", dir, NULL, CIRCUITS_E_FORMAT, "overlap");

    snprintf(h, sizeof h, "{\"transformer.wte.weight\":{%s},\"transformer.wpe.weight\":{%s}}", T8x4, T8x4);
    st_case(dir, "st_same_offsets", h, 128);
    LOAD_FAILS("st_same_offsets", dir, NULL, CIRCUITS_E_FORMAT, "overlap");

    snprintf(h, sizeof h,
             "{\"transformer.wte.weight\":{%s},"
             "\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[128,256]}}",
             T8x4);
    st_case(dir, "st_duplicate_name", h, 256);
    LOAD_FAILS("st_duplicate_name", dir, NULL, CIRCUITS_E_FORMAT, "duplicate object key");

    st_case(dir, "st_numel_overflow",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648,2147483648],"
            "\"data_offsets\":[0,128]}}",
            128);
    LOAD_FAILS("st_numel_overflow", dir, NULL, CIRCUITS_E_FORMAT, "element count overflows");

    /* numel = 2^62 fits; numel * 4 bytes does not */
    st_case(dir, "st_nbytes_overflow",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],"
            "\"data_offsets\":[0,128]}}",
            128);
    LOAD_FAILS("st_nbytes_overflow", dir, NULL, CIRCUITS_E_FORMAT, "byte count overflows");

    /* a zero-length dimension makes the product 0, so the later huge ones must not fool the check */
    st_case(dir, "st_zero_dim_then_huge",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387904,4611686018427387904],"
            "\"data_offsets\":[0,0]}}",
            0);
    LOAD_FAILS("st_zero_dim_then_huge", dir, NULL, CIRCUITS_E_SHAPE, "has shape [0, 4611686018427387904");

    {
        tlist l;
        unsigned char *buf;
        gpt2_tensors(&l);
        size_t n = st_build(&l, &buf);
        new_case(dir, "st_data_truncated");
        write_text(dir, "config.json", GPT2_CONFIG);
        write_bytes(dir, "model.safetensors", buf, n - 4);
        free(buf);
        LOAD_FAILS("st_data_truncated", dir, NULL, CIRCUITS_E_FORMAT, "outside the data section");
        /* read into memory: the same checks on the same bytes */
        LOAD_FAILS("st_data_truncated_read", dir, read_opts(), CIRCUITS_E_FORMAT, "outside the data section");
    }

    /* A file that ends before the size fstat reports (as a file truncated between the two
     * would): a sysfs file reports 4096 bytes and delivers a few. Read mode must refuse it. */
    {
        const char *sysfs = "/sys/devices/system/cpu/online";
        new_case(dir, "load_read_short");
        write_text(dir, "config.json", GPT2_CONFIG);
        char link[4096 + 32];
        snprintf(link, sizeof link, "%s/model.safetensors", dir);
        if (symlink(sysfs, link) != 0) die("symlink");
        LOAD_FAILS("load_read_short", dir, read_opts(), CIRCUITS_E_IO, "while being read (did it change?)");
    }

    st_case(dir, "st_too_many_dims",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    LOAD_FAILS("st_too_many_dims", dir, NULL, CIRCUITS_E_FORMAT, "9 dimensions (at most 8)");

    /* 8 dims parse, but no weight has that shape */
    st_case(dir, "st_8_dims_wrong_shape",
            "{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    LOAD_FAILS("st_8_dims_wrong_shape", dir, NULL, CIRCUITS_E_SHAPE, "has shape [1, 1, 1, 1, 1, 1, 1, 1]");

    st_case(dir, "st_header_empty_object", "{}", 0);
    LOAD_FAILS("st_header_empty_object", dir, NULL, CIRCUITS_E_TENSOR_MISSING, "required tensor 'wte.weight'");

    new_case(dir, "st_is_directory");
    write_text(dir, "config.json", GPT2_CONFIG);
    join(path, dir, "model.safetensors");
    if (mkdir(path, 0700) != 0) die(path);
    LOAD_FAILS("st_is_directory", dir, NULL, CIRCUITS_E_IO, "no model.safetensors or model.safetensors.index.json");
}

static void model_checks(void)
{
    char dir[4096], path[4096];
    tlist l;

    gpt2_tensors(&l);
    tl_remove(&l, "transformer.h.0.mlp.c_fc.bias");
    gpt2_case(dir, "model_missing_tensor", GPT2_CONFIG, &l);
    LOAD_FAILS("model_missing_tensor", dir, NULL, CIRCUITS_E_TENSOR_MISSING,
               "required tensor 'transformer.h.0.mlp.c_fc.bias' (for blocks.0.mlp.b_in) is missing");

    gpt2_tensors(&l);
    tl_find(&l, "transformer.h.0.mlp.c_fc.weight")->shape[1] = 15;
    gpt2_case(dir, "model_shape_mismatch", GPT2_CONFIG, &l);
    LOAD_FAILS("model_shape_mismatch", dir, NULL, CIRCUITS_E_SHAPE, "has shape [4, 15], but the config implies [4, 16]");

    gpt2_tensors(&l);
    tl_find(&l, "transformer.h.0.ln_1.weight")->ndim = 2;
    tl_find(&l, "transformer.h.0.ln_1.weight")->shape[1] = 1;
    gpt2_case(dir, "model_rank_mismatch", GPT2_CONFIG, &l);
    LOAD_FAILS("model_rank_mismatch", dir, NULL, CIRCUITS_E_SHAPE, "has shape [4, 1], but the config implies [4]");

    gpt2_tensors(&l);
    TADD(&l, "transformer.h.5.attn.c_attn.weight", 4, 12);
    gpt2_case(dir, "model_unexpected_tensor", GPT2_CONFIG, &l);
    LOAD_FAILS("model_unexpected_tensor", dir, NULL, CIRCUITS_E_TENSOR_UNEXPECTED,
               "tensor 'transformer.h.5.attn.c_attn.weight' has no place in this GPT-2 model (config: 1 layers)");

    {
        static char longname[5000];
        memset(longname, 'x', sizeof longname - 1);
        memcpy(longname, "transformer.h.0.", 16);
        gpt2_tensors(&l);
        TADD(&l, "(long)", 4);
        l.t[l.n - 1].long_name = longname;
        gpt2_case(dir, "model_unexpected_long_name", GPT2_CONFIG, &l);
        LOAD_FAILS("model_unexpected_long_name", dir, NULL, CIRCUITS_E_TENSOR_UNEXPECTED, "tensor 'transformer.h.0.xxxx");
    }

    gpt2_tensors(&l);
    gpt2_case(dir, "model_untied_no_lm_head", gpt2_config_with(NULL, "\"tie_word_embeddings\":false"), &l);
    LOAD_FAILS("model_untied_no_lm_head", dir, NULL, CIRCUITS_E_TENSOR_MISSING,
               "tie_word_embeddings is false but there is no lm_head.weight");

    gpt2_tensors(&l);
    TADD(&l, "lm_head.weight", 8, 5);
    gpt2_case(dir, "model_lm_head_shape", gpt2_config_with(NULL, "\"tie_word_embeddings\":false"), &l);
    LOAD_FAILS("model_lm_head_shape", dir, NULL, CIRCUITS_E_SHAPE, "'lm_head.weight' has shape [8, 5]");

    new_case(dir, "model_no_config");
    write_st(dir, "model.safetensors", &l);
    LOAD_FAILS("model_no_config", dir, NULL, CIRCUITS_E_IO, "neither tl_config.json nor config.json found");

    new_case(dir, "model_config_is_directory");
    join(path, dir, "config.json");
    if (mkdir(path, 0700) != 0) die(path);
    LOAD_FAILS("model_config_is_directory", dir, NULL, CIRCUITS_E_IO, "neither tl_config.json nor config.json found");

    join(dir, g_root, "does_not_exist");
    LOAD_FAILS("model_dir_missing", dir, NULL, CIRCUITS_E_IO, "is not a model directory");

    LOAD_FAILS("model_path_empty", "", NULL, CIRCUITS_E_IO, "is not a model directory");

    new_case(dir, "model_path_is_file");
    write_text(dir, "config.json", GPT2_CONFIG);
    join(path, dir, "config.json");
    LOAD_FAILS("model_path_is_file", path, NULL, CIRCUITS_E_IO, "is not a model directory");

    new_case(dir, "model_no_safetensors");
    write_text(dir, "config.json", GPT2_CONFIG);
    LOAD_FAILS("model_no_safetensors", dir, NULL, CIRCUITS_E_IO, "no model.safetensors or model.safetensors.index.json");

    /* a tokenizer beside the weights that is present but broken fails the load */
    gpt2_tensors(&l);
    gpt2_case(dir, "model_tokenizer_broken", GPT2_CONFIG, &l);
    write_text(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2]");
    LOAD_FAILS("model_tokenizer_broken", dir, NULL, CIRCUITS_E_FORMAT, "tokenizer.json: not valid JSON");

    {
        char longp[5000];
        memset(longp, 'a', sizeof longp - 1);
        longp[0] = '/';
        longp[sizeof longp - 1] = '\0';
        /* the message (1 KiB at most) is cut before its explanation: check the code only */
        LOAD_FAILS("model_path_too_long", longp, NULL, CIRCUITS_E_IO, "/aaaaaaaa");
    }

    /* TransformerLens layout */
    tl_tensors(&l);
    tl_remove(&l, "blocks.0.attn.W_K");
    tl_case(dir, "tl_missing_tensor", TL_CONFIG, &l);
    LOAD_FAILS("tl_missing_tensor", dir, NULL, CIRCUITS_E_TENSOR_MISSING, "required tensor 'blocks.0.attn.W_K'");

    tl_tensors(&l);
    tl_find(&l, "blocks.0.attn.W_Q")->shape[2] = 3;
    tl_case(dir, "tl_shape_mismatch", TL_CONFIG, &l);
    LOAD_FAILS("tl_shape_mismatch", dir, NULL, CIRCUITS_E_SHAPE, "has shape [2, 4, 3], but the config implies [2, 4, 2]");

    tl_tensors(&l);
    tl_find(&l, "blocks.0.attn.b_Q")->shape[0] = 3;
    tl_case(dir, "tl_bias_shape_mismatch", TL_CONFIG, &l);
    LOAD_FAILS("tl_bias_shape_mismatch", dir, NULL, CIRCUITS_E_SHAPE, "'blocks.0.attn.b_Q' has shape [3, 2]");

    tl_tensors(&l);
    TADD(&l, "blocks.1.attn.W_Q", 2, 4, 2);
    tl_case(dir, "tl_unexpected_tensor", TL_CONFIG, &l);
    LOAD_FAILS("tl_unexpected_tensor", dir, NULL, CIRCUITS_E_TENSOR_UNEXPECTED,
               "'blocks.1.attn.W_Q' has no place in this TransformerLens model");

    /* RMS: ln*.w and no bias; RMSPre: no ln weights at all */
    tl_tensors(&l);
    tl_remove(&l, "blocks.0.ln1.b");
    tl_remove(&l, "blocks.0.ln2.b");
    tl_remove(&l, "ln_final.b");
    tl_case(dir, "ok_tl_rms", tl_config_with("normalization_type", "\"normalization_type\":\"RMS\""), &l);
    load_ok("ok_tl_rms", dir, NULL);
    TADD(&l, "blocks.0.ln1.b", 4);
    tl_case(dir, "tl_rms_ln_bias", tl_config_with("normalization_type", "\"normalization_type\":\"RMS\""), &l);
    LOAD_FAILS("tl_rms_ln_bias", dir, NULL, CIRCUITS_E_TENSOR_UNEXPECTED,
               "'blocks.0.ln1.b' has no place in this TransformerLens model");
    tl_remove(&l, "blocks.0.ln1.b");
    tl_remove(&l, "blocks.0.ln1.w");
    tl_remove(&l, "blocks.0.ln2.w");
    tl_remove(&l, "ln_final.w");
    tl_case(dir, "ok_tl_rmspre", tl_config_with("normalization_type", "\"normalization_type\":\"RMSPre\""), &l);
    load_ok("ok_tl_rmspre", dir, NULL);
    TADD(&l, "ln_final.w", 4);
    tl_case(dir, "tl_rmspre_ln_weight", tl_config_with("normalization_type", "\"normalization_type\":\"RMSPre\""),
            &l);
    LOAD_FAILS("tl_rmspre_ln_weight", dir, NULL, CIRCUITS_E_TENSOR_UNEXPECTED,
               "'ln_final.w' has no place in this TransformerLens model");

    /* rotary and grouped-query attention load; refactor_factored_attn_matrices is refused */
    circuits_load_options refactor_opts;
    circuits_load_options_init(&refactor_opts);
    refactor_opts.refactor_factored_attn_matrices = 1;
    tl_tensors(&l);
    tl_remove(&l, "pos_embed.W_pos"); /* rotary models have no W_pos */
    tl_case(dir, "tl_refactor_rotary", tl_config_with(NULL, "\"positional_embedding_type\":\"rotary\""), &l);
    load_ok("ok_tl_rotary", dir, NULL);
    {
        circuits_model *rm = NULL;
        circuits_factored *f = NULL;
        CHECK_OK(circuits_model_load(&rm, dir, NULL));
        if (rm) {
            CALL_FAILS("rotary_pos_qk", circuits_model_pos_qk(rm, 0, 0, &f), CIRCUITS_E_UNSUPPORTED,
                       "a rotary model has no W_pos");
            CALL_FAILS("rotary_writer_pos_embed",
                       circuits_model_virtual_weights(rm, CIRCUITS_WRITER_POS_EMBED, 0, 0, CIRCUITS_READER_Q, 0, 0, &f),
                       CIRCUITS_E_UNSUPPORTED, "CIRCUITS_WRITER_POS_EMBED: a rotary model has no W_pos");
            CALL_FAILS("rotary_qk_no_offsets", circuits_model_rotary_qk(rm, 0, 0, 0, &f), CIRCUITS_E_RANGE,
                       "n_offsets 0 outside [1, n_ctx = 8]");
            CALL_FAILS("rotary_qk_offsets_past_ctx", circuits_model_rotary_qk(rm, 0, 0, 9, &f), CIRCUITS_E_RANGE,
                       "n_offsets 9 outside [1, n_ctx = 8]");
            CALL_FAILS("rotary_qk_head_out_of_range", circuits_model_rotary_qk(rm, 0, -1, 4, &f), CIRCUITS_E_RANGE,
                       "head L0H-1 out of range for 1 layers x 2 heads");
            CHECK(f == NULL, "no circuit made");
            circuits_model_free(rm);
        }
    }
    LOAD_FAILS("tl_refactor_rotary", dir, &refactor_opts, CIRCUITS_E_UNSUPPORTED,
               "refactor_factored_attn_matrices is not defined for rotary embeddings");
    tl_tensors(&l);
    tl_remove(&l, "blocks.0.attn.W_K");
    tl_remove(&l, "blocks.0.attn.W_V");
    tl_remove(&l, "blocks.0.attn.b_K");
    tl_remove(&l, "blocks.0.attn.b_V");
    TADD(&l, "blocks.0.attn._W_K", 1, 4, 2); /* TransformerLens's GroupedQueryAttention names */
    TADD(&l, "blocks.0.attn._W_V", 1, 4, 2);
    TADD(&l, "blocks.0.attn._b_K", 1, 2);
    TADD(&l, "blocks.0.attn._b_V", 1, 2);
    tl_case(dir, "tl_refactor_gqa", tl_config_with(NULL, "\"n_key_value_heads\":1"), &l);
    load_ok("ok_tl_gqa", dir, NULL);
    LOAD_FAILS("tl_refactor_gqa", dir, &refactor_opts, CIRCUITS_E_UNSUPPORTED,
               "refactor_factored_attn_matrices with grouped-query attention");

    /* a gated MLP after LN: fold_ln is refused (ln2.b has no bias to fold into, TL's GatedMLP adds
     * b_in after the product); the model loads unfolded */
    tl_tensors(&l);
    TADD(&l, "blocks.0.mlp.W_gate", 4, 16);
    tl_case(dir, "tl_fold_gated_ln", tl_config_with(NULL, "\"gated_mlp\":true"), &l);
    LOAD_FAILS("tl_fold_gated_ln", dir, NULL, CIRCUITS_E_UNSUPPORTED, "fold_ln of a gated MLP after a LayerNorm");
    circuits_load_options no_fold;
    circuits_load_options_init(&no_fold);
    no_fold.fold_ln = 0;
    load_ok("ok_tl_gated_ln_unfolded", dir, &no_fold);

    /* an attention-only config with MLP weights present */
    tl_tensors(&l);
    tl_case(dir, "tl_attn_only_with_mlp", tl_config_with("act_fn", "\"attn_only\":true"), &l);
    LOAD_FAILS("tl_attn_only_with_mlp", dir, NULL, CIRCUITS_E_TENSOR_UNEXPECTED, "attention-only");
}

/* A 1-layer Llama's tensors (hidden 4, 2 heads of 2, intermediate 8, vocab 8), untied. */
static void llama_tensors(tlist *l)
{
    l->n = 0;
    TADD(l, "model.embed_tokens.weight", 8, 4);
    TADD(l, "model.layers.0.input_layernorm.weight", 4);
    TADD(l, "model.layers.0.self_attn.q_proj.weight", 4, 4);
    TADD(l, "model.layers.0.self_attn.k_proj.weight", 4, 4);
    TADD(l, "model.layers.0.self_attn.v_proj.weight", 4, 4);
    TADD(l, "model.layers.0.self_attn.o_proj.weight", 4, 4);
    TADD(l, "model.layers.0.post_attention_layernorm.weight", 4);
    TADD(l, "model.layers.0.mlp.gate_proj.weight", 8, 4);
    TADD(l, "model.layers.0.mlp.up_proj.weight", 8, 4);
    TADD(l, "model.layers.0.mlp.down_proj.weight", 4, 8);
    TADD(l, "model.norm.weight", 4);
    TADD(l, "lm_head.weight", 8, 4);
}

/* The stored tensors of a family against what its config says (biases on or off, tied or not). */
static void family_weight_checks(char *dir)
{
    tlist l;
    char cfg1[512]; /* family_config_with's buffer is reused below */
    snprintf(cfg1, sizeof cfg1, "%s", family_config_with("llama", "num_hidden_layers", "\"num_hidden_layers\":1"));
    llama_tensors(&l);
    gpt2_case(dir, "hf_llama_valid", cfg1, &l);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, NULL)); /* the baseline the failures below depart from */
    circuits_model_free(m);
    TADD(&l, "model.layers.0.self_attn.q_proj.bias", 4);
    gpt2_case(dir, "hf_llama_bias_unexpected", cfg1, &l);
    LOAD_FAILS("hf_llama_bias_unexpected", dir, NULL, CIRCUITS_E_TENSOR_UNEXPECTED, "has no place in this Llama model");
    llama_tensors(&l);
    gpt2_case(dir, "hf_llama_bias_missing",
              family_config_with("llama", "num_hidden_layers", "\"num_hidden_layers\":1,\"attention_bias\":true"), &l);
    LOAD_FAILS("hf_llama_bias_missing", dir, NULL, CIRCUITS_E_TENSOR_MISSING,
               "required tensor 'model.layers.0.self_attn.q_proj.bias' (for blocks.0.attn.b_Q) is missing");
    l.n--; /* no lm_head.weight */
    gpt2_case(dir, "hf_llama_untied_no_lm_head", cfg1, &l);
    LOAD_FAILS("hf_llama_untied_no_lm_head", dir, NULL, CIRCUITS_E_TENSOR_MISSING,
               "tie_word_embeddings is false but there is no lm_head.weight");
    llama_tensors(&l);
    l.t[2].shape[0] = 6; /* q_proj [6, 4]: 3 heads' rows for 2 heads */
    gpt2_case(dir, "hf_llama_q_proj_shape", cfg1, &l);
    LOAD_FAILS("hf_llama_q_proj_shape", dir, NULL, CIRCUITS_E_SHAPE,
               "tensor 'model.layers.0.self_attn.q_proj.weight' has shape [6, 4], but the config implies [4, 4]");
}

static void config_checks(void)
{
    char dir[4096];
    tlist l;
    gpt2_tensors(&l);

#define HF_CONFIG_FAILS(name, config, status, needle)                                      \
    do {                                                                                   \
        gpt2_case(dir, (name), (config), &l);                                              \
        LOAD_FAILS((name), dir, NULL, (status), (needle));                                 \
    } while (0)

    HF_CONFIG_FAILS("cfg_invalid_json", "{\"n_embd\": 4,", CIRCUITS_E_FORMAT, "not valid JSON");
    HF_CONFIG_FAILS("cfg_empty_file", "", CIRCUITS_E_FORMAT, "not valid JSON");
    HF_CONFIG_FAILS("cfg_not_object", "[4, 2, 1]", CIRCUITS_E_FORMAT, "not a JSON object");
    HF_CONFIG_FAILS("cfg_duplicate_key", "{\"n_embd\":4,\"n_embd\":8}", CIRCUITS_E_FORMAT, "duplicate object key");
    HF_CONFIG_FAILS("cfg_missing_n_embd", gpt2_config_with("n_embd", NULL), CIRCUITS_E_CONFIG,
                    "missing required field 'n_embd'");
    HF_CONFIG_FAILS("cfg_missing_n_positions", gpt2_config_with("n_positions", NULL), CIRCUITS_E_CONFIG,
                    "missing required field 'n_ctx'");
    HF_CONFIG_FAILS("cfg_n_embd_string", gpt2_config_with("n_embd", "\"n_embd\":\"4\""), CIRCUITS_E_CONFIG,
                    "field 'n_embd' must be an integer");
    HF_CONFIG_FAILS("cfg_n_embd_real", gpt2_config_with("n_embd", "\"n_embd\":4.0"), CIRCUITS_E_CONFIG,
                    "field 'n_embd' must be an integer");
    HF_CONFIG_FAILS("cfg_n_embd_2p40", gpt2_config_with("n_embd", "\"n_embd\":1099511627776"), CIRCUITS_E_CONFIG,
                    "field 'n_embd' = 1099511627776 is outside [1, 16777216]");
    HF_CONFIG_FAILS("cfg_n_layer_1e9", gpt2_config_with("n_layer", "\"n_layer\":1e9"), CIRCUITS_E_CONFIG,
                    "field 'n_layer' must be an integer");
    HF_CONFIG_FAILS("cfg_n_layer_10p9", gpt2_config_with("n_layer", "\"n_layer\":1000000000"), CIRCUITS_E_CONFIG,
                    "field 'n_layer' = 1000000000 is outside [1, 4096]");
    HF_CONFIG_FAILS("cfg_n_layer_zero", gpt2_config_with("n_layer", "\"n_layer\":0"), CIRCUITS_E_CONFIG,
                    "field 'n_layer' = 0 is outside");
    HF_CONFIG_FAILS("cfg_n_head_negative", gpt2_config_with("n_head", "\"n_head\":-2"), CIRCUITS_E_CONFIG,
                    "field 'n_head' = -2 is outside");
    HF_CONFIG_FAILS("cfg_vocab_negative", gpt2_config_with("vocab_size", "\"vocab_size\":-8"), CIRCUITS_E_CONFIG,
                    "field 'vocab_size' = -8 is outside");
    HF_CONFIG_FAILS("cfg_n_positions_int64_min",
                    gpt2_config_with("n_positions", "\"n_positions\":-9223372036854775808"), CIRCUITS_E_CONFIG,
                    "field 'n_positions' = -9223372036854775808 is outside");
    /* every size at its limit, but tiny tensors: refused at the first shape check */
    HF_CONFIG_FAILS("cfg_sizes_at_limits",
                    "{\"n_embd\":16777216,\"n_head\":1,\"n_layer\":4096,\"vocab_size\":16777216,"
                    "\"n_positions\":16777216,\"n_inner\":16777216}",
                    CIRCUITS_E_SHAPE, "has shape [8, 4], but the config implies [16777216, 16777216]");
    /* n_inner null means 4 * n_embd, which must respect the same limit */
    HF_CONFIG_FAILS("cfg_n_inner_default_too_large",
                    "{\"n_embd\":16777216,\"n_head\":1,\"n_layer\":1,\"vocab_size\":8,\"n_positions\":8}",
                    CIRCUITS_E_CONFIG, "n_inner (4 * n_embd = 67108864) is too large");
    HF_CONFIG_FAILS("cfg_n_inner_zero", gpt2_config_with(NULL, "\"n_inner\":0"), CIRCUITS_E_CONFIG,
                    "field 'n_inner' = 0 is outside");
    HF_CONFIG_FAILS("cfg_n_embd_not_multiple", gpt2_config_with("n_head", "\"n_head\":3"), CIRCUITS_E_CONFIG,
                    "n_embd = 4 is not a multiple of n_head = 3");
    HF_CONFIG_FAILS("cfg_model_type_unknown", gpt2_config_with("model_type", "\"model_type\":\"bloom\""),
                    CIRCUITS_E_UNSUPPORTED, "model_type 'bloom' is not supported");
    /* the modern families (lib/io/config_hf.c): what changes the computation and is not
     * implemented is refused by name; the config is read before any tensor */
    HF_CONFIG_FAILS("hf_rope_type_yarn",
                    family_config_with("llama", NULL, "\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4}"),
                    CIRCUITS_E_UNSUPPORTED, "rope_type 'yarn' is not supported (default, linear, llama3)");
    HF_CONFIG_FAILS("hf_rope_scaling_dynamic",
                    family_config_with("mistral", NULL, "\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2}"),
                    CIRCUITS_E_UNSUPPORTED, "rope_type 'dynamic' is not supported");
    HF_CONFIG_FAILS("hf_rope_llama3_no_original",
                    family_config_with("llama", NULL, "\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":8}"),
                    CIRCUITS_E_CONFIG, "missing required field 'original_max_position_embeddings'");
    HF_CONFIG_FAILS("hf_layer_types_chunked",
                    family_config_with("gemma2", NULL,
                                       "\"sliding_window\":4,\"layer_types\":[\"chunked_attention\",\"full_attention\"]"),
                    CIRCUITS_E_UNSUPPORTED, "layer_types entry 'chunked_attention' is not supported");
    HF_CONFIG_FAILS("hf_layer_types_pattern",
                    family_config_with("gemma2", "num_hidden_layers",
                                       "\"num_hidden_layers\":3,\"sliding_window\":4,\"layer_types\":"
                                       "[\"sliding_attention\",\"sliding_attention\",\"full_attention\"]"),
                    CIRCUITS_E_UNSUPPORTED, "mixes full and sliding layers in a pattern other than");
    HF_CONFIG_FAILS("hf_qwen2_max_window_layers",
                    family_config_with("qwen2", NULL,
                                       "\"use_sliding_window\":true,\"sliding_window\":4,\"max_window_layers\":1"),
                    CIRCUITS_E_UNSUPPORTED, "use_sliding_window with max_window_layers = 1 of 2 layers");
    HF_CONFIG_FAILS("hf_llama_mlp_bias", family_config_with("llama", NULL, "\"mlp_bias\":true"),
                    CIRCUITS_E_UNSUPPORTED, "'mlp_bias' true is not supported");
    HF_CONFIG_FAILS("hf_gemma_bidirectional", family_config_with("gemma", NULL, "\"use_bidirectional_attention\":true"),
                    CIRCUITS_E_UNSUPPORTED, "'use_bidirectional_attention' true is not supported");
    HF_CONFIG_FAILS("hf_gemma2_rope_linear",
                    family_config_with("gemma2", NULL,
                                       "\"sliding_window\":4,\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":2}"),
                    CIRCUITS_E_UNSUPPORTED, "rope scaling with alternating sliding-window layers is not supported");
    /* every layer sliding: TransformerLens (the forward) leaves linear scaling off local layers,
     * Mistral's one rotary embedding scales them all */
    HF_CONFIG_FAILS("hf_mistral_rope_linear_window",
                    family_config_with("mistral", NULL,
                                       "\"sliding_window\":4,\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":2}"),
                    CIRCUITS_E_UNSUPPORTED, "linear rope scaling with sliding-window layers is not supported");
    /* the messages name the field that is wrong, as each family spells it */
    HF_CONFIG_FAILS("hf_rms_norm_eps_negative", family_config_with("llama", NULL, "\"rms_norm_eps\":-1e-6"),
                    CIRCUITS_E_CONFIG, "rms_norm_eps must not be negative");
    HF_CONFIG_FAILS("hf_rope_linear_factor_zero",
                    family_config_with("llama", NULL, "\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":0}"),
                    CIRCUITS_E_CONFIG, "'rope_parameters.factor' = 0 must be positive");
    HF_CONFIG_FAILS("hf_rope_llama3_factors_inverted",
                    family_config_with("llama", NULL,
                                       "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,"
                                       "\"high_freq_factor\":1,\"original_max_position_embeddings\":8}"),
                    CIRCUITS_E_CONFIG,
                    "'rope_scaling' llama3: factor, low_freq_factor and high_freq_factor must be positive with "
                    "high_freq_factor > low_freq_factor");
    HF_CONFIG_FAILS("hf_gemma2_query_scalar_zero", family_config_with("gemma2", NULL, "\"query_pre_attn_scalar\":0"),
                    CIRCUITS_E_CONFIG, "query_pre_attn_scalar must be positive");
    /* a value JSON holds as a double but fp32 cannot (a cap of inf gives inf * tanh(0) = NaN
     * scores; a factor of 0 turns every rotary angle into NaN): refused by name */
    HF_CONFIG_FAILS("hf_gemma2_softcap_huge", family_config_with("gemma2", NULL, "\"attn_logit_softcapping\":1e300"),
                    CIRCUITS_E_CONFIG, "'attn_logit_softcapping' = 1e+300 is outside the range of a float");
    HF_CONFIG_FAILS("hf_rope_factor_tiny",
                    family_config_with("llama", NULL, "\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":1e-300}"),
                    CIRCUITS_E_CONFIG, "'factor' = 1e-300 is outside the range of a float");
    HF_CONFIG_FAILS("hf_partial_rotary_odd", family_config_with("gpt_neox", NULL, "\"rotary_pct\":0.5"),
                    CIRCUITS_E_UNSUPPORTED, "a rotary dimension of 1");
    HF_CONFIG_FAILS("hf_gptj_rotary_dim_null",
                    "{\"model_type\":\"gptj\",\"n_embd\":4,\"n_head\":2,\"n_layer\":1,\"n_positions\":8,"
                    "\"vocab_size\":8,\"rotary_dim\":null}",
                    CIRCUITS_E_UNSUPPORTED, "GPT-J rotary_dim null (rotary over n_embd) is not supported");
    HF_CONFIG_FAILS("hf_kv_heads_not_divisor", family_config_with("llama", NULL, "\"num_key_value_heads\":3"),
                    CIRCUITS_E_CONFIG, "num_attention_heads = 2 is not a multiple of num_key_value_heads = 3");
    family_weight_checks(dir);
    HF_CONFIG_FAILS("cfg_model_type_number", gpt2_config_with("model_type", "\"model_type\":2"), CIRCUITS_E_CONFIG,
                    "field 'model_type' must be a string");
    HF_CONFIG_FAILS("cfg_activation_unsupported", gpt2_config_with(NULL, "\"activation_function\":\"tanh\""),
                    CIRCUITS_E_UNSUPPORTED, "activation_function 'tanh' is not supported");
    HF_CONFIG_FAILS("cfg_activation_solu_ln", gpt2_config_with(NULL, "\"activation_function\":\"solu_ln\""),
                    CIRCUITS_E_UNSUPPORTED, "activation_function 'solu_ln' needs mlp.ln weights");
    HF_CONFIG_FAILS("cfg_eps_negative", gpt2_config_with(NULL, "\"layer_norm_epsilon\":-1e-5"), CIRCUITS_E_CONFIG,
                    "layer_norm_epsilon must not be negative");
    HF_CONFIG_FAILS("cfg_eps_string", gpt2_config_with(NULL, "\"layer_norm_epsilon\":\"1e-5\""), CIRCUITS_E_CONFIG,
                    "field 'layer_norm_epsilon' must be a number");
    HF_CONFIG_FAILS("cfg_eps_overflow", gpt2_config_with(NULL, "\"layer_norm_epsilon\":1e999"), CIRCUITS_E_FORMAT,
                    "not valid JSON");
    HF_CONFIG_FAILS("cfg_tie_not_bool", gpt2_config_with(NULL, "\"tie_word_embeddings\":\"yes\""), CIRCUITS_E_CONFIG,
                    "field 'tie_word_embeddings' must be true or false");
    HF_CONFIG_FAILS("cfg_cross_attention", gpt2_config_with(NULL, "\"add_cross_attention\":true"),
                    CIRCUITS_E_UNSUPPORTED, "add_cross_attention is not supported");
    {
        size_t n = 100000;
        char *deep = malloc(n + 1);
        if (!deep) die("malloc");
        memset(deep, '{', n);
        deep[n] = '\0';
        for (size_t i = 1; i + 4 < n; i += 5) memcpy(deep + i, "\"a\":{", 5);
        HF_CONFIG_FAILS("cfg_deep_nesting", deep, CIRCUITS_E_FORMAT, "not valid JSON");
        free(deep);
    }
#undef HF_CONFIG_FAILS

    tl_tensors(&l);
#define TL_CONFIG_FAILS(name, config, status, needle)                                      \
    do {                                                                                   \
        tl_case(dir, (name), (config), &l);                                                \
        LOAD_FAILS((name), dir, NULL, (status), (needle));                                 \
    } while (0)

    TL_CONFIG_FAILS("tl_cfg_invalid_json", "{\"d_model\":4,,}", CIRCUITS_E_FORMAT, "not valid JSON");
    TL_CONFIG_FAILS("tl_cfg_not_object", "[]", CIRCUITS_E_FORMAT, "not a JSON object");
    TL_CONFIG_FAILS("tl_cfg_norm_unknown",
                    tl_config_with("normalization_type", "\"normalization_type\":\"BatchNorm\""),
                    CIRCUITS_E_UNSUPPORTED, "normalization_type 'BatchNorm' is not supported");
    /* SoLU's mlp.ln in an RMS model: TL builds it as LayerNormPre, and as RMSNormPre once folded */
    TL_CONFIG_FAILS("tl_cfg_rms_solu_ln",
                    tl_config_with("normalization_type act_fn", "\"normalization_type\":\"RMS\",\"act_fn\":\"solu_ln\""),
                    CIRCUITS_E_UNSUPPORTED, "act_fn 'solu_ln' with normalization_type 'RMS' is not supported");
    TL_CONFIG_FAILS("tl_cfg_rmspre_solu_ln",
                    tl_config_with("normalization_type act_fn",
                                   "\"normalization_type\":\"RMSPre\",\"act_fn\":\"solu_ln\""),
                    CIRCUITS_E_UNSUPPORTED, "act_fn 'solu_ln' with normalization_type 'RMSPre' is not supported");
    TL_CONFIG_FAILS("tl_cfg_post_norm_arch", tl_config_with(NULL, "\"original_architecture\":\"Olmo2ForCausalLM\""),
                    CIRCUITS_E_UNSUPPORTED, "original_architecture 'Olmo2ForCausalLM' (norms after each sublayer");
    /* TL builds ln1_post / ln2_post for RMS and RMSPre only */
    TL_CONFIG_FAILS("tl_cfg_norm_before_after_ln", tl_config_with(NULL, "\"use_normalization_before_and_after\":true"),
                    CIRCUITS_E_UNSUPPORTED,
                    "'use_normalization_before_and_after' is supported with normalization_type RMS or RMSPre only");
    TL_CONFIG_FAILS("tl_cfg_rotary_alibi", tl_config_with(NULL, "\"positional_embedding_type\":\"alibi\""),
                    CIRCUITS_E_UNSUPPORTED, "positional_embedding_type 'alibi' is not supported");
    TL_CONFIG_FAILS("tl_cfg_norm_number", tl_config_with("normalization_type", "\"normalization_type\":1"),
                    CIRCUITS_E_CONFIG, "normalization_type must be a string or null");
    TL_CONFIG_FAILS("tl_cfg_qk_norm", tl_config_with(NULL, "\"use_qk_norm\":true"), CIRCUITS_E_UNSUPPORTED,
                    "'use_qk_norm' is not supported");
    TL_CONFIG_FAILS("tl_cfg_parallel_attn_mlp_type", tl_config_with(NULL, "\"parallel_attn_mlp\":1"),
                    CIRCUITS_E_CONFIG, "field 'parallel_attn_mlp' must be true or false");
    TL_CONFIG_FAILS("tl_cfg_yarn", tl_config_with(NULL, "\"use_yarn_rope\":true"), CIRCUITS_E_UNSUPPORTED,
                    "'use_yarn_rope' is not supported");
    TL_CONFIG_FAILS("tl_cfg_softcap_huge", tl_config_with(NULL, "\"output_logits_soft_cap\":1e40"), CIRCUITS_E_CONFIG,
                    "'output_logits_soft_cap' = 1e+40 is outside the range of a float");
    TL_CONFIG_FAILS("tl_cfg_rotary_base_local", tl_config_with(NULL, "\"rotary_base_local\":10000"),
                    CIRCUITS_E_UNSUPPORTED, "'rotary_base_local' is not supported");
    TL_CONFIG_FAILS("tl_cfg_num_experts", tl_config_with(NULL, "\"num_experts\":8"), CIRCUITS_E_UNSUPPORTED,
                    "'num_experts' is not supported");
    TL_CONFIG_FAILS("tl_cfg_ungroup_gqa", tl_config_with(NULL, "\"ungroup_grouped_query_attention\":true"),
                    CIRCUITS_E_UNSUPPORTED, "'ungroup_grouped_query_attention' is not supported");
    TL_CONFIG_FAILS("tl_cfg_gqa_indivisible", tl_config_with(NULL, "\"n_key_value_heads\":3"), CIRCUITS_E_CONFIG,
                    "is not a multiple of n_key_value_heads = 3");
    TL_CONFIG_FAILS("tl_cfg_attn_types_pattern",
                    tl_config_with("n_layers", "\"n_layers\":4,\"use_local_attn\":true,\"window_size\":2,"
                                         "\"attn_types\":[\"local\",\"local\",\"global\",\"local\"]"),
                    CIRCUITS_E_UNSUPPORTED, "'attn_types' mixes global and local layers");
    TL_CONFIG_FAILS("tl_cfg_local_no_window", tl_config_with(NULL, "\"use_local_attn\":true"), CIRCUITS_E_CONFIG,
                    "missing required field 'window_size'");
    TL_CONFIG_FAILS("tl_cfg_bidirectional", tl_config_with(NULL, "\"attention_dir\":\"bidirectional\""),
                    CIRCUITS_E_UNSUPPORTED, "attention_dir 'bidirectional' is not supported");
    TL_CONFIG_FAILS("tl_cfg_missing_act_fn", tl_config_with("act_fn", NULL), CIRCUITS_E_CONFIG,
                    "missing 'act_fn' (required unless attn_only)");
    TL_CONFIG_FAILS("tl_cfg_act_fn_unsupported", tl_config_with("act_fn", "\"act_fn\":\"reglu\""),
                    CIRCUITS_E_UNSUPPORTED, "act_fn 'reglu' is not supported");
    TL_CONFIG_FAILS("tl_cfg_eps_negative", tl_config_with(NULL, "\"eps\":-0.001"), CIRCUITS_E_CONFIG,
                    "eps must not be negative");
    TL_CONFIG_FAILS("tl_cfg_missing_d_head", tl_config_with("d_head", NULL), CIRCUITS_E_CONFIG,
                    "missing required field 'd_head'");
    TL_CONFIG_FAILS("tl_cfg_n_heads_zero", tl_config_with("n_heads", "\"n_heads\":0"), CIRCUITS_E_CONFIG,
                    "n_heads must be positive");
    TL_CONFIG_FAILS("tl_cfg_n_heads_underivable", tl_config_with("n_heads d_head", "\"n_heads\":-1,\"d_head\":8"),
                    CIRCUITS_E_CONFIG, "n_heads cannot be derived");
    TL_CONFIG_FAILS("tl_cfg_heads_too_large", tl_config_with("d_head", "\"d_head\":16777216"), CIRCUITS_E_CONFIG,
                    "n_heads * d_head = 33554432 is too large");
    TL_CONFIG_FAILS("tl_cfg_attn_scale_zero", tl_config_with(NULL, "\"attn_scale\":0"), CIRCUITS_E_CONFIG,
                    "attn_scale must be positive");
    TL_CONFIG_FAILS("tl_cfg_d_vocab_out_zero", tl_config_with(NULL, "\"d_vocab_out\":0"), CIRCUITS_E_CONFIG,
                    "d_vocab_out must be positive");
    TL_CONFIG_FAILS("tl_cfg_n_layers_negative", tl_config_with("n_layers", "\"n_layers\":-1"), CIRCUITS_E_CONFIG,
                    "field 'n_layers' = -1 is outside");
#undef TL_CONFIG_FAILS
}

/* ---- sharded ---- */

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

/* Shard 1: embeddings and ln_f; shard 2: block 0. */
static void split_tensors(tlist *a, tlist *b)
{
    tlist all;
    gpt2_tensors(&all);
    a->n = b->n = 0;
    for (int i = 0; i < all.n; i++) {
        tlist *dst = strstr(all.t[i].name, ".h.0.") ? b : a;
        dst->t[dst->n++] = all.t[i];
    }
}

/* Writes the index for shards a (file fa) and b (file fb); tensor `moved` (may be NULL) is
 * listed in file `moved_to` instead. */
static void write_index(const char *dir, const tlist *a, const char *fa, const tlist *b, const char *fb,
                        const char *moved, const char *moved_to)
{
    char buf[8192];
    size_t k = (size_t)snprintf(buf, sizeof buf, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
    const tlist *ls[2] = {a, b};
    const char *fs[2] = {fa, fb};
    int first = 1;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < ls[s]->n; i++) {
            const char *name = ls[s]->t[i].name;
            const char *f = moved && strcmp(name, moved) == 0 ? moved_to : fs[s];
            k += (size_t)snprintf(buf + k, sizeof buf - k, "%s\"%s\":\"%s\"", first ? "" : ",", name, f);
            first = 0;
        }
    snprintf(buf + k, sizeof buf - k, "}}");
    write_text(dir, "model.safetensors.index.json", buf);
}

static void sharded_case(char *dir, const char *name, const char *moved, const char *moved_to)
{
    tlist a, b;
    split_tensors(&a, &b);
    new_case(dir, name);
    write_text(dir, "config.json", GPT2_CONFIG);
    write_st(dir, SHARD1, &a);
    write_st(dir, SHARD2, &b);
    write_index(dir, &a, SHARD1, &b, SHARD2, moved, moved_to);
}

static void sharded_checks(void)
{
    char dir[4096], path[4096];

    sharded_case(dir, "ok_sharded", NULL, NULL);
    load_ok("ok_sharded", dir, NULL);
    load_ok("ok_sharded_read", dir, read_opts());

    sharded_case(dir, "shard_index_not_json", NULL, NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {");
    LOAD_FAILS("shard_index_not_json", dir, NULL, CIRCUITS_E_FORMAT, "model.safetensors.index.json: not valid JSON");

    sharded_case(dir, "shard_index_not_object", NULL, NULL);
    write_text(dir, "model.safetensors.index.json", "[\"" SHARD1 "\"]");
    LOAD_FAILS("shard_index_not_object", dir, NULL, CIRCUITS_E_FORMAT, "missing object 'weight_map'");

    sharded_case(dir, "shard_weight_map_missing", NULL, NULL);
    write_text(dir, "model.safetensors.index.json", "{\"metadata\":{}}");
    LOAD_FAILS("shard_weight_map_missing", dir, NULL, CIRCUITS_E_FORMAT, "missing object 'weight_map'");

    sharded_case(dir, "shard_weight_map_array", NULL, NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":[\"" SHARD1 "\"]}");
    LOAD_FAILS("shard_weight_map_array", dir, NULL, CIRCUITS_E_FORMAT, "missing object 'weight_map'");

    sharded_case(dir, "shard_weight_map_empty", NULL, NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{}}");
    LOAD_FAILS("shard_weight_map_empty", dir, NULL, CIRCUITS_E_TENSOR_MISSING, "required tensor 'wte.weight'");

    sharded_case(dir, "shard_name_dotdot", "transformer.wte.weight", "../" SHARD1);
    LOAD_FAILS("shard_name_dotdot", dir, NULL, CIRCUITS_E_FORMAT,
               "weight_map['transformer.wte.weight'] is not a plain file name");

    sharded_case(dir, "shard_name_parent", "transformer.wte.weight", "..");
    LOAD_FAILS("shard_name_parent", dir, NULL, CIRCUITS_E_FORMAT, "is not a plain file name");

    sharded_case(dir, "shard_name_absolute", "transformer.wte.weight", "/etc/passwd");
    LOAD_FAILS("shard_name_absolute", dir, NULL, CIRCUITS_E_FORMAT, "is not a plain file name");

    sharded_case(dir, "shard_name_subdir", "transformer.wte.weight", "sub/" SHARD1);
    LOAD_FAILS("shard_name_subdir", dir, NULL, CIRCUITS_E_FORMAT, "is not a plain file name");

    sharded_case(dir, "shard_name_empty", "transformer.wte.weight", "");
    LOAD_FAILS("shard_name_empty", dir, NULL, CIRCUITS_E_FORMAT, "is not a plain file name");

    sharded_case(dir, "shard_name_not_string", NULL, NULL);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"transformer.wte.weight\":1}}");
    LOAD_FAILS("shard_name_not_string", dir, NULL, CIRCUITS_E_FORMAT, "is not a plain file name");

    sharded_case(dir, "shard_file_missing", NULL, NULL);
    join(path, dir, SHARD2);
    if (remove(path) != 0) die(path);
    LOAD_FAILS("shard_file_missing", dir, NULL, CIRCUITS_E_IO, "cannot open");

    sharded_case(dir, "shard_tensor_not_in_shard", "transformer.wte.weight", SHARD2);
    LOAD_FAILS("shard_tensor_not_in_shard", dir, NULL, CIRCUITS_E_TENSOR_MISSING,
               "tensor 'transformer.wte.weight' is not in shard " SHARD2);

    /* the index names shard "a.safetensors", the tensor is in "xa.safetensors": a file-name
     * suffix is not the same file */
    {
        tlist all, none;
        gpt2_tensors(&all);
        none.n = 0;
        new_case(dir, "shard_suffix_name");
        write_text(dir, "config.json", GPT2_CONFIG);
        write_st(dir, "xa.safetensors", &all);
        write_st(dir, "a.safetensors", &none);
        write_index(dir, &all, "xa.safetensors", &none, "a.safetensors", "transformer.wte.weight", "a.safetensors");
        LOAD_FAILS("shard_suffix_name", dir, NULL, CIRCUITS_E_TENSOR_MISSING,
                   "tensor 'transformer.wte.weight' is not in shard a.safetensors");
    }

    /* the same tensor stored in both shards */
    {
        tlist a, b;
        split_tensors(&a, &b);
        new_case(dir, "shard_tensor_twice");
        write_text(dir, "config.json", GPT2_CONFIG);
        write_index(dir, &a, SHARD1, &b, SHARD2, NULL, NULL); /* lists wte once, in shard 1 */
        b.t[b.n++] = a.t[0];
        write_st(dir, SHARD1, &a);
        write_st(dir, SHARD2, &b);
        LOAD_FAILS("shard_tensor_twice", dir, NULL, CIRCUITS_E_FORMAT, "is defined twice");
    }

    sharded_case(dir, "shard_bad_header", NULL, NULL);
    write_st_raw(dir, SHARD2, 3, "{]", 0);
    LOAD_FAILS("shard_bad_header", dir, NULL, CIRCUITS_E_FORMAT, SHARD2 ": header length 3 runs past the end");

    /* a shard that is a FIFO: must be refused, not opened (which would block) */
    sharded_case(dir, "shard_is_fifo", NULL, NULL);
    join(path, dir, SHARD2);
    if (remove(path) != 0 || mkfifo(path, 0600) != 0) die(path);
    LOAD_FAILS("shard_is_fifo", dir, NULL, CIRCUITS_E_IO, "is not a regular file");

    /* a shard that is a directory */
    sharded_case(dir, "shard_is_directory", NULL, NULL);
    join(path, dir, SHARD2);
    if (remove(path) != 0 || mkdir(path, 0700) != 0) die(path);
    LOAD_FAILS("shard_is_directory", dir, NULL, CIRCUITS_E_IO, "is not a regular file");
}

/* ---- API misuse ---- */

static void api_checks(void)
{
    char dir[4096];
    tlist l;
    gpt2_tensors(&l);
    gpt2_case(dir, "api", GPT2_CONFIG, &l);

    CALL_FAILS("api_null_out", circuits_model_load(NULL, dir, NULL), CIRCUITS_E_INVALID_ARGUMENT, "out is NULL");
    LOAD_FAILS("api_null_path", NULL, NULL, CIRCUITS_E_INVALID_ARGUMENT, "path is NULL");

    circuits_load_options o;
    circuits_load_options_init(&o);
    CHECK(o.size == sizeof o && o.fold_ln == 1 && o.refactor_factored_attn_matrices == 0, "circuits_load_options_init");
    circuits_load_options_init(NULL); /* no-op */
    load_ok("api_options_default", dir, &o);

    o.size = 0;
    LOAD_FAILS("api_options_size_0", dir, &o, CIRCUITS_E_VERSION, "options size 0 is not one this library knows");
    o.size = 3;
    LOAD_FAILS("api_options_size_3", dir, &o, CIRCUITS_E_VERSION, "options size 3");
    struct { circuits_load_options o; uint32_t newer_field; } big;
    memset(&big, 0, sizeof big);
    big.o.size = sizeof big;
    LOAD_FAILS("api_options_too_large", dir, &big.o, CIRCUITS_E_VERSION, "is not one this library knows");
    circuits_load_options_init(&o);
    o.center_unembed = -1;
    LOAD_FAILS("api_options_bad_flag", dir, &o, CIRCUITS_E_INVALID_ARGUMENT, "processing flags must be 0 or 1");

    circuits_load_options_init(&o);
    o.read_into_memory = 2;
    LOAD_FAILS("api_options_read_bad_flag", dir, &o, CIRCUITS_E_INVALID_ARGUMENT, "read_into_memory 2 must be 0 or 1");

    /* A size must be the end of a published version of the struct: `size` alone is not one,
     * nor is a size that cuts read_into_memory in two. */
    circuits_load_options_init(&o);
    o.size = sizeof(uint32_t);
    LOAD_FAILS("api_options_size_4", dir, &o, CIRCUITS_E_VERSION, "options size 4 is not one this library knows");
    o.size = (uint32_t)offsetof(circuits_load_options, read_into_memory) + 2;
    LOAD_FAILS("api_options_size_cuts_field", dir, &o, CIRCUITS_E_VERSION, "is not one this library knows");

    /* A 0.2.0 caller's struct, which ends before read_into_memory, in a block of exactly that
     * size (ASan and valgrind see a read past it): accepted, and the files are mapped. */
    size_t v020 = offsetof(circuits_load_options, read_into_memory);
    unsigned char *old = malloc(v020);
    if (!old) die("malloc");
    circuits_load_options_init(&o);
    o.size = (uint32_t)v020;
    memcpy(old, &o, v020);
    load_ok("api_options_size_v020", dir, (const circuits_load_options *)(void *)old);
    free(old);

    circuits_model_free(NULL); /* no-op */
    CHECK(circuits_model_weight_count(NULL) == 0, "weight_count(NULL)");

    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, NULL));
    if (m) {
        circuits_config cfg;
        cfg.size = 0;
        CALL_FAILS("api_config_size_0", circuits_model_config(m, &cfg), CIRCUITS_E_VERSION, "out->size");
        CALL_FAILS("api_config_null", circuits_model_config(m, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
        circuits_tensor t;
        CALL_FAILS("api_weight_unknown", circuits_model_weight(m, "blocks.9.attn.W_Q", &t), CIRCUITS_E_NOT_FOUND,
                   "no weight named 'blocks.9.attn.W_Q'");
        CALL_FAILS("api_weight_at_range", circuits_model_weight_at(m, 1000, &t), CIRCUITS_E_RANGE,
                   "weight index 1000 out of range");
        circuits_context *ctx = (circuits_context *)(void *)&sentinel_byte;
        CALL_FAILS("api_context_null_model", circuits_context_create(&ctx, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT,
                   "model is NULL");
        CHECK(ctx == NULL, "context *out not NULL");
        circuits_context_options co;
        circuits_context_options_init(&co);
        co.size = 0;
        CALL_FAILS("api_context_options_size_0", circuits_context_create(&ctx, m, &co), CIRCUITS_E_VERSION,
                   "options size 0");
        circuits_model_free(m);
    }
}

/* ---- after all that, a valid model still loads and runs; the forward refuses bad calls ---- */

static void forward_checks(void)
{
    char dir[4096];
    tlist l;
    gpt2_tensors(&l);
    gpt2_case(dir, "forward", GPT2_CONFIG, &l);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, NULL));
    if (!m) return;
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    if (!ctx) {
        circuits_model_free(m);
        return;
    }
    int32_t tok[9] = {0, 1, 2, 3, 4, 5, 6, 7, 1};
    float logits[9 * 8], loss = NAN, ptl[8];
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 8, logits, &loss, ptl));
    CHECK(isfinite(loss), "loss %f", (double)loss);
    for (int i = 0; i < 8 * 8; i++) CHECK(isfinite(logits[i]), "logit %d = %f", i, (double)logits[i]);

    int32_t bad_hi[4] = {1, 2, 8, 3}, bad_neg[4] = {1, -1, 2, 3}, bad_min[2] = {INT32_MIN, 0};
    CALL_FAILS("fwd_token_out_of_range", circuits_context_forward(ctx, bad_hi, 1, 4, logits, NULL, NULL),
               CIRCUITS_E_RANGE, "token id 8 at [0, 2] is outside the vocabulary [0, 8)");
    CALL_FAILS("fwd_token_negative", circuits_context_forward(ctx, bad_neg, 1, 4, logits, NULL, NULL),
               CIRCUITS_E_RANGE, "token id -1 at [0, 1] is outside the vocabulary");
    CALL_FAILS("fwd_token_int32_min", circuits_context_forward(ctx, bad_min, 1, 2, logits, NULL, NULL),
               CIRCUITS_E_RANGE, "token id -2147483648");
    CALL_FAILS("fwd_pos_over_n_ctx", circuits_context_forward(ctx, tok, 1, 9, logits, NULL, NULL), CIRCUITS_E_RANGE,
               "9 positions exceed the model's n_ctx = 8");
    CALL_FAILS("fwd_batch_0", circuits_context_forward(ctx, tok, 0, 4, logits, NULL, NULL), CIRCUITS_E_SHAPE,
               "batch and pos must be at least 1");
    CALL_FAILS("fwd_batch_negative", circuits_context_forward(ctx, tok, -1, 4, logits, NULL, NULL), CIRCUITS_E_SHAPE,
               "tokens shape [-1, 4]");
    CALL_FAILS("fwd_pos_0", circuits_context_forward(ctx, tok, 1, 0, logits, NULL, NULL), CIRCUITS_E_SHAPE,
               "tokens shape [1, 0]");
    CALL_FAILS("fwd_batch_huge", circuits_context_forward(ctx, tok, INT64_C(1) << 62, 2, NULL, NULL, NULL),
               CIRCUITS_E_RANGE, "is too large");
    CALL_FAILS("fwd_loss_pos_1", circuits_context_forward(ctx, tok, 1, 1, logits, &loss, NULL), CIRCUITS_E_SHAPE,
               "the loss needs at least 2 positions (got 1)");
    CALL_FAILS("fwd_per_token_loss_pos_1", circuits_context_forward(ctx, tok, 1, 1, NULL, NULL, ptl),
               CIRCUITS_E_SHAPE, "the loss needs at least 2 positions");
    CALL_FAILS("fwd_null_tokens", circuits_context_forward(ctx, NULL, 1, 4, logits, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "tokens is NULL");
    CALL_FAILS("fwd_null_ctx", circuits_context_forward(NULL, tok, 1, 4, logits, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx is NULL");

    /* the context is still usable and gives the same answer */
    float logits2[8 * 8], loss2 = NAN;
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 8, logits2, &loss2, NULL));
    CHECK(loss2 == loss && memcmp(logits, logits2, sizeof logits2) == 0, "forward changed after failures");
    circuits_context_free(ctx);
    circuits_context_free(NULL);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    cat_verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    snprintf(g_root, sizeof g_root, "/tmp/circuits_bad_input_XXXXXX");
    if (!mkdtemp(g_root)) die("mkdtemp");
    cat_tmp = g_root;

    positive_controls();
    activation_names();
    safetensors_checks();
    model_checks();
    config_checks();
    sharded_checks();
    api_checks();
    forward_checks();

    if (nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return tu_finish("test_bad_input");
}
