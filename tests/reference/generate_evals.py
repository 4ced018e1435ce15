"""Reference outputs of TransformerLens 3.9's losses and evals (issue 14 section 3) on the
bundled tiny-random-gpt2, for bindings/python/tests/test_evals.py:

    /opt/refenv/bin/python tests/reference/generate_evals.py

writes tests/reference/toolkit/evals/: evals.safetensors (tokens, masks, losses, induction
tokens) and evals.json (scalars, test_prompt's printed reports, IOI samples). The model is
loaded as HookedTransformer.from_pretrained would (examples/python/tl/tl_load.py). Never
touches the network.
"""

import contextlib
import io
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "examples", "python", "tl"))
sys.dont_write_bytecode = True

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tl_load import load_tl  # noqa: E402
from transformer_lens import evals  # noqa: E402
from transformer_lens import utilities as utils  # noqa: E402

OUT = os.path.join(HERE, "toolkit", "evals")
MODEL = os.path.join(REPO, "examples", "models", "tiny-random-gpt2")


def printed(fn, *args, **kw) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(*args, **kw)
    return buf.getvalue()


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    model = load_tl(MODEL)
    V = model.cfg.d_vocab
    g = torch.Generator().manual_seed(14)
    t: dict = {}
    j: dict = {"model": "examples/models/tiny-random-gpt2", "transformer_lens": "3.9.0"}

    # losses: plain, per token, and with a mask (left padding on row 0, right padding on row 2)
    tokens = torch.randint(0, V, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.int64)
    mask[0, :3] = 0
    mask[2, 6:] = 0
    logits = model(tokens)
    t["loss_tokens"] = tokens.to(torch.int32)
    t["loss_mask"] = mask.to(torch.int32)
    t["loss_per_token"] = model.loss_fn(logits, tokens, per_token=True)
    t["loss_per_token_masked"] = utils.lm_cross_entropy_loss(logits, tokens, mask, per_token=True)
    j["loss"] = model.loss_fn(logits, tokens).item()
    j["loss_masked"] = utils.lm_cross_entropy_loss(logits, tokens, mask).item()
    j["forward_loss"] = model(tokens, return_type="loss").item()

    # test_prompt's reports
    prompt = "After John and Mary went to the store, John gave a bottle of milk to"
    j["test_prompt_single"] = printed(utils.test_prompt, prompt, "Mary", model)
    j["test_prompt_multi"] = printed(utils.test_prompt, prompt, ["Mary", " John", "the"], model, top_k=5)
    j["test_prompt_no_bos"] = printed(utils.test_prompt, prompt, "John", model, prepend_bos=False, top_k=3)

    # induction_loss on TransformerLens's own draw: torch.randint(100, 20000) capped at d_vocab
    # (the bundled model has 1000 ids), seeded, recorded
    drawn = []
    real_randint = torch.randint

    def randint(low, high, size, **kw):
        x = real_randint(low, min(high, V), size, generator=torch.Generator().manual_seed(0))
        drawn.append(x.clone())
        return x

    torch.randint = randint
    try:
        j["induction_loss"] = evals.induction_loss(model, batch_size=3, subseq_len=40, device="cpu").item()
        j["induction_loss_no_bos"] = evals.induction_loss(model, batch_size=3, subseq_len=40, prepend_bos=False,
                                                          device="cpu").item()
    finally:
        torch.randint = real_randint
    assert torch.equal(drawn[0], drawn[1])
    t["induction_first_half"] = drawn[0].to(torch.int32)

    j["sanity_check"] = evals.sanity_check(model).item()

    # evaluate_on_dataset over 5 batches of 4 rows (truncate=2: TransformerLens stops after 3)
    data = torch.randint(0, V, (20, 12), generator=g)
    t["dataset_tokens"] = data.to(torch.int32)
    loader = [{"tokens": data[i:i + 4]} for i in range(0, 20, 4)]
    j["evaluate_on_dataset"] = evals.evaluate_on_dataset(model, loader, device="cpu")
    j["evaluate_on_dataset_truncate_2"] = evals.evaluate_on_dataset(model, loader, truncate=2, device="cpu")

    # IOI: the default dataset (John/Mary) and a custom one, seeded
    ds = evals.IOIDataset(model.tokenizer, num_samples=30, seed=42)
    j["ioi_default_samples"] = ds.samples
    j["ioi_default"] = evals.ioi_eval(model, dataset=ds, batch_size=8)
    custom = dict(templates=["When [A] and [B] went to the [PLACE], [B] gave a [THING] to [A]"],
                  names=["John", "Mary", "Tom", "Anne", "Sc"], nouns={"PLACE": ["store", "park"],
                                                                      "THING": ["ball", "book"]})
    ds2 = evals.IOIDataset(model.tokenizer, num_samples=24, symmetric=True, seed=7, **custom)
    j["ioi_custom_args"] = custom
    j["ioi_custom_samples"] = ds2.samples
    j["ioi_custom"] = evals.ioi_eval(model, dataset=ds2, batch_size=5)
    random.seed(0)

    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(OUT, "evals.safetensors"))
    with open(os.path.join(OUT, "evals.json"), "w") as f:
        json.dump(j, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
