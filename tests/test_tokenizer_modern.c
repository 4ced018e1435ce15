/* Tokenizers of the modern families against Hugging Face tokenizers: usage
 * test_tokenizer_modern TESTS_TOKENIZER_DIR (tests/tokenizer).
 *
 *   - tests/tokenizer/expected_modern.jsonl (generate_modern.py): for every text, the ids of
 *     tokenizers' encode(text) (with its post-processor's BOS) for the SentencePiece-style BPE
 *     files (Llama 2 legacy normalizer, Metaspace "first" with "a b" merges, Gemma) and the
 *     byte-level ones with the Llama 3 and Qwen2 Split regexes, and Qwen2's with added tokens of
 *     every kind (single_word, lstrip/rstrip, normalized); libcircuits must give them with
 *     prepend_bos -1, exactly, with both BPE merge loops; the same ids without the BOS with
 *     prepend_bos 0; decode as tokenizers' decode(skip_special_tokens=False);
 *   - the GGUF "llama" file of the same sentencepiece model against the Llama 2 ids, and the
 *     Llama 3 / Qwen2 files as GGUF "gpt2" with pre-tokenizers llama-bpe / qwen2;
 *   - refusals by name of tokenizer.json components that are not implemented (catalogued). */
#include "catalogue.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char root[1024];

typedef struct kind {
    const char *key;   /* in expected_modern.jsonl */
    const char *path;  /* under data/modern */
    const char *ref;   /* the reference key (GGUF: llama2's ids) */
    circuits_tokenizer *t;
    size_t texts, same, dec_same, dec_fixed;
} kind;

static kind kinds[] = {
    {"llama2", "llama2", "llama2", NULL, 0, 0, 0, 0},
    {"llama_ms", "llama_ms", "llama_ms", NULL, 0, 0, 0, 0},
    {"llama_split", "llama_split", "llama_split", NULL, 0, 0, 0, 0},
    {"gemma", "gemma", "gemma", NULL, 0, 0, 0, 0},
    {"llama3", "llama3", "llama3", NULL, 0, 0, 0, 0},
    {"qwen2", "qwen2", "qwen2", NULL, 0, 0, 0, 0},
    {"added", "added", "added", NULL, 0, 0, 0, 0},
    {"gguf_llama", "llama2.gguf", "llama2", NULL, 0, 0, 0, 0},
    {"gguf_llama3", "llama3.gguf", "llama3", NULL, 0, 0, 0, 0},
    {"gguf_qwen2", "qwen2.gguf", "qwen2", NULL, 0, 0, 0, 0},
};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

static int shown = 0;

static size_t encode(const circuits_tokenizer *t, const char *s, size_t n, int prepend_bos, int32_t **ids)
{
    circuits_encode_options o;
    circuits_encode_options_init(&o);
    o.prepend_bos = prepend_bos;
    size_t need = 0;
    int rc = circuits_tokenizer_encode(t, s, n, &o, NULL, 0, &need);
    *ids = NULL;
    if (rc != CIRCUITS_OK && rc != CIRCUITS_E_RANGE) return (size_t)-1;
    *ids = malloc((need ? need : 1) * sizeof **ids);
    size_t got = 0;
    rc = circuits_tokenizer_encode(t, s, n, &o, *ids, need, &got);
    return rc == CIRCUITS_OK && got == need ? got : (size_t)-1;
}

static bool same_ids(const int32_t *a, size_t na, json_t *want, size_t skip)
{
    if (na == (size_t)-1 || na + skip != json_array_size(want)) return false;
    for (size_t i = 0; i < na; i++)
        if (a[i] != json_integer_value(json_array_get(want, i + skip))) return false;
    return true;
}

static void show(const kind *k, const char *text, const int32_t *a, size_t na, json_t *want)
{
    if (shown++ >= 8) return;
    fprintf(stderr, "  %s on '%.60s'\n    got ", k->key, text);
    for (size_t i = 0; na != (size_t)-1 && i < na && i < 30; i++) fprintf(stderr, "%d ", a[i]);
    fprintf(stderr, "\n    want ");
    for (size_t i = 0; i < json_array_size(want) && i < 30; i++)
        fprintf(stderr, "%lld ", (long long)json_integer_value(json_array_get(want, i)));
    fprintf(stderr, "\n");
}

