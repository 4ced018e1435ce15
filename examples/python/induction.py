"""Induction heads, as TransformerLens's Main Demo ("Finding induction heads", "Induction loss
over training") and Exploratory Analysis Demo ("Finding induction heads") find them, written
with libcircuits. Its TransformerLens twin is tl/induction.py; both print the same numbers
(examples/python/expected/induction.txt, checked by bindings/python/tests/test_demos.py).

What changed from the notebooks: the import and the loading lines; the models (GPT-2 small and
distilgpt2 -> the bundled tiny-random-gpt2 and the trained attn-only-2l, whose training
checkpoints replace SoLU-2L's); random tokens come from numpy in both scripts (identical inputs;
the notebooks call torch.randint) and tensor code is numpy's instead of torch/einops.

    python examples/python/induction.py
"""

import os

import numpy as np

from circuits import HookedTransformer, evals, utils

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")


def show(label, x):
    print(f"{label}: {np.round(utils.to_numpy(x).astype(np.float64), 4).tolist()}")


model = HookedTransformer.from_pretrained(os.path.join(MODELS, "tiny-random-gpt2"))

# --- Main Demo: loss by position on repeated random tokens --------------------------------
batch_size = 10
seq_len = 50
rng = np.random.default_rng(0)
random_tokens = rng.integers(100, model.cfg.d_vocab, (batch_size, seq_len))
repeated_tokens = np.concatenate([random_tokens, random_tokens], axis=1)  # "batch seq_len -> batch (2 seq_len)"
repeated_logits = model(repeated_tokens)
correct_log_probs = model.loss_fn(repeated_logits, repeated_tokens, per_token=True)
loss_by_position = correct_log_probs.mean(0)  # "batch position -> position", mean
show("Loss by position on random repeated tokens", loss_by_position)

# --- Main Demo: the induction score of every head, from a hook on every pattern -------------
induction_score_store = np.zeros((model.cfg.n_layers, model.cfg.n_heads), np.float32)


def induction_score_hook(pattern, hook):
    # the diagonal of attention paid from each destination to the source seq_len - 1 tokens back
    induction_stripe = np.diagonal(pattern, offset=1 - seq_len, axis1=-2, axis2=-1)
    induction_score = induction_stripe.mean(axis=(0, 2))  # "batch head_index position -> head_index"
    induction_score_store[hook.layer(), :] = induction_score


pattern_hook_names_filter = lambda name: name.endswith("pattern")  # noqa: E731
model.run_with_hooks(repeated_tokens, return_type=None,
                     fwd_hooks=[(pattern_hook_names_filter, induction_score_hook)])
show("Induction score by head", induction_score_store)

# --- the same on a second model (the notebook's distilgpt2): attn-only-2l reads bytes -------
attn_only = HookedTransformer.from_pretrained(os.path.join(MODELS, "attn-only-2l"))
letters = rng.integers(97, 123, (batch_size, seq_len))  # a-z: bytes the model saw in training
repeated_letters = np.concatenate([letters, letters], axis=1)
attn_only_induction_score_store = np.zeros((attn_only.cfg.n_layers, attn_only.cfg.n_heads), np.float32)


def attn_only_induction_score_hook(pattern, hook):
    induction_stripe = np.diagonal(pattern, offset=1 - seq_len, axis1=-2, axis2=-1)
    attn_only_induction_score_store[hook.layer(), :] = induction_stripe.mean(axis=(0, 2))


attn_only.run_with_hooks(repeated_letters, return_type=None,
                         fwd_hooks=[(pattern_hook_names_filter, attn_only_induction_score_hook)])
show("Induction score by head in attn-only-2l", attn_only_induction_score_store)

# --- Exploratory Analysis Demo: previous-token, duplicate-token and induction scores --------
seq_len = 100
batch_size = 2
prev_token_scores = np.zeros((attn_only.cfg.n_layers, attn_only.cfg.n_heads), np.float32)
duplicate_token_scores = np.zeros((attn_only.cfg.n_layers, attn_only.cfg.n_heads), np.float32)
induction_scores = np.zeros((attn_only.cfg.n_layers, attn_only.cfg.n_heads), np.float32)


def prev_token_hook(pattern, hook):
    diagonal = np.diagonal(pattern, offset=1, axis1=-1, axis2=-2)
    prev_token_scores[hook.layer()] = diagonal.mean(axis=(0, 2))


def duplicate_token_hook(pattern, hook):
    diagonal = np.diagonal(pattern, offset=seq_len, axis1=-1, axis2=-2)
    duplicate_token_scores[hook.layer()] = diagonal.mean(axis=(0, 2))


def induction_hook(pattern, hook):
    diagonal = np.diagonal(pattern, offset=seq_len - 1, axis1=-1, axis2=-2)
    induction_scores[hook.layer()] = diagonal.mean(axis=(0, 2))


original_tokens = rng.integers(97, 123, (batch_size, seq_len))
repeated_tokens = np.concatenate([original_tokens, original_tokens], axis=1)
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
first_half_tokens = rng.integers(97, 123, (4, 100))
induction_losses = []
for step in checkpoints:
    model_for_this_checkpoint = HookedTransformer.from_pretrained(
        os.path.join(MODELS, "attn-only-2l-checkpoints", step))
    # TransformerLens's induction_loss draws torch.randint(100, 20000), beyond this model's 256
    # ids: both scripts hand it the same tokens (here the keyword first_half_tokens)
    induction_loss_for_this_checkpoint = evals.induction_loss(
        model_for_this_checkpoint, batch_size=4, subseq_len=100, prepend_bos=False, device="cpu",
        first_half_tokens=first_half_tokens).item()
    induction_losses.append(induction_loss_for_this_checkpoint)
show("Induction loss over training", induction_losses)
