/* A tokenizer from GGUF metadata (llama.cpp's tokenizer.ggml.* keys, model "gpt2" = byte-level
 * BPE, "llama" = SentencePiece BPE). The key-value section is parsed and bounds-checked by the
 * one GGUF parser (io/gguf.c); counts far beyond any real vocabulary are refused here. Only the
 * header and the key-value section are read (the file is mapped; tensor data is never touched). */
#include "tokenizer.h"
#include "gguf.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* GGUF token types */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

enum { K_MODEL, K_PRE, K_ARCH, K_TOKENS, K_TYPES, K_MERGES, K_BOS, K_EOS, K_UNK, K_SPACE_PREFIX, K_SCORES, K_ADD_BOS,
       K_ADD_EOS, K_N };
static const char *const wanted[K_N] = {
    "tokenizer.ggml.model",        "tokenizer.ggml.pre",        "general.architecture",
    "tokenizer.ggml.tokens",       "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.scores", "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
};

/* what absent keys point to (nothing present, count 0) */
static const cx_gguf_kv none;

static int kv_string_array(const cx_gguf *g, const cx_gguf_kv *k)
{
    if (k->type != CX_GT_ARRAY || k->elem != CX_GT_STRING)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%.*s' is not an array of strings", g->path, (int)k->key_len, k->key);
    return CIRCUITS_OK;
}

static bool eq(const char *s, size_t n, const char *lit) { return strlen(lit) == n && memcmp(s, lit, n) == 0; }

/* The model "llama" (llama.cpp's SentencePiece BPE), as transformers converts the same
 * SentencePiece model to tokenizer.json (LlamaConverter, legacy): characters with byte
 * fallback, normalizer Replace(" ", "▁") + Prepend("▁") (add_space_prefix, default true),
 * merges from the scores, fuse_unk, and add_bos_token true by default (llama.cpp's). */
static int spm_setup(circuits_tokenizer *t, const cx_gguf *g, const cx_gguf_kv *const *kvs)
{
    t->char_level = 1;
    t->byte_fallback = 1;
    t->dec_byte_fallback = 1;
    t->fuse_unk = 1;
    t->norm_replace = 1;
    t->pre = CX_PRE_NONE;
    t->add_prefix_space = 1; /* add_space_prefix's default; read below */
    t->add_bos = 1;
    size_t nt = (size_t)kvs[K_SCORES]->count;
    float *scores = cx_malloc((nt ? nt : 1) * sizeof *scores);
    if (!scores) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading %s", g->path);
    for (size_t i = 0; i < nt; i++) {
        uint32_t u = cx_rd32le(g->p + kvs[K_SCORES]->at + 4 * i);
        memcpy(&scores[i], &u, 4);
        if (isnan(scores[i])) { /* it would make the merges' order (qsort's comparison) inconsistent */
            cx_free(scores);
            return cx_fail(CIRCUITS_E_FORMAT, "%s: tokenizer.ggml.scores[%zu] is not a number", g->path, i);
        }
    }
    int rc = cx_sp_merges_from_scores(t, scores, g->path);
    cx_free(scores);
    return rc;
}

