/* A tokenizer from GGUF metadata (llama.cpp's tokenizer.ggml.* keys, model "gpt2" = byte-level
 * BPE). The file is untrusted: every count and length is checked against the bytes left before
 * it is used, and counts far beyond any real vocabulary are refused. Only the header and the
 * key-value section are read (the file is mapped; tensor data is never touched).
 *
 * GGUF v2/v3 layout (little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv
 * times { string key, u32 type, value }, string = u64 length + bytes, array = u32 element type
 * + u64 count + elements. */
#include "tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    GT_U8 = 0, GT_I8, GT_U16, GT_I16, GT_U32, GT_I32, GT_F32, GT_BOOL, GT_STRING, GT_ARRAY, GT_U64, GT_I64, GT_F64,
    GT_COUNT
};

#define GGUF_MAX_KV 65536u
#define GGUF_MAX_KEY 65536u

/* GGUF token types */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

static size_t scalar_size(uint32_t type)
{
    static const size_t sz[GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < GT_COUNT ? sz[type] : 0;
}

static const char *type_name(uint32_t type)
{
    static const char *const names[GT_COUNT] = {"u8",  "i8",    "u16",    "i16",   "u32", "i32", "f32",
                                                "bool", "string", "array", "u64", "i64", "f64"};
    return type < GT_COUNT ? names[type] : "unknown";
}

typedef struct cursor {
    const uint8_t *p;
    size_t pos, size;
    const char *path;
} cursor;

static int need(cursor *c, size_t n, const char *what)
{
    if (n > c->size - c->pos)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated GGUF: %s needs %zu bytes at offset %zu, %zu left", c->path, what,
                       n, c->pos, c->size - c->pos);
    return CIRCUITS_OK;
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static int get_u32(cursor *c, uint32_t *v, const char *what)
{
    int rc = need(c, 4, what);
    if (rc) return rc;
    *v = rd32(c->p + c->pos);
    c->pos += 4;
    return CIRCUITS_OK;
}

static int get_u64(cursor *c, uint64_t *v, const char *what)
{
    int rc = need(c, 8, what);
    if (rc) return rc;
    *v = rd64(c->p + c->pos);
    c->pos += 8;
    return CIRCUITS_OK;
}

static int get_string(cursor *c, const uint8_t **s, size_t *n, const char *what)
{
    uint64_t len;
    int rc = get_u64(c, &len, what);
    if (rc) return rc;
    if (len > c->size - c->pos)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated GGUF: %s of %llu bytes at offset %zu, %zu left", c->path, what,
                       (unsigned long long)len, c->pos, c->size - c->pos);
    *s = c->p + c->pos;
    *n = (size_t)len;
    c->pos += (size_t)len;
    return CIRCUITS_OK;
}

/* A key-value the tokenizer reads. */
typedef struct kv {
    const char *key;
    uint32_t type, elem;  /* elem: the element type of an array */
    uint64_t count;       /* arrays */
    size_t at;            /* offset of the value (after type, and after elem+count for arrays) */
    bool present;
} kv;

enum { K_MODEL, K_PRE, K_ARCH, K_TOKENS, K_TYPES, K_MERGES, K_BOS, K_EOS, K_UNK, K_SPACE_PREFIX, K_SCORES, K_ADD_BOS,
       K_ADD_EOS, K_N };
static const char *const wanted[K_N] = {
    "tokenizer.ggml.model",        "tokenizer.ggml.pre",        "general.architecture",
    "tokenizer.ggml.tokens",       "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.scores", "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
};

