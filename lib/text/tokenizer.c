/* Byte-level BPE tokenizer: the tables, BPE, encode/decode and the public API.
 *
 * Encoding follows Hugging Face tokenizers (and tiktoken's gpt2, which agrees):
 *   1. added tokens that are not "normalized" are cut out of the raw text (leftmost-longest);
 *   2. every other segment is normalized (NFC, if the tokenizer says so), and "normalized"
 *      added tokens are cut out of it;
 *   3. every remaining segment gets a leading space if add_prefix_space is on and it has none,
 *      is split by GPT-2's pre-tokenizer regex (tokenizer_pretok.c), and each piece's bytes
 *      are merged by BPE: repeatedly the adjacent pair of lowest merge rank (leftmost first).
 * Text that is not valid UTF-8 is accepted: docs/tokenizer.md. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t cx_tok_bpe_linear_max = 48;

/* ---------------------------------------------------------------------------------------- */
/* Building                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static inline uint64_t hash_pair(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

int cx_tok_new(circuits_tokenizer **out, size_t cap_ids, const char *format)
{
    *out = NULL;
    if (cap_ids > CX_TOK_MAX_VOCAB) cap_ids = CX_TOK_MAX_VOCAB;
    circuits_tokenizer *t = cx_calloc(1, sizeof *t);
    if (!t) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory creating a tokenizer");
    t->cap_ids = cap_ids;
    t->str_off = cx_malloc(cap_ids * sizeof *t->str_off);
    t->str_len = cx_malloc(cap_ids * sizeof *t->str_len);
    t->dec_off = cx_malloc(cap_ids * sizeof *t->dec_off);
    t->dec_len = cx_malloc(cap_ids * sizeof *t->dec_len);
    if (!t->str_off || !t->str_len || !t->dec_off || !t->dec_len) {
        circuits_tokenizer_free(t);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory creating a tokenizer");
    }
    for (size_t i = 0; i < cap_ids; i++) t->str_len[i] = t->dec_len[i] = UINT32_MAX;
    t->bos = t->eos = t->unk = -1;
    t->use_regex = 1;
    snprintf(t->format, sizeof t->format, "%s", format);
    *out = t;
    return CIRCUITS_OK;
}

void circuits_tokenizer_free(circuits_tokenizer *t)
{
    if (!t) return;
    cx_free(t->str_off);
    cx_free(t->str_len);
    cx_free(t->dec_off);
    cx_free(t->dec_len);
    cx_free(t->arena);
    cx_free(t->index);
    cx_free(t->merges);
    cx_free(t->added);
    cx_free(t);
}

/* Copies n bytes into the arena; *off receives their offset. */
static int arena_add(circuits_tokenizer *t, const void *s, size_t n, uint32_t *off)
{
    if (t->arena_len + n > UINT32_MAX)
        return cx_fail(CIRCUITS_E_FORMAT, "tokenizer strings exceed 4 GiB");
    if (t->arena_len + n > t->arena_cap) {
        /* s may point into the arena itself */
        uintptr_t base = (uintptr_t)t->arena, at = (uintptr_t)s;
        bool inside = s && t->arena && at >= base && at < base + t->arena_len;
        size_t cap = t->arena_cap ? t->arena_cap : 4096;
        while (cap < t->arena_len + n) cap *= 2;
        char *a = cx_realloc(t->arena, cap);
        if (!a) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading a tokenizer");
        if (inside) s = a + (at - base);
        t->arena = a;
        t->arena_cap = cap;
    }
    if (n && s) memcpy(t->arena + t->arena_len, s, n);
    *off = (uint32_t)t->arena_len;
    t->arena_len += n;
    return CIRCUITS_OK;
}

int cx_tok_arena_add(circuits_tokenizer *t, const void *s, size_t n, uint32_t *off) { return arena_add(t, s, n, off); }

int cx_tok_set_token(circuits_tokenizer *t, int64_t id, const char *str, size_t len, const char *src)
{
    if (id < 0 || (uint64_t)id >= t->cap_ids)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: token id %lld out of range (ids must be in [0, %zu))", src,
                       (long long)id, t->cap_ids);
    if (len == 0) return cx_fail(CIRCUITS_E_FORMAT, "%s: token %lld is the empty string", src, (long long)id);
    if (len > CX_TOK_MAX_TOKEN_BYTES)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: token %lld is %zu bytes long (at most %u)", src, (long long)id,
                       len, CX_TOK_MAX_TOKEN_BYTES);
    if (t->str_len[id] != UINT32_MAX)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: token id %lld is given twice", src, (long long)id);
    int rc = arena_add(t, str, len, &t->str_off[id]);
    if (rc) return rc;
    t->str_len[id] = (uint32_t)len;
    t->n_strings++;
    if ((size_t)id + 1 > t->n_ids) t->n_ids = (size_t)id + 1;
    return CIRCUITS_OK;
}

