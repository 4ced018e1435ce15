"""TransformerLens twin of examples/python/logit_attribution.py: the same demo cells with
TransformerLens 3.9 and torch, on the same weights and prompts. Run by
examples/python/generate_expected.py (/opt/refenv/bin/python), which commits its output as
examples/python/expected/logit_attribution.txt."""

import os

import einops
import numpy as np
import torch
from fancy_einsum import einsum
from tl_load import REPO, byte_tokenizer, load_tl_dir
from transformer_lens import utilities as utils

MODELS = os.path.join(REPO, "examples", "models")


def show(label, x):
    print(f"{label}: {np.round(utils.to_numpy(x).astype(np.float64), 4).tolist()}")


model = load_tl_dir(os.path.join(MODELS, "mlp-2l"), center_unembed=True, center_writing_weights=True, fold_ln=True,
                    refactor_factored_attn_matrices=True)
model.set_tokenizer(byte_tokenizer(), default_padding_side="right")
model.set_use_attn_result(True)

example_prompt = "After Jacob and Moses went in, Moses gave it to "
example_answer = "J"
utils.test_prompt(example_prompt, example_answer, model, prepend_space_to_answer=False, prepend_bos=False)

prompt_format = "When {} and {} went in, {} gave it to "
names = [("Jacob", "Moses"), ("Aaron", "David"), ("Isaac", "Peter"), ("Sarah", "Caleb")]
prompts = []
answers = []
answer_tokens = []
for i in range(len(names)):
    for j in range(2):
        answers.append((names[i][j], names[i][1 - j]))
        answer_tokens.append((model.to_single_token(answers[-1][0][0]), model.to_single_token(answers[-1][1][0])))
        prompts.append(prompt_format.format(names[i][0], names[i][1], answers[-1][1]))
answer_tokens = torch.tensor(answer_tokens)
tokens = model.to_tokens(prompts, prepend_bos=False)
original_logits, cache = model.run_with_cache(tokens)


def logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=False):
    final_logits = logits[:, -1, :]
    answer_logits = final_logits.gather(dim=-1, index=answer_tokens)
    answer_logit_diff = answer_logits[:, 0] - answer_logits[:, 1]
    if per_prompt:
        return answer_logit_diff
    return answer_logit_diff.mean()


original_average_logit_diff = logits_to_ave_logit_diff(original_logits, answer_tokens)
print(f"Average logit difference: {original_average_logit_diff.item():.4f}")

# --- Direct logit attribution -------------------------------------------------------------
W_U = model.unembed.W_U  # [d_model, d_vocab]
answer_residual_directions = W_U[:, answer_tokens]
answer_residual_directions = einops.rearrange(
    answer_residual_directions, "d_model batch correct_incorrect -> batch correct_incorrect d_model")
print("Answer residual directions shape:", list(answer_residual_directions.shape))
logit_diff_directions = answer_residual_directions[:, 0] - answer_residual_directions[:, 1]
print("Logit difference directions shape:", list(logit_diff_directions.shape))

final_residual_stream = cache["resid_post", -1]
print("Final residual stream shape:", list(final_residual_stream.shape))
final_token_residual_stream = final_residual_stream[:, -1, :]
scaled_final_token_residual_stream = cache.apply_ln_to_stack(final_token_residual_stream, layer=-1, pos_slice=-1)
average_logit_diff = einsum("batch d_model, batch d_model -> ", scaled_final_token_residual_stream,
                            logit_diff_directions) / len(prompts)
print(f"Calculated average logit diff: {average_logit_diff.item():.4f}")
print(f"Original logit difference: {original_average_logit_diff.item():.4f}")


def residual_stack_to_logit_diff(residual_stack, cache):
    scaled_residual_stack = cache.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=-1)
    return einsum("... batch d_model, batch d_model -> ...", scaled_residual_stack,
                  logit_diff_directions) / len(prompts)


accumulated_residual, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
logit_lens_logit_diffs = residual_stack_to_logit_diff(accumulated_residual, cache)
print("Accumulated residual labels:", labels)
show("Logit difference from accumulated residual stream", logit_lens_logit_diffs)

per_layer_residual, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
per_layer_logit_diffs = residual_stack_to_logit_diff(per_layer_residual, cache)
print("Per layer labels:", labels)
show("Logit difference from each layer", per_layer_logit_diffs)

per_head_residual, labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
per_head_logit_diffs = residual_stack_to_logit_diff(per_head_residual, cache)
per_head_logit_diffs = einops.rearrange(per_head_logit_diffs, "(layer head_index) -> layer head_index",
                                        layer=model.cfg.n_layers, head_index=model.cfg.n_heads)
print("Per head labels:", labels)
show("Logit difference from each head", per_head_logit_diffs)

top_k = 3
top_positive_logit_attr_heads = torch.topk(per_head_logit_diffs.flatten(), k=top_k).indices
top_negative_logit_attr_heads = torch.topk(-per_head_logit_diffs.flatten(), k=top_k).indices
print("Top positive logit attribution heads:", [labels[h] for h in top_positive_logit_attr_heads])
print("Top negative logit attribution heads:", [labels[h] for h in top_negative_logit_attr_heads])

# --- Ablating the top head ----------------------------------------------------------------
top_name_mover = per_head_logit_diffs.flatten().argmax().item()
top_name_mover_layer = top_name_mover // model.cfg.n_heads
top_name_mover_head = top_name_mover % model.cfg.n_heads
print(f"Top Name Mover to ablate: L{top_name_mover_layer}H{top_name_mover_head}")


def ablate_top_head_hook(z, hook):
    z = z.clone()
    z[:, -1, top_name_mover_head, :] = 0
    return z


model.blocks[top_name_mover_layer].attn.hook_z.add_hook(ablate_top_head_hook)
ablated_logits, ablated_cache = model.run_with_cache(tokens)
print(f"Original logit diff: {original_average_logit_diff:.4f}")
print(f"Post ablation logit diff: {logits_to_ave_logit_diff(ablated_logits, answer_tokens).item():.4f}")
print(f"Direct Logit Attribution of top name mover head: {per_head_logit_diffs.flatten()[top_name_mover].item():.4f}")
print(f"Naive prediction of post ablation logit diff: "
      f"{original_average_logit_diff - per_head_logit_diffs.flatten()[top_name_mover].item():.4f}")

per_head_ablated_residual, labels = ablated_cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
per_head_ablated_logit_diffs = residual_stack_to_logit_diff(per_head_ablated_residual, ablated_cache)
per_head_ablated_logit_diffs = per_head_ablated_logit_diffs.reshape(model.cfg.n_layers, model.cfg.n_heads)
show("Logit difference from each head after the ablation", per_head_ablated_logit_diffs)
print("Average LN scaling ratio:",
      round((cache["ln_final.hook_scale"][:, -1] / ablated_cache["ln_final.hook_scale"][:, -1]).mean().item(), 4))
show("Ablation LN scale", ablated_cache["ln_final.hook_scale"][:, -1])
show("Original LN scale", cache["ln_final.hook_scale"][:, -1])
model.reset_hooks(including_permanent=True)