/* Skips (and bounds-checks) one value of `type`; arrays record elem/count in *k if non-NULL. */
static int skip_value(cursor *c, uint32_t type, const char *key, kv *k)
{
    if (type == GT_STRING) {
        const uint8_t *s;
        size_t n;
        if (k) k->at = c->pos;
        return get_string(c, &s, &n, key);
    }
    if (type == GT_ARRAY) {
        uint32_t elem;
        uint64_t count;
        int rc = get_u32(c, &elem, key);
        if (!rc) rc = get_u64(c, &count, key);
        if (rc) return rc;
        if (elem == GT_ARRAY)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: GGUF key '%.128s' is an array of arrays", c->path, key);
        if (elem >= GT_COUNT)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%.128s': unknown array element type %u", c->path, key, elem);
        /* every element takes at least its scalar size, or 8 bytes for a string's length */
        size_t min = elem == GT_STRING ? 8 : scalar_size(elem);
        if (count > (c->size - c->pos) / min)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated GGUF: key '%.128s': %llu array elements cannot fit in the %zu bytes left",
                           c->path, key, (unsigned long long)count, c->size - c->pos);
        if (k) {
            k->elem = elem;
            k->count = count;
            k->at = c->pos;
        }
        if (elem != GT_STRING) {
            c->pos += (size_t)count * min;
            return CIRCUITS_OK;
        }
        for (uint64_t i = 0; i < count; i++) {
            const uint8_t *s;
            size_t n;
            int r = get_string(c, &s, &n, key);
            if (r) return r;
        }
        return CIRCUITS_OK;
    }
    size_t n = scalar_size(type);
    if (!n) return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%.128s': unknown value type %u", c->path, key, type);
    int rc = need(c, n, key);
    if (rc) return rc;
    if (k) k->at = c->pos;
    c->pos += n;
    return CIRCUITS_OK;
}

static int parse_kvs(cursor *c, kv *kvs)
{
    int rc = need(c, 24, "the header");
    if (rc) return rc;
    if (memcmp(c->p, "GGUF", 4) != 0) return cx_fail(CIRCUITS_E_FORMAT, "%s: not a GGUF file (bad magic)", c->path);
    uint32_t version = rd32(c->p + 4);
    if (version != 2 && version != 3)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: GGUF version %u is not supported (2 or 3; a big-endian file?)",
                       c->path, version);
    uint64_t n_kv = rd64(c->p + 16);
    c->pos = 24;
    if (n_kv > GGUF_MAX_KV)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF header claims %llu key-value pairs (at most %u)", c->path,
                       (unsigned long long)n_kv, GGUF_MAX_KV);
    for (uint64_t i = 0; i < n_kv; i++) {
        const uint8_t *key;
        size_t klen;
        if ((rc = get_string(c, &key, &klen, "a key"))) return rc;
        if (klen > GGUF_MAX_KEY) return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key %llu is %zu bytes long", c->path,
                                                (unsigned long long)i, klen);
        uint32_t type;
        char kbuf[160];
        snprintf(kbuf, sizeof kbuf, "%.*s", (int)(klen > 128 ? 128 : klen), (const char *)key);
        if ((rc = get_u32(c, &type, kbuf))) return rc;
        kv *k = NULL;
        for (int w = 0; w < K_N; w++)
            if (strlen(wanted[w]) == klen && memcmp(wanted[w], key, klen) == 0) k = &kvs[w];
        if (k) {
            if (k->present) return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%s' appears twice", c->path, k->key);
            k->present = true;
            k->type = type;
        }
        if ((rc = skip_value(c, type, kbuf, k))) return rc;
    }
    return CIRCUITS_OK;
}

static int kv_string(const cursor *c, const kv *k, const char **s, size_t *n)
{
    if (k->type != GT_STRING)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%s' is a %s, not a string", c->path, k->key, type_name(k->type));
    *n = (size_t)rd64(c->p + k->at);
    *s = (const char *)c->p + k->at + 8;
    return CIRCUITS_OK;
}

static int kv_int(const cursor *c, const kv *k, int64_t *v)
{
    const uint8_t *p = c->p + k->at;
    switch (k->type) {
    case GT_U8: *v = p[0]; break;
    case GT_I8: *v = (int8_t)p[0]; break;
    case GT_U16: *v = (uint16_t)(p[0] | p[1] << 8); break;
    case GT_I16: *v = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case GT_U32: *v = rd32(p); break;
    case GT_I32: *v = (int32_t)rd32(p); break;
    case GT_U64: *v = rd64(p) > INT64_MAX ? -1 : (int64_t)rd64(p); break;
    case GT_I64: *v = (int64_t)rd64(p); break;
    default:
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%s' is a %s, not an integer", c->path, k->key, type_name(k->type));
    }
    return CIRCUITS_OK;
}

