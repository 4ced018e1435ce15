/* circuits info MODEL: config, parameter count, weight processing, tokenizer, hook points. */
#include "cli.h"

#include <limits.h>
#include <string.h>

static void usage(void)
{
    printf("usage: circuits info MODEL [--pos N] [--batch B] [--attn-result] [--no-processing] [--no-mmap] [--json]\n"
           "\n"
           "Prints the model's config (TransformerLens names), its parameter count, the weight\n"
           "processing applied at load, its tokenizer, and every hook point with its shape for a\n"
           "run of [B, N] tokens.\n"
           "\n"
           "  --pos N          positions for the hook shapes (default 1)\n"
           "  --batch B        batch for the hook shapes (default 1)\n"
           "  --attn-result    include blocks.*.attn.hook_result (context option use_attn_result)\n"
           "  --no-processing  load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap        read the weight files into memory instead of mapping them\n"
           "  --json           one JSON object on stdout\n");
}

static const char *act_name(int a)
{
    static const char *n[] = {"relu", "gelu", "gelu_new", "gelu_fast", "silu", "solu_ln"};
    return a >= 0 && a < 6 ? n[a] : "?";
}

static const char *norm_name(int a)
{
    static const char *n[] = {"none", "LN", "LNPre", "RMS", "RMSPre"};
    return a >= 0 && a < 5 ? n[a] : "?";
}

static const char *const processing_names[] = {"fold_ln", "center_writing_weights", "center_unembed",
                                               "fold_value_biases", "refactor_factored_attn_matrices"};

