#!/usr/bin/env python3
"""make_model.py DIR: the benchmark model, a GPT-2-small-shaped GPT2LMHeadModel with random
weights (transformers' GPT2Config defaults: 12 layers, d_model 768, 12 heads, vocab 50257,
n_ctx 1024; seed 0), saved as config.json + model.safetensors (fp32, ~500 MB). Does nothing if
DIR already holds it: bench/run.py caches it under bench/.cache/ (git-ignored)."""
import os, sys


def main(path):
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return 0
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    model.save_pretrained(path, safe_serialization=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
