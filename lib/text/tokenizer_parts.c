/* tokenizer.json's pipeline: normalizer, pre_tokenizer, decoder, post_processor. Each
 * component libcircuits implements sets fields of the tokenizer; any other is refused by name
 * (CIRCUITS_E_UNSUPPORTED), never ignored, since it would change the ids. Implemented:
 *   normalizer      NFC, Prepend("▁"), Replace(" ", "▁"), Sequence of these
 *   pre_tokenizer   ByteLevel; Sequence[Split(Llama 3 / Qwen2 regex, isolated), ByteLevel(use_regex
 *                   false)]; Metaspace("▁"); Split(" ", merged_with_previous); none
 *   decoder         ByteLevel; Replace("▁", " ") / ByteFallback / Fuse / Strip(" ", n, 0) in a
 *                   Sequence; Metaspace; none (byte-level only)
 *   post_processor  ByteLevel; TemplateProcessing "[special] $A [special]"; Sequence of these */
#include "tokenizer_parts.h"

#include <string.h>

#define META "\xE2\x96\x81" /* "▁" */

/* The patterns as Llama 3's and Qwen2's tokenizer.json spell them. */
static const char LLAMA3_PAT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_PAT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

bool cx_tj_is_type(json_t *obj, const char *type)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, "type") : NULL;
    return json_is_string(v) && strcmp(json_string_value(v), type) == 0;
}

const char *cx_tj_type_of(json_t *obj)
{
    if (!obj || json_is_null(obj)) return "null";
    json_t *v = json_is_object(obj) ? json_object_get(obj, "type") : NULL;
    return json_is_string(v) ? json_string_value(v) : "?";
}

int cx_tj_flag(json_t *obj, const char *key, int def, int *out, const char *src, const char *what)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) { *out = def; return CIRCUITS_OK; }
    if (!json_is_boolean(v)) return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: '%s' is not a boolean", src, what, key);
    *out = json_is_true(v);
    return CIRCUITS_OK;
}

static bool str_is(json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

/* A pattern {"String": s} or {"Regex": r}: the string, and whether it is a regex. */
static const char *pattern_of(json_t *obj, bool *regex)
{
    json_t *p = json_object_get(obj, "pattern"), *v;
    *regex = false;
    if (!json_is_object(p)) return NULL;
    if ((v = json_object_get(p, "String")) && json_is_string(v)) return json_string_value(v);
    if ((v = json_object_get(p, "Regex")) && json_is_string(v)) { *regex = true; return json_string_value(v); }
    return NULL;
}

/* ---- normalizer ---- */
static int normalizer_one(circuits_tokenizer *t, json_t *n, const char *src)
{
    bool regex;
    if (cx_tj_is_type(n, "NFC")) {
        t->nfc = 1;
        return CIRCUITS_OK;
    }
    if (cx_tj_is_type(n, "Sequence")) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) return cx_fail(CIRCUITS_E_FORMAT, "%s: normalizer Sequence without a list", src);
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x) {
            int rc = normalizer_one(t, x, src);
            if (rc) return rc;
        }
        return CIRCUITS_OK;
    }
    if (cx_tj_is_type(n, "Prepend") && str_is(json_object_get(n, "prepend"), META)) {
        t->norm_prepend = 1;
        return CIRCUITS_OK;
    }
    if (cx_tj_is_type(n, "Replace")) {
        const char *p = pattern_of(n, &regex);
        if (p && !regex && strcmp(p, " ") == 0 && str_is(json_object_get(n, "content"), META)) {
            t->norm_replace = 1;
            return CIRCUITS_OK;
        }
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: normalizer Replace other than (\" \", \"▁\") is not supported", src);
    }
    if (cx_tj_is_type(n, "Prepend"))
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: normalizer Prepend other than \"▁\" is not supported", src);
    return cx_fail(CIRCUITS_E_UNSUPPORTED,
                   "%s: normalizer '%s' is not supported (only NFC, Prepend(\"▁\"), Replace(\" \", \"▁\"), Sequence)", src,
                   cx_tj_type_of(n));
}

