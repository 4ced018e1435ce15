"""TransformerLens twin of examples/python/activation_patching.py: the same demo cells with
TransformerLens 3.9 and torch, on the same weights and prompts. Run by
examples/python/generate_expected.py (/opt/refenv/bin/python), which commits its output as
examples/python/expected/activation_patching.txt."""

import os
from functools import partial

import numpy as np
import torch
from tl_load import REPO, byte_tokenizer, load_tl_dir
from transformer_lens import utilities as utils

MODELS = os.path.join(REPO, "examples", "models")


def show(label, x):
    print(f"{label}: {np.round(utils.to_numpy(x).astype(np.float64), 4).tolist()}")


# ===== Main Demo =================================================================================
model = load_tl_dir(os.path.join(MODELS, "mlp-2l"))
model.set_tokenizer(byte_tokenizer(), default_padding_side="right")

gpt2_text = ("Natural language processing tasks, such as question answering, machine translation, reading "
             "comprehension, and summarization, are typically approached with supervised learning on taskspecific "
             "datasets.")
gpt2_tokens = model.to_tokens(gpt2_text, prepend_bos=False)
layer_to_ablate = 0
head_index_to_ablate = 3


def head_ablation_hook(value, hook):
    print(f"Shape of the value tensor: {list(value.shape)}")
    value[:, :, head_index_to_ablate, :] = 0.0
    return value


original_loss = model(gpt2_tokens, return_type="loss")
ablated_loss = model.run_with_hooks(gpt2_tokens, return_type="loss",
                                    fwd_hooks=[(utils.get_act_name("v", layer_to_ablate), head_ablation_hook)])
print(f"Original Loss: {original_loss.item():.4f}")
print(f"Ablated Loss: {ablated_loss.item():.4f}")

clean_prompt = "After Jacob and Moses went in, Moses gave it to "
corrupted_prompt = "After Jacob and Moses went in, Jacob gave it to "
clean_tokens = model.to_tokens(clean_prompt, prepend_bos=False)
corrupted_tokens = model.to_tokens(corrupted_prompt, prepend_bos=False)


def logits_to_logit_diff(logits, correct_answer="J", incorrect_answer="M"):
    correct_index = model.to_single_token(correct_answer)
    incorrect_index = model.to_single_token(incorrect_answer)
    return logits[0, -1, correct_index] - logits[0, -1, incorrect_index]


clean_logits, clean_cache = model.run_with_cache(clean_tokens)
clean_logit_diff = logits_to_logit_diff(clean_logits)
print(f"Clean logit difference: {clean_logit_diff.item():.4f}")
corrupted_logits = model(corrupted_tokens)
corrupted_logit_diff = logits_to_logit_diff(corrupted_logits)
print(f"Corrupted logit difference: {corrupted_logit_diff.item():.4f}")


def residual_stream_patching_hook(resid_pre, hook, position):
    clean_resid_pre = clean_cache[hook.name]
    resid_pre[:, position, :] = clean_resid_pre[:, position, :]
    return resid_pre


num_positions = len(clean_tokens[0])
ioi_patching_result = torch.zeros((model.cfg.n_layers, num_positions))
for layer in range(model.cfg.n_layers):
    for position in range(num_positions):
        temp_hook_fn = partial(residual_stream_patching_hook, position=position)
        patched_logits = model.run_with_hooks(corrupted_tokens,
                                              fwd_hooks=[(utils.get_act_name("resid_pre", layer), temp_hook_fn)])
        patched_logit_diff = logits_to_logit_diff(patched_logits)
        ioi_patching_result[layer, position] = (patched_logit_diff - corrupted_logit_diff) / (
            clean_logit_diff - corrupted_logit_diff)
show("Normalized logit difference after patching the residual stream", ioi_patching_result)

# ===== Exploratory Analysis Demo =================================================================
model = load_tl_dir(os.path.join(MODELS, "mlp-2l"), center_unembed=True, center_writing_weights=True, fold_ln=True,
                    refactor_factored_attn_matrices=True)
model.set_tokenizer(byte_tokenizer(), default_padding_side="right")
model.set_use_attn_result(True)

prompt_format = "When {} and {} went in, {} gave it to "
names = [("Jacob", "Moses"), ("Aaron", "David"), ("Isaac", "Peter"), ("Sarah", "Caleb")]
prompts = []
answers = []
answer_tokens = []
for i in range(len(names)):
    for j in range(2):
        answers.append((names[i][j], names[i][1 - j]))
        # the answer is the first byte of the name
        answer_tokens.append((model.to_single_token(answers[-1][0][0]), model.to_single_token(answers[-1][1][0])))
        # the *incorrect* answer goes in the prompt: the correct one is the indirect object
        prompts.append(prompt_format.format(names[i][0], names[i][1], answers[-1][1]))
answer_tokens = torch.tensor(answer_tokens)
print(prompts)
print(answers)
tokens = model.to_tokens(prompts, prepend_bos=False)
original_logits, cache = model.run_with_cache(tokens)


def logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=False):
    final_logits = logits[:, -1, :]  # only the final logits are relevant for the answer
    answer_logits = final_logits.gather(dim=-1, index=answer_tokens)
    answer_logit_diff = answer_logits[:, 0] - answer_logits[:, 1]
    if per_prompt:
        return answer_logit_diff
    return answer_logit_diff.mean()


show("Per prompt logit difference", logits_to_ave_logit_diff(original_logits, answer_tokens, per_prompt=True))
original_average_logit_diff = logits_to_ave_logit_diff(original_logits, answer_tokens)
print(f"Average logit difference: {original_average_logit_diff.item():.4f}")

corrupted_prompts = []
for i in range(0, len(prompts), 2):
    corrupted_prompts.append(prompts[i + 1])
    corrupted_prompts.append(prompts[i])
corrupted_tokens = model.to_tokens(corrupted_prompts, prepend_bos=False)
corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens, return_type="logits")
corrupted_average_logit_diff = logits_to_ave_logit_diff(corrupted_logits, answer_tokens)
print(f"Corrupted Average Logit Diff: {corrupted_average_logit_diff.item():.4f}")
print(f"Clean Average Logit Diff: {original_average_logit_diff.item():.4f}")


def patch_residual_component(corrupted_residual_component, hook, pos, clean_cache):
    corrupted_residual_component = corrupted_residual_component.clone()
    corrupted_residual_component[:, pos, :] = clean_cache[hook.name][:, pos, :]
    return corrupted_residual_component


def normalize_patched_logit_diff(patched_logit_diff):
    # 0: no change, 1: the clean performance recovered
    return (patched_logit_diff - corrupted_average_logit_diff) / (
        original_average_logit_diff - corrupted_average_logit_diff)


patched_residual_stream_diff = torch.zeros(model.cfg.n_layers, tokens.shape[1])
for layer in range(model.cfg.n_layers):
    for position in range(tokens.shape[1]):
        hook_fn = partial(patch_residual_component, pos=position, clean_cache=cache)
        patched_logits = model.run_with_hooks(corrupted_tokens, return_type="logits",
                                              fwd_hooks=[(utils.get_act_name("resid_pre", layer), hook_fn)])
        patched_logit_diff = logits_to_ave_logit_diff(patched_logits, answer_tokens)
        patched_residual_stream_diff[layer, position] = normalize_patched_logit_diff(patched_logit_diff)
show("Logit difference from patched residual stream", patched_residual_stream_diff)

patched_attn_diff = torch.zeros(model.cfg.n_layers, tokens.shape[1])
patched_mlp_diff = torch.zeros(model.cfg.n_layers, tokens.shape[1])
for layer in range(model.cfg.n_layers):
    for position in range(tokens.shape[1]):
        hook_fn = partial(patch_residual_component, pos=position, clean_cache=cache)
        patched_attn_logits = model.run_with_hooks(corrupted_tokens, return_type="logits",
                                                   fwd_hooks=[(utils.get_act_name("attn_out", layer), hook_fn)])
        patched_attn_logit_diff = logits_to_ave_logit_diff(patched_attn_logits, answer_tokens)
        patched_mlp_logits = model.run_with_hooks(corrupted_tokens, return_type="logits",
                                                  fwd_hooks=[(utils.get_act_name("mlp_out", layer), hook_fn)])
        patched_mlp_logit_diff = logits_to_ave_logit_diff(patched_mlp_logits, answer_tokens)
        patched_attn_diff[layer, position] = normalize_patched_logit_diff(patched_attn_logit_diff)
        patched_mlp_diff[layer, position] = normalize_patched_logit_diff(patched_mlp_logit_diff)
show("Logit difference from patched attention layer", patched_attn_diff)
show("Logit difference from patched MLP layer", patched_mlp_diff)


def patch_head_vector(corrupted_head_vector, hook, head_index, clean_cache):
    corrupted_head_vector = corrupted_head_vector.clone()
    corrupted_head_vector[:, :, head_index, :] = clean_cache[hook.name][:, :, head_index, :]
    return corrupted_head_vector


def patch_head_pattern(corrupted_head_pattern, hook, head_index, clean_cache):
    corrupted_head_pattern = corrupted_head_pattern.clone()
    corrupted_head_pattern[:, head_index, :, :] = clean_cache[hook.name][:, head_index, :, :]
    return corrupted_head_pattern


for title, act, patch in [("Logit difference from patched head output", "z", patch_head_vector),
                          ("Logit difference from patched head value", "v", patch_head_vector),
                          ("Logit difference from patched head pattern", "attn", patch_head_pattern)]:
    patched_head_diff = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head_index in range(model.cfg.n_heads):
            hook_fn = partial(patch, head_index=head_index, clean_cache=cache)
            patched_logits = model.run_with_hooks(corrupted_tokens, return_type="logits",
                                                  fwd_hooks=[(utils.get_act_name(act, layer, "attn"), hook_fn)])
            patched_logit_diff = logits_to_ave_logit_diff(patched_logits, answer_tokens)
            patched_head_diff[layer, head_index] = normalize_patched_logit_diff(patched_logit_diff)
    show(title, patched_head_diff)