int32_t cx_tok_lookup(const circuits_tokenizer *t, const char *str, size_t len)
{
    if (!t->index) return -1;
    for (size_t h = hash_bytes(str, len) & t->index_mask;; h = (h + 1) & t->index_mask) {
        int32_t id = t->index[h];
        if (id < 0) return -1;
        if (t->str_len[id] == len && memcmp(t->arena + t->str_off[id], str, len) == 0) return id;
    }
}

int cx_tok_index(circuits_tokenizer *t, const char *src)
{
    size_t cap = 16;
    while (cap < 2 * t->n_strings + 16) cap *= 2;
    t->index = cx_malloc(cap * sizeof *t->index);
    if (!t->index) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading a tokenizer");
    memset(t->index, 0xff, cap * sizeof *t->index);
    t->index_mask = cap - 1;
    for (size_t id = 0; id < t->n_ids; id++) {
        if (t->str_len[id] == UINT32_MAX) continue;
        const char *s = t->arena + t->str_off[id];
        size_t n = t->str_len[id];
        size_t h = hash_bytes(s, n) & t->index_mask;
        for (;; h = (h + 1) & t->index_mask) {
            int32_t o = t->index[h];
            if (o < 0) break;
            if (t->str_len[o] == n && memcmp(t->arena + t->str_off[o], s, n) == 0)
                return cx_fail(CIRCUITS_E_FORMAT, "%s: token '%.*s' appears twice (ids %d and %zu)", src,
                               (int)(n > 64 ? 64 : n), s, o, id);
        }
        t->index[h] = (int32_t)id;
    }
    return CIRCUITS_OK;
}

static inline const cx_tok_merge_slot *merge_find(const circuits_tokenizer *t, int32_t a, int32_t b)
{
    if (!t->merges) return NULL; /* a tokenizer without merges: the table was never made */
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t h = hash_pair(key) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        const cx_tok_merge_slot *s = &t->merges[h];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

static int merges_grow(circuits_tokenizer *t)
{
    size_t old = t->merges ? t->merge_mask + 1 : 0, cap = old ? 2 * old : 1024;
    cx_tok_merge_slot *m = cx_malloc(cap * sizeof *m);
    if (!m) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading a tokenizer");
    for (size_t i = 0; i < cap; i++) m[i].key = UINT64_MAX;
    for (size_t i = 0; i < old; i++) {
        if (t->merges[i].key == UINT64_MAX) continue;
        size_t h = hash_pair(t->merges[i].key) & (cap - 1);
        while (m[h].key != UINT64_MAX) h = (h + 1) & (cap - 1);
        m[h] = t->merges[i];
    }
    cx_free(t->merges);
    t->merges = m;
    t->merge_mask = cap - 1;
    return CIRCUITS_OK;
}

int cx_tok_add_merge(circuits_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                     uint32_t rank, const char *src)
{
    if (t->n_merges >= CX_TOK_MAX_MERGES)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: more than %u merges", src, CX_TOK_MAX_MERGES);
    int32_t ia = cx_tok_lookup(t, a, alen), ib = cx_tok_lookup(t, b, blen);
    if (ia < 0 || ib < 0) {
        const char *which = ia < 0 ? a : b;
        size_t wl = ia < 0 ? alen : blen;
        return cx_fail(CIRCUITS_E_FORMAT, "%s: merge %u ('%.*s' '%.*s') uses '%.*s', which is not in the vocabulary",
                       src, rank, (int)(alen > 64 ? 64 : alen), a, (int)(blen > 64 ? 64 : blen), b,
                       (int)(wl > 64 ? 64 : wl), which);
    }
    char stackbuf[256];
    size_t n = alen + blen;
    char *cat = n <= sizeof stackbuf ? stackbuf : cx_malloc(n);
    if (!cat) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading a tokenizer");
    memcpy(cat, a, alen);
    memcpy(cat + alen, b, blen);
    int32_t im = cx_tok_lookup(t, cat, n);
    if (cat != stackbuf) cx_free(cat);
    if (im < 0)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: merge %u ('%.*s' '%.*s') makes a token that is not in the vocabulary",
                       src, rank, (int)(alen > 64 ? 64 : alen), a, (int)(blen > 64 ? 64 : blen), b);
    if (!t->merges || 2 * (t->n_merges + 1) > t->merge_mask + 1) {
        int rc = merges_grow(t);
        if (rc) return rc;
    }
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    size_t h = hash_pair(key) & t->merge_mask;
    while (t->merges[h].key != UINT64_MAX && t->merges[h].key != key) h = (h + 1) & t->merge_mask;
    if (t->merges[h].key == UINT64_MAX) t->n_merges++;
    t->merges[h].key = key;
    t->merges[h].rank = rank;
    t->merges[h].id = im;
    return CIRCUITS_OK;
}

