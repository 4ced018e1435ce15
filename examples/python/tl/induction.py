"""TransformerLens twin of examples/python/induction.py: the same demo cells with
TransformerLens 3.9 and torch, on the same weights and tokens. Run by
examples/python/generate_expected.py (/opt/refenv/bin/python), which commits its output as
examples/python/expected/induction.txt."""

import os

import einops
import numpy as np
import torch
from tl_load import REPO, load_tl, load_tl_dir
from transformer_lens import evals
from transformer_lens import utilities as utils

MODELS = os.path.join(REPO, "examples", "models")


def show(label, x):
    print(f"{label}: {np.round(utils.to_numpy(x).astype(np.float64), 4).tolist()}")


model = load_tl(os.path.join(MODELS, "tiny-random-gpt2"))

# --- Main Demo: loss by position on repeated random tokens --------------------------------
batch_size = 10
seq_len = 50
rng = np.random.default_rng(0)
random_tokens = torch.tensor(rng.integers(100, model.cfg.d_vocab, (batch_size, seq_len)))
repeated_tokens = einops.repeat(random_tokens, "batch seq_len -> batch (2 seq_len)")
repeated_logits = model(repeated_tokens)
correct_log_probs = model.loss_fn(repeated_logits, repeated_tokens, per_token=True)
loss_by_position = einops.reduce(correct_log_probs, "batch position -> position", "mean")
show("Loss by position on random repeated tokens", loss_by_position)

# --- Main Demo: the induction score of every head, from a hook on every pattern -------------
induction_score_store = torch.zeros((model.cfg.n_layers, model.cfg.n_heads))


def induction_score_hook(pattern, hook):
    induction_stripe = pattern.diagonal(dim1=-2, dim2=-1, offset=1 - seq_len)
    induction_score = einops.reduce(induction_stripe, "batch head_index position -> head_index", "mean")
    induction_score_store[hook.layer(), :] = induction_score


pattern_hook_names_filter = lambda name: name.endswith("pattern")  # noqa: E731
model.run_with_hooks(repeated_tokens, return_type=None,
                     fwd_hooks=[(pattern_hook_names_filter, induction_score_hook)])
show("Induction score by head", induction_score_store)

# --- the same on a second model (the notebook's distilgpt2): attn-only-2l reads bytes -------
attn_only = load_tl_dir(os.path.join(MODELS, "attn-only-2l"))
letters = torch.tensor(rng.integers(97, 123, (batch_size, seq_len)))
repeated_letters = einops.repeat(letters, "batch seq_len -> batch (2 seq_len)")
attn_only_induction_score_store = torch.zeros((attn_only.cfg.n_layers, attn_only.cfg.n_heads))


def attn_only_induction_score_hook(pattern, hook):
    induction_stripe = pattern.diagonal(dim1=-2, dim2=-1, offset=1 - seq_len)
    attn_only_induction_score_store[hook.layer(), :] = einops.reduce(
        induction_stripe, "batch head_index position -> head_index", "mean")


attn_only.run_with_hooks(repeated_letters, return_type=None,
                         fwd_hooks=[(pattern_hook_names_filter, attn_only_induction_score_hook)])
show("Induction score by head in attn-only-2l", attn_only_induction_score_store)

# --- Exploratory Analysis Demo: previous-token, duplicate-token and induction scores --------
seq_len = 100
batch_size = 2
prev_token_scores = torch.zeros((attn_only.cfg.n_layers, attn_only.cfg.n_heads))
duplicate_token_scores = torch.zeros((attn_only.cfg.n_layers, attn_only.cfg.n_heads))
induction_scores = torch.zeros((attn_only.cfg.n_layers, attn_only.cfg.n_heads))


def prev_token_hook(pattern, hook):
    diagonal = pattern.diagonal(offset=1, dim1=-1, dim2=-2)
    prev_token_scores[hook.layer()] = einops.reduce(diagonal, "batch head_index diagonal -> head_index", "mean")


def duplicate_token_hook(pattern, hook):
    diagonal = pattern.diagonal(offset=seq_len, dim1=-1, dim2=-2)
    duplicate_token_scores[hook.layer()] = einops.reduce(diagonal, "batch head_index diagonal -> head_index", "mean")


def induction_hook(pattern, hook):
    diagonal = pattern.diagonal(offset=seq_len - 1, dim1=-1, dim2=-2)
    induction_scores[hook.layer()] = einops.reduce(diagonal, "batch head_index diagonal -> head_index", "mean")


original_tokens = torch.tensor(rng.integers(97, 123, (batch_size, seq_len)))
repeated_tokens = einops.repeat(original_tokens, "batch seq_len -> batch (2 seq_len)")
pattern_filter = lambda act_name: act_name.endswith("hook_pattern")  # noqa: E731
loss = attn_only.run_with_hooks(repeated_tokens, return_type="loss",
                                fwd_hooks=[(pattern_filter, prev_token_hook), (pattern_filter, duplicate_token_hook),
                                           (pattern_filter, induction_hook)])
print(f"Loss on repeated tokens: {loss:.4f}")
show("Previous token scores (corner)", utils.get_corner(prev_token_scores))
show("Duplicate token scores (corner)", utils.get_corner(duplicate_token_scores))
show("Induction scores (corner)", utils.get_corner(induction_scores))

# --- Main Demo: induction loss over training (the notebook: SoLU-2L's checkpoints) ----------
checkpoints = ["step-000000", "step-000180", "step-000330", "step-000600", "step-003000"]
first_half_tokens = torch.tensor(rng.integers(97, 123, (4, 100)))
induction_losses = []
real_randint = torch.randint
torch.randint = lambda low, high, size: first_half_tokens.clone()  # the shared tokens, not torch's draw
for step in checkpoints:
    model_for_this_checkpoint = load_tl_dir(os.path.join(MODELS, "attn-only-2l-checkpoints", step))
    induction_loss_for_this_checkpoint = evals.induction_loss(
        model_for_this_checkpoint, batch_size=4, subseq_len=100, prepend_bos=False, device="cpu").item()
    induction_losses.append(induction_loss_for_this_checkpoint)
torch.randint = real_randint
show("Induction loss over training", induction_losses)