static int kv_string_array(const cursor *c, const kv *k)
{
    if (k->type != GT_ARRAY || k->elem != GT_STRING)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%s' is not an array of strings", c->path, k->key);
    return CIRCUITS_OK;
}

static bool eq(const char *s, size_t n, const char *lit) { return strlen(lit) == n && memcmp(s, lit, n) == 0; }

/* The model "llama" (llama.cpp's SentencePiece BPE), as transformers converts the same
 * SentencePiece model to tokenizer.json (LlamaConverter, legacy): characters with byte
 * fallback, normalizer Replace(" ", "▁") + Prepend("▁") (add_space_prefix, default true),
 * merges from the scores, fuse_unk, and add_bos_token true by default (llama.cpp's). */
static int spm_setup(circuits_tokenizer *t, const cursor *c, const kv *kvs)
{
    t->char_level = 1;
    t->byte_fallback = 1;
    t->dec_byte_fallback = 1;
    t->fuse_unk = 1;
    t->norm_replace = 1;
    t->pre = CX_PRE_NONE;
    t->add_prefix_space = 1; /* add_space_prefix's default; read below */
    t->add_bos = 1;
    size_t nt = (size_t)kvs[K_SCORES].count;
    float *scores = cx_malloc((nt ? nt : 1) * sizeof *scores);
    if (!scores) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", c->path);
    for (size_t i = 0; i < nt; i++) {
        uint32_t u = rd32(c->p + kvs[K_SCORES].at + 4 * i);
        memcpy(&scores[i], &u, 4);
        if (isnan(scores[i])) { /* it would make the merges' order (qsort's comparison) inconsistent */
            cx_free(scores);
            return cx_fail(CIRCUITS_E_FORMAT, "%s: tokenizer.ggml.scores[%zu] is not a number", c->path, i);
        }
    }
    int rc = cx_sp_merges_from_scores(t, scores, c->path);
    cx_free(scores);
    return rc;
}