int cx_tok_add_added(circuits_tokenizer *t, int64_t id, const char *content, size_t len, int special,
                     int normalized, int lstrip, int rstrip, const char *src)
{
    if (id < 0 || (uint64_t)id >= t->cap_ids)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: added token id %lld out of range (ids must be in [0, %zu))", src,
                       (long long)id, t->cap_ids);
    if (len == 0) return cx_fail(CIRCUITS_E_FORMAT, "%s: added token %lld is the empty string", src, (long long)id);
    if (len > CX_TOK_MAX_TOKEN_BYTES)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: added token %lld is %zu bytes long (at most %u)", src,
                       (long long)id, len, CX_TOK_MAX_TOKEN_BYTES);
    if (t->n_added >= CX_TOK_MAX_ADDED)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: more than %u added tokens", src, CX_TOK_MAX_ADDED);
    if (t->n_added == t->cap_added) {
        size_t cap = t->cap_added ? 2 * t->cap_added : 16;
        cx_tok_added *a = cx_realloc(t->added, cap * sizeof *a);
        if (!a) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading a tokenizer");
        t->added = a;
        t->cap_added = cap;
    }
    cx_tok_added *a = &t->added[t->n_added];
    int rc = arena_add(t, content, len, &a->off);
    if (rc) return rc;
    a->len = (uint32_t)len;
    a->id = (int32_t)id;
    a->special = (uint8_t)!!special;
    a->normalized = (uint8_t)!!normalized;
    a->lstrip = (uint8_t)!!lstrip;
    a->rstrip = (uint8_t)!!rstrip;
    a->single_word = 0;
    t->n_added++;
    if (t->str_len[id] == UINT32_MAX) { /* not in the vocabulary: its string is its content */
        t->str_off[id] = a->off;
        t->str_len[id] = a->len;
        if ((size_t)id + 1 > t->n_ids) t->n_ids = (size_t)id + 1;
    }
    return CIRCUITS_OK;
}

void cx_tok_last_added_single_word(circuits_tokenizer *t)
{
    if (t->n_added) t->added[t->n_added - 1].single_word = 1;
}

int32_t cx_tok_find_added(const circuits_tokenizer *t, const char *content, size_t len)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && memcmp(t->arena + t->added[i].off, content, len) == 0) return t->added[i].id;
    return -1;
}

/* Sorting added tokens: by content (duplicates), by id (duplicates), then for matching by
 * (first byte, longest first, id). The arena no longer moves when these run. */
typedef struct added_ref {
    const uint8_t *s;
    uint32_t len;
    int32_t id;
    size_t index;
} added_ref;

static int cmp_content(const void *x, const void *y)
{
    const added_ref *a = x, *b = y;
    uint32_t m = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, m);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int cmp_id(const void *x, const void *y)
{
    const added_ref *a = x, *b = y;
    return (a->id > b->id) - (a->id < b->id);
}

static int cmp_match(const void *x, const void *y)
{
    const added_ref *a = x, *b = y;
    if (a->s[0] != b->s[0]) return (a->s[0] > b->s[0]) - (a->s[0] < b->s[0]);
    if (a->len != b->len) return (a->len < b->len) - (a->len > b->len);
    return cmp_id(x, y);
}

static int sort_added(circuits_tokenizer *t, const char *src)
{
    size_t n = t->n_added;
    if (n == 0) return CIRCUITS_OK;
    added_ref *r = cx_malloc(n * sizeof *r);
    cx_tok_added *sorted = cx_malloc(n * sizeof *sorted);
    if (!r || !sorted) {
        cx_free(r);
        cx_free(sorted);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading a tokenizer");
    }
    for (size_t i = 0; i < n; i++)
        r[i] = (added_ref){(const uint8_t *)t->arena + t->added[i].off, t->added[i].len, t->added[i].id, i};
    int rc = CIRCUITS_OK;
    qsort(r, n, sizeof *r, cmp_content);
    for (size_t i = 1; i < n && !rc; i++)
        if (cmp_content(&r[i - 1], &r[i]) == 0)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: added token '%.*s' is given twice (ids %d and %d)", src,
                         (int)(r[i].len > 64 ? 64 : r[i].len), (const char *)r[i].s, r[i - 1].id, r[i].id);
    qsort(r, n, sizeof *r, cmp_id);
    for (size_t i = 1; i < n && !rc; i++)
        if (r[i - 1].id == r[i].id) rc = cx_fail(CIRCUITS_E_FORMAT, "%s: added token id %d is given twice", src, r[i].id);
    if (!rc) {
        qsort(r, n, sizeof *r, cmp_match);
        for (size_t i = 0; i < n; i++) sorted[i] = t->added[r[i].index];
        memcpy(t->added, sorted, n * sizeof *sorted);
    }
    cx_free(r);
    cx_free(sorted);
    return rc;
}

