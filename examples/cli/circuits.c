/* circuits: the command-line face of libcircuits (docs/cli.md).
 *
 *   circuits info MODEL       config, parameter count, processing, hook points and shapes
 *   circuits run MODEL        top next tokens and per-token loss of a prompt
 *   circuits cache MODEL      save selected activations to .npy / .safetensors
 *   circuits heads MODEL      previous-token / induction / duplicate-token / copying scores
 *   circuits compose MODEL    Q/K/V composition scores (table and heatmap PNGs)
 *   circuits generate MODEL   continue a prompt (greedy or sampled, KV-cached)
 *   circuits diff MODEL_A MODEL_B   each hook point's error of one model against another
 *   circuits steer-vector MODEL   a contrastive steering vector from pairs of prompts (.npy or
 *                                 a llama.cpp control vector)
 *   circuits sae-stats MODEL SAE_DIR TOKENS.npy   feature statistics of an SAE over a dataset
 *   circuits sae-show STATS   a feature statistics file as text and a picture
 *   circuits probe-fit        fit a linear probe on activations (.npy, or a model's run) and labels
 *   circuits job KIND MODEL DATASET --out OUT   a dataset-scale job (one process, --shard, mpirun)
 *   circuits merge OUT JOBDIR...  merge job directories (shards) into the output
 *   circuits attn MODEL       attention patterns of heads on a prompt (table, PNG, HTML)
 *   circuits lens MODEL       logit lens / direct logit attribution by position (table, PNG, HTML)
 *   circuits patch MODEL      activation patching grid of a clean and a corrupted prompt (PNG, HTML)
 *
 * Exit status: 0 success, 1 failure (a model that does not load, a library error, a file that
 * cannot be written), 2 a bad command line. */
#include "cli.h"

#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"info", cmd_info, "a model's config, parameter count, weight processing and hook points"},
    {"run", cmd_run, "run a prompt: top next tokens with probabilities, per-token loss"},
    {"cache", cmd_cache, "save selected activations of a run to .npy or .safetensors"},
    {"heads", cmd_heads, "previous-token, induction, duplicate-token and copying scores of every head"},
    {"compose", cmd_compose, "Q/K/V composition scores between heads (table, heatmap PNG)"},
    {"generate", cmd_generate, "continue a prompt with the model (greedy or sampled)"},
    {"diff", cmd_diff, "MODEL_A MODEL_B: each hook point's error of B against A by layer (quantization)"},
    {"steer-vector", cmd_steer_vector, "a contrastive steering vector from pairs of prompts (.npy, control vector)"},
    {"sae-stats", cmd_sae_stats, "MODEL SAE_DIR TOKENS.npy: an SAE's feature statistics over a dataset"},
    {"sae-show", cmd_sae_show, "STATS: feature statistics as text (top contexts) and a histogram PNG"},
    {"probe-fit", cmd_probe_fit, "fit a linear probe (logistic or least squares) on activations and labels"},
    {"job", cmd_job, "KIND MODEL DATASET: a dataset-scale job (mean, features, export, patch, ablate; mpirun)"},
    {"merge", cmd_merge, "OUT JOBDIR...: merge a job's directories (shards) into its output"},
    {"attn", cmd_attn, "attention patterns of heads on a prompt, tokens on the axes (PNG, HTML view)"},
    {"lens", cmd_lens, "logit lens or direct logit attribution by layer and position (PNG, HTML view)"},
    {"patch", cmd_patch, "activation patching grid: layer x position or layer x head (PNG, HTML view)"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void help(FILE *f)
{
    fprintf(f,
            "usage: circuits COMMAND MODEL [OPTIONS]\n"
            "\n"
            "Mechanistic interpretability of transformer language models (libcircuits %s).\n"
            "MODEL is a model directory: Hugging Face (config.json + model.safetensors or shards; model_type\n"
            "gpt2, gpt_neox, gptj, llama, mistral, qwen2, gemma, gemma2) or TransformerLens layout\n"
            "(tl_config.json + model.safetensors), or a GGUF file (llama.cpp's format).\n"
            "\n"
            "commands:\n",
            circuits_version_string());
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n"
               "'circuits COMMAND --help' describes a command's options. Exit status: 0 success,\n"
               "1 failure, 2 bad command line. docs/cli.md has examples.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        help(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (is_help(cmd) || strcmp(cmd, "help") == 0) {
        if (argc > 2 && strcmp(cmd, "help") == 0) {
            for (size_t i = 0; i < N_COMMANDS; i++)
                if (strcmp(argv[2], commands[i].name) == 0) {
                    char *hargv[] = {argv[2], (char *)"--help", NULL};
                    cli_cmd = commands[i].name;
                    return commands[i].fn(2, hargv);
                }
            return usage_error("no command '%s'", argv[2]);
        }
        help(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("circuits (libcircuits) %s\n", circuits_version_string());
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(cmd, commands[i].name) == 0) {
            cli_cmd = commands[i].name;
            return commands[i].fn(argc - 1, argv + 1);
        }
    if (cmd[0] == '-') return usage_error("unknown option '%s' (a command comes first)", cmd);
    return usage_error("unknown command '%s' (commands: info, run, cache, heads, compose, generate, diff, steer-vector, sae-stats, sae-show, probe-fit, job, merge, attn, lens, patch)", cmd);
}
