/* circuits.h from C++ (built as C++11 and C++17 with -Wall -Wextra -Werror -pedantic): the
 * header must compile first and alone, give C linkage to every function, and let a C++ program
 * pass a callback, fill options and use the enums. Usage: cxx_header MODEL_DIR */
#include <circuits.h>

#include "../testutil.h"

/* The callback gets C language linkage, as the type circuits_hook_fn (declared inside the
 * header's extern "C") asks for. */
extern "C" {
static int count_pattern_calls(const circuits_tensor *act, void *user_data)
{
    int *calls = static_cast<int *>(user_data);
    if (act->ndim != 4) return -1; /* pattern: [batch, head, query_pos, key_pos] */
    ++*calls;
    return CIRCUITS_HOOK_CONTINUE;
}
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: cxx_header MODEL_DIR\n");
        return 2;
    }
    CHECK(circuits_version_number() == CIRCUITS_VERSION_NUMBER, "library %u, header %d", circuits_version_number(),
          CIRCUITS_VERSION_NUMBER);
    CHECK(circuits_abi_version() == CIRCUITS_ABI_VERSION, "ABI %d", circuits_abi_version());

    circuits_status status = CIRCUITS_E_VERSION;
    CHECK(strstr(circuits_status_string(status), "CIRCUITS_E_VERSION") != NULL, "%s", circuits_status_string(status));

    circuits_load_options load_opts;
    circuits_load_options_init(&load_opts);
    CHECK(load_opts.size == sizeof load_opts, "load options size %u", load_opts.size);
    circuits_generate_options gen_opts;
    circuits_generate_options_init(&gen_opts);
    CHECK(gen_opts.size == sizeof gen_opts && gen_opts.on_step == NULL, "generate options size %u", gen_opts.size);

    circuits_model *model = NULL;
    CHECK_FAILS(circuits_model_load(&model, "/nonexistent/model", &load_opts), CIRCUITS_E_IO, "/nonexistent/model");
    CHECK(model == NULL, "a failed load left a model");

    CHECK_OK(circuits_model_load(&model, argv[1], &load_opts));
    if (!model) return tu_finish("cxx_header");
    circuits_config cfg;
    cfg.size = sizeof cfg;
    CHECK_OK(circuits_model_config(model, &cfg));
    /* a GPT-2 whose LayerNorm weights the default processing folded away (fold_ln): LNPre */
    CHECK(cfg.format == CIRCUITS_FORMAT_HF_GPT2 && cfg.act_fn == CIRCUITS_ACT_GELU_NEW &&
              cfg.normalization_type == CIRCUITS_NORM_LNPRE,
          "format %d act_fn %d norm %d", cfg.format, cfg.act_fn, cfg.normalization_type);

    circuits_context_options ctx_opts;
    circuits_context_options_init(&ctx_opts);
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, model, &ctx_opts));
    int calls = 0;
    circuits_hook_fn fn = count_pattern_calls;
    circuits_hook_id id = -1;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.*.attn.hook_pattern", fn, &calls, &id));
    const int32_t tokens[4] = {11, 42, 11, 42}; /* [batch 1, pos 4] */
    float loss = -1.0f;
    CHECK_OK(circuits_context_forward(ctx, tokens, 1, 4, NULL, &loss, NULL));
    CHECK(calls == cfg.n_layers, "the hook ran %d times for %d layers", calls, cfg.n_layers);
    CHECK(loss > 0.0f, "loss %g", static_cast<double>(loss));
    CHECK_OK(circuits_context_remove_hook(ctx, id));

    circuits_context_free(ctx);
    circuits_model_free(model);
    return tu_finish("cxx_header");
}