/* The decoded bytes of a vocabulary string: each character through the inverse byte map; a
 * string with a character outside the map decodes to its own UTF-8 bytes (as the ByteLevel
 * decoder of Hugging Face tokenizers does). */
static int decode_string(circuits_tokenizer *t, size_t id)
{
    uint32_t off = t->str_off[id], len = t->str_len[id];
    /* room for the decoded bytes (at most len) at the arena's end */
    uint32_t dst;
    int rc = arena_add(t, NULL, len, &dst);
    if (rc) return rc;
    const uint8_t *s = (const uint8_t *)t->arena + off;
    uint8_t *d = (uint8_t *)t->arena + dst;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = cx_utf8_decode(s + i, len - i, &cp);
        int b = l ? cx_char_to_byte(cp) : -1;
        if (b < 0) { /* not a byte-level string: its own bytes */
            t->arena_len = dst;
            t->dec_off[id] = off;
            t->dec_len[id] = len;
            return CIRCUITS_OK;
        }
        d[n++] = (uint8_t)b;
        i += l;
    }
    t->arena_len = dst + n;
    t->dec_off[id] = dst;
    t->dec_len[id] = (uint32_t)n;
    return CIRCUITS_OK;
}

int cx_tok_finish(circuits_tokenizer *t, const char *src)
{
    if (t->char_level) cx_sp_index_bytes(t);
    for (size_t id = 0; id < t->n_ids; id++) {
        if (t->str_len[id] == UINT32_MAX) continue;
        int rc = t->char_level ? cx_sp_decode_string(t, id) : decode_string(t, id);
        if (rc) return rc;
    }
    for (size_t i = 0; i < t->n_added; i++) { /* added tokens decode to their content */
        t->dec_off[t->added[i].id] = t->added[i].off;
        t->dec_len[t->added[i].id] = t->added[i].len;
    }
    for (int b = 0; b < 256; b++) {
        char s[4];
        uint32_t c = cx_byte_to_char((uint8_t)b);
        size_t n;
        if (c < 0x80) { s[0] = (char)c; n = 1; }
        else { s[0] = (char)(0xC0 | (c >> 6)); s[1] = (char)(0x80 | (c & 0x3F)); n = 2; }
        int32_t id = cx_tok_lookup(t, s, n);
        t->byte_tok[b] = id >= 0 ? id : CX_TOK_UNKNOWN;
    }
    int rc = sort_added(t, src);
    if (rc) return rc;
    memset(t->added_first, 0, sizeof t->added_first);
    for (size_t i = 0; i < t->n_added; i++) t->added_first[(uint8_t)t->arena[t->added[i].off] + 1]++;
    for (int b = 0; b < 256; b++) t->added_first[b + 1] += t->added_first[b];
    const struct { int32_t *v; const char *name; } ids[] = {{&t->bos, "bos"}, {&t->eos, "eos"}, {&t->unk, "unk"}};
    for (size_t k = 0; k < 3; k++) {
        int32_t v = *ids[k].v;
        if (v >= 0 && ((size_t)v >= t->n_ids || t->dec_len[v] == UINT32_MAX))
            return cx_fail(CIRCUITS_E_FORMAT, "%s: %s token id %d is not a token", src, ids[k].name, v);
    }
    if (t->n_ids == 0) return cx_fail(CIRCUITS_E_FORMAT, "%s: the vocabulary is empty", src);
    return CIRCUITS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Encoding                                                                                  */
/* ---------------------------------------------------------------------------------------- */

typedef struct heap_item { uint32_t rank, pos; } heap_item;

/* A direct-mapped cache of short pieces' ids, for one call on a long text (prose repeats its
 * words; BPE of a piece is a pure function of its bytes). */
#define CACHE_SLOTS 4096
#define CACHE_BYTES 22
#define CACHE_IDS 8
#define CACHE_MIN_TEXT 8192
typedef struct cache_slot {
    uint8_t len, n_ids; /* len 0: empty */
    uint8_t bytes[CACHE_BYTES];
    int32_t ids[CACHE_IDS];
} cache_slot;

typedef struct enc_state {
    const circuits_tokenizer *t;
    int32_t *ids;
    size_t cap, n;
    int add_prefix_space, parse_special;
    int first;     /* the segment starts the text (Metaspace prepend_scheme "first") */
    int aps_opt;   /* the add_prefix_space option as given: -1, 0, 1 */
    /* scratch, grown as needed */
    int32_t *sym, *mid, *prev, *next;
    uint32_t *rank;
    heap_item *heap;
    size_t scratch_cap, heap_cap;
    uint8_t *pbuf; /* a segment with its prefix space */
    size_t pbuf_cap;
    char *mbuf;    /* a piece in byte-level characters (ignore_merges) */
    size_t mbuf_cap;
    cache_slot *cache; /* NULL for short texts */
} enc_state;

static inline void emit(enc_state *e, int32_t id)
{
    if (e->n < e->cap) e->ids[e->n] = id;
    e->n++;
}

static int scratch_reserve(enc_state *e, size_t n)
{
    if (n <= e->scratch_cap) return CIRCUITS_OK;
    size_t cap = e->scratch_cap ? e->scratch_cap : 64;
    while (cap < n) cap *= 2;
    int32_t *sym = cx_realloc(e->sym, cap * sizeof *sym);
    if (sym) e->sym = sym;
    int32_t *mid = cx_realloc(e->mid, cap * sizeof *mid);
    if (mid) e->mid = mid;
    int32_t *prev = cx_realloc(e->prev, cap * sizeof *prev);
    if (prev) e->prev = prev;
    int32_t *next = cx_realloc(e->next, cap * sizeof *next);
    if (next) e->next = next;
    uint32_t *rank = cx_realloc(e->rank, cap * sizeof *rank);
    if (rank) e->rank = rank;
    if (!sym || !mid || !prev || !next || !rank)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory encoding text");
    e->scratch_cap = cap;
    return CIRCUITS_OK;
}

/* A symbol after merging: a token, or a byte without one (then the unknown token, once for a
 * run of them if fuse_unk; without an unknown token such bytes were dropped before merging). */
static void emit_symbol(enc_state *e, int32_t id, bool *prev_unk)
{
    if (id != CX_TOK_UNKNOWN) {
        emit(e, id);
        *prev_unk = false;
        return;
    }
    if (!(*prev_unk && e->t->fuse_unk)) emit(e, e->t->unk);
    *prev_unk = true;
}

static inline uint32_t pair_rank(const circuits_tokenizer *t, int32_t a, int32_t b, int32_t *mid)
{
    if (a < 0 || b < 0) return UINT32_MAX;
    const cx_tok_merge_slot *s = merge_find(t, a, b);
    if (!s) return UINT32_MAX;
    *mid = s->id;
    return s->rank;
}

/* Heap of (rank, pos), smallest first. */
static void heap_push(heap_item *h, size_t *n, heap_item x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].rank < x.rank || (h[p].rank == x.rank && h[p].pos < x.pos)) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static heap_item heap_pop(heap_item *h, size_t *n)
{
    heap_item top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && (h[c + 1].rank < h[c].rank || (h[c + 1].rank == h[c].rank && h[c + 1].pos < h[c].pos)))
            c++;
        if (x.rank < h[c].rank || (x.rank == h[c].rank && x.pos < h[c].pos)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

static int merge_symbols(enc_state *e, size_t n);

/* BPE of one piece (its bytes); emits the ids. */
static int bpe_piece(enc_state *e, const uint8_t *p, size_t n)
{
    const circuits_tokenizer *t = e->t;
    bool prev_unk = false;
    if (t->char_level) {
        if (t->ignore_merges) { /* the piece as one token, if it is one */
            int32_t id = cx_tok_lookup(t, (const char *)p, n);
            if (id >= 0) {
                emit(e, id);
                return CIRCUITS_OK;
            }
        }
        int rc = scratch_reserve(e, n);
        if (rc) return rc;
        cx_sp_symbols(t, p, n, e->sym, &n);
        return merge_symbols(e, n);
    }
    if (n == 1 && (t->byte_tok[p[0]] != CX_TOK_UNKNOWN || t->unk >= 0)) {
        emit_symbol(e, t->byte_tok[p[0]], &prev_unk);
        return CIRCUITS_OK;
    }
    if (t->ignore_merges) { /* the piece as one token, if it is one */
        if (e->mbuf_cap < 2 * n) {
            char *g = cx_realloc(e->mbuf, 2 * n);
            if (!g) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory encoding text");
            e->mbuf = g;
            e->mbuf_cap = 2 * n;
        }
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t c = cx_byte_to_char(p[i]);
            if (c < 0x80) e->mbuf[k++] = (char)c;
            else { e->mbuf[k++] = (char)(0xC0 | (c >> 6)); e->mbuf[k++] = (char)(0x80 | (c & 0x3F)); }
        }
        int32_t id = cx_tok_lookup(t, e->mbuf, k);
        if (id >= 0) {
            emit(e, id);
            return CIRCUITS_OK;
        }
    }
    int rc = scratch_reserve(e, n);
    if (rc) return rc;
    int32_t *sym = e->sym;
    if (t->unk >= 0) {
        for (size_t i = 0; i < n; i++) sym[i] = t->byte_tok[p[i]];
    } else { /* bytes without a token are dropped, as Hugging Face tokenizers does */
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (t->byte_tok[p[i]] != CX_TOK_UNKNOWN) sym[m++] = t->byte_tok[p[i]];
        n = m;
    }
    return merge_symbols(e, n);
}

