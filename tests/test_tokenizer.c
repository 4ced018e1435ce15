/* Tokenizer tests: usage test_tokenizer TESTS_TOKENIZER_DIR (tests/tokenizer).
 *
 *   - every loader format of GPT-2 (tokenizer.json, vocab.json + merges.txt, encoder.json +
 *     vocab.bpe, GGUF) and of GPT-NeoX (tokenizer.json, GGUF) against the ids Hugging Face
 *     tokenizers and tiktoken give on the corpus of tests/tokenizer/expected.jsonl (written by
 *     generate.py), exactly, with both BPE merge loops; decode(encode(x)) == x (NFC(x) for NeoX);
 *   - the published vectors of GPT-3-Encoder and of transformers' toy-vocabulary test;
 *   - the API contract (options, buffers, ids, errors);
 *   - hostile files: truncated or invalid JSON, merges with unknown tokens, duplicate entries,
 *     absurd GGUF counts and lengths, every truncation of a GGUF file, random corruption. The
 *     named ones are rows of the catalogue in docs/errors.md (-v prints them). */
#include "catalogue.h"
#include "tokenizer.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[1024];
static char tmpdir[256];

static const char *data(const char *rel)
{
    static char buf[4][2048];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/data/%s", root, rel);
    return buf[k];
}

static const char *tmp(const char *name)
{
    static char buf[4][1024];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    if (n && fwrite(p, 1, n, f) != n) { perror(path); exit(2); }
    fclose(f);
}

static void write_str(const char *path, const char *s) { write_file(path, s, strlen(s)); }

static circuits_tokenizer *load_ok(const char *path)
{
    circuits_tokenizer *t = NULL;
    int rc = circuits_tokenizer_load(&t, path);
    CHECK(rc == CIRCUITS_OK && t, "load %s -> %d (%s)", path, rc, circuits_last_error());
    return t;
}

/* Encodes into a fresh buffer; returns the count or (size_t)-1 on failure. */
static size_t encode(const circuits_tokenizer *t, const char *s, size_t n, const circuits_encode_options *o,
                     int32_t **ids)
{
    size_t need = 0;
    int rc = circuits_tokenizer_encode(t, s, n, o, NULL, 0, &need);
    if (rc != CIRCUITS_OK && rc != CIRCUITS_E_RANGE) {
        *ids = NULL;
        return (size_t)-1;
    }
    *ids = malloc((need ? need : 1) * sizeof **ids);
    size_t got = 0;
    rc = circuits_tokenizer_encode(t, s, n, o, *ids, need, &got);
    if (rc != CIRCUITS_OK || got != need) {
        free(*ids);
        *ids = NULL;
        return (size_t)-1;
    }
    return got;
}

static bool ids_equal(const int32_t *a, size_t na, json_t *want)
{
    if (na != json_array_size(want)) return false;
    for (size_t i = 0; i < na; i++)
        if (a[i] != json_integer_value(json_array_get(want, i))) return false;
    return true;
}

static void show_diff(const char *what, const char *text, size_t tn, const int32_t *a, size_t na, json_t *want)
{
    fprintf(stderr, "  %s on '%.*s'%s\n    got ", what, (int)(tn > 80 ? 80 : tn), text, tn > 80 ? "..." : "");
    for (size_t i = 0; i < na && i < 40; i++) fprintf(stderr, "%d ", a[i]);
    fprintf(stderr, "\n    want ");
    for (size_t i = 0; i < json_array_size(want) && i < 40; i++)
        fprintf(stderr, "%lld ", (long long)json_integer_value(json_array_get(want, i)));
    fprintf(stderr, "\n");
}

/* ---- the corpus ---- */
typedef struct named { const char *name; circuits_tokenizer *t; } named;

static int corpus_failures = 0;

static void check_case(const named *tk, size_t ntk, const char *key, const char *text, size_t n,
                       const circuits_encode_options *o, json_t *want)
{
    for (size_t k = 0; k < ntk; k++) {
        if (!tk[k].t) continue;
        int32_t *ids;
        size_t got = encode(tk[k].t, text, n, o, &ids);
        bool ok = got != (size_t)-1 && ids_equal(ids, got, want);
        CHECK(ok, "%s: %s differs from the reference (%s)", tk[k].name, key,
              got == (size_t)-1 ? circuits_last_error() : "ids");
        if (!ok && corpus_failures++ < 10) show_diff(tk[k].name, text, n, ids, got == (size_t)-1 ? 0 : got, want);
        free(ids);
    }
}

static void check_roundtrip(const named *tk, size_t ntk, const char *text, size_t n, bool nfc)
{
    const char *want = text;
    size_t wn = n;
    uint8_t *norm = NULL;
    if (nfc) {
        CHECK_OK(cx_nfc((const uint8_t *)text, n, &norm, &wn));
        if (norm) want = (const char *)norm;
    }
    /* bytes that have no token (NeoX lacks C0, C1, F5..FF, which UTF-8 never uses) are dropped */
    char *kept = malloc(wn + 1);
    for (size_t k = 0; k < ntk; k++) {
        if (!tk[k].t) continue;
        size_t kn = 0;
        for (size_t i = 0; i < wn; i++)
            if (tk[k].t->byte_tok[(uint8_t)want[i]] != CX_TOK_UNKNOWN) kept[kn++] = want[i];
        int32_t *ids;
        size_t got = encode(tk[k].t, text, n, NULL, &ids);
        CHECK(got != (size_t)-1, "%s: encode failed: %s", tk[k].name, circuits_last_error());
        if (got == (size_t)-1) continue;
        size_t need = 0;
        int rc = circuits_tokenizer_decode(tk[k].t, ids, got, NULL, 0, &need);
        CHECK(rc == CIRCUITS_E_RANGE && need == kn + 1, "%s: decode size %d %zu vs %zu", tk[k].name, rc, need, kn + 1);
        char *buf = malloc(need ? need : 1);
        size_t dn = 0;
        rc = circuits_tokenizer_decode(tk[k].t, ids, got, buf, need, &dn);
        bool ok = rc == CIRCUITS_OK && dn == kn && memcmp(buf, kept, kn) == 0 && buf[dn] == '\0';
        CHECK(ok, "%s: decode(encode(x)) != %sx for '%.*s'", tk[k].name, nfc ? "NFC " : "", (int)(n > 60 ? 60 : n),
              text);
        free(buf);
        free(ids);
    }
    free(kept);
    cx_free(norm);
}

static size_t unhex(const char *h, char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return n;
}

