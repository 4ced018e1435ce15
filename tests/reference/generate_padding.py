#!/usr/bin/env python3
"""TransformerLens's outputs on padded batches (issue 14, "Batches of different lengths").

Run with the reference venv from any directory:

    /opt/refenv/bin/python tests/reference/generate_padding.py

For a few existing cases (standard positions, rotary, grouped-query rotary; their model files in
cases/<name>/ are the inputs) it runs HookedTransformer 3.9 on a batch of rows of different
lengths, padded on the left and on the right, with an explicit attention_mask, and writes to
toolkit/padding/<case>.safetensors: the tokens and mask of each side, the logits, the mean and
per-token loss (return_type="loss", attention_mask=...), and a few hooks (run_with_cache). And
for examples/models/tiny-random-gpt2 with its tokenizer, a list of strings through TL's own
to_tokens / get_attention_mask / model(list) on both sides, with and without BOS (logits of
the first 64 tokens of the vocabulary only, to stay small), and greedy generate of the list.
bindings/python/tests/test_padding.py compares libcircuits with them. CPU, float32, fixed seed.
"""

from __future__ import annotations

import json
import os
import sys

sys.dont_write_bytecode = True
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import warnings  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tl_export import load_tl_config  # noqa: E402

from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.utilities.tokenize_utils import get_attention_mask  # noqa: E402

warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")

CASES = ["tl_gelu_new_attn_result", "tl_rotary_neox_quarter", "tl_gqa_rotary_rms"]
LENGTHS = [7, 4, 6]  # real tokens per row; the batch is padded to the longest
PAD = 0  # the pad token id written at padding (the mask, not the id, decides)
OUT = os.path.join(HERE, "toolkit", "padding")
NO_PROCESSING = dict(fold_ln=False, center_writing_weights=False, center_unembed=False,
                     fold_value_biases=False, refactor_factored_attn_matrices=False)


def hooks_of(cfg) -> list:
    last = cfg.n_layers - 1
    names = ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_attn_scores",
             "blocks.0.attn.hook_z", f"blocks.{last}.hook_resid_post", "ln_final.hook_normalized"]
    if cfg.positional_embedding_type == "rotary":
        names += ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k"]
    else:
        names += ["hook_pos_embed"]
    return names


def load(case: str) -> HookedTransformer:
    d = os.path.join(HERE, "cases", case)
    cfg = HookedTransformerConfig.from_dict(load_tl_config(d))
    model = HookedTransformer(cfg).eval()
    model.load_and_process_state_dict(dict(load_file(os.path.join(d, "model.safetensors"))), **NO_PROCESSING)
    return model


def padded(rows: list, left: bool):
    T = max(len(r) for r in rows)
    tokens = torch.full((len(rows), T), PAD, dtype=torch.int64)
    mask = torch.zeros((len(rows), T), dtype=torch.int64)
    for b, r in enumerate(rows):
        s = T - len(r) if left else 0
        tokens[b, s:s + len(r)] = torch.tensor(r)
        mask[b, s:s + len(r)] = 1
    return tokens, mask


TEXT_MODEL = os.path.join(HERE, "..", "..", "examples", "models", "tiny-random-gpt2")
TEXTS = ["Hello world, this is a test", "Hi", "The cat sat on"]


def text_case() -> None:
    """Strings through TransformerLens's own tokenization and masks: to_tokens of a list on either
    side, with and without BOS (GPT-2: BOS = EOS = pad), get_attention_mask, and the model run on
    the list of strings (TL builds a mask only for left padding)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from generate import tl_from_hf

    hf = GPT2LMHeadModel.from_pretrained(TEXT_MODEL).eval()
    model = tl_from_hf(hf, hf.config, "GPT2LMHeadModel")
    model.set_tokenizer(AutoTokenizer.from_pretrained(TEXT_MODEL))
    out = {}
    for side in ("left", "right"):
        for bos in (True, False):
            key = f"text:{side}:bos{int(bos)}"
            with torch.no_grad():
                tokens = model.to_tokens(TEXTS, prepend_bos=bos, padding_side=side)
                mask = get_attention_mask(model.tokenizer, tokens, bos, padding_side=side)
                logits, loss = model(TEXTS, return_type="both", prepend_bos=bos, padding_side=side)
                ptl = model(TEXTS, return_type="loss", loss_per_token=True, prepend_bos=bos, padding_side=side)
            out[f"{key}:tokens"] = tokens.to(torch.int32)
            out[f"{key}:mask"] = mask.to(torch.int32)
            out[f"{key}:logits[..., :64]"] = logits[..., :64].float().contiguous()  # KBs, not MBs
            out[f"{key}:loss"] = loss.reshape(1).float()
            out[f"{key}:per_token_loss"] = ptl.float().contiguous()
    # greedy generation of the list: TransformerLens pads it left and carries the mask (KV cache)
    with torch.no_grad():
        gen = model.generate(TEXTS, max_new_tokens=5, do_sample=False, stop_at_eos=False, return_type="tokens",
                             verbose=False)
    out["generate:tokens"] = gen.to(torch.int32)
    save_file(out, os.path.join(OUT, "text_tiny_random_gpt2.safetensors"),
              metadata={"texts": json.dumps(TEXTS), "transformer_lens": "3.9.0"})
    print(f"text_tiny_random_gpt2: {len(out)} tensors")


def main() -> None:
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    text_case()
    for case in CASES:
        model = load(case)
        g = torch.Generator().manual_seed(1234)
        rows = [torch.randint(1, model.cfg.d_vocab, (n,), generator=g).tolist() for n in LENGTHS]
        out = {}
        names = hooks_of(model.cfg)
        for side in ("left", "right"):
            tokens, mask = padded(rows, side == "left")
            with torch.no_grad():
                logits, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=names)
                loss = model(tokens, return_type="loss", attention_mask=mask)
                ptl = model(tokens, return_type="loss", loss_per_token=True, attention_mask=mask)
            out[f"{side}:tokens"] = tokens.to(torch.int32)
            out[f"{side}:mask"] = mask.to(torch.int32)
            out[f"{side}:logits"] = logits.float().contiguous()
            out[f"{side}:loss"] = loss.reshape(1).float()
            out[f"{side}:per_token_loss"] = ptl.float().contiguous()
            for n in names:
                out[f"{side}:hook:{n}"] = cache[n].float().contiguous()
        save_file(out, os.path.join(OUT, f"{case}.safetensors"),
                  metadata={"case": case, "lengths": json.dumps(LENGTHS), "transformer_lens": "3.9.0"})
        print(f"{case}: {len(out)} tensors")


if __name__ == "__main__":
    main()