/* BPE of the symbols e->sym[0..n); emits the ids. */
static int merge_symbols(enc_state *e, size_t n)
{
    const circuits_tokenizer *t = e->t;
    bool prev_unk = false;
    if (n == 0) return CIRCUITS_OK;
    int32_t *sym = e->sym, *mid = e->mid;
    uint32_t *rank = e->rank;
    if (n <= cx_tok_bpe_linear_max) {
        /* the quadratic loop: ranks of adjacent pairs, merge the leftmost smallest */
        size_t m = n;
        for (size_t i = 0; i + 1 < m; i++) rank[i] = pair_rank(t, sym[i], sym[i + 1], &mid[i]);
        for (;;) {
            uint32_t best = UINT32_MAX;
            size_t bi = 0;
            for (size_t i = 0; i + 1 < m; i++)
                if (rank[i] < best) { best = rank[i]; bi = i; }
            if (best == UINT32_MAX) break;
            sym[bi] = mid[bi];
            memmove(sym + bi + 1, sym + bi + 2, (m - bi - 2) * sizeof *sym);
            memmove(rank + bi + 1, rank + bi + 2, (m - bi - 2) * sizeof *rank);
            memmove(mid + bi + 1, mid + bi + 2, (m - bi - 2) * sizeof *mid);
            m--;
            if (bi > 0) rank[bi - 1] = pair_rank(t, sym[bi - 1], sym[bi], &mid[bi - 1]);
            if (bi + 1 < m) rank[bi] = pair_rank(t, sym[bi], sym[bi + 1], &mid[bi]);
        }
        for (size_t i = 0; i < m; i++) emit_symbol(e, sym[i], &prev_unk);
        return CIRCUITS_OK;
    }
    /* the heap: symbols in a linked list, candidate merges (rank, left position) checked
     * against the current pair when popped. Same order as the loop above. */
    int32_t *prev = e->prev, *next = e->next;
    if (e->heap_cap < 2 * n) {
        heap_item *h = cx_realloc(e->heap, 2 * n * sizeof *h);
        if (!h) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory encoding text");
        e->heap = h;
        e->heap_cap = 2 * n;
    }
    heap_item *heap = e->heap;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t m_ = -1;
        uint32_t r = pair_rank(t, sym[i], sym[i + 1], &m_);
        if (r != UINT32_MAX) heap_push(heap, &nh, (heap_item){r, (uint32_t)i});
    }
    while (nh) {
        heap_item it = heap_pop(heap, &nh);
        size_t i = it.pos;
        if (sym[i] == -1 || next[i] < 0) continue; /* merged away, or now last */
        int32_t j = next[i], m_ = -1;
        if (pair_rank(t, sym[i], sym[j], &m_) != it.rank) continue; /* stale */
        sym[i] = m_;
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = (int32_t)i;
        /* at most two new pairs per merge, one old pair removed: the heap stays below 2n */
        if (prev[i] >= 0) {
            uint32_t r = pair_rank(t, sym[prev[i]], sym[i], &m_);
            if (r != UINT32_MAX) heap_push(heap, &nh, (heap_item){r, (uint32_t)prev[i]});
        }
        if (next[i] >= 0) {
            uint32_t r = pair_rank(t, sym[i], sym[next[i]], &m_);
            if (r != UINT32_MAX) heap_push(heap, &nh, (heap_item){r, (uint32_t)i});
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i]) emit_symbol(e, sym[i], &prev_unk);
    return CIRCUITS_OK;
}