static void test_corpus(named *gpt2, size_t ngpt2, named *neox, size_t nneox, named *tiny, size_t ntiny, bool all_heap)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/expected.jsonl", root);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    circuits_encode_options ord, aps;
    circuits_encode_options_init(&ord);
    ord.parse_special = 0;
    circuits_encode_options_init(&aps);
    aps.add_prefix_space = 1;
    size_t n_cases = 0, n_ids = 0, n_invalid = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t ln;
    while ((ln = getline(&line, &lcap, f)) > 0) {
        json_error_t err;
        json_t *c = json_loadb(line, (size_t)ln, JSON_ALLOW_NUL, &err);
        CHECK(c != NULL, "expected.jsonl: %s", err.text);
        if (!c) continue;
        json_t *t = json_object_get(c, "t"), *hex = json_object_get(c, "hex");
        char *text;
        size_t n;
        if (t) {
            n = json_string_length(t);
            text = malloc(n + 1);
            memcpy(text, json_string_value(t), n);
        } else {
            text = malloc(strlen(json_string_value(hex)) / 2 + 1);
            n = unhex(json_string_value(hex), text);
            n_invalid++;
        }
        text[n] = '\0';
        json_t *g = json_object_get(c, "gpt2"), *go = json_object_get(c, "gpt2_ord");
        json_t *ga = json_object_get(c, "gpt2_aps"), *nx = json_object_get(c, "neox");
        json_t *no = json_object_get(c, "neox_ord"), *ti = json_object_get(c, "tiny");
        check_case(gpt2, ngpt2, "gpt2", text, n, NULL, g);
        n_ids += json_array_size(g) * ngpt2;
        if (t) check_case(gpt2, ngpt2, "gpt2 parse_special=0", text, n, &ord, go ? go : g);
        if (ga) check_case(gpt2, ngpt2, "gpt2 add_prefix_space=1", text, n, &aps, ga);
        check_case(neox, nneox, "neox", text, n, NULL, nx);
        n_ids += json_array_size(nx) * nneox;
        if (t) check_case(neox, nneox, "neox parse_special=0", text, n, &ord, no ? no : nx);
        if (ti) check_case(tiny, ntiny, "tiny", text, n, NULL, ti);
        if (!all_heap) {
            check_roundtrip(gpt2, ngpt2, text, n, false);
            check_roundtrip(neox, nneox, text, n, true);
        }
        n_cases++;
        free(text);
        json_decref(c);
    }
    free(line);
    fclose(f);
    printf("corpus%s: %zu cases (%zu not valid UTF-8), %zu reference ids compared\n", all_heap ? " (heap merge loop)" : "",
           n_cases, n_invalid, n_ids);
    CHECK(n_cases > 1000, "corpus too small: %zu", n_cases);
}

/* ---- fixed vectors ---- */
static void expect_ids(const circuits_tokenizer *t, const char *name, const char *text,
                       const circuits_encode_options *o, const int32_t *want, size_t nwant)
{
    int32_t *ids;
    size_t got = encode(t, text, strlen(text), o, &ids);
    bool ok = got == nwant && (nwant == 0 || memcmp(ids, want, nwant * sizeof *want) == 0);
    CHECK(ok, "%s: '%s' gives %zu ids (%s)", name, text, got, got == (size_t)-1 ? circuits_last_error() : "");
    free(ids);
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), (sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t))

static void test_vectors(named *gpt2, size_t ngpt2)
{
    /* GPT-3-Encoder's Encoder.test.js (tests/tokenizer/data/gpt2-openai/SOURCE.txt) */
    for (size_t k = 0; k < ngpt2; k++) {
        const circuits_tokenizer *t = gpt2[k].t;
        if (!t) continue;
        expect_ids(t, gpt2[k].name, "", NULL, NULL, 0);
        expect_ids(t, gpt2[k].name, " ", NULL, IDS(220));
        expect_ids(t, gpt2[k].name, "\t", NULL, IDS(197));
        expect_ids(t, gpt2[k].name, "This is some text", NULL, IDS(1212, 318, 617, 2420));
        expect_ids(t, gpt2[k].name, "indivisible", NULL, IDS(521, 452, 12843));
        expect_ids(t, gpt2[k].name, "hello \xf0\x9f\x91\x8b world \xf0\x9f\x8c\x8d", NULL,
                   IDS(31373, 50169, 233, 995, 12520, 234, 235));
        expect_ids(t, gpt2[k].name, "toString constructor hasOwnProperty valueOf", NULL,
                   IDS(1462, 10100, 23772, 468, 23858, 21746, 1988, 5189));
        circuits_encode_options o;
        circuits_encode_options_init(&o);
        o.prepend_bos = 1;
        expect_ids(t, gpt2[k].name, "hello", &o, IDS(50256, 31373));
        CHECK(circuits_tokenizer_vocab_size(t) == 50257, "%s: vocab size %zu", gpt2[k].name,
              circuits_tokenizer_vocab_size(t));
        CHECK(circuits_tokenizer_bos_id(t) == 50256 && circuits_tokenizer_eos_id(t) == 50256, "%s: bos/eos",
              gpt2[k].name);
    }
    /* transformers' test_tokenization_gpt2.py toy vocabulary (data/toy/SOURCE.txt):
     * tokenize("lower newer", add_prefix_space=True) -> [14, 15, 10, 9, 3, 2, 15]; <unk> = 19 */
    circuits_tokenizer *toy = load_ok(data("toy"));
    if (toy) {
        circuits_encode_options o;
        circuits_encode_options_init(&o);
        o.add_prefix_space = 1;
        expect_ids(toy, "toy", "lower newer", &o, IDS(14, 15, 10, 9, 3, 2, 15));
        expect_ids(toy, "toy", "lower newer", NULL, IDS(0, 1, 2, 15, 10, 9, 3, 2, 15)); /* its default: no prefix */
        expect_ids(toy, "toy", "lower x", &o, IDS(14, 15, 10, 19));                    /* x: <unk> */
        expect_ids(toy, "toy", "lower<|endoftext|>", &o, IDS(14, 15, 20));
        CHECK(circuits_tokenizer_vocab_size(toy) == 21, "toy vocab %zu", circuits_tokenizer_vocab_size(toy));
        CHECK(circuits_tokenizer_bos_id(toy) == 20, "toy bos %d", circuits_tokenizer_bos_id(toy));
        char buf[32];
        size_t n;
        CHECK_OK(circuits_tokenizer_token(toy, 14, buf, sizeof buf, &n));
        CHECK(n == 4 && strcmp(buf, " low") == 0, "toy token 14 = '%s'", buf);
        circuits_tokenizer_free(toy);
    }
}

