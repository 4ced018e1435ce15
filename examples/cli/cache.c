/* circuits cache MODEL --prompt TEXT --names PATTERN... --out FILE: save activations. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("usage: circuits cache MODEL (--prompt TEXT | --tokens IDS) --names PATTERN... --out FILE\n"
           "                            [--sae SAE_DIR ... [--sae-error-term]] [--no-bos] [--no-processing] [--no-mmap]\n"
           "\n"
           "Runs the model on one sequence and saves the activations the patterns select (batch 1,\n"
           "TransformerLens shapes, fp32). FILE.npy holds exactly one tensor; FILE.safetensors any\n"
           "number, keyed by hook name, with the model path and the token ids in its metadata.\n"
           "\n"
           "  --names PATTERN...  hook names, TransformerLens short names or '*' patterns, e.g.\n"
           "                      blocks.0.attn.hook_pattern resid_post1 'blocks.*.hook_mlp_out';\n"
           "                      read up to the next option, or comma-separated\n"
           "  --out FILE          .npy or .safetensors\n"
           "  --prompt TEXT       text, tokenized with the model's tokenizer (BOS first unless --no-bos)\n"
           "  --tokens IDS        token ids instead, e.g. 464,3290,318\n"
           "  --no-bos            do not prepend the BOS token to --prompt\n"
           "  --sae SAE_DIR       splice this SAE into the run (HookedSAETransformer.add_sae; repeat for\n"
           "                      several): its points, <hook>.hook_sae_acts_post etc., can be saved\n"
           "  --sae-error-term    the SAEs keep their error term (use_error_term)\n"
           "  --no-processing     load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap           read the weight files into memory instead of mapping them\n");
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int cmd_cache(int argc, char **argv)
{
    common c = {0};
    const char *out = NULL;
    char **names = calloc((size_t)argc + 1, sizeof *names); /* each a strdup'ed piece */
    size_t n_names = 0, n_saes = 0;
    char **sae_dirs = calloc((size_t)argc, sizeof *sae_dirs);
    circuits_sae **saes = NULL;
    bool sae_error = false;
    int rc = 0;
    if (!names || !sae_dirs) {
        free(names);
        free(sae_dirs);
        return failure("out of memory");
    }
    args a = {argc, argv, 1};
    for (; a.i < argc && !rc; a.i++) {
        int r;
        const char *v;
        if (is_help(argv[a.i])) {
            usage();
            goto done;
        }
        if ((r = common_opt(&a, &c, true))) {
            if (r < 0) rc = EXIT_USAGE;
        } else if ((r = opt_value(&a, "--out", &v))) {
            if (r < 0) rc = EXIT_USAGE;
            else out = v;
        } else if ((r = opt_value(&a, "--sae", &v))) {
            if (r < 0) rc = EXIT_USAGE;
            else sae_dirs[n_saes++] = (char *)v;
        } else if ((r = opt_flag(&a, "--sae-error-term"))) {
            if (r < 0) rc = EXIT_USAGE;
            sae_error = true;
        } else if ((r = opt_value(&a, "--names", &v))) {
            if (r < 0) {
                rc = EXIT_USAGE;
                break;
            }
            /* this value, then every following argument up to the next option */
            for (;;) {
                char *copy = strdup(v), *save = NULL;
                if (!copy) {
                    rc = failure("out of memory");
                    break;
                }
                for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
                    char **grown = realloc(names, (n_names + 2) * sizeof *names);
                    if (grown) names = grown;
                    if (!grown || !(names[n_names] = strdup(p))) {
                        rc = failure("out of memory");
                        break;
                    }
                    n_names++;
                }
                free(copy);
                if (rc) break;
                if (a.i + 1 < argc && argv[a.i + 1][0] != '-') v = argv[++a.i];
                else break;
            }
        } else if (common_positional(&a, &c) < 0) {
            rc = EXIT_USAGE;
        }
    }
    if (rc) goto done;
    if ((rc = common_check(&c, true))) goto done;
    if (sae_error && !n_saes) {
        rc = usage_error("--sae-error-term needs --sae SAE_DIR");
        goto done;
    }
    if (!n_names) {
        rc = usage_error("needs --names PATTERN... (which activations to save)");
        goto done;
    }
    if (!out) {
        rc = usage_error("needs --out FILE (.npy or .safetensors)");
        goto done;
    }
    bool npy = ends_with(out, ".npy");
    if (!npy && !ends_with(out, ".safetensors")) {
        rc = usage_error("--out '%s': the file name must end in .npy (one tensor) or .safetensors", out);
        goto done;
    }
    if (c.tokens) {
        int32_t *ids;
        int64_t n;
        if ((rc = parse_ids("--tokens", c.tokens, &ids, &n))) goto done;
        free(ids);
    }

    circuits_model *m = NULL;
    circuits_config cfg;
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    int32_t *ids = NULL;
    int64_t T = 0;
    named_tensor *nt = NULL;
    char *tokstr = NULL;
    if ((rc = load_model(&c, &m, &cfg))) goto done;
    if ((rc = input_tokens(&c, m, &ids, &T))) goto done_model;
    if (circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK || circuits_cache_create(&cache) != CIRCUITS_OK) {
        rc = lib_failure("context");
        goto done_model;
    }
    if (n_saes && (rc = attach_saes(ctx, sae_dirs, n_saes, sae_error, &saes))) goto done_model;
    progress pg;
    progress_begin(&pg, "cache", cfg.n_layers);
    progress_hook_layers(ctx, &pg);
    int frc = circuits_context_run_with_cache(ctx, ids, 1, T, (const char *const *)names, n_names, cache, NULL, NULL,
                                              NULL);
    progress_end(&pg);
    if (frc != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done_model;
    }
    size_t n = circuits_cache_count(cache);
    if (npy && n != 1) {
        rc = failure("--out '%s': a .npy file holds one tensor, but the names select %zu; narrow --names or write a "
                     ".safetensors file",
                     out, n);
        goto done_model;
    }
    nt = calloc(n, sizeof *nt);
    circuits_tensor *ts = calloc(n, sizeof *ts);
    if (!nt || !ts) {
        free(ts);
        rc = failure("out of memory");
        goto done_model;
    }
    for (size_t i = 0; i < n; i++) {
        circuits_cache_at(cache, i, &ts[i]);
        nt[i] = (named_tensor){ts[i].name, ts[i].ndim, ts[i].shape, ts[i].data};
    }
    if (npy) {
        rc = write_npy(out, &nt[0]);
    } else {
        size_t cap = (size_t)T * 12 + 1, k = 0;
        tokstr = malloc(cap);
        if (!tokstr) {
            free(ts);
            rc = failure("out of memory");
            goto done_model;
        }
        tokstr[0] = '\0';
        for (int64_t i = 0; i < T; i++) k += (size_t)snprintf(tokstr + k, cap - k, "%s%d", i ? "," : "", ids[i]);
        const char *meta[] = {"producer", "libcircuits circuits cache", "model", c.model, "tokens", tokstr};
        rc = write_safetensors(out, nt, n, meta, 3);
    }
    if (!rc) {
        printf("wrote %zu tensor%s (%zu bytes of activations) to %s\n", n, n == 1 ? "" : "s",
               circuits_cache_nbytes(cache), out);
        for (size_t i = 0; i < n; i++) {
            printf("  %-40s [", ts[i].name);
            for (int d = 0; d < ts[i].ndim; d++) printf("%s%lld", d ? ", " : "", (long long)ts[i].shape[d]);
            printf("]\n");
        }
    }
    free(ts);
done_model:
    free(tokstr);
    free(nt);
    free(ids);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    free_saes(saes, n_saes);
    circuits_model_free(m);
done:
    free(sae_dirs);
    for (size_t i = 0; i < n_names; i++) free(names[i]);
    free(names);
    return rc;
}
