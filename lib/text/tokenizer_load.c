/* Tokenizer loaders for the JSON formats, and circuits_tokenizer_load's detection of the
 * format of a file or model directory:
 *   tokenizer.json            Hugging Face tokenizers (model BPE, ByteLevel pre-tokenizer)
 *   vocab.json + merges.txt   Hugging Face GPT2Tokenizer files
 *   encoder.json + vocab.bpe  OpenAI's GPT-2 files (the same two formats under other names)
 *   *.gguf                    tokenizer_gguf.c
 * Beside the files, tokenizer_config.json and special_tokens_map.json (when present) give the
 * BOS/EOS/unknown tokens and, for the vocab + merges formats, the added tokens. */
#include "tokenizer.h"
#include "json_load.h"
#include "tokenizer_parts.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_JSON_BYTES ((size_t)1 << 30)
#define PATH_CAP 4096

static int read_whole(const char *path, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return cx_fail(CIRCUITS_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return cx_fail(CIRCUITS_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > MAX_JSON_BYTES) {
        fclose(f);
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %lld bytes is too large for a tokenizer file", path,
                       (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    char *b = cx_malloc(n + 1);
    if (!b) {
        fclose(f);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", path);
    }
    size_t got = fread(b, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (got != n || err) {
        cx_free(b);
        return cx_fail(CIRCUITS_E_IO, "%s: read failed", path);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return CIRCUITS_OK;
}

static int load_json_flags(const char *path, json_t **root, size_t flags)
{
    *root = NULL;
    char *buf;
    size_t len;
    int rc = read_whole(path, &buf, &len);
    if (rc) return rc;
    json_error_t err;
    bool oom;
    *root = cx_json_loadb(buf, len, flags, &err, &oom);
    cx_free(buf);
    if (oom)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory parsing %s", path);
    if (!*root)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: not valid JSON (line %d, column %d): %s", path, err.line, err.column,
                       err.text);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return cx_fail(CIRCUITS_E_FORMAT, "%s: not a JSON object", path);
    }
    return CIRCUITS_OK;
}

static int load_json(const char *path, json_t **root)
{
    return load_json_flags(path, root, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int join(char *buf, const char *dir, const char *name)
{
    int n = snprintf(buf, PATH_CAP, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_CAP) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "path too long: %s/%s", dir, name);
    return CIRCUITS_OK;
}

/* ---- side files: tokenizer_config.json, special_tokens_map.json ---- */
typedef struct side_files {
    json_t *config, *map; /* NULL when absent */
} side_files;

/* Idempotent: side_load frees what it loaded when it fails, and its callers free again. */
static void side_free(side_files *s)
{
    json_decref(s->config);
    json_decref(s->map);
    s->config = s->map = NULL;
}

static int side_load(side_files *s, const char *dir)
{
    memset(s, 0, sizeof *s);
    char p[PATH_CAP];
    int rc = join(p, dir, "tokenizer_config.json");
    /* numbers as reals: model_max_length is often 1e30, which jansson's integers cannot hold */
    const size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL;
    if (!rc && file_exists(p)) rc = load_json_flags(p, &s->config, flags);
    if (!rc) rc = join(p, dir, "special_tokens_map.json");
    if (!rc && file_exists(p)) rc = load_json_flags(p, &s->map, flags);
    if (rc) side_free(s);
    return rc;
}

/* A token given as "text" or {"content": "text", ...}; NULL otherwise. */
static json_t *token_text(json_t *v)
{
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? v : NULL;
}

/* The text of a named special token (bos_token, ...) from the side files, or NULL. */
static json_t *side_token(const side_files *s, const char *name)
{
    json_t *v = s->config ? token_text(json_object_get(s->config, name)) : NULL;
    if (!v && s->map) v = token_text(json_object_get(s->map, name));
    return v;
}

/* The id of a token given by its text: an added token's, else the vocabulary's. */
static int32_t text_id(const circuits_tokenizer *t, json_t *text)
{
    if (!text) return -1;
    const char *s = json_string_value(text);
    size_t n = json_string_length(text);
    int32_t id = cx_tok_find_added(t, s, n);
    return id >= 0 ? id : cx_tok_lookup(t, s, n);
}

/* bos/eos (and unk if `unk`) from the side files; else "<|endoftext|>" for bos/eos. */
static void side_ids(circuits_tokenizer *t, const side_files *s, bool unk)
{
    static const char eot[] = "<|endoftext|>";
    int32_t def = cx_tok_find_added(t, eot, sizeof eot - 1);
    if (def < 0) def = cx_tok_lookup(t, eot, sizeof eot - 1);
    int32_t v;
    if (t->bos < 0) t->bos = (v = text_id(t, side_token(s, "bos_token"))) >= 0 ? v : def;
    if (t->eos < 0) t->eos = (v = text_id(t, side_token(s, "eos_token"))) >= 0 ? v : def;
    if (unk && t->unk < 0) t->unk = text_id(t, side_token(s, "unk_token"));
}

/* tokenizer_config.json's add_bos_token / add_eos_token, when given, decide what encode adds
 * by default (transformers rewrites the post-processor from them). */
static int side_add_flags(circuits_tokenizer *t, const side_files *s, const char *src)
{
    if (!s->config) return CIRCUITS_OK;
    int v, rc;
    if ((rc = cx_tj_flag(s->config, "add_bos_token", t->add_bos, &v, src, "tokenizer_config.json"))) return rc;
    if (v && t->bos < 0)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: tokenizer_config.json: add_bos_token, but there is no BOS token", src);
    t->add_bos = (uint8_t)v;
    if ((rc = cx_tj_flag(s->config, "add_eos_token", t->add_eos, &v, src, "tokenizer_config.json"))) return rc;
    if (v && t->eos < 0)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: tokenizer_config.json: add_eos_token, but there is no EOS token", src);
    t->add_eos = (uint8_t)v;
    return CIRCUITS_OK;
}

static int add_if_new(circuits_tokenizer *t, int64_t id, const char *content, size_t len, int special, int normalized,
                      int lstrip, int rstrip, const char *src)
{
    if (cx_tok_find_added(t, content, len) >= 0) return CIRCUITS_OK;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id == id) return CIRCUITS_OK;
    return cx_tok_add_added(t, id, content, len, special, normalized, lstrip, rstrip, src);
}

/* ---- vocabulary (shared by both JSON formats) ---- */
static int set_vocab(circuits_tokenizer *t, json_t *vocab, const char *src)
{
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v))
            return cx_fail(CIRCUITS_E_FORMAT, "%s: vocabulary entry '%.64s' is not an integer id", src, key);
        int rc = cx_tok_set_token(t, json_integer_value(v), key, strlen(key), src);
        if (rc) return rc;
    }
    return CIRCUITS_OK;
}