static void check_text(kind *k, json_t *c)
{
    json_t *jt = json_object_get(c, "t"), *want = json_object_get(c, k->ref);
    const char *text = json_string_value(jt);
    size_t n = json_string_length(jt);
    k->texts++;
    int32_t *ids;
    size_t got = encode(k->t, text, n, -1, &ids);
    bool ok = same_ids(ids, got, want, 0);
    CHECK(ok, "%s: ids differ from tokenizers' (%s)", k->key, got == (size_t)-1 ? circuits_last_error() : "ids");
    if (!ok) show(k, text, ids, got, want);
    k->same += ok;
    free(ids);
    /* without the post-processor: the same ids less the BOS */
    int32_t bos = circuits_tokenizer_bos_id(k->t);
    size_t skip = json_array_size(want) && json_integer_value(json_array_get(want, 0)) == bos ? 1 : 0;
    if (strcmp(k->ref, "qwen2") == 0 || strcmp(k->ref, "added") == 0) skip = 0; /* no post-processor token */
    got = encode(k->t, text, n, 0, &ids);
    CHECK(same_ids(ids, got, want, skip), "%s: ids without the BOS differ", k->key);
    /* decode, as tokenizers' decode(encode(text, add_special_tokens=False)) */
    if (got != (size_t)-1) {
        json_t *d = json_object_get(json_object_get(c, "d"), k->ref);
        const char *wd = d ? json_string_value(d) : text;
        size_t wn = d ? json_string_length(d) : n, dn = 0;
        /* documented difference (docs/tokenizer.md): tokenizers' ByteLevel decoder maps an added
         * token's characters through the byte map too, so "café" (an added token of "added")
         * comes out as "caf\xE9" and then U+FFFD; libcircuits gives the content */
        char *fixed = NULL;
        if (d && strcmp(k->ref, "added") == 0) { /* (the texts may hold NULs: no strstr) */
            fixed = malloc(wn + 1);
            size_t o = 0;
            for (size_t i = 0; i < wn;) {
                if (i + 6 <= wn && memcmp(wd + i, "caf\xEF\xBF\xBD", 6) == 0) {
                    memcpy(fixed + o, "caf\xC3\xA9", 5);
                    o += 5;
                    i += 6;
                } else {
                    fixed[o++] = wd[i++];
                }
            }
            k->dec_fixed += o != wn;
            wd = fixed;
            wn = o;
        }
        char *buf = malloc(wn + 2);
        int rc = circuits_tokenizer_decode(k->t, ids, got, buf, wn + 2, &dn);
        bool dok = rc == CIRCUITS_OK && dn == wn && memcmp(buf, wd, wn) == 0;
        CHECK(dok, "%s: decode differs on '%.60s': '%.60s'", k->key, text, rc == CIRCUITS_OK ? buf : circuits_last_error());
        k->dec_same += dok;
        free(buf);
        free(fixed);
    }
    free(ids);
}

static void test_corpus(void)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/expected_modern.jsonl", root);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "open %s", path);
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    ssize_t ln;
    while ((ln = getline(&line, &cap, f)) > 0) {
        json_error_t err;
        json_t *c = json_loadb(line, (size_t)ln, JSON_ALLOW_NUL, &err);
        CHECK(c != NULL, "expected_modern.jsonl: %s", err.text);
        if (!c) continue;
        for (size_t k = 0; k < N_KINDS; k++)
            if (kinds[k].t) check_text(&kinds[k], c);
        json_decref(c);
    }
    free(line);
    fclose(f);
}

/* data/modern/<file>/tokenizer.json with `from` replaced by `to`, loaded: must fail with status
 * and a message naming the component. */
static char tmpdir[256];

static void variant_fails(const char *name, const char *file, const char *from, const char *to, int status,
                          const char *needle)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/data/modern/%s/tokenizer.json", root, file);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "open %s", path);
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)len + 1);
    size_t got = fread(s, 1, (size_t)len, f);
    s[got] = 0;
    fclose(f);
    char *at = strstr(s, from);
    CHECK(at != NULL, "%s: '%s' not in %s", name, from, file);
    if (!at) { free(s); return; }
    size_t fl = strlen(from), tl = strlen(to);
    char *v = malloc(got + tl + 1);
    memcpy(v, s, (size_t)(at - s));
    memcpy(v + (at - s), to, tl);
    strcpy(v + (at - s) + tl, at + fl);
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s/%s.json", tmpdir, name);
    FILE *o = fopen(tmp, "wb");
    CHECK(o != NULL, "open %s", tmp);
    if (o) {
        CHECK(fwrite(v, 1, strlen(v), o) == strlen(v), "write %s", tmp);
        fclose(o);
        int f0 = tu_failures;
        circuits_tokenizer *t = NULL;
        int rc = circuits_tokenizer_load(&t, tmp);
        CHECK(rc == status && !t, "%s: load -> %d, want %d (%s)", name, rc, status, circuits_last_error());
        CHECK(strstr(circuits_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", name,
              circuits_last_error(), needle);
        if (rc == CIRCUITS_OK) circuits_tokenizer_free(t);
        cat_row(name, NULL, status);
        CAT_NOTE_FAIL(name, f0);
        unlink(tmp);
    }
    free(s);
    free(v);
}