int cx_tj_normalizer(circuits_tokenizer *t, json_t *n, const char *src)
{
    if (!n || json_is_null(n)) return CIRCUITS_OK;
    if (!json_is_object(n)) return cx_fail(CIRCUITS_E_FORMAT, "%s: normalizer is not an object", src);
    int rc = normalizer_one(t, n, src);
    if (rc) return rc;
    if ((t->norm_prepend || t->norm_replace) && !t->char_level)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: normalizer Prepend/Replace(\"▁\") with a ByteLevel pre-tokenizer is not supported",
                       src);
    if (t->norm_prepend && !t->norm_replace)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: normalizer Prepend(\"▁\") without Replace(\" \", \"▁\") is not supported",
                       src);
    return CIRCUITS_OK;
}

/* ---- pre_tokenizer ---- */
static int byte_level(circuits_tokenizer *t, json_t *p, const char *src)
{
    int aps = 1, regex = 1;
    int rc = cx_tj_flag(p, "add_prefix_space", 1, &aps, src, "pre_tokenizer");
    if (!rc) rc = cx_tj_flag(p, "use_regex", 1, &regex, src, "pre_tokenizer");
    if (rc) return rc;
    t->char_level = 0;
    t->pre = CX_PRE_BYTELEVEL;
    t->add_prefix_space = (uint8_t)aps;
    t->use_regex = (uint8_t)regex;
    return CIRCUITS_OK;
}

/* Split(Regex of Llama 3 or Qwen2, isolated, not inverted): which, or CX_SPLIT_NONE. */
static int split_regex_of(json_t *p)
{
    bool regex;
    const char *pat = pattern_of(p, &regex);
    json_t *inv = json_object_get(p, "invert");
    if (!cx_tj_is_type(p, "Split") || !pat || !regex || !str_is(json_object_get(p, "behavior"), "Isolated") ||
        (inv && !json_is_false(inv)))
        return CX_SPLIT_NONE;
    if (strcmp(pat, LLAMA3_PAT) == 0) return CX_SPLIT_LLAMA3;
    if (strcmp(pat, QWEN2_PAT) == 0) return CX_SPLIT_QWEN2;
    return CX_SPLIT_NONE;
}

static int metaspace(circuits_tokenizer *t, json_t *p, const char *src)
{
    if (!str_is(json_object_get(p, "replacement"), META))
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: Metaspace with a replacement other than \"▁\" is not supported", src);
    json_t *scheme = json_object_get(p, "prepend_scheme");
    int aps = 1, split = 1;
    int rc = cx_tj_flag(p, "add_prefix_space", 1, &aps, src, "Metaspace");
    if (!rc) rc = cx_tj_flag(p, "split", 1, &split, src, "Metaspace");
    if (rc) return rc;
    if (!scheme || json_is_null(scheme)) t->ms_prepend = aps ? CX_MS_ALWAYS : CX_MS_NEVER; /* older files */
    else if (str_is(scheme, "first")) t->ms_prepend = CX_MS_FIRST;
    else if (str_is(scheme, "always")) t->ms_prepend = CX_MS_ALWAYS;
    else if (str_is(scheme, "never")) t->ms_prepend = CX_MS_NEVER;
    else return cx_fail(CIRCUITS_E_FORMAT, "%s: Metaspace prepend_scheme is not first, always or never", src);
    t->ms_split = (uint8_t)split;
    t->char_level = 1;
    t->pre = CX_PRE_METASPACE;
    return CIRCUITS_OK;
}