static size_t id_capacity(size_t n_entries)
{
    /* ids may leave holes, but not absurdly many */
    return 2 * n_entries + 1024;
}

/* "a b": HF tokenizers splits on ' ' and wants exactly two parts. */
static int merge_from_line(circuits_tokenizer *t, const char *s, size_t n, uint32_t rank, const char *src,
                           size_t line)
{
    const char *sp = memchr(s, ' ', n);
    if (!sp || sp == s || sp == s + n - 1 || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1)))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: merge on line %zu is not two tokens separated by one space: '%.*s'",
                       src, line, (int)(n > 64 ? 64 : n), s);
    return cx_tok_add_merge(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + n - sp - 1), rank, src);
}

/* ---- tokenizer.json ---- */
static int hf_model_options(circuits_tokenizer *t, json_t *model, const char *src)
{
    static const char *const empty_ok[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t k = 0; k < 2; k++) {
        json_t *v = json_object_get(model, empty_ok[k]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: BPE %s is not supported", src, empty_ok[k]);
    }
    json_t *d = json_object_get(model, "dropout");
    if (d && !json_is_null(d) && !(json_is_number(d) && json_number_value(d) == 0.0))
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: BPE dropout is not supported", src);
    int bf = 0, fuse = 0, ign = 0;
    int rc = cx_tj_flag(model, "byte_fallback", 0, &bf, src, "model");
    if (!rc) rc = cx_tj_flag(model, "fuse_unk", 0, &fuse, src, "model");
    if (!rc) rc = cx_tj_flag(model, "ignore_merges", 0, &ign, src, "model");
    if (rc) return rc;
    if (bf && !t->char_level)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: BPE byte_fallback with a ByteLevel pre-tokenizer is not supported", src);
    t->byte_fallback = (uint8_t)bf;
    t->fuse_unk = (uint8_t)fuse;
    t->ignore_merges = (uint8_t)ign;
    json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk)) return cx_fail(CIRCUITS_E_FORMAT, "%s: model.unk_token is not a string", src);
        t->unk = cx_tok_lookup(t, json_string_value(unk), json_string_length(unk));
        if (t->unk < 0)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: unk_token '%.64s' is not in the vocabulary", src,
                           json_string_value(unk));
    }
    return CIRCUITS_OK;
}