/* tokenizer_config.json's add_bos_token / add_eos_token decide what prepend_bos -1 adds (over
 * the post-processor), as transformers rewrites the template from them. */
static void test_config_flags(void)
{
    char dir[600], path[1200], cmd[2600];
    snprintf(dir, sizeof dir, "%s/flags", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/data/modern/llama2/tokenizer.json' '%s/'", dir, root, dir);
    CHECK(system(cmd) == 0, "%s", cmd);
    static const struct { const char *config; int bos, eos; } cases[] = {
        {"{\"add_bos_token\": true, \"add_eos_token\": true, \"eos_token\": {\"content\": \"</s>\"}}", 1, 1},
        {"{\"add_bos_token\": false}", 0, 0},
        {"{\"bos_token\": \"<s>\"}", 1, 0}, /* the post-processor's */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL, "open %s", path);
        if (!f) return;
        fputs(cases[c].config, f);
        fclose(f);
        circuits_tokenizer *t = NULL;
        CHECK(circuits_tokenizer_load(&t, dir) == CIRCUITS_OK, "load %s: %s", dir, circuits_last_error());
        if (!t) continue;
        int32_t *ids;
        size_t n = encode(t, "Hello", 5, -1, &ids), plain;
        int32_t *p;
        plain = encode(t, "Hello", 5, 0, &p);
        CHECK(n == plain + (size_t)cases[c].bos + (size_t)cases[c].eos, "config %zu: %zu ids, %zu without", c, n, plain);
        if (n == plain + (size_t)cases[c].bos + (size_t)cases[c].eos && plain != (size_t)-1) {
            CHECK(!cases[c].bos || ids[0] == circuits_tokenizer_bos_id(t), "config %zu: BOS first", c);
            CHECK(!cases[c].eos || ids[n - 1] == circuits_tokenizer_eos_id(t), "config %zu: EOS last", c);
            CHECK(memcmp(ids + cases[c].bos, p, plain * sizeof *p) == 0, "config %zu: the text's ids", c);
        }
        /* BOS from the template; EOS only where tokenizer_config.json names it */
        CHECK(circuits_tokenizer_bos_id(t) == 1 && circuits_tokenizer_eos_id(t) == (c == 0 ? 2 : -1),
              "config %zu: bos %d eos %d", c, circuits_tokenizer_bos_id(t), circuits_tokenizer_eos_id(t));
        free(ids);
        free(p);
        circuits_tokenizer_free(t);
    }
    remove(path);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    remove(path);
    rmdir(dir);
}

/* Decoding ids that did not come from encode (a generation's): Hugging Face's Metaspace
 * decoder drops every "▁" of the first token (not only a leading one), and turns the others'
 * into ' '; the Sequence decoder [Replace, ByteFallback, Fuse, Strip(" ", 1, 0)] strips one
 * space off the text. Expected strings from tokenizers 0.23's Tokenizer.decode. */
static void test_decode_first_token(void)
{
    static const struct { size_t kind; const char *a, *b, *want; } cases[] = {
        {2, "\xe2\x96\x81\xe2\x96\x81", "a", "a"},   /* llama_split: Metaspace decoder */
        {2, "a", "\xe2\x96\x81\xe2\x96\x81", "a  "},
        {0, "\xe2\x96\x81\xe2\x96\x81", "a", " a"},  /* llama2: Strip one */
        {3, "\xe2\x96\x81\xe2\x96\x81", "a", "  a"}, /* gemma: no Strip */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const circuits_tokenizer *t = kinds[cases[c].kind].t;
        if (!t) continue;
        int32_t ids[2] = {cx_tok_lookup(t, cases[c].a, strlen(cases[c].a)), cx_tok_lookup(t, cases[c].b, strlen(cases[c].b))};
        CHECK(ids[0] >= 0 && ids[1] >= 0, "decode case %zu: tokens in %s", c, kinds[cases[c].kind].key);
        char buf[64];
        size_t n = 0, need = 0;
        CHECK(circuits_tokenizer_decode(t, ids, 2, NULL, 0, &need) == CIRCUITS_E_RANGE, "decode case %zu: measure", c);
        CHECK(circuits_tokenizer_decode(t, ids, 2, buf, sizeof buf, &n) == CIRCUITS_OK && n + 1 == need,
              "decode case %zu: %zu bytes, measured %zu", c, n, need);
        CHECK(strcmp(buf, cases[c].want) == 0, "decode case %zu (%s): '%s', want '%s'", c, kinds[cases[c].kind].key, buf,
              cases[c].want);
    }
}