int cx_tj_pre_tokenizer(circuits_tokenizer *t, json_t *p, const char *src)
{
    if (!p || json_is_null(p)) { /* BPE over the normalized text's characters */
        t->char_level = 1;
        t->pre = CX_PRE_NONE;
        return CIRCUITS_OK;
    }
    if (!json_is_object(p)) return cx_fail(CIRCUITS_E_FORMAT, "%s: pre_tokenizer is not an object", src);
    if (cx_tj_is_type(p, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers");
        size_t n = json_is_array(list) ? json_array_size(list) : 0;
        if (n == 1) return cx_tj_pre_tokenizer(t, json_array_get(list, 0), src);
        json_t *a = json_array_get(list, 0), *b = json_array_get(list, 1);
        int which = n == 2 ? split_regex_of(a) : CX_SPLIT_NONE;
        if (which == CX_SPLIT_NONE || !cx_tj_is_type(b, "ByteLevel"))
            return cx_fail(CIRCUITS_E_UNSUPPORTED,
                           "%s: pre-tokenizer Sequence is not supported (only [Split(Llama 3 or Qwen2 regex), ByteLevel])", src);
        int rc = byte_level(t, b, src);
        if (rc) return rc;
        if (t->use_regex)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: a Split followed by ByteLevel with use_regex true is not supported",
                           src);
        t->split_regex = (uint8_t)which;
        return CIRCUITS_OK;
    }
    if (cx_tj_is_type(p, "ByteLevel")) return byte_level(t, p, src);
    if (cx_tj_is_type(p, "Metaspace")) return metaspace(t, p, src);
    if (cx_tj_is_type(p, "Split")) {
        bool regex;
        const char *pat = pattern_of(p, &regex);
        json_t *inv = json_object_get(p, "invert");
        if (pat && !regex && strcmp(pat, " ") == 0 && str_is(json_object_get(p, "behavior"), "MergedWithPrevious") &&
            (!inv || json_is_false(inv))) {
            t->char_level = 1;
            t->pre = CX_PRE_SPLIT_SPACE;
            return CIRCUITS_OK;
        }
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: pre-tokenizer Split is supported only as (\" \", merged_with_previous) or the Llama 3 / Qwen2 "
                       "regex before ByteLevel",
                       src);
    }
    return cx_fail(CIRCUITS_E_UNSUPPORTED,
                   "%s: pre-tokenizer '%s' is not supported (only ByteLevel, Metaspace, Split, Sequence)", src,
                   cx_tj_type_of(p));
}

/* ---- decoder ---- */
static int sp_decoder_part(circuits_tokenizer *t, json_t *d, const char *src, bool *replace, bool *fused)
{
    bool regex;
    if (cx_tj_is_type(d, "Replace")) {
        const char *p = pattern_of(d, &regex);
        if (p && !regex && strcmp(p, META) == 0 && str_is(json_object_get(d, "content"), " ")) {
            *replace = true;
            return CIRCUITS_OK;
        }
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: decoder Replace other than (\"▁\", \" \") is not supported", src);
    }
    if (cx_tj_is_type(d, "ByteFallback")) {
        t->dec_byte_fallback = 1;
        return CIRCUITS_OK;
    }
    if (cx_tj_is_type(d, "Fuse")) {
        *fused = true;
        return CIRCUITS_OK;
    }
    if (cx_tj_is_type(d, "Strip")) {
        /* decode strips the text's start: that is Strip after Fuse; before it, every token's */
        if (!*fused)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: decoder Strip without a Fuse before it is not supported", src);
        json_t *start = json_object_get(d, "start"), *stop = json_object_get(d, "stop");
        if (!str_is(json_object_get(d, "content"), " ") || !json_is_integer(start) || json_integer_value(start) < 0 ||
            json_integer_value(start) > 255 || !json_is_integer(stop) || json_integer_value(stop) != 0)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: decoder Strip other than (\" \", n, 0) is not supported", src);
        t->dec_strip = (uint8_t)json_integer_value(start);
        return CIRCUITS_OK;
    }
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: decoder '%s' is not supported in a Sequence", src, cx_tj_type_of(d));
}