/* ---- the API contract ---- */
static void test_api(const circuits_tokenizer *g, const circuits_tokenizer *nx_json, const circuits_tokenizer *nx_gguf)
{
    int32_t ids[8];
    size_t n = 99;
    CHECK_FAILS(circuits_tokenizer_encode(NULL, "a", 1, NULL, ids, 8, &n), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_tokenizer_encode(g, NULL, 1, NULL, ids, 8, &n), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_tokenizer_encode(g, "a", 1, NULL, NULL, 8, &n), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_tokenizer_encode(g, "a", 1, NULL, ids, 8, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_OK(circuits_tokenizer_encode(g, NULL, 0, NULL, NULL, 0, &n));
    CHECK(n == 0, "empty text: %zu ids", n);
    circuits_encode_options o;
    circuits_encode_options_init(&o);
    CHECK(o.size == sizeof o && o.prepend_bos == 0 && o.add_prefix_space == -1 && o.parse_special == 1, "defaults");
    o.size = 2;
    CHECK_FAILS(circuits_tokenizer_encode(g, "a", 1, &o, ids, 8, &n), CIRCUITS_E_VERSION, "options size");
    o.size = sizeof o + 4;
    CHECK_FAILS(circuits_tokenizer_encode(g, "a", 1, &o, ids, 8, &n), CIRCUITS_E_VERSION, "options size");
    circuits_encode_options_init(&o);
    o.prepend_bos = 2;
    CHECK_FAILS(circuits_tokenizer_encode(g, "a", 1, &o, ids, 8, &n), CIRCUITS_E_INVALID_ARGUMENT, "prepend_bos");
    circuits_encode_options_init(&o);
    o.add_prefix_space = 3;
    CHECK_FAILS(circuits_tokenizer_encode(g, "a", 1, &o, ids, 8, &n), CIRCUITS_E_INVALID_ARGUMENT, "add_prefix_space");
    /* a shorter struct that no release published (only prepend_bos) is refused, not half-read */
    struct { uint32_t size; int32_t prepend_bos; } old = {sizeof old, 1};
    CHECK_FAILS(circuits_tokenizer_encode(g, "hello", 5, (const circuits_encode_options *)&old, ids, 8, &n),
                CIRCUITS_E_VERSION, "options size 8 is not one this library knows");

    /* too small a buffer: CIRCUITS_E_RANGE with the count needed; cap 0 measures */
    const char *text = "This is some text";
    CHECK_FAILS(circuits_tokenizer_encode(g, text, strlen(text), NULL, ids, 3, &n), CIRCUITS_E_RANGE, "do not fit");
    CHECK(n == 4, "needed %zu", n);
    CHECK_FAILS(circuits_tokenizer_encode(g, text, strlen(text), NULL, NULL, 0, &n), CIRCUITS_E_RANGE, "do not fit");
    CHECK(n == 4, "needed %zu", n);
    CHECK_OK(circuits_tokenizer_encode(g, text, strlen(text), NULL, ids, 4, &n));

    /* decode */
    char buf[64];
    const int32_t hello[] = {31373, 50256, 995};
    CHECK_OK(circuits_tokenizer_decode(g, hello, 3, buf, sizeof buf, &n));
    CHECK(n == 24 && strcmp(buf, "hello<|endoftext|> world") == 0, "decode '%s' %zu", buf, n);
    CHECK_FAILS(circuits_tokenizer_decode(g, hello, 3, buf, 24, &n), CIRCUITS_E_RANGE, "do not fit");
    CHECK(n == 25, "decode needs %zu", n);
    const int32_t bad[] = {31373, 50257};
    CHECK_FAILS(circuits_tokenizer_decode(g, bad, 2, buf, sizeof buf, &n), CIRCUITS_E_RANGE, "ids[1] = 50257");
    const int32_t neg[] = {-1};
    CHECK_FAILS(circuits_tokenizer_decode(g, neg, 1, buf, sizeof buf, &n), CIRCUITS_E_RANGE, "not a token");
    CHECK_OK(circuits_tokenizer_decode(g, NULL, 0, buf, 1, &n));
    CHECK(n == 0 && buf[0] == '\0', "empty decode");
    CHECK_FAILS(circuits_tokenizer_decode(g, hello, 3, NULL, 5, &n), CIRCUITS_E_INVALID_ARGUMENT, "NULL");

    /* single tokens: raw bytes, possibly part of a character */
    CHECK_OK(circuits_tokenizer_token(g, 220, buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == ' ', "token 220");
    CHECK_OK(circuits_tokenizer_token(g, 50169, buf, sizeof buf, &n));
    CHECK(n == 4 && buf[0] == ' ' && (uint8_t)buf[1] == 0xF0 && (uint8_t)buf[3] == 0x91, "token 50169: %zu bytes", n);
    CHECK_OK(circuits_tokenizer_token(g, 188, buf, sizeof buf, &n)); /* byte 0x00 */
    CHECK(n == 1 && buf[0] == 0, "token 188 is byte 0: n %zu", n);
    CHECK_OK(circuits_tokenizer_token(g, 50256, buf, sizeof buf, NULL));
    CHECK(strcmp(buf, "<|endoftext|>") == 0, "token 50256 '%s'", buf);
    CHECK_FAILS(circuits_tokenizer_token(g, 50256, buf, 5, &n), CIRCUITS_E_RANGE, "do not fit");
    CHECK(n == 14, "token needs %zu", n);
    CHECK_FAILS(circuits_tokenizer_token(g, 1 << 20, buf, sizeof buf, &n), CIRCUITS_E_RANGE, "not a token");

    CHECK(circuits_tokenizer_vocab_size(NULL) == 0 && circuits_tokenizer_bos_id(NULL) == -1 &&
              circuits_tokenizer_eos_id(NULL) == -1, "NULL queries");
    circuits_tokenizer_free(NULL);

    if (nx_json && nx_gguf) {
        CHECK(circuits_tokenizer_vocab_size(nx_json) == 50277, "neox json vocab %zu", circuits_tokenizer_vocab_size(nx_json));
        CHECK(circuits_tokenizer_vocab_size(nx_gguf) == 50432, "neox gguf vocab %zu", circuits_tokenizer_vocab_size(nx_gguf));
        CHECK(circuits_tokenizer_bos_id(nx_json) == 0 && circuits_tokenizer_eos_id(nx_json) == 0, "neox bos/eos");
        CHECK(circuits_tokenizer_bos_id(nx_gguf) == 0 && circuits_tokenizer_eos_id(nx_gguf) == 0, "neox gguf bos/eos");
        /* whitespace added tokens decode to raw spaces; NFC on the way in */
        const int32_t sp[] = {50276, 0};
        CHECK_OK(circuits_tokenizer_decode(nx_json, sp, 2, buf, sizeof buf, &n));
        CHECK(strcmp(buf, "  <|endoftext|>") == 0, "neox decode '%s'", buf);
        const char *dec = "cafe\xcc\x81"; /* e + combining acute */
        int32_t a[8], b[8];
        size_t na, nb;
        CHECK_OK(circuits_tokenizer_encode(nx_json, dec, strlen(dec), NULL, a, 8, &na));
        CHECK_OK(circuits_tokenizer_encode(nx_json, "caf\xc3\xa9", 5, NULL, b, 8, &nb));
        CHECK(na == nb && memcmp(a, b, na * sizeof *a) == 0, "NFC: decomposed and composed differ");
        o = (circuits_encode_options){0};
        circuits_encode_options_init(&o);
        o.prepend_bos = 1;
        CHECK_OK(circuits_tokenizer_encode(nx_gguf, "x", 1, &o, a, 8, &na));
        CHECK(na == 2 && a[0] == 0, "neox gguf prepend_bos");
    }

    /* invalid UTF-8: each bad byte is one unit of class "other"; round trip is exact */
    const char *inv = "a\xff" "b \xe2\x82 c\xc0\xafz";
    int32_t *x;
    size_t nx = encode(g, inv, strlen(inv), NULL, &x);
    /* pieces: a | \xff | b | " \xe2\x82" | " c" | \xc0\xaf | z */
    CHECK(nx != (size_t)-1, "encode invalid: %s", circuits_last_error());
    if (nx != (size_t)-1) {
        CHECK(nx >= 7 && x[0] == 64 && x[nx - 1] == 89, "invalid: %zu ids", nx);
        CHECK_OK(circuits_tokenizer_decode(g, x, nx, buf, sizeof buf, &n));
        CHECK(n == strlen(inv) && memcmp(buf, inv, n) == 0, "invalid round trip");
    }
    free(x);
}

/* Random bytes (all 256 values, UTF-8 fragments, text): decode(encode(x)) is x (NFC for NeoX). */
static void test_random_bytes(named *gpt2, size_t ngpt2, named *neox, size_t nneox)
{
    uint64_t s = 0x9E3779B97F4A7C15ull;
    const char *frag[] = {"\xe4\xb8\x9c", "\xf0\x9f\x98\x80", "e\xcc\x81", " ", "  ", "\n", "'s", "<|endoftext|>",
                          "\xc3", "\xe2\x82", "abc", "12", "\xd7\x90"};
    char text[600];
    for (int iter = 0; iter < 300; iter++) {
        size_t n = 0;
        while (n < 400) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            uint32_t r = (uint32_t)(s >> 33);
            if (r % 3 == 0) text[n++] = (char)(r >> 8);
            else {
                const char *f = frag[(r >> 8) % (sizeof frag / sizeof frag[0])];
                size_t l = strlen(f);
                memcpy(text + n, f, l);
                n += l;
            }
        }
        check_roundtrip(gpt2, ngpt2, text, n, false);
        check_roundtrip(neox, nneox, text, n, true);
    }
}

/* ---- hostile files ---- */
/* A load that must fail; name (NULL in loops) is its catalogue row. */
static void expect_load_fails(const char *name, const char *path, int status, const char *needle)
{
    int f0 = tu_failures;
    circuits_tokenizer *t = (circuits_tokenizer *)(uintptr_t)1;
    circuits_clear_error();
    int rc = circuits_tokenizer_load(&t, path);
    CHECK(rc == status, "load %s -> %d, want %d (%s)", path, rc, status, circuits_last_error());
    CHECK(t == NULL, "load %s failed but left an object", path);
    CHECK(strstr(circuits_last_error(), needle) != NULL, "load %s: message '%s' lacks '%s'", path,
          circuits_last_error(), needle);
    if (rc == CIRCUITS_OK) circuits_tokenizer_free(t);
    if (name) {
        cat_row(name, NULL, status);
        CAT_NOTE_FAIL(name, f0);
    }
}

static const char *small_json =
    "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"<|endoftext|>\": 3},"
    " \"merges\": [\"a b\"]},"
    " \"added_tokens\": [{\"id\": 3, \"content\": \"<|endoftext|>\", \"special\": true, \"normalized\": false}],"
    " \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}}";

/* small_json with `from` replaced by `to`, written to $TMP/name.json, must fail to load. */
static void hf_variant_fails(const char *name, const char *from, const char *to, int status, const char *needle)
{
    const char *at = strstr(small_json, from);
    CHECK(at != NULL, "variant %s: '%s' not in the template", name, from);
    if (!at) return;
    char buf[4096];
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - small_json), small_json, to, at + strlen(from));
    char file[128];
    snprintf(file, sizeof file, "%s.json", name);
    write_str(tmp(file), buf);
    expect_load_fails(name, tmp(file), status, needle);
}