static void test_refusals(void)
{
    variant_fails("tok_json_normalizer_replace_other", "gemma", "\"content\": \"\xe2\x96\x81\"", "\"content\": \"_\"",
                  CIRCUITS_E_UNSUPPORTED, "normalizer Replace");
    variant_fails("tok_json_pretokenizer_split_regex", "llama3", "\\\\p{N}{1,3}", "\\\\p{N}{1,4}",
                  CIRCUITS_E_UNSUPPORTED, "pre-tokenizer Sequence");
    variant_fails("tok_json_pretokenizer_metaspace_replacement", "llama_ms", "\"replacement\": \"\xe2\x96\x81\"",
                  "\"replacement\": \"_\"", CIRCUITS_E_UNSUPPORTED, "Metaspace with a replacement");
    variant_fails("tok_json_decoder_wordpiece", "llama2", "\"decoder\": {", "\"decoder\": {\"type\": \"WordPiece\"}, \"old_decoder\": {",
                  CIRCUITS_E_UNSUPPORTED, "decoder 'WordPiece'");
    variant_fails("tok_json_post_processor_roberta", "llama3", "\"post_processor\": {",
                  "\"post_processor\": {\"type\": \"RobertaProcessing\"}, \"old_post_processor\": {", CIRCUITS_E_UNSUPPORTED,
                  "post-processor 'RobertaProcessing'");
    /* without Fuse before it, tokenizers strips each token's leading space, not the text's */
    variant_fails("tok_json_decoder_strip_unfused", "llama2", "\"type\": \"Fuse\"", "\"type\": \"ByteFallback\"",
                  CIRCUITS_E_UNSUPPORTED, "decoder Strip without a Fuse before it");
    variant_fails("tok_json_model_unigram", "llama2", "\"type\": \"BPE\"", "\"type\": \"Unigram\"", CIRCUITS_E_UNSUPPORTED,
                  "model type 'Unigram'");
}

int main(int argc, char **argv)
{
    if (argc != 2 && !(argc == 3 && strcmp(argv[2], "-v") == 0)) {
        fprintf(stderr, "usage: %s TESTS_TOKENIZER_DIR [-v]\n", argv[0]);
        return 2;
    }
    cat_verbose = argc == 3;
    snprintf(root, sizeof root, "%s", argv[1]);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/circuits-tokm-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = tmpdir;
    cat_data = root;
    for (size_t k = 0; k < N_KINDS; k++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/data/modern/%s", root, kinds[k].path);
        int rc = circuits_tokenizer_load(&kinds[k].t, path);
        CHECK(rc == CIRCUITS_OK, "load %s: %s", path, circuits_last_error());
    }
    test_corpus();
    cx_tok_bpe_linear_max = 0; /* every piece through the heap */
    for (size_t k = 0; k < N_KINDS; k++) kinds[k].texts = kinds[k].same = kinds[k].dec_same = kinds[k].dec_fixed = 0;
    test_corpus();
    cx_tok_bpe_linear_max = 48;
    test_decode_first_token();
    for (size_t k = 0; k < N_KINDS; k++) {
        if (!cat_verbose)
            printf("%-11s ids identical on %zu/%zu texts, decode on %zu/%zu (%zu with the added-token decode "
                   "difference) (heap merge loop)\n",
                   kinds[k].key, kinds[k].same, kinds[k].texts, kinds[k].dec_same, kinds[k].texts, kinds[k].dec_fixed);
        CHECK(kinds[k].texts > 380, "%s: only %zu texts", kinds[k].key, kinds[k].texts);
        circuits_tokenizer_free(kinds[k].t);
    }
    test_refusals();
    test_config_flags();
    rmdir(tmpdir);
    return tu_finish("tokenizer_modern");
}