static int hf_added(circuits_tokenizer *t, json_t *list, const char *src)
{
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_object(a) || !json_is_integer(id) || !json_is_string(content))
            return cx_fail(CIRCUITS_E_FORMAT, "%s: added_tokens[%zu] needs an integer 'id' and a string 'content'", src,
                           i);
        int special = 0, normalized = 0, lstrip = 0, rstrip = 0, single = 0;
        int rc = cx_tj_flag(a, "special", 0, &special, src, "added token");
        if (!rc) rc = cx_tj_flag(a, "normalized", !special, &normalized, src, "added token");
        if (!rc) rc = cx_tj_flag(a, "lstrip", 0, &lstrip, src, "added token");
        if (!rc) rc = cx_tj_flag(a, "rstrip", 0, &rstrip, src, "added token");
        if (!rc) rc = cx_tj_flag(a, "single_word", 0, &single, src, "added token");
        if (rc) return rc;
        const uint8_t *c = (const uint8_t *)json_string_value(content);
        size_t n = json_string_length(content);
        uint8_t *norm = NULL;
        if (normalized && t->nfc && (rc = cx_nfc(c, n, &norm, &n))) return rc;
        rc = cx_tok_add_added(t, json_integer_value(id), norm ? (const char *)norm : (const char *)c, n, special,
                              normalized, lstrip, rstrip, src);
        cx_free(norm);
        if (rc) return rc;
        if (single) cx_tok_last_added_single_word(t);
    }
    return CIRCUITS_OK;
}

static int from_hf_root(circuits_tokenizer **out, json_t *root, const char *src, const char *dir)
{
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return cx_fail(CIRCUITS_E_FORMAT, "%s: 'model' is not an object", src);
    json_t *type = json_object_get(model, "type");
    if (type && !(json_is_string(type) && strcmp(json_string_value(type), "BPE") == 0))
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)", src, cx_tj_type_of(model));
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab)) return cx_fail(CIRCUITS_E_FORMAT, "%s: model.vocab is not an object", src);
    if (!json_is_array(merges)) return cx_fail(CIRCUITS_E_FORMAT, "%s: model.merges is not an array", src);
    if (added && !json_is_null(added) && !json_is_array(added))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: added_tokens is not an array", src);
    size_t n_added = json_is_array(added) ? json_array_size(added) : 0;
    circuits_tokenizer *t;
    int rc = cx_tok_new(&t, id_capacity(json_object_size(vocab) + n_added), "tokenizer.json");
    if (rc) return rc;
    side_files side = {0};
    if (!rc) rc = cx_tj_pre_tokenizer(t, json_object_get(root, "pre_tokenizer"), src);
    if (!rc) rc = cx_tj_normalizer(t, json_object_get(root, "normalizer"), src);
    if (!rc) rc = cx_tj_decoder(t, json_object_get(root, "decoder"), src);
    if (!rc) rc = set_vocab(t, vocab, src);
    if (!rc) rc = cx_tok_index(t, src);
    if (!rc) rc = hf_model_options(t, model, src);
    size_t i;
    json_t *m;
    if (!rc) json_array_foreach(merges, i, m) {
        if (json_is_string(m)) {
            rc = merge_from_line(t, json_string_value(m), json_string_length(m), (uint32_t)i, src, i + 1);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            rc = cx_tok_add_merge(t, json_string_value(a), json_string_length(a), json_string_value(b),
                                  json_string_length(b), (uint32_t)i, src);
        } else {
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", src, i);
        }
        if (rc) break;
    }
    if (!rc && n_added) rc = hf_added(t, added, src);
    if (!rc) rc = side_load(&side, dir);
    if (!rc) side_ids(t, &side, false);
    if (!rc) rc = cx_tj_post_processor(t, json_object_get(root, "post_processor"), src);
    if (!rc) rc = side_add_flags(t, &side, src);
    if (!rc) rc = cx_tok_finish(t, src);
    side_free(&side);
    if (rc) {
        circuits_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return CIRCUITS_OK;
}

int cx_tok_load_hf_json(circuits_tokenizer **out, const char *path, const char *dir)
{
    *out = NULL;
    json_t *root;
    int rc = load_json(path, &root);
    if (rc) return rc;
    rc = from_hf_root(out, root, path, dir);
    json_decref(root);
    return rc;
}

