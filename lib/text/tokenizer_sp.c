/* SentencePiece-style (character-level) BPE, as Hugging Face tokenizers runs the tokenizer.json
 * files of Llama 1/2, Mistral and Gemma (and llama.cpp's GGUF "llama" model):
 *   - the space is "▁" (U+2581): normalizer Replace(" ", "▁") with Prepend("▁"), or the Metaspace
 *     pre-tokenizer (its prepend_scheme decides where a "▁" is put first);
 *   - BPE starts from the piece's characters; a character that is not a token becomes the
 *     "<0xNN>" tokens of its UTF-8 bytes (byte_fallback), else the unknown token;
 *   - decoding turns "▁" back into ' ' and "<0xNN>" into the byte. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t META[3] = {0xE2, 0x96, 0x81}; /* "▁" */

#define CX_SP_MERGE_WORK ((uint64_t)1 << 30) /* about a second of hashing */

int cx_sp_escape(const uint8_t *s, size_t n, int prepend, int only_if_missing, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    /* "missing" is judged after the replacement: a leading ' ' is a "▁" already */
    if (prepend && only_if_missing && n && (s[0] == ' ' || (n >= 3 && memcmp(s, META, 3) == 0))) prepend = 0;
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    size_t len = n + 2 * spaces + (prepend ? 3 : 0);
    uint8_t *b = cx_malloc(len ? len : 1);
    if (!b) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory encoding text");
    size_t k = 0;
    if (prepend) { memcpy(b, META, 3); k = 3; }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') { memcpy(b + k, META, 3); k += 3; }
        else b[k++] = s[i];
    }
    *out = b;
    *out_len = k;
    return CIRCUITS_OK;
}

size_t cx_sp_piece_next(const circuits_tokenizer *t, const uint8_t *s, size_t n, size_t i)
{
    if (t->pre == CX_PRE_SPLIT_SPACE) { /* Split(" ", merged_with_previous) */
        const uint8_t *sp = memchr(s + i, ' ', n - i);
        return sp ? (size_t)(sp - s) + 1 : n;
    }
    if (t->pre == CX_PRE_METASPACE && t->ms_split) { /* split at "▁", merged with the next */
        for (size_t j = i + 1; j + 3 <= n; j++)
            if (memcmp(s + j, META, 3) == 0) return j;
    }
    return n;
}

void cx_sp_symbols(const circuits_tokenizer *t, const uint8_t *p, size_t n, int32_t *sym, size_t *m)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = cx_utf8_decode(p + i, n - i, &cp);
        if (!l) l = 1; /* an invalid byte is a character of its own: it falls back to its byte */
        int32_t id = cx_tok_lookup(t, (const char *)p + i, l);
        if (id >= 0) {
            sym[k++] = id;
        } else {
            bool all = t->byte_fallback;
            for (size_t b = 0; b < l && all; b++) all = t->byte_fb[p[i + b]] >= 0;
            if (all) {
                for (size_t b = 0; b < l; b++) sym[k++] = t->byte_fb[p[i + b]];
            } else if (t->unk >= 0) {
                sym[k++] = CX_TOK_UNKNOWN;
            } /* no unknown token: dropped, as tokenizers does */
        }
        i += l;
    }
    *m = k;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte of a "<0xNN>" string (upper-case hex, as SentencePiece writes them), or -1. */
static int byte_token(const uint8_t *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

void cx_sp_index_bytes(circuits_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char s[7];
        static const char hex[] = "0123456789ABCDEF";
        memcpy(s, "<0x", 3);
        s[3] = hex[b >> 4];
        s[4] = hex[b & 15];
        s[5] = '>';
        t->byte_fb[b] = cx_tok_lookup(t, s, 6);
    }
}

int cx_sp_decode_string(circuits_tokenizer *t, size_t id)
{
    uint32_t off = t->str_off[id], len = t->str_len[id];
    uint32_t dst;
    int rc = cx_tok_arena_add(t, NULL, len, &dst); /* at most len bytes */
    if (rc) return rc;
    const uint8_t *s = (const uint8_t *)t->arena + off;
    uint8_t *d = (uint8_t *)t->arena + dst;
    int b = t->dec_byte_fallback ? byte_token(s, len) : -1; /* the ByteFallback decoder */
    size_t k = 0;
    if (b >= 0) {
        d[k++] = (uint8_t)b;
    } else {
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(s + i, META, 3) == 0) { d[k++] = ' '; i += 3; }
            else d[k++] = s[i++];
        }
    }
    t->arena_len = dst + k;
    t->dec_off[id] = dst;
    t->dec_len[id] = (uint32_t)k;
    return CIRCUITS_OK;
}