static int build(circuits_tokenizer **out, cursor *c, kv *kvs)
{
    const char *path = c->path, *s;
    size_t n;
    int rc;
    if (!kvs[K_MODEL].present || !kvs[K_TOKENS].present)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF file has no tokenizer (needs tokenizer.ggml.model, .tokens)", path);
    if ((rc = kv_string(c, &kvs[K_MODEL], &s, &n))) return rc;
    bool spm = eq(s, n, "llama"); /* SentencePiece BPE with scores */
    if (!spm && !eq(s, n, "gpt2"))
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: GGUF tokenizer model '%.*s' is not supported (only gpt2: byte-level BPE, llama: SentencePiece BPE)",
                       path, (int)(n > 64 ? 64 : n), s);
    if (!spm && !kvs[K_MERGES].present)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF gpt2 tokenizer without tokenizer.ggml.merges", path);
    if (spm && (!kvs[K_SCORES].present || kvs[K_SCORES].type != GT_ARRAY || kvs[K_SCORES].elem != GT_F32 ||
                kvs[K_SCORES].count != kvs[K_TOKENS].count))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF llama tokenizer needs tokenizer.ggml.scores, one float32 per token", path);
    bool neox = false;
    int split = CX_SPLIT_NONE;
    if (kvs[K_ARCH].present) {
        if ((rc = kv_string(c, &kvs[K_ARCH], &s, &n))) return rc;
        neox = eq(s, n, "gptneox");
    }
    if (kvs[K_PRE].present) {
        if ((rc = kv_string(c, &kvs[K_PRE], &s, &n))) return rc;
        if (eq(s, n, "gpt-neox")) neox = true;
        else if (eq(s, n, "llama-bpe")) split = CX_SPLIT_LLAMA3;
        else if (eq(s, n, "qwen2")) split = CX_SPLIT_QWEN2;
        else if (!eq(s, n, "gpt-2") && !(spm && eq(s, n, "default")))
            return cx_fail(CIRCUITS_E_UNSUPPORTED,
                           "%s: GGUF pre-tokenizer '%.*s' is not supported (gpt-2, gpt-neox, llama-bpe, qwen2)", path,
                           (int)(n > 64 ? 64 : n), s);
        if (spm && split)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: GGUF pre-tokenizer '%.*s' with a llama tokenizer is not supported",
                           path, (int)(n > 64 ? 64 : n), s);
    }
    if ((rc = kv_string_array(c, &kvs[K_TOKENS])) || (kvs[K_MERGES].present && (rc = kv_string_array(c, &kvs[K_MERGES]))))
        return rc;
    uint64_t n_tok = kvs[K_TOKENS].count;
    if (n_tok == 0 || n_tok > CX_TOK_MAX_VOCAB)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %llu tokens (1 to %u)", path, (unsigned long long)n_tok, CX_TOK_MAX_VOCAB);
    if (kvs[K_MERGES].count > CX_TOK_MAX_MERGES)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %llu merges (at most %u)", path, (unsigned long long)kvs[K_MERGES].count,
                       CX_TOK_MAX_MERGES);
    const uint8_t *types = NULL;
    size_t type_size = 0;
    if (kvs[K_TYPES].present) {
        kv *k = &kvs[K_TYPES];
        if (k->type != GT_ARRAY || (k->elem != GT_I32 && k->elem != GT_U32))
            return cx_fail(CIRCUITS_E_FORMAT, "%s: tokenizer.ggml.token_type is not an array of 32-bit integers", path);
        if (k->count != n_tok)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: %llu token types for %llu tokens", path, (unsigned long long)k->count,
                           (unsigned long long)n_tok);
        types = c->p + k->at;
        type_size = 4;
    }
    circuits_tokenizer *t;
    if ((rc = cx_tok_new(&t, (size_t)n_tok, "gguf"))) return rc;
    /* Llama 3 and Qwen2 (llama.cpp's pre-tokenizers llama-bpe, qwen2): their Split regex, then
     * byte-level without GPT-2's; Llama 3 with ignore_merges, Qwen2 with NFC as their
     * tokenizer.json files say (GGUF does not record either) */
    t->nfc = neox || split == CX_SPLIT_QWEN2;
    t->split_regex = (uint8_t)split;
    if (split) t->use_regex = 0;
    t->ignore_merges = split == CX_SPLIT_LLAMA3;
    cursor tc = *c;
    tc.pos = kvs[K_TOKENS].at; /* already bounds-checked by parse_kvs */
    for (uint64_t i = 0; i < n_tok && !rc; i++) {
        const uint8_t *ts;
        size_t tn;
        rc = get_string(&tc, &ts, &tn, "a token");
        if (!rc && tn) rc = cx_tok_set_token(t, (int64_t)i, (const char *)ts, tn, path);
    }
    if (!rc) rc = cx_tok_index(t, path);
    if (!rc && spm) rc = spm_setup(t, c, kvs);
    tc.pos = kvs[K_MERGES].at;
    for (uint64_t i = 0; !spm && i < kvs[K_MERGES].count && !rc; i++) {
        const uint8_t *ms;
        size_t mn;
        rc = get_string(&tc, &ms, &mn, "a merge");
        if (rc) break;
        /* llama.cpp: split at the first space after the first byte */
        const uint8_t *sp = mn > 1 ? memchr(ms + 1, ' ', mn - 1) : NULL;
        if (!sp)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: merge %llu ('%.*s') has no space", path, (unsigned long long)i,
                         (int)(mn > 64 ? 64 : mn), (const char *)ms);
        else
            rc = cx_tok_add_merge(t, (const char *)ms, (size_t)(sp - ms), (const char *)sp + 1,
                                  (size_t)(ms + mn - sp - 1), (uint32_t)i, path);
    }
    for (uint64_t i = 0; types && i < n_tok && !rc; i++) {
        int32_t ty = (int32_t)rd32(types + i * type_size);
        if (ty < 0 || ty > TT_BYTE)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: token_type[%llu] = %d is not a GGUF token type", path,
                         (unsigned long long)i, ty);
        else if ((ty == TT_CONTROL || ty == TT_USER_DEFINED || ty == TT_UNKNOWN) && t->str_len[i] != UINT32_MAX)
            rc = cx_tok_add_added(t, (int64_t)i, t->arena + t->str_off[i], t->str_len[i], ty != TT_USER_DEFINED, 0, 0,
                                  0, path);
    }
    /* unknown_token_id is checked but not used: llama.cpp drops bytes that have no token (and
     * GPT-NeoX's unknown id is <|endoftext|>) */
    int32_t unk = -1;
    const int keys[3] = {K_BOS, K_EOS, K_UNK};
    int32_t *dst[3] = {&t->bos, &t->eos, spm ? &t->unk : &unk};
    for (int k = 0; k < 3 && !rc; k++) {
        if (!kvs[keys[k]].present) continue;
        int64_t v = -1;
        if ((rc = kv_int(c, &kvs[keys[k]], &v))) break;
        if (v < 0 || (uint64_t)v >= n_tok)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s = %lld is not a token id", path, wanted[keys[k]], (long long)v);
        else
            *dst[k] = (int32_t)v;
    }
    if (!rc && kvs[K_SPACE_PREFIX].present) {
        if (kvs[K_SPACE_PREFIX].type != GT_BOOL)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: tokenizer.ggml.add_space_prefix is not a bool", path);
        else
            t->add_prefix_space = c->p[kvs[K_SPACE_PREFIX].at] != 0;
    }
    if (!rc && spm) { /* llama.cpp's SentencePiece: a "▁" first unless add_space_prefix is false */
        t->norm_prepend = t->add_prefix_space;
        t->dec_strip = t->add_prefix_space;
        t->add_prefix_space = 0;
    }
    const int flags[2] = {K_ADD_BOS, K_ADD_EOS};
    uint8_t *fdst[2] = {&t->add_bos, &t->add_eos};
    for (int k = 0; k < 2 && !rc; k++) {
        if (!kvs[flags[k]].present) continue;
        if (kvs[flags[k]].type != GT_BOOL)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s is not a bool", path, wanted[flags[k]]);
        else
            *fdst[k] = c->p[kvs[flags[k]].at] != 0;
    }
    if (!rc && ((t->add_bos && t->bos < 0) || (t->add_eos && t->eos < 0)))
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: add_bos_token / add_eos_token without the token's id", path);
    if (!rc && !spm) {
        static const char eot[] = "<|endoftext|>";
        int32_t def = cx_tok_lookup(t, eot, sizeof eot - 1);
        if (t->bos < 0) t->bos = def;
        if (t->eos < 0) t->eos = def;
    }
    if (!rc) rc = cx_tok_finish(t, path);
    if (rc) {
        circuits_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return CIRCUITS_OK;
}

int cx_tok_load_gguf(circuits_tokenizer **out, const char *path)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cx_fail(CIRCUITS_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cx_fail(CIRCUITS_E_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 24) {
        close(fd);
        return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated GGUF: %zu bytes, the header alone is 24", path, size);
    }
    void *map = cx_mmap_read(size, fd);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED && map_errno == ENOMEM)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory (address space) mapping %s", path);
    if (map == MAP_FAILED) return cx_fail(CIRCUITS_E_IO, "%s: cannot map: %s", path, strerror(map_errno));
    cursor c = {map, 0, size, path};
    kv kvs[K_N];
    memset(kvs, 0, sizeof kvs);
    for (int k = 0; k < K_N; k++) kvs[k].key = wanted[k];
    int rc = parse_kvs(&c, kvs);
    if (!rc) rc = build(out, &c, kvs);
    cx_munmap(map, size);
    return rc;
}