int cx_tj_decoder(circuits_tokenizer *t, json_t *d, const char *src)
{
    if (!d || json_is_null(d)) {
        if (t->char_level)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: no decoder with a character-level model is not supported", src);
        return CIRCUITS_OK; /* byte-level: the tokens' bytes */
    }
    if (cx_tj_is_type(d, "ByteLevel")) {
        if (t->char_level)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: decoder ByteLevel without a ByteLevel pre-tokenizer is not supported",
                           src);
        return CIRCUITS_OK;
    }
    if (!t->char_level)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: decoder '%s' with a ByteLevel pre-tokenizer is not supported", src,
                       cx_tj_type_of(d));
    if (cx_tj_is_type(d, "Metaspace")) {
        circuits_tokenizer probe = {0};
        int rc = metaspace(&probe, d, src);
        if (rc) return rc;
        t->dec_ms_first = probe.ms_prepend != CX_MS_NEVER; /* every "▁" of the first token, as tokenizers */
        return CIRCUITS_OK;
    }
    if (cx_tj_is_type(d, "Sequence")) {
        json_t *list = json_object_get(d, "decoders");
        if (!json_is_array(list)) return cx_fail(CIRCUITS_E_FORMAT, "%s: decoder Sequence without a list", src);
        bool replace = false, fused = false;
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x) {
            int rc = sp_decoder_part(t, x, src, &replace, &fused);
            if (rc) return rc;
        }
        if (!replace)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: a decoder Sequence without Replace(\"▁\", \" \") is not supported", src);
        return CIRCUITS_OK;
    }
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: decoder '%s' is not supported (only ByteLevel, Metaspace, Sequence)", src,
                   cx_tj_type_of(d));
}

/* ---- post_processor ---- */
/* The id of a template item {"SpecialToken": {"id": name}} into *out, or an error. */
static int template_special(const circuits_tokenizer *t, json_t *root, json_t *item, const char *src, int32_t *out)
{
    json_t *sp = json_object_get(item, "SpecialToken");
    json_t *name = json_is_object(sp) ? json_object_get(sp, "id") : NULL;
    json_t *entry = json_is_string(name) ? json_object_get(json_object_get(root, "special_tokens"),
                                                           json_string_value(name)) : NULL;
    json_t *ids = json_object_get(entry, "ids");
    if (!json_is_array(ids) || json_array_size(ids) != 1 || !json_is_integer(json_array_get(ids, 0)))
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: TemplateProcessing special token '%.64s' is not one id of special_tokens",
                       src, json_is_string(name) ? json_string_value(name) : "?");
    json_int_t id = json_integer_value(json_array_get(ids, 0));
    if (id < 0 || (size_t)id >= t->n_ids || t->str_len[id] == UINT32_MAX)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: TemplateProcessing token id %lld is not a token", src, (long long)id);
    *out = (int32_t)id;
    return CIRCUITS_OK;
}

static int template_processing(circuits_tokenizer *t, json_t *p, const char *src)
{
    json_t *single = json_object_get(p, "single");
    size_t n = json_is_array(single) ? json_array_size(single) : 0, a = n;
    for (size_t i = 0; i < n; i++) {
        json_t *seq = json_object_get(json_array_get(single, i), "Sequence");
        if (json_is_object(seq) && str_is(json_object_get(seq, "id"), "A")) a = i;
    }
    if (a == n || a > 1 || n - a > 2)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: TemplateProcessing 'single' other than [special] $A [special] is not supported", src);
    if (a == 1) {
        int32_t id;
        int rc = template_special(t, p, json_array_get(single, 0), src, &id);
        if (rc) return rc;
        t->bos = id; /* what encode puts first is the BOS */
        t->add_bos = 1;
    }
    if (n - a == 2) {
        int32_t id;
        int rc = template_special(t, p, json_array_get(single, a + 1), src, &id);
        if (rc) return rc;
        t->eos = id;
        t->add_eos = 1;
    }
    return CIRCUITS_OK;
}

int cx_tj_post_processor(circuits_tokenizer *t, json_t *p, const char *src)
{
    if (!p || json_is_null(p) || cx_tj_is_type(p, "ByteLevel")) return CIRCUITS_OK; /* ByteLevel: offsets only */
    if (cx_tj_is_type(p, "TemplateProcessing")) return template_processing(t, p, src);
    if (cx_tj_is_type(p, "Sequence")) {
        json_t *list = json_object_get(p, "processors");
        if (!json_is_array(list)) return cx_fail(CIRCUITS_E_FORMAT, "%s: post_processor Sequence without a list", src);
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x) {
            int rc = cx_tj_post_processor(t, x, src);
            if (rc) return rc;
        }
        return CIRCUITS_OK;
    }
    return cx_fail(CIRCUITS_E_UNSUPPORTED,
                   "%s: post-processor '%s' is not supported (only ByteLevel, TemplateProcessing, Sequence)", src,
                   cx_tj_type_of(p));
}