/* ---- vocab.json + merges.txt / encoder.json + vocab.bpe ---- */
static int read_merges(circuits_tokenizer *t, const char *path)
{
    char *buf;
    size_t len;
    int rc = read_whole(path, &buf, &len);
    if (rc) return rc;
    uint32_t rank = 0;
    size_t line = 0;
    for (size_t i = 0; i < len && !rc;) {
        char *nl = memchr(buf + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - buf) : len, n = end - i;
        line++;
        if (n && buf[i + n - 1] == '\r') n--;
        if (n && !(n >= 8 && memcmp(buf + i, "#version", 8) == 0))
            rc = merge_from_line(t, buf + i, n, rank++, path, line);
        i = end + 1;
    }
    cx_free(buf);
    return rc;
}

static int side_added(circuits_tokenizer *t, const side_files *s, const char *src)
{
    /* tokenizer_config.json's added_tokens_decoder: {"id": {"content": ..., flags}} */
    json_t *dec = s->config ? json_object_get(s->config, "added_tokens_decoder") : NULL;
    if (json_is_object(dec)) {
        const char *key;
        json_t *v;
        json_object_foreach(dec, key, v) {
            char *end;
            errno = 0;
            long long id = strtoll(key, &end, 10);
            json_t *c = token_text(v);
            if (!*key || *end || errno || !c)
                return cx_fail(CIRCUITS_E_FORMAT, "%s: added_tokens_decoder entry '%.64s' is not id: {content}", src, key);
            int special = 0, normalized = 0, lstrip = 0, rstrip = 0, single = 0;
            int rc = cx_tj_flag(v, "special", 1, &special, src, "added token");
            if (!rc) rc = cx_tj_flag(v, "normalized", !special, &normalized, src, "added token");
            if (!rc) rc = cx_tj_flag(v, "lstrip", 0, &lstrip, src, "added token");
            if (!rc) rc = cx_tj_flag(v, "rstrip", 0, &rstrip, src, "added token");
            if (!rc) rc = cx_tj_flag(v, "single_word", 0, &single, src, "added token");
            if (rc) return rc;
            if (single)
                return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: added token '%.64s' is single_word, which is not supported",
                               src, json_string_value(c));
            rc = add_if_new(t, id, json_string_value(c), json_string_length(c), special, normalized, lstrip, rstrip, src);
            if (rc) return rc;
        }
    }
    /* the named special tokens, when they are in the vocabulary */
    static const char *const names[] = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                                        "cls_token", "mask_token"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        json_t *c = side_token(s, names[k]);
        if (!c) continue;
        int32_t id = cx_tok_lookup(t, json_string_value(c), json_string_length(c));
        if (id < 0) continue;
        int rc = add_if_new(t, id, json_string_value(c), json_string_length(c), 1, 0, 0, 0, src);
        if (rc) return rc;
    }
    return CIRCUITS_OK;
}

static int from_vocab_root(circuits_tokenizer **out, json_t *vocab, const char *vocab_path, const char *merges_path,
                           const char *dir, const char *format)
{
    circuits_tokenizer *t;
    int rc = cx_tok_new(&t, id_capacity(json_object_size(vocab)), format);
    if (rc) return rc;
    side_files side = {0};
    t->add_prefix_space = 0;
    rc = set_vocab(t, vocab, vocab_path);
    if (!rc) rc = cx_tok_index(t, vocab_path);
    if (!rc) rc = read_merges(t, merges_path);
    if (!rc) { /* GPT-2's end of text, a special token in every GPT-2 tokenizer */
        static const char eot[] = "<|endoftext|>";
        int32_t id = cx_tok_lookup(t, eot, sizeof eot - 1);
        if (id >= 0) rc = cx_tok_add_added(t, id, eot, sizeof eot - 1, 1, 0, 0, 0, vocab_path);
    }
    if (!rc) rc = side_load(&side, dir);
    if (!rc) rc = side_added(t, &side, dir);
    if (!rc && side.config) {
        json_t *aps = json_object_get(side.config, "add_prefix_space");
        if (json_is_boolean(aps)) t->add_prefix_space = (uint8_t)json_is_true(aps);
    }
    if (!rc) side_ids(t, &side, true);
    if (!rc) rc = cx_tok_finish(t, vocab_path);
    side_free(&side);
    if (rc) {
        circuits_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return CIRCUITS_OK;
}

int cx_tok_load_vocab_merges(circuits_tokenizer **out, const char *vocab_path, const char *merges_path,
                             const char *dir)
{
    *out = NULL;
    json_t *root;
    int rc = load_json(vocab_path, &root);
    if (rc) return rc;
    const char *base = strrchr(vocab_path, '/');
    base = base ? base + 1 : vocab_path;
    rc = from_vocab_root(out, root, vocab_path, merges_path, dir,
                         strcmp(base, "encoder.json") == 0 ? "encoder.json" : "vocab.json");
    json_decref(root);
    return rc;
}

/* ---- detection ---- */
static int find_gguf(const char *dir, char *path, bool *found)
{
    *found = false;
    DIR *d = opendir(dir);
    if (!d) return cx_fail(CIRCUITS_E_IO, "%s: cannot open the directory: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = CIRCUITS_OK;
    char first[PATH_CAP] = "";
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".gguf") != 0) continue;
        char p[PATH_CAP];
        if ((rc = join(p, dir, e->d_name))) break;
        if (!file_exists(p)) continue;
        if (*found) {
            rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: several GGUF files (%s, %s): name the one to load", dir, first,
                         e->d_name);
            break;
        }
        *found = true;
        snprintf(first, sizeof first, "%s", e->d_name);
        memcpy(path, p, PATH_CAP);
    }
    closedir(d);
    return rc;
}

