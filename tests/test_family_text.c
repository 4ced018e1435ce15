/* Text in, text out for the modern families (tests/reference/text/, generate_text_cases.py): a
 * Hugging Face model directory with its tokenizer.json + tokenizer_config.json loads with its
 * tokenizer; the prompt encodes to the ids Hugging Face's tokenizer gives (with the special tokens
 * it adds by default: prepend_bos = -1); greedy generation with and without the KV cache continues
 * it with the ids transformers' generate(do_sample=False) gives; the continuation decodes as
 * Hugging Face decodes it (rows whose HF text holds no U+FFFD: for a byte-fallback run that is not
 * valid UTF-8 HF writes U+FFFD and libcircuits the bytes, docs/tokenizer.md).
 *
 *   test_family_text DIR... */
#include "circuits.h"
#include "testutil.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int compared_texts;

static void check_row(circuits_model *m, circuits_context *ctx, const circuits_tokenizer *tok, json_t *row,
                      int new_tokens, const char *name)
{
    const char *prompt = json_string_value(json_object_get(row, "prompt"));
    json_t *want_ids = json_object_get(row, "ids"), *want_gen = json_object_get(row, "generated");
    circuits_encode_options eo;
    circuits_encode_options_init(&eo);
    eo.prepend_bos = -1; /* what the tokenizer adds itself, as Hugging Face's encode */
    int32_t ids[256];
    size_t n = 0;
    CHECK_OK(circuits_tokenizer_encode(tok, prompt, strlen(prompt), &eo, ids, 256, &n));
    bool same = n == json_array_size(want_ids);
    for (size_t i = 0; same && i < n; i++) same = ids[i] == json_integer_value(json_array_get(want_ids, i));
    CHECK(same, "%s: '%s' encodes to %zu ids, not Hugging Face's %zu (first %d vs %lld)", name, prompt, n,
          json_array_size(want_ids), n ? ids[0] : -1, (long long)json_integer_value(json_array_get(want_ids, 0)));
    if (!same) return;
    for (int cache = 0; cache < 2; cache++) {
        circuits_generate_options go;
        circuits_generate_options_init(&go);
        go.max_new_tokens = new_tokens;
        go.do_sample = 0;
        go.stop_at_eos = 0;
        go.use_kv_cache = cache;
        int32_t out[512];
        int64_t len = 0;
        CHECK_OK(circuits_context_generate(ctx, ids, 1, (int64_t)n, &go, out, &len));
        CHECK(len == (int64_t)n + new_tokens, "%s: %lld columns", name, (long long)len);
        for (int i = 0; i < new_tokens; i++)
            CHECK(out[n + (size_t)i] == json_integer_value(json_array_get(want_gen, (size_t)i)),
                  "%s: '%s' (kv cache %d) token %d is %d, Hugging Face's %lld", name, prompt, cache, i,
                  out[n + (size_t)i], (long long)json_integer_value(json_array_get(want_gen, (size_t)i)));
        if (cache == 1) {
            const char *want_text = json_string_value(json_object_get(row, "text"));
            char buf[1024];
            size_t nb = 0;
            CHECK_OK(circuits_tokenizer_decode(tok, out + n, (size_t)new_tokens, buf, sizeof buf, &nb));
            if (!strstr(want_text, "\xef\xbf\xbd")) {
                compared_texts++;
                CHECK(strcmp(buf, want_text) == 0, "%s: decodes to '%s', Hugging Face '%s'", name, buf, want_text);
            }
        }
    }
    (void)m;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR...\n", argv[0]);
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/text_reference.json", argv[a]);
        json_error_t err;
        json_t *ref = json_load_file(path, 0, &err);
        CHECK(ref != NULL, "%s: %s", path, err.text);
        if (!ref) continue;
        const char *name = json_string_value(json_object_get(ref, "name"));
        circuits_model *m = NULL;
        CHECK_OK(circuits_model_load(&m, argv[a], NULL));
        if (!m) {
            json_decref(ref);
            continue;
        }
        const circuits_tokenizer *tok = circuits_model_tokenizer(m);
        CHECK(tok != NULL, "%s: no tokenizer picked up from the directory", name);
        circuits_context *ctx = NULL;
        CHECK_OK(circuits_context_create(&ctx, m, NULL));
        if (tok && ctx) {
            CHECK(circuits_tokenizer_eos_id(tok) == json_integer_value(json_object_get(ref, "eos_token_id")),
                  "%s: EOS %d", name, circuits_tokenizer_eos_id(tok));
            json_t *rows = json_object_get(ref, "rows");
            int new_tokens = (int)json_integer_value(json_object_get(ref, "max_new_tokens"));
            for (size_t i = 0; i < json_array_size(rows); i++)
                check_row(m, ctx, tok, json_array_get(rows, i), new_tokens, name);
        }
        circuits_context_free(ctx);
        circuits_model_free(m);
        json_decref(ref);
    }
    /* the cases are fixed: a change that left no valid-UTF-8 continuation would hide the decode check */
    CHECK(compared_texts >= 2, "only %d continuations decoded to compare", compared_texts);
    return tu_finish("family_text");
}