/* Splits a pre-tokenized segment into pieces (the tokenizer's pre-tokenizer) and encodes each. */
static int encode_pieces(enc_state *e, const uint8_t *s, size_t n)
{
    const circuits_tokenizer *t = e->t;
    for (size_t i = 0; i < n;) {
        size_t j;
        if (t->char_level) j = cx_sp_piece_next(t, s, n, i);
        else if (t->split_regex) j = cx_split_next(s, n, i, t->split_regex == CX_SPLIT_LLAMA3 ? 3 : 1);
        else if (t->use_regex) j = cx_pretok_next(s, n, i);
        else j = n;
        size_t l = j - i;
        cache_slot *c = NULL;
        if (e->cache && l <= CACHE_BYTES) {
            uint32_t h = (uint32_t)hash_bytes((const char *)s + i, l);
            c = &e->cache[h & (CACHE_SLOTS - 1)];
            if (c->len == l && memcmp(c->bytes, s + i, l) == 0) {
                for (uint8_t k = 0; k < c->n_ids; k++) emit(e, c->ids[k]);
                i = j;
                continue;
            }
        }
        size_t before = e->n;
        int rc = bpe_piece(e, s + i, l);
        if (rc) return rc;
        if (c && e->n - before <= CACHE_IDS && e->n <= e->cap) {
            c->len = (uint8_t)l;
            c->n_ids = (uint8_t)(e->n - before);
            memcpy(c->bytes, s + i, l);
            memcpy(c->ids, e->ids + before, (e->n - before) * sizeof *c->ids);
        }
        i = j;
    }
    return CIRCUITS_OK;
}