/* ---- merges of a SentencePiece vocabulary with scores (GGUF "llama") ---- */
typedef struct sp_merge {
    float score;         /* of the merged piece */
    uint32_t llen, rlen; /* in characters */
    uint32_t seq;        /* order of generation: ties keep it */
    int32_t l, r;
} sp_merge;

static int cmp_local(const void *x, const void *y)
{
    const sp_merge *a = x, *b = y;
    if (a->l != b->l) return (a->l > b->l) - (a->l < b->l);
    return (a->r > b->r) - (a->r < b->r);
}

static int cmp_rank(const void *x, const void *y)
{
    const sp_merge *a = x, *b = y;
    if (a->score != b->score) return a->score < b->score ? 1 : -1; /* higher score first */
    if (a->llen != b->llen) return a->llen < b->llen ? 1 : -1;     /* then the longer left part */
    if (a->rlen != b->rlen) return a->rlen < b->rlen ? 1 : -1;
    return (a->seq > b->seq) - (a->seq < b->seq);
}

static size_t n_chars(const uint8_t *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; k++) {
        uint32_t cp;
        size_t l = cx_utf8_decode(s + i, n - i, &cp);
        i += l ? l : 1;
    }
    return k;
}

/* transformers' generate_merges(vocab, vocab_scores), which its Llama converter uses to turn a
 * SentencePiece model into tokenizer.json: every split of every piece into two pieces is a
 * merge; merges are ranked by the merged piece's score (higher first), then the longer left
 * part, the longer right part, then pieces in id order and, within a piece, by (left id, right
 * id). BPE with these merges gives SentencePiece's own result. */
int cx_sp_merges_from_scores(circuits_tokenizer *t, const float *scores, const char *src)
{
    size_t cap = 0, n = 0;
    sp_merge *m = NULL;
    int rc = CIRCUITS_OK;
    /* Each split of a piece hashes both parts: the work is the sum of the pieces' squared
     * lengths. Real vocabularies (Gemma's 256k pieces) stay far below the bound; a hostile file
     * of a few 64 KB tokens would take minutes. */
    uint64_t work = 0;
    for (size_t id = 0; id < t->n_ids; id++)
        if (t->str_len[id] != UINT32_MAX) work += (uint64_t)t->str_len[id] * t->str_len[id];
    if (work > CX_SP_MERGE_WORK)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: tokens too long to derive SentencePiece merges from (sum of squared lengths %llu, at most %llu)",
                       src, (unsigned long long)work, (unsigned long long)CX_SP_MERGE_WORK);
    for (size_t id = 0; id < t->n_ids && !rc; id++) {
        if (t->str_len[id] == UINT32_MAX) continue;
        const uint8_t *s = (const uint8_t *)t->arena + t->str_off[id];
        size_t len = t->str_len[id], first = n, left_chars = 0;
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            size_t l = cx_utf8_decode(s + i, len - i, &cp);
            i += l ? l : 1;
            left_chars++;
            if (i >= len) break;
            int32_t a = cx_tok_lookup(t, (const char *)s, i), b = cx_tok_lookup(t, (const char *)s + i, len - i);
            if (a < 0 || b < 0) continue;
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 1024;
                sp_merge *g = nc <= CX_TOK_MAX_MERGES ? cx_realloc(m, nc * sizeof *m) : NULL;
                if (!g) {
                    rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory making merges", src);
                    break;
                }
                m = g;
                cap = nc;
            }
            m[n++] = (sp_merge){scores[id], (uint32_t)left_chars, (uint32_t)n_chars(s + i, len - i), 0, a, b};
        }
        if (n > first) qsort(m + first, n - first, sizeof *m, cmp_local); /* (m may still be NULL) */
        for (size_t k = first; k < n; k++) m[k].seq = (uint32_t)k;
    }
    if (!rc && n) qsort(m, n, sizeof *m, cmp_rank);
    for (size_t k = 0; k < n && !rc; k++)
        rc = cx_tok_add_merge(t, t->arena + t->str_off[m[k].l], t->str_len[m[k].l], t->arena + t->str_off[m[k].r],
                              t->str_len[m[k].r], (uint32_t)k, src);
    cx_free(m);
    return rc;
}