static int load_dir(circuits_tokenizer **out, const char *dir, bool optional)
{
    char a[PATH_CAP], b[PATH_CAP];
    int rc = join(a, dir, "tokenizer.json");
    if (rc) return rc;
    if (file_exists(a)) return cx_tok_load_hf_json(out, a, dir);
    if ((rc = join(a, dir, "vocab.json")) || (rc = join(b, dir, "merges.txt"))) return rc;
    if (file_exists(a) && file_exists(b)) return cx_tok_load_vocab_merges(out, a, b, dir);
    if ((rc = join(a, dir, "encoder.json")) || (rc = join(b, dir, "vocab.bpe"))) return rc;
    if (file_exists(a) && file_exists(b)) return cx_tok_load_vocab_merges(out, a, b, dir);
    bool found;
    if ((rc = find_gguf(dir, a, &found))) return rc;
    if (found) return cx_tok_load_gguf(out, a);
    if (optional) return CIRCUITS_OK;
    return cx_fail(CIRCUITS_E_NOT_FOUND,
                   "%s: no tokenizer (looked for tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe, *.gguf)",
                   dir);
}

int cx_tokenizer_load_optional(circuits_tokenizer **out, const char *dir)
{
    *out = NULL;
    return load_dir(out, dir, true);
}

static int load_file(circuits_tokenizer **out, const char *path)
{
    char dir[PATH_CAP];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) >= sizeof dir) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "path too long: %s", path);
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    const char *base = slash ? slash + 1 : path;

    FILE *f = fopen(path, "rb");
    if (!f) return cx_fail(CIRCUITS_E_IO, "%s: cannot open: %s", path, strerror(errno));
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return cx_tok_load_gguf(out, path);

    char other[PATH_CAP];
    int rc;
    if (strcmp(base, "merges.txt") == 0 || strcmp(base, "vocab.bpe") == 0) {
        if ((rc = join(other, dir, strcmp(base, "merges.txt") == 0 ? "vocab.json" : "encoder.json"))) return rc;
        return cx_tok_load_vocab_merges(out, other, path, dir);
    }
    json_t *root;
    if ((rc = load_json(path, &root))) return rc;
    if (json_is_object(json_object_get(root, "model"))) {
        rc = from_hf_root(out, root, path, dir);
    } else {
        /* a bare vocabulary: its merges beside it */
        const char *names[2] = {"merges.txt", "vocab.bpe"};
        if (strcmp(base, "encoder.json") == 0) { names[0] = "vocab.bpe"; names[1] = "merges.txt"; }
        rc = CIRCUITS_E_NOT_FOUND;
        for (int k = 0; k < 2 && rc == CIRCUITS_E_NOT_FOUND; k++) {
            int jr = join(other, dir, names[k]);
            if (jr) { rc = jr; break; }
            if (file_exists(other))
                rc = from_vocab_root(out, root, path, other, dir,
                                     strcmp(base, "encoder.json") == 0 ? "encoder.json" : "vocab.json");
        }
        if (rc == CIRCUITS_E_NOT_FOUND)
            rc = cx_fail(CIRCUITS_E_NOT_FOUND, "%s: a vocabulary without merges (no merges.txt or vocab.bpe beside it)",
                         path);
    }
    json_decref(root);
    return rc;
}

int circuits_tokenizer_load(circuits_tokenizer **out, const char *path)
{
    if (out) *out = NULL;
    if (!out || !path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_tokenizer_load: NULL argument");
    struct stat st;
    if (stat(path, &st) != 0) return cx_fail(CIRCUITS_E_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return load_dir(out, path, false);
    return load_file(out, path);
}