/* Pre-tokenizes a segment (no added tokens in it) and encodes each piece. */
static int encode_plain(enc_state *e, const uint8_t *s, size_t n)
{
    if (n == 0) return CIRCUITS_OK;
    const circuits_tokenizer *t = e->t;
    if (t->char_level) {
        if (t->pre != CX_PRE_METASPACE) return encode_pieces(e, s, n);
        /* Metaspace: ' ' -> "▁", and a "▁" first if missing: always, or ("first") only on the
         * segment that starts the text; the add_prefix_space option overrides */
        int prepend = e->aps_opt >= 0 ? e->aps_opt
                                      : t->ms_prepend == CX_MS_ALWAYS || (t->ms_prepend == CX_MS_FIRST && e->first);
        uint8_t *b;
        size_t bn;
        int rc = cx_sp_escape(s, n, prepend, 1, &b, &bn);
        if (!rc) rc = encode_pieces(e, b, bn);
        cx_free(b);
        return rc;
    }
    if (e->add_prefix_space && s[0] != ' ') {
        if (e->pbuf_cap < n + 1) {
            uint8_t *b = cx_realloc(e->pbuf, n + 1);
            if (!b) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory encoding text");
            e->pbuf = b;
            e->pbuf_cap = n + 1;
        }
        e->pbuf[0] = ' ';
        memcpy(e->pbuf + 1, s, n);
        s = e->pbuf;
        n++;
    }
    return encode_pieces(e, s, n);
}

/* A segment of normalized text: normalized added tokens, then plain text. */
static int encode_normalized(enc_state *e, const uint8_t *s, size_t n)
{
    size_t pos = 0, st, en;
    int32_t id;
    while (pos < n && cx_tok_find_match(e->t, s, n, pos, 1, e->parse_special, &st, &en, &id)) {
        int rc = encode_plain(e, s + pos, st - pos);
        if (rc) return rc;
        emit(e, id);
        pos = en;
        e->first = 0;
    }
    return encode_plain(e, s + pos, n - pos);
}

/* A segment of raw text: normalize, then the above. */
static int encode_raw(enc_state *e, const uint8_t *s, size_t n)
{
    if (n == 0) return CIRCUITS_OK;
    const circuits_tokenizer *t = e->t;
    uint8_t *norm = NULL, *esc = NULL;
    size_t nn = n;
    int rc = t->nfc ? cx_nfc(s, n, &norm, &nn) : CIRCUITS_OK;
    if (norm) s = norm;
    /* the "▁" normalizers of a character-level model: Replace(" ", "▁") and Prepend("▁"), which
     * the add_prefix_space option overrides (unless Metaspace does the prepending) */
    int prepend = e->aps_opt >= 0 && t->pre != CX_PRE_METASPACE ? e->aps_opt : t->norm_prepend;
    if (!rc && t->char_level && (t->norm_replace || prepend)) {
        rc = cx_sp_escape(s, nn, prepend, 0, &esc, &nn);
        if (esc) s = esc;
    }
    if (!rc) rc = encode_normalized(e, s, nn);
    cx_free(norm);
    cx_free(esc);
    return rc;
}

void circuits_encode_options_init(circuits_encode_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->prepend_bos = 0; /* -1: as the tokenizer's post-processor (BOS and/or EOS) */
    opts->add_prefix_space = -1;
    opts->parse_special = 1;
}