static int build(circuits_tokenizer **out, const cx_gguf *g, const cx_gguf_kv *const *kvs)
{
    const char *path = g->path, *s;
    size_t n;
    int rc;
    if (kvs[K_MODEL] == &none || kvs[K_TOKENS] == &none)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF file has no tokenizer (needs tokenizer.ggml.model, .tokens)", path);
    if ((rc = cx_gguf_kv_string(g, kvs[K_MODEL], &s, &n))) return rc;
    bool spm = eq(s, n, "llama"); /* SentencePiece BPE with scores */
    if (!spm && !eq(s, n, "gpt2"))
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: GGUF tokenizer model '%.*s' is not supported (only gpt2: byte-level BPE, llama: SentencePiece BPE)",
                       path, (int)(n > 64 ? 64 : n), s);
    if (!spm && kvs[K_MERGES] == &none)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF gpt2 tokenizer without tokenizer.ggml.merges", path);
    if (spm && (kvs[K_SCORES] == &none || kvs[K_SCORES]->type != CX_GT_ARRAY || kvs[K_SCORES]->elem != CX_GT_F32 ||
                kvs[K_SCORES]->count != kvs[K_TOKENS]->count))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF llama tokenizer needs tokenizer.ggml.scores, one float32 per token", path);
    bool neox = false;
    int split = CX_SPLIT_NONE;
    if (kvs[K_ARCH] != &none) {
        if ((rc = cx_gguf_kv_string(g, kvs[K_ARCH], &s, &n))) return rc;
        neox = eq(s, n, "gptneox");
    }
    if (kvs[K_PRE] != &none) {
        if ((rc = cx_gguf_kv_string(g, kvs[K_PRE], &s, &n))) return rc;
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
    if ((rc = kv_string_array(g, kvs[K_TOKENS])) || (kvs[K_MERGES] != &none && (rc = kv_string_array(g, kvs[K_MERGES]))))
        return rc;
    uint64_t n_tok = kvs[K_TOKENS]->count;
    if (n_tok == 0 || n_tok > CX_TOK_MAX_VOCAB)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %llu tokens (1 to %u)", path, (unsigned long long)n_tok, CX_TOK_MAX_VOCAB);
    if (kvs[K_MERGES]->count > CX_TOK_MAX_MERGES)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %llu merges (at most %u)", path, (unsigned long long)kvs[K_MERGES]->count,
                       CX_TOK_MAX_MERGES);
    const uint8_t *types = NULL;
    size_t type_size = 0;
    if (kvs[K_TYPES] != &none) {
        const cx_gguf_kv *k = kvs[K_TYPES];
        if (k->type != CX_GT_ARRAY || (k->elem != CX_GT_I32 && k->elem != CX_GT_U32))
            return cx_fail(CIRCUITS_E_FORMAT, "%s: tokenizer.ggml.token_type is not an array of 32-bit integers", path);
        if (k->count != n_tok)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: %llu token types for %llu tokens", path, (unsigned long long)k->count,
                           (unsigned long long)n_tok);
        types = g->p + k->at;
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
    cx_gguf_cursor tc = {g->p, kvs[K_TOKENS]->at, g->size, g->path}; /* bounds-checked by cx_gguf_parse */
    for (uint64_t i = 0; i < n_tok && !rc; i++) {
        const uint8_t *ts;
        size_t tn;
        rc = cx_gguf_get_string(&tc, &ts, &tn, "a token");
        if (!rc && tn) rc = cx_tok_set_token(t, (int64_t)i, (const char *)ts, tn, path);
    }
    if (!rc) rc = cx_tok_index(t, path);
    if (!rc && spm) rc = spm_setup(t, g, kvs);
    tc.pos = kvs[K_MERGES]->at;
    for (uint64_t i = 0; !spm && i < kvs[K_MERGES]->count && !rc; i++) {
        const uint8_t *ms;
        size_t mn;
        rc = cx_gguf_get_string(&tc, &ms, &mn, "a merge");
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
        int32_t ty = (int32_t)cx_rd32le(types + i * type_size);
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
        if (kvs[keys[k]] == &none) continue;
        int64_t v = -1;
        if ((rc = cx_gguf_kv_int(g, kvs[keys[k]], &v))) break;
        if (v < 0 || (uint64_t)v >= n_tok)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s = %lld is not a token id", path, wanted[keys[k]], (long long)v);
        else
            *dst[k] = (int32_t)v;
    }
    if (!rc && kvs[K_SPACE_PREFIX] != &none) {
        if (kvs[K_SPACE_PREFIX]->type != CX_GT_BOOL)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: tokenizer.ggml.add_space_prefix is not a bool", path);
        else
            t->add_prefix_space = g->p[kvs[K_SPACE_PREFIX]->at] != 0;
    }
    if (!rc && spm) { /* llama.cpp's SentencePiece: a "▁" first unless add_space_prefix is false */
        t->norm_prepend = t->add_prefix_space;
        t->dec_strip = t->add_prefix_space;
        t->add_prefix_space = 0;
    }
    const int flags[2] = {K_ADD_BOS, K_ADD_EOS};
    uint8_t *fdst[2] = {&t->add_bos, &t->add_eos};
    for (int k = 0; k < 2 && !rc; k++) {
        if (kvs[flags[k]] == &none) continue;
        if (kvs[flags[k]]->type != CX_GT_BOOL)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s is not a bool", path, wanted[flags[k]]);
        else
            *fdst[k] = g->p[kvs[flags[k]]->at] != 0;
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

int cx_tok_from_gguf(circuits_tokenizer **out, const cx_gguf *g)
{
    *out = NULL;
    const cx_gguf_kv *kvs[K_N];
    for (int k = 0; k < K_N; k++) {
        kvs[k] = cx_gguf_find(g, wanted[k]);
        if (!kvs[k]) kvs[k] = &none;
    }
    return build(out, g, kvs);
}

int cx_tok_load_gguf(circuits_tokenizer **out, const char *path)
{
    *out = NULL;
    /* the header's image only: its tensors are not read */
    cx_st_set *set = cx_calloc(1, sizeof *set);
    if (!set) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory opening %s", path);
    const cx_st_map *m;
    cx_gguf g = {0};
    int rc = cx_st_add_image(set, path, CX_ST_MAP, 24, "GGUF", &m);
    if (!rc) rc = cx_gguf_parse(&g, m->base, m->size, m->path);
    if (!rc) rc = cx_tok_from_gguf(out, &g);
    cx_gguf_free(&g);
    cx_st_close(set);
    return rc;
}