int cmd_info(int argc, char **argv)
{
    common c = {0};
    long long pos = 1, batch = 1;
    bool attn_result = false;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, false))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--pos", &v))) {
            if (r < 0 || parse_int("--pos", v, 1, INT32_MAX, &pos)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--batch", &v))) {
            if (r < 0 || parse_int("--batch", v, 1, INT32_MAX, &batch)) return EXIT_USAGE;
        } else if ((r = opt_flag(&a, "--attn-result"))) {
            if (r < 0) return EXIT_USAGE;
            attn_result = true;
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    int rc = common_check(&c, false);
    if (rc) return rc;
    circuits_model *m;
    circuits_config cfg;
    if ((rc = load_model(&c, &m, &cfg))) return rc;
    circuits_context_options co;
    circuits_context_options_init(&co);
    co.use_attn_result = attn_result;
    circuits_context *ctx;
    if (circuits_context_create(&ctx, m, &co) != CIRCUITS_OK) {
        circuits_model_free(m);
        return lib_failure("context");
    }
    size_t nw = circuits_model_weight_count(m);
    long long params = 0;
    for (size_t i = 0; i < nw; i++) {
        circuits_tensor t;
        if (circuits_model_weight_at(m, i, &t) != CIRCUITS_OK) continue;
        long long n = 1;
        for (int d = 0; d < t.ndim; d++) n *= t.shape[d];
        params += n;
    }
    const circuits_tokenizer *tok = circuits_model_tokenizer(m);
    size_t np = circuits_context_hook_point_count(ctx);
    static const char *const formats[] = {"hf_gpt2", "transformerlens", "hf_gpt_neox", "hf_gptj", "hf_llama",
                                           "hf_mistral", "hf_qwen2", "hf_gemma", "hf_gemma2"};
    static const char *const pes[] = {"standard", "shortformer", "rotary"};
    static const char *const locals[] = {"none", "all", "even", "odd"};
    const char *format = (unsigned)cfg.format < 9 ? formats[cfg.format] : "?";
    const char *pe = (unsigned)cfg.positional_embedding_type < 3 ? pes[cfg.positional_embedding_type] : "?";
    const char *local = (unsigned)cfg.local_attn < 4 ? locals[cfg.local_attn] : "?";
    bool rotary = cfg.positional_embedding_type == CIRCUITS_POS_ROTARY;

    if (c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"format\":\"%s\",\"config\":{\"n_layers\":%d,\"d_model\":%d,\"n_heads\":%d,\"d_head\":%d,"
               "\"d_mlp\":%d,\"d_vocab\":%d,\"d_vocab_out\":%d,\"n_ctx\":%d,\"act_fn\":\"%s\","
               "\"normalization_type\":\"%s\",\"positional_embedding_type\":\"%s\",\"attn_only\":%s,"
               "\"scale_attn_by_inverse_layer_idx\":%s,\"eps\":",
               format, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab, cfg.d_vocab_out,
               cfg.n_ctx, act_name(cfg.act_fn), norm_name(cfg.normalization_type), pe,
               cfg.attn_only ? "true" : "false", cfg.scale_attn_by_inverse_layer_idx ? "true" : "false");
        json_num(stdout, cfg.eps);
        printf(",\"attn_scale\":");
        json_num(stdout, cfg.attn_scale);
        printf(",\"n_key_value_heads\":%d,\"rotary_dim\":%d,\"rotary_adjacent_pairs\":%s,\"rotary_base\":",
               cfg.n_key_value_heads, cfg.rotary_dim, cfg.rotary_adjacent_pairs ? "true" : "false");
        json_num(stdout, cfg.rotary_base);
        printf(",\"rope_scaling\":\"%s\",\"gated_mlp\":%s,\"parallel_attn_mlp\":%s,\"final_rms\":%s,"
               "\"use_normalization_before_and_after\":%s,\"attn_scores_soft_cap\":",
               cfg.rope_scaling == CIRCUITS_ROPE_LLAMA3 ? "llama3" : cfg.rope_scaling == CIRCUITS_ROPE_LINEAR ? "linear" : "none",
               cfg.gated_mlp ? "true" : "false", cfg.parallel_attn_mlp ? "true" : "false",
               cfg.final_rms ? "true" : "false", cfg.norm_before_and_after ? "true" : "false");
        json_num(stdout, cfg.attn_scores_soft_cap);
        printf(",\"output_logits_soft_cap\":");
        json_num(stdout, cfg.output_logits_soft_cap);
        printf(",\"window_size\":%d,\"local_attn\":\"%s\"", cfg.window_size, local);
        printf("},\"n_params\":%lld,\"n_weights\":%zu,\"processing\":[", params, nw);
        bool first = true;
        for (int b = 0; b < 5; b++)
            if (cfg.processing & (1u << b)) {
                printf("%s\"%s\"", first ? "" : ",", processing_names[b]);
                first = false;
            }
        printf("],\"tokenizer\":");
        if (tok)
            printf("{\"vocab_size\":%zu,\"bos_id\":%d,\"eos_id\":%d}", circuits_tokenizer_vocab_size(tok),
                   circuits_tokenizer_bos_id(tok), circuits_tokenizer_eos_id(tok));
        else
            printf("null");
        printf(",\"batch\":%lld,\"pos\":%lld,\"hook_points\":[", batch, pos);
    } else {
        printf("model      %s (%s)\n", c.model, format);
        printf("layers     %d   d_model %d   heads %d x d_head %d   d_mlp %d%s\n", cfg.n_layers, cfg.d_model,
               cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.attn_only ? " (attention only)" : "");
        printf("vocab      %d (out %d)   n_ctx %d\n", cfg.d_vocab, cfg.d_vocab_out, cfg.n_ctx);
        printf("act_fn     %s   normalization %s (eps %g)   positions %s\n", act_name(cfg.act_fn),
               norm_name(cfg.normalization_type), (double)cfg.eps, pe);
        printf("attention  scale %g%s", (double)cfg.attn_scale,
               cfg.scale_attn_by_inverse_layer_idx ? ", also divided by layer + 1" : "");
        if (cfg.n_key_value_heads != cfg.n_heads) printf("   %d key/value heads (grouped)", cfg.n_key_value_heads);
        if (cfg.attn_scores_soft_cap > 0) printf("   scores soft-capped at %g", (double)cfg.attn_scores_soft_cap);
        if (cfg.local_attn) printf("   window %d on %s layers", cfg.window_size, local);
        printf("\n");
        if (rotary)
            printf("rotary     %d of %d dims, base %g, %s%s\n", cfg.rotary_dim, cfg.d_head, (double)cfg.rotary_base,
                   cfg.rotary_adjacent_pairs ? "adjacent pairs" : "rotate half",
                   cfg.rope_scaling == CIRCUITS_ROPE_LLAMA3 ? ", llama3 scaling"
                   : cfg.rope_scaling == CIRCUITS_ROPE_LINEAR ? ", linear scaling" : "");
        if (cfg.gated_mlp || cfg.parallel_attn_mlp || cfg.final_rms || cfg.norm_before_and_after ||
            cfg.output_logits_soft_cap > 0)
            printf("block     %s%s%s%s%s\n", cfg.gated_mlp ? " gated MLP" : "",
                   cfg.parallel_attn_mlp ? " parallel attention+MLP" : "", cfg.final_rms ? " final RMSNorm" : "",
                   cfg.norm_before_and_after ? " norms after each sublayer" : "",
                   cfg.output_logits_soft_cap > 0 ? " logits soft-capped" : "");
        printf("parameters %lld in %zu weight tensors\n", params, nw);
        printf("processing");
        if (!cfg.processing) printf(" none (weights as stored)");
        for (int b = 0; b < 5; b++)
            if (cfg.processing & (1u << b)) printf(" %s", processing_names[b]);
        printf("\n");
        if (tok)
            printf("tokenizer  %zu tokens, BOS %d, EOS %d\n", circuits_tokenizer_vocab_size(tok),
                   circuits_tokenizer_bos_id(tok), circuits_tokenizer_eos_id(tok));
        else
            printf("tokenizer  none\n");
        printf("\n%zu hook points, shapes for [batch %lld, pos %lld]:\n", np, batch, pos);
    }
    for (size_t i = 0; i < np; i++) {
        circuits_tensor t;
        if (circuits_context_hook_point(ctx, i, batch, pos, &t) != CIRCUITS_OK) {
            rc = lib_failure("hook point");
            break;
        }
        char shape[128];
        int k = 0;
        for (int d = 0; d < t.ndim; d++)
            k += snprintf(shape + k, sizeof shape - (size_t)k, "%s%lld", d ? ", " : "", (long long)t.shape[d]);
        if (c.json) {
            printf("%s{\"name\":\"%s\",\"layer\":%d,\"shape\":[%s]}", i ? "," : "", t.name, t.layer, shape);
        } else {
            printf("  %-40s [%s]\n", t.name, shape);
        }
    }
    if (c.json && !rc) printf("]}\n");
    circuits_context_free(ctx);
    circuits_model_free(m);
    return rc;
}