int circuits_tokenizer_encode(const circuits_tokenizer *tok, const char *text, size_t len,
                              const circuits_encode_options *opts, int32_t *ids, size_t cap, size_t *n_out)
{
    if (n_out) *n_out = 0;
    if (!tok || !n_out || (!text && len) || (!ids && cap))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_tokenizer_encode: NULL argument");
    circuits_encode_options o;
    circuits_encode_options_init(&o);
    static const size_t versions[] = {sizeof(circuits_encode_options)}; /* 0.1 */
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), "circuits_tokenizer_encode"))) return rc;
    if (o.prepend_bos < -1 || o.prepend_bos > 1 || o.add_prefix_space < -1 || o.add_prefix_space > 1 ||
        (o.parse_special != 0 && o.parse_special != 1))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "circuits_tokenizer_encode: parse_special must be 0 or 1, prepend_bos and add_prefix_space -1, 0 or 1");
    if (o.prepend_bos == 1 && tok->bos < 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_tokenizer_encode: prepend_bos, but the tokenizer has no BOS token");
    enc_state e = {.t = tok, .ids = ids, .cap = cap};
    e.add_prefix_space = o.add_prefix_space < 0 ? tok->add_prefix_space : o.add_prefix_space;
    e.parse_special = o.parse_special;
    e.aps_opt = o.add_prefix_space;
    if (o.prepend_bos == 1 || (o.prepend_bos < 0 && tok->add_bos)) emit(&e, tok->bos);
    if (len >= CACHE_MIN_TEXT && cap > 0) e.cache = cx_calloc(CACHE_SLOTS, sizeof *e.cache); /* NULL: no cache */
    const uint8_t *s = (const uint8_t *)text;
    size_t pos = 0, st, en;
    int32_t id;
    rc = CIRCUITS_OK;
    while (!rc && pos < len && cx_tok_find_match(tok, s, len, pos, 0, e.parse_special, &st, &en, &id)) {
        e.first = pos == 0;
        rc = encode_raw(&e, s + pos, st - pos);
        emit(&e, id);
        pos = en;
    }
    e.first = pos == 0;
    if (!rc) rc = encode_raw(&e, s + pos, len - pos);
    if (o.prepend_bos < 0 && tok->add_eos) emit(&e, tok->eos);
    cx_free(e.sym);
    cx_free(e.mid);
    cx_free(e.prev);
    cx_free(e.next);
    cx_free(e.rank);
    cx_free(e.heap);
    cx_free(e.pbuf);
    cx_free(e.mbuf);
    cx_free(e.cache);
    if (rc) return rc;
    *n_out = e.n;
    if (e.n > cap)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_tokenizer_encode: %zu tokens do not fit in %zu", e.n, cap);
    return CIRCUITS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Decoding and queries                                                                      */
/* ---------------------------------------------------------------------------------------- */

/* The first token's string less its "▁"s into buf (what fits of cap); its length. */
static size_t ms_first_token(const char *s, size_t n, char *buf, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) { i += 3; continue; }
        if (k < cap) buf[k] = s[i];
        k++;
        i++;
    }
    return k;
}

int circuits_tokenizer_decode(const circuits_tokenizer *tok, const int32_t *ids, size_t n, char *buf, size_t cap,
                              size_t *n_out)
{
    if (n_out) *n_out = 0;
    if (!tok || !n_out || (!ids && n) || (!buf && cap))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_tokenizer_decode: NULL argument");
    size_t total = 0, strip = tok->dec_strip;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= tok->n_ids || tok->dec_len[id] == UINT32_MAX)
            return cx_fail(CIRCUITS_E_RANGE, "circuits_tokenizer_decode: ids[%zu] = %d is not a token (vocabulary size %zu)",
                           i, id, tok->n_ids);
        size_t l = tok->dec_len[id];
        const char *p = tok->arena + tok->dec_off[id];
        if (i == 0 && tok->dec_ms_first) { /* Metaspace's decoder drops the first token's "▁" (all of them) */
            total = ms_first_token(tok->arena + tok->str_off[id], tok->str_len[id], buf, cap);
            continue;
        }
        /* decoder Strip(" ", k, 0) after Fuse: up to k spaces off the start of the text */
        while (strip && total == 0 && l && *p == ' ') { p++; l--; strip--; }
        if (total + l < cap) memcpy(buf + total, p, l);
        total += l;
    }
    if (total + 1 > cap) {
        *n_out = total + 1;
        return cx_fail(CIRCUITS_E_RANGE, "circuits_tokenizer_decode: %zu bytes (with the NUL) do not fit in %zu",
                       total + 1, cap);
    }
    buf[total] = '\0';
    *n_out = total;
    return CIRCUITS_OK;
}

int circuits_tokenizer_token(const circuits_tokenizer *tok, int32_t id, char *buf, size_t cap, size_t *n_out)
{
    if (n_out) *n_out = 0;
    if (!tok || (!buf && cap)) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_tokenizer_token: NULL argument");
    if (id < 0 || (size_t)id >= tok->n_ids)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_tokenizer_token: id %d is not a token (vocabulary size %zu)", id,
                       tok->n_ids);
    return circuits_tokenizer_decode(tok, &id, 1, buf, cap, n_out ? n_out : &(size_t){0});
}

size_t circuits_tokenizer_vocab_size(const circuits_tokenizer *tok) { return tok ? tok->n_ids : 0; }
int32_t circuits_tokenizer_bos_id(const circuits_tokenizer *tok) { return tok ? tok->bos : -1; }
int32_t circuits_tokenizer_eos_id(const circuits_tokenizer *tok) { return tok ? tok->eos : -1; }
