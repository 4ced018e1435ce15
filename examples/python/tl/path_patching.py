"""TransformerLens twin of examples/python/path_patching.py: the same demo cells with
TransformerLens 3.9 and torch, on the same weights and prompts. Run by
examples/python/generate_expected.py (/opt/refenv/bin/python), which commits its output as
examples/python/expected/path_patching.txt."""

import os
from functools import partial

import numpy as np
import torch
from tl_load import REPO, byte_tokenizer, load_tl_dir
from transformer_lens import utilities as utils

MODELS = os.path.join(REPO, "examples", "models")


def show(label, x):
    print(f"{label}: {np.round(utils.to_numpy(x).astype(np.float64), 4).tolist()}")


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
        answer_tokens.append((model.to_single_token(answers[-1][0][0]), model.to_single_token(answers[-1][1][0])))
        prompts.append(prompt_format.format(names[i][0], names[i][1], answers[-1][1]))
answer_tokens = torch.tensor(answer_tokens)
tokens = model.to_tokens(prompts, prepend_bos=False)
original_logits, cache = model.run_with_cache(tokens)
corrupted_prompts = []
for i in range(0, len(prompts), 2):
    corrupted_prompts.append(prompts[i + 1])
    corrupted_prompts.append(prompts[i])
corrupted_tokens = model.to_tokens(corrupted_prompts, prepend_bos=False)
corrupted_logits, corrupted_cache = model.run_with_cache(corrupted_tokens, return_type="logits")


def logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=False):
    final_logits = logits[:, -1, :]
    answer_logits = final_logits.gather(dim=-1, index=answer_tokens)
    answer_logit_diff = answer_logits[:, 0] - answer_logits[:, 1]
    if per_prompt:
        return answer_logit_diff
    return answer_logit_diff.mean()


original_average_logit_diff = logits_to_ave_logit_diff(original_logits, answer_tokens)
corrupted_average_logit_diff = logits_to_ave_logit_diff(corrupted_logits, answer_tokens)


def normalize_patched_logit_diff(patched_logit_diff):
    return (patched_logit_diff - corrupted_average_logit_diff) / (
        original_average_logit_diff - corrupted_average_logit_diff)


def _get_attention_weights(attn, attn_act_type):
    if attn_act_type == "q":
        return attn.W_Q
    if attn_act_type == "k":
        return attn.W_K
    if attn_act_type == "v":
        return attn.W_V
    raise ValueError


def patch_direct_path_A_output_to_B_attn_act(corrupted_attn_act, hook, attn_act_type, A_layer, A_head_index,
                                             B_layer, B_head_index, clean_cache, corrupted_cache):
    A_output_act_name = utils.get_act_name("result", A_layer, "attn")
    clean_A_output = clean_cache[A_output_act_name][:, :, A_head_index, :]
    corrupted_A_output = corrupted_cache[A_output_act_name][:, :, A_head_index, :]
    corrupted_B_act = corrupted_attn_act[:, :, B_head_index, :]
    W_B = _get_attention_weights(model.blocks[B_layer].attn, attn_act_type)[B_head_index]
    corrupted_ln1_scale = corrupted_cache[utils.get_act_name("scale", B_layer, "ln1")]
    patched_B_act = corrupted_B_act + (clean_A_output - corrupted_A_output) @ W_B / corrupted_ln1_scale
    patched_attn_act = corrupted_attn_act.clone()
    patched_attn_act[:, :, B_head_index, :] = patched_B_act
    return patched_attn_act


def direct_path_output_to_attn_act_diffs(output_layer, attn_act_layer, attn_act_type):
    A_to_B_diffs = torch.zeros(model.cfg.n_heads, model.cfg.n_heads)
    for A in range(model.cfg.n_heads):
        for B in range(model.cfg.n_heads):
            patch_hook = (utils.get_act_name(attn_act_type, attn_act_layer, "attn"),
                          partial(patch_direct_path_A_output_to_B_attn_act, attn_act_type=attn_act_type,
                                  A_layer=output_layer, A_head_index=A, B_layer=attn_act_layer, B_head_index=B,
                                  clean_cache=cache, corrupted_cache=corrupted_cache))
            patched_logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[patch_hook], return_type="logits")
            patched_logit_diff = logits_to_ave_logit_diff(patched_logits, answer_tokens)
            A_to_B_diffs[A, B] = normalize_patched_logit_diff(patched_logit_diff)
    return A_to_B_diffs


for attn_act_type in ("q", "k", "v"):
    diffs = direct_path_output_to_attn_act_diffs(0, 1, attn_act_type)
    show(f"Direct path patch logit difference, L0 output to L1 {attn_act_type}", diffs)