static void test_hostile_json(void)
{
    write_str(tmp("ok.json"), small_json);
    circuits_tokenizer *t = load_ok(tmp("ok.json"));
    if (t) {
        expect_ids(t, "small", "abab<|endoftext|>", NULL, IDS(2, 2, 3));
        int32_t ids[4];
        size_t n;
        CHECK_OK(circuits_tokenizer_encode(t, "abcab", 5, NULL, ids, 4, &n)); /* c has no token: dropped */
        CHECK(n == 2 && ids[0] == 2 && ids[1] == 2, "dropped byte: %zu", n);
        circuits_tokenizer_free(t);
    }
    /* truncated at many points: never a crash, always FORMAT */
    size_t len = strlen(small_json);
    for (size_t cut = 0; cut < len; cut += 7) {
        write_file(tmp("cut.json"), small_json, cut);
        circuits_tokenizer *c = NULL;
        int rc = circuits_tokenizer_load(&c, tmp("cut.json"));
        CHECK(rc == CIRCUITS_E_FORMAT && !c, "truncated at %zu: %d (%s)", cut, rc, circuits_last_error());
    }
    write_str(tmp("array.json"), "[1, 2]");
    expect_load_fails("tok_json_not_object", tmp("array.json"), CIRCUITS_E_FORMAT, "not a JSON object");
    hf_variant_fails("tok_json_vocab_not_object", "\"vocab\": {", "\"vocab\": [], \"x\": {", CIRCUITS_E_FORMAT, "model.vocab is not an object");
    hf_variant_fails("tok_json_merge_unknown_token", "[\"a b\"]", "[\"a c\"]", CIRCUITS_E_FORMAT, "'c', which is not in the vocabulary");
    hf_variant_fails("tok_json_merge_result_not_in_vocab", "[\"a b\"]", "[\"b a\"]", CIRCUITS_E_FORMAT, "makes a token that is not in the vocabulary");
    hf_variant_fails("tok_json_merge_three_tokens", "[\"a b\"]", "[\"a b ab\"]", CIRCUITS_E_FORMAT, "not two tokens");
    hf_variant_fails("tok_json_merge_array_of_one", "[\"a b\"]", "[[\"a\", \"b\"], [\"a\"]]", CIRCUITS_E_FORMAT, "merges[1]");
    hf_variant_fails("tok_json_vocab_duplicate_key", "\"b\": 1,", "\"b\": 1, \"a\": 5,", CIRCUITS_E_FORMAT, "duplicate object key");
    hf_variant_fails("tok_json_vocab_duplicate_id", "\"b\": 1,", "\"b\": 0,", CIRCUITS_E_FORMAT, "token id 0 is given twice");
    hf_variant_fails("tok_json_vocab_id_negative", "\"b\": 1,", "\"b\": -1,", CIRCUITS_E_FORMAT, "out of range");
    hf_variant_fails("tok_json_vocab_id_huge", "\"b\": 1,", "\"b\": 99999999999,", CIRCUITS_E_FORMAT, "out of range");
    hf_variant_fails("tok_json_vocab_id_string", "\"b\": 1,", "\"b\": \"1\",", CIRCUITS_E_FORMAT, "not an integer id");
    hf_variant_fails("tok_json_model_wordpiece", "\"type\": \"BPE\"", "\"type\": \"WordPiece\"", CIRCUITS_E_UNSUPPORTED, "WordPiece");
    hf_variant_fails("tok_json_normalizer_lowercase", "\"normalizer\": null", "\"normalizer\": {\"type\": \"Lowercase\"}", CIRCUITS_E_UNSUPPORTED,
               "Lowercase");
    hf_variant_fails("tok_json_pretokenizer_whitespace", "{\"type\": \"ByteLevel\"", "{\"type\": \"Whitespace\"", CIRCUITS_E_UNSUPPORTED,
               "Whitespace");
    hf_variant_fails("tok_json_added_id_out_of_range", "\"id\": 3,", "\"id\": 7000000,", CIRCUITS_E_FORMAT, "out of range");
    hf_variant_fails("tok_json_added_content_empty", "\"content\": \"<|endoftext|>\"", "\"content\": \"\"", CIRCUITS_E_FORMAT, "empty");
    hf_variant_fails("tok_json_added_id_twice", "\"added_tokens\": [", "\"added_tokens\": [{\"id\": 0, \"content\": \"<|endoftext|>\"}, ",
               CIRCUITS_E_FORMAT, "given twice");
    hf_variant_fails("tok_json_vocab_empty_token", "\"vocab\": {", "\"vocab\": {\"\": 9, ", CIRCUITS_E_FORMAT, "empty string");
    hf_variant_fails("tok_json_byte_fallback", "\"model\": {", "\"model\": {\"byte_fallback\": true, ", CIRCUITS_E_UNSUPPORTED,
               "byte_fallback");
    hf_variant_fails("tok_json_unk_token_missing", "\"model\": {", "\"model\": {\"unk_token\": \"<unk>\", ", CIRCUITS_E_FORMAT, "unk_token");
    write_str(tmp("empty.json"), "");
    expect_load_fails("tok_json_empty", tmp("empty.json"), CIRCUITS_E_FORMAT, "not valid JSON");
    write_file(tmp("cut50.json"), small_json, 50);
    expect_load_fails("tok_json_truncated", tmp("cut50.json"), CIRCUITS_E_FORMAT, "'}' expected near end of file");
    expect_load_fails("tok_file_missing", tmp("does-not-exist.json"), CIRCUITS_E_IO, "No such file or directory");

    /* vocab.json + merges.txt */
    mkdir(tmp("vm"), 0700);
    write_str(tmp("vm/vocab.json"), "{\"a\": 0, \"b\": 1, \"ab\": 2, \"c\": 3}");
    write_str(tmp("vm/merges.txt"), "#version: 0.2\na b\r\n\n");
    t = load_ok(tmp("vm"));
    if (t) {
        expect_ids(t, "vm", "abcab", NULL, IDS(2, 3, 2));
        CHECK(circuits_tokenizer_bos_id(t) == -1, "no bos");
        int32_t ids[2];
        size_t n;
        circuits_encode_options o;
        circuits_encode_options_init(&o);
        o.prepend_bos = 1;
        CHECK_FAILS(circuits_tokenizer_encode(t, "a", 1, &o, ids, 2, &n), CIRCUITS_E_UNSUPPORTED, "no BOS");
        circuits_tokenizer_free(t);
    }
    write_str(tmp("vm/merges.txt"), "#version: 0.2\na b\nab\n");
    expect_load_fails("tok_merges_txt_bad_line", tmp("vm"), CIRCUITS_E_FORMAT, "line 3");
    write_str(tmp("vm/merges.txt"), "a x\n");
    expect_load_fails("tok_merges_txt_unknown_token", tmp("vm"), CIRCUITS_E_FORMAT, "'x', which is not in the vocabulary");
    write_str(tmp("vm/merges.txt"), "a b\n");
    write_str(tmp("vm/tokenizer_config.json"), "{\"bos_token\": ");
    expect_load_fails("tok_config_json_invalid", tmp("vm"), CIRCUITS_E_FORMAT, "tokenizer_config.json");
    unlink(tmp("vm/tokenizer_config.json"));
    unlink(tmp("vm/merges.txt"));
    expect_load_fails("tok_dir_no_tokenizer", tmp("vm"), CIRCUITS_E_NOT_FOUND, "no tokenizer");
    /* the helper for model directories: no tokenizer is not an error */
    circuits_tokenizer *opt = (circuits_tokenizer *)(uintptr_t)1;
    CHECK_OK(cx_tokenizer_load_optional(&opt, tmp("vm")));
    CHECK(opt == NULL, "optional load of a directory without a tokenizer");
    CHECK_OK(cx_tokenizer_load_optional(&opt, data("gpt2-openai")));
    CHECK(opt != NULL && circuits_tokenizer_vocab_size(opt) == 50257, "optional load");
    circuits_tokenizer_free(opt);
    expect_load_fails("tok_vocab_json_without_merges", tmp("vm/vocab.json"), CIRCUITS_E_NOT_FOUND, "without merges");
    expect_load_fails("tok_dir_several_gguf", data("gguf"), CIRCUITS_E_UNSUPPORTED, "several GGUF files");

    /* encoder.json + vocab.bpe (OpenAI's names for the same two files) */
    mkdir(tmp("eb"), 0700);
    write_str(tmp("eb/encoder.json"), "[\"a\", \"b\"]");
    write_str(tmp("eb/vocab.bpe"), "#version: 0.2\na b\n");
    expect_load_fails("tok_encoder_json_not_object", tmp("eb"), CIRCUITS_E_FORMAT, "not a JSON object");
    write_str(tmp("eb/encoder.json"), "{\"a\": 0, \"b\": 1, \"ab\": 2}");
    write_str(tmp("eb/vocab.bpe"), "#version: 0.2\na q\n");
    expect_load_fails("tok_vocab_bpe_unknown_token", tmp("eb"), CIRCUITS_E_FORMAT, "'q', which is not in the vocabulary");
    write_str(tmp("eb/vocab.bpe"), "#version: 0.2\na  b\n");
    expect_load_fails("tok_vocab_bpe_two_spaces", tmp("eb"), CIRCUITS_E_FORMAT, "not two tokens separated by one space");
}

/* A little GGUF writer for the hostile tests. */
typedef struct gbuf { uint8_t *p; size_t n, cap; } gbuf;

static void gput(gbuf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void g32(gbuf *b, uint32_t v) { uint8_t x[4] = {v, v >> 8, v >> 16, v >> 24}; gput(b, x, 4); }
static void g64(gbuf *b, uint64_t v) { g32(b, (uint32_t)v); g32(b, (uint32_t)(v >> 32)); }
static void gstr(gbuf *b, const char *s) { g64(b, strlen(s)); gput(b, s, strlen(s)); }
static void gkv_str(gbuf *b, const char *k, const char *v) { gstr(b, k); g32(b, 8); gstr(b, v); }
static void gkv_u32(gbuf *b, const char *k, uint32_t v) { gstr(b, k); g32(b, 4); g32(b, v); }
static void gkv_strs(gbuf *b, const char *k, const char *const *v, size_t n)
{
    gstr(b, k);
    g32(b, 9);
    g32(b, 8);
    g64(b, n);
    for (size_t i = 0; i < n; i++) gstr(b, v[i]);
}
static void gkv_i32s(gbuf *b, const char *k, const int32_t *v, size_t n)
{
    gstr(b, k);
    g32(b, 9);
    g32(b, 5);
    g64(b, n);
    for (size_t i = 0; i < n; i++) g32(b, (uint32_t)v[i]);
}

enum { G_OK, G_VERSION1, G_MODEL_BERT, G_TYPES_SHORT, G_BOS_RANGE, G_DUP_KEY, G_NESTED, G_DUP_TOKEN, G_BAD_MERGE,
       G_PRE_OTHER, G_BAD_TYPE, G_NO_TOKENS, G_TOKENS_NOT_STRINGS };

static gbuf make_gguf(int variant)
{
    gbuf b = {0};
    gput(&b, "GGUF", 4);
    g32(&b, variant == G_VERSION1 ? 1 : 3);
    g64(&b, 0);
    static const char *const tokens[] = {"a", "b", "ab", "<|endoftext|>", "\xc4\xa0"};
    static const char *const dup[] = {"a", "b", "ab", "<|endoftext|>", "a"};
    static const char *const merges[] = {"a b"};
    static const char *const bad_merges[] = {"ab"};
    const int32_t types[] = {1, 1, 1, 3, 1};
    size_t n_kv = 6 + (variant == G_DUP_KEY) + (variant == G_NESTED) + (variant == G_PRE_OTHER) -
                  (variant == G_NO_TOKENS);
    g64(&b, n_kv);
    gkv_str(&b, "general.architecture", "gpt2");
    gkv_str(&b, "tokenizer.ggml.model", variant == G_MODEL_BERT ? "bert" : "gpt2");
    if (variant == G_TOKENS_NOT_STRINGS) gkv_i32s(&b, "tokenizer.ggml.tokens", types, 5);
    else if (variant != G_NO_TOKENS) gkv_strs(&b, "tokenizer.ggml.tokens", variant == G_DUP_TOKEN ? dup : tokens, 5);
    const int32_t bad_types[] = {1, 1, 1, 3, 77};
    gkv_i32s(&b, "tokenizer.ggml.token_type", variant == G_BAD_TYPE ? bad_types : types, variant == G_TYPES_SHORT ? 4 : 5);
    gkv_strs(&b, "tokenizer.ggml.merges", variant == G_BAD_MERGE ? bad_merges : merges, 1);
    gkv_u32(&b, "tokenizer.ggml.bos_token_id", variant == G_BOS_RANGE ? 5 : 3);
    if (variant == G_DUP_KEY) gkv_u32(&b, "tokenizer.ggml.bos_token_id", 3);
    if (variant == G_NESTED) {
        gstr(&b, "x.nested");
        g32(&b, 9);
        g32(&b, 9);
        g64(&b, 1);
    }
    if (variant == G_PRE_OTHER) gkv_str(&b, "tokenizer.ggml.pre", "deepseek-coder");
    return b;
}

/* A GGUF "llama" (SentencePiece) tokenizer: tokens, one float32 score each, BOS 1, EOS 2;
 * `longs` more tokens of 65000 'a' less 0..longs-1 bytes (each split of each would be a hash
 * lookup of the whole piece: quadratic in the token's length). */
static gbuf make_spm_gguf(float score, size_t longs)
{
    gbuf b = {0};
    gput(&b, "GGUF", 4);
    g32(&b, 3);
    g64(&b, 0);
    g64(&b, 5);
    gkv_str(&b, "tokenizer.ggml.model", "llama");
    static const char *const base[] = {"<unk>", "<s>", "</s>", "a", "b", "ab"};
    size_t n = 6 + longs;
    gstr(&b, "tokenizer.ggml.tokens");
    g32(&b, 9);
    g32(&b, 8);
    g64(&b, n);
    for (size_t i = 0; i < 6; i++) gstr(&b, base[i]);
    char *big = malloc(65001);
    memset(big, 'a', 65000);
    for (size_t i = 0; i < longs; i++) {
        big[65000 - i] = 0;
        gstr(&b, big);
    }
    free(big);
    gstr(&b, "tokenizer.ggml.scores");
    g32(&b, 9);
    g32(&b, 6);
    g64(&b, n);
    for (size_t i = 0; i < n; i++) {
        float f = i == 5 ? score : -(float)i;
        uint32_t u;
        memcpy(&u, &f, 4);
        g32(&b, u);
    }
    gkv_u32(&b, "tokenizer.ggml.bos_token_id", 1);
    gkv_u32(&b, "tokenizer.ggml.eos_token_id", 2);
    return b;
}

static void spm_gguf_fails(const char *name, float score, size_t longs, int status, const char *needle)
{
    gbuf v = make_spm_gguf(score, longs);
    char file[128];
    snprintf(file, sizeof file, "%s.gguf", name);
    write_file(tmp(file), v.p, v.n);
    expect_load_fails(name, tmp(file), status, needle);
    free(v.p);
}

/* make_gguf(variant) must fail to load. */
static void gguf_variant_fails(const char *name, int variant, int status, const char *needle)
{
    gbuf v = make_gguf(variant);
    char file[128];
    snprintf(file, sizeof file, "%s.gguf", name);
    write_file(tmp(file), v.p, v.n);
    expect_load_fails(name, tmp(file), status, needle);
    free(v.p);
}

static void test_hostile_gguf(void)
{
    gbuf ok = make_gguf(G_OK);
    write_file(tmp("ok.gguf"), ok.p, ok.n);
    circuits_tokenizer *t = load_ok(tmp("ok.gguf"));
    if (t) {
        expect_ids(t, "gguf", "abab<|endoftext|>", NULL, IDS(2, 2, 3));
        expect_ids(t, "gguf", " a", NULL, IDS(4, 0));
        CHECK(circuits_tokenizer_bos_id(t) == 3 && circuits_tokenizer_vocab_size(t) == 5, "gguf bos/vocab");
        circuits_tokenizer_free(t);
    }
    /* every truncation */
    for (size_t cut = 0; cut < ok.n; cut++) {
        write_file(tmp("cut.gguf"), ok.p, cut);
        circuits_tokenizer *c = NULL;
        circuits_clear_error();
        int rc = circuits_tokenizer_load(&c, tmp("cut.gguf"));
        /* < 4 bytes has no magic: then it is read as JSON */
        CHECK(rc == CIRCUITS_E_FORMAT && !c, "gguf truncated at %zu: %d (%s)", cut, rc, circuits_last_error());
        if (cut >= 24) CHECK(strstr(circuits_last_error(), "truncated GGUF"), "cut %zu: '%s'", cut, circuits_last_error());
    }
    /* absurd counts and lengths, patched into the valid file */
    gbuf b = make_gguf(G_OK);
    uint64_t big = (uint64_t)1 << 40;
    memcpy(b.p + 16, &big, 8); /* n_kv */
    write_file(tmp("nkv.gguf"), b.p, b.n);
    expect_load_fails("tok_gguf_n_kv_huge", tmp("nkv.gguf"), CIRCUITS_E_FORMAT, "key-value pairs");
    memcpy(b.p + 16, ok.p + 16, 8);
    uint64_t huge = UINT64_MAX - 3;
    memcpy(b.p + 24, &huge, 8); /* the first key's length */
    write_file(tmp("klen.gguf"), b.p, b.n);
    expect_load_fails("tok_gguf_key_length_huge", tmp("klen.gguf"), CIRCUITS_E_FORMAT, "truncated GGUF");
    memcpy(b.p + 24, ok.p + 24, 8);
    /* the tokens array's count: after its key, type (9), element type (8) */
    const char *key = "tokenizer.ggml.tokens";
    uint8_t *at = memmem(b.p, b.n, key, strlen(key));
    CHECK(at != NULL, "tokens key");
    if (at) {
        size_t off = (size_t)(at - b.p) + strlen(key) + 8;
        uint64_t count = (uint64_t)1 << 60;
        memcpy(b.p + off, &count, 8);
        write_file(tmp("count.gguf"), b.p, b.n);
        expect_load_fails("tok_gguf_token_count_huge", tmp("count.gguf"), CIRCUITS_E_FORMAT, "cannot fit");
        count = 3; /* fewer tokens than the merges and types need */
        memcpy(b.p + off, &count, 8);
        write_file(tmp("count3.gguf"), b.p, b.n);
        circuits_tokenizer *c = NULL;
        int rc = circuits_tokenizer_load(&c, tmp("count3.gguf"));
        CHECK(rc == CIRCUITS_E_FORMAT && !c, "count 3: %d (%s)", rc, circuits_last_error());
        memcpy(b.p + off, ok.p + off, 8);
        uint64_t slen = (uint64_t)1 << 62; /* the first token's length */
        memcpy(b.p + off + 8, &slen, 8);
        write_file(tmp("slen.gguf"), b.p, b.n);
        expect_load_fails("tok_gguf_token_length_huge", tmp("slen.gguf"), CIRCUITS_E_FORMAT, "truncated GGUF");
    }
    free(b.p);
    b = make_gguf(G_OK);
    memcpy(b.p, "GGUX", 4);
    write_file(tmp("magic.gguf"), b.p, b.n);
    expect_load_fails("tok_gguf_bad_magic", tmp("magic.gguf"), CIRCUITS_E_FORMAT, "not valid JSON"); /* no magic: not GGUF, not JSON */
    free(b.p);
    gguf_variant_fails("tok_gguf_version_1", G_VERSION1, CIRCUITS_E_UNSUPPORTED, "version 1");
    gguf_variant_fails("tok_gguf_model_bert", G_MODEL_BERT, CIRCUITS_E_UNSUPPORTED, "'bert'");
    gguf_variant_fails("tok_gguf_token_types_short", G_TYPES_SHORT, CIRCUITS_E_FORMAT, "4 token types for 5 tokens");
    gguf_variant_fails("tok_gguf_bos_out_of_range", G_BOS_RANGE, CIRCUITS_E_FORMAT, "bos_token_id = 5");
    gguf_variant_fails("tok_gguf_duplicate_key", G_DUP_KEY, CIRCUITS_E_FORMAT, "appears twice");
    gguf_variant_fails("tok_gguf_array_of_arrays", G_NESTED, CIRCUITS_E_UNSUPPORTED, "array of arrays");
    gguf_variant_fails("tok_gguf_duplicate_token", G_DUP_TOKEN, CIRCUITS_E_FORMAT, "'a' appears twice");
    gguf_variant_fails("tok_gguf_merge_no_space", G_BAD_MERGE, CIRCUITS_E_FORMAT, "has no space");
    gguf_variant_fails("tok_gguf_pre_other", G_PRE_OTHER, CIRCUITS_E_UNSUPPORTED, "deepseek-coder");
    gguf_variant_fails("tok_gguf_bad_token_type", G_BAD_TYPE, CIRCUITS_E_FORMAT, "token_type[4] = 77");
    gguf_variant_fails("tok_gguf_no_tokens", G_NO_TOKENS, CIRCUITS_E_FORMAT, "no tokenizer");
    gguf_variant_fails("tok_gguf_tokens_not_strings", G_TOKENS_NOT_STRINGS, CIRCUITS_E_FORMAT, "not an array of strings");
    /* GGUF "llama": the merges come from the scores */
    gbuf spm = make_spm_gguf(-1.0f, 0);
    write_file(tmp("spm.gguf"), spm.p, spm.n);
    free(spm.p);
    t = load_ok(tmp("spm.gguf"));
    if (t) {
        expect_ids(t, "gguf llama", "abab", NULL, IDS(5, 5)); /* "a b" merged; "▁" (no token) dropped */
        circuits_tokenizer_free(t);
    }
    /* a NaN score would make the merge order's comparison inconsistent (undefined for qsort) */
    spm_gguf_fails("tok_gguf_score_nan", NAN, 0, CIRCUITS_E_FORMAT, "tokenizer.ggml.scores[5] is not a number");
    /* long tokens: deriving the merges would take minutes (quadratic in each token's length) */
    spm_gguf_fails("tok_gguf_spm_tokens_too_long", -1.0f, 5, CIRCUITS_E_UNSUPPORTED, "too long to derive");
    /* random corruption: any status, never a crash (the sanitizer builds watch) */
    uint64_t s = 12345;
    for (int iter = 0; iter < 400; iter++) {
        gbuf c = make_gguf(G_OK);
        for (int k = 0; k < 1 + iter % 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            c.p[(s >> 33) % c.n] ^= (uint8_t)(1u << ((s >> 20) % 8));
        }
        write_file(tmp("fuzz.gguf"), c.p, c.n);
        circuits_tokenizer *f = NULL;
        int rc = circuits_tokenizer_load(&f, tmp("fuzz.gguf"));
        CHECK((rc == CIRCUITS_OK) == (f != NULL), "fuzz %d: rc %d", iter, rc);
        if (f) {
            int32_t ids[64];
            size_t n;
            circuits_tokenizer_encode(f, "abab <|endoftext|> a", 20, NULL, ids, 64, &n);
            circuits_tokenizer_free(f);
        }
        free(c.p);
    }
    for (int iter = 0; iter < 200; iter++) {
        size_t n = strlen(small_json);
        char *c = malloc(n);
        memcpy(c, small_json, n);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        c[(s >> 33) % n] = (char)(s >> 24);
        write_file(tmp("fuzz.json"), c, n);
        circuits_tokenizer *f = NULL;
        int rc = circuits_tokenizer_load(&f, tmp("fuzz.json"));
        CHECK((rc == CIRCUITS_OK) == (f != NULL), "json fuzz %d: rc %d", iter, rc);
        circuits_tokenizer_free(f);
        free(c);
    }
    free(ok.p);

    /* the real NeoX GGUF, truncated at random points */
    FILE *f = fopen(data("gguf/ggml-vocab-gpt-neox.gguf"), "rb");
    CHECK(f != NULL, "neox gguf");
    if (f) {
        fseek(f, 0, SEEK_END);
        size_t n = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *p = malloc(n);
        CHECK(fread(p, 1, n, f) == n, "read");
        fclose(f);
        write_file(tmp("neox-cut-30.gguf"), p, 30);
        expect_load_fails("tok_gguf_truncated", tmp("neox-cut-30.gguf"), CIRCUITS_E_FORMAT, "truncated GGUF");
        for (int iter = 0; iter < 11; iter++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t cut = (size_t)((s >> 33) % n);
            write_file(tmp("neox-cut.gguf"), p, cut);
            expect_load_fails(NULL, tmp("neox-cut.gguf"), CIRCUITS_E_FORMAT, "truncated GGUF");
        }
        free(p);
    }
}

static void cleanup_tmp(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 3 && strcmp(argv[2], "-v") == 0)) {
        fprintf(stderr, "usage: %s TESTS_TOKENIZER_DIR [-v]\n", argv[0]);
        return 2;
    }
    cat_verbose = argc == 3;
    snprintf(root, sizeof root, "%s", argv[1]);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/circuits-tok-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = tmpdir;
    cat_data = root;

    named gpt2[] = {
        {"gpt2 tokenizer.json", load_ok(data("gpt2-hf"))},
        {"gpt2 vocab.json+merges.txt", load_ok(data("gpt2-hf/vocab.json"))},
        {"gpt2 encoder.json+vocab.bpe", load_ok(data("gpt2-openai"))},
        {"gpt2 gguf", load_ok(data("gguf/ggml-vocab-gpt-2.gguf"))},
    };
    named neox[] = {
        {"neox tokenizer.json", load_ok(data("neox/20B_tokenizer.json"))},
        {"neox gguf", load_ok(data("gguf/ggml-vocab-gpt-neox.gguf"))},
    };
    named tiny[] = {
        {"tiny tokenizer.json", load_ok(data("tiny-random"))},
        {"tiny vocab.json+merges.txt", load_ok(data("tiny-random/vocab.json"))},
    };
    test_vectors(gpt2, 4);
    test_api(gpt2[0].t, neox[0].t, neox[1].t);
    test_corpus(gpt2, 4, neox, 2, tiny, 2, false);
    /* again with every piece through the heap merge loop */
    cx_tok_bpe_linear_max = 0;
    test_corpus(gpt2, 1, neox, 1, tiny, 1, true);
    cx_tok_bpe_linear_max = 48;
    test_random_bytes(gpt2, 4, neox, 2);
    test_hostile_json();
    test_hostile_gguf();
    for (size_t k = 0; k < 4; k++) circuits_tokenizer_free(gpt2[k].t);
    for (size_t k = 0; k < 2; k++) circuits_tokenizer_free(neox[k].t);
    for (size_t k = 0; k < 2; k++) circuits_tokenizer_free(tiny[k].t);
    cleanup_tmp();
    return tu_finish("test_tokenizer");
}
