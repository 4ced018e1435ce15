"""Losses and evals (issue 14 section 3) against TransformerLens 3.9 on the bundled
tiny-random-gpt2: references written by tests/reference/generate_evals.py
(tests/reference/toolkit/evals/). Every comparison is on identical token inputs."""

from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest

import circuits
from circuits import evals, utils
from conftest import REPO, TINY_GPT2, TOL_LOSS
import safetensors_np

REF = REPO / "tests" / "reference" / "toolkit" / "evals"


@pytest.fixture(scope="module")
def ref():
    return json.loads((REF / "evals.json").read_text()), safetensors_np.load(str(REF / "evals.safetensors"))


@pytest.fixture(scope="module")
def model():
    with circuits.HookedTransformer.from_pretrained(TINY_GPT2) as m:
        yield m


def printed(fn, *args, **kw) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert fn(*args, **kw) is None  # TransformerLens's test_prompt returns nothing
    return buf.getvalue()


def test_lm_cross_entropy_loss_and_loss_fn(model, ref):
    j, t = ref
    tokens, mask = t["loss_tokens"], t["loss_mask"]
    logits = model(tokens)
    assert abs(float(model.loss_fn(logits, tokens)) - j["loss"]) < TOL_LOSS
    assert abs(float(utils.lm_cross_entropy_loss(logits, tokens)) - j["forward_loss"]) < TOL_LOSS
    np.testing.assert_allclose(model.loss_fn(logits, tokens, per_token=True), t["loss_per_token"], atol=TOL_LOSS)
    np.testing.assert_allclose(utils.lm_cross_entropy_loss(logits, tokens, mask, per_token=True),
                               t["loss_per_token_masked"], atol=TOL_LOSS)
    assert abs(float(utils.lm_cross_entropy_loss(logits, tokens, mask.astype(bool))) - j["loss_masked"]) < TOL_LOSS
    # one sequence without its batch axis, as TransformerLens's broadcasting allows
    np.testing.assert_allclose(utils.lm_cross_entropy_loss(logits[1], tokens[1], per_token=True),
                               t["loss_per_token"][1:2], atol=TOL_LOSS)


def test_lm_cross_entropy_loss_refusals(model, ref):
    _, t = ref
    tokens = t["loss_tokens"]
    logits = model(tokens)
    with pytest.raises(circuits.ShapeError, match="same shape as tokens"):
        utils.lm_cross_entropy_loss(logits, tokens, np.ones((3, 8), np.int32))
    with pytest.raises(circuits.ShapeError, match=r"\[batch, pos, d_vocab\]"):
        utils.lm_cross_entropy_loss(logits, tokens[:, :5])
    with pytest.raises(circuits.ShapeError, match="at least 2 positions"):
        utils.lm_cross_entropy_loss(logits[:, :1], tokens[:, :1])
    with pytest.raises(TypeError, match="integer"):
        utils.lm_cross_entropy_loss(logits, tokens.astype(np.float32))
    bad = tokens.copy()
    bad[0, 3] = 1000
    with pytest.raises(circuits.CircuitsError):
        utils.lm_cross_entropy_loss(logits, bad)


@pytest.mark.parametrize("which,args,kw", [
    ("test_prompt_single", ("Mary",), {}),
    ("test_prompt_multi", (["Mary", " John", "the"],), {"top_k": 5}),
    ("test_prompt_no_bos", ("John",), {"prepend_bos": False, "top_k": 3}),
])
def test_test_prompt_prints_transformerlens_report(model, ref, which, args, kw):
    prompt = "After John and Mary went to the store, John gave a bottle of milk to"
    assert printed(utils.test_prompt, prompt, *args, model, **kw) == ref[0][which]


def test_test_prompt_quiet_prints_only_the_ranks(model):
    out = printed(utils.test_prompt, "After John and Mary", "went", model, print_details=False)
    assert out.startswith("Ranks of the answer tokens: [") and out.count("\n") == 1


def test_induction_loss_on_transformerlens_tokens(model, ref):
    j, t = ref
    first = t["induction_first_half"]
    got = evals.induction_loss(model, batch_size=3, subseq_len=40, device="cpu", first_half_tokens=first)
    assert abs(float(got) - j["induction_loss"]) < TOL_LOSS
    got = evals.induction_loss(model, prepend_bos=False, first_half_tokens=first)
    assert abs(float(got) - j["induction_loss_no_bos"]) < TOL_LOSS


def test_induction_loss_own_tokens_are_seeded_and_in_range(model):
    a = evals.induction_tokens(3, 40, model.cfg.d_vocab, seed=5)
    assert a.shape == (3, 40) and a.min() >= 100 and a.max() < model.cfg.d_vocab
    np.testing.assert_array_equal(a, evals.induction_tokens(3, 40, model.cfg.d_vocab, seed=5))
    assert not np.array_equal(a, evals.induction_tokens(3, 40, model.cfg.d_vocab, seed=6))
    assert evals.induction_tokens(1, 50, 60).max() < 60  # vocabulary below 100: from 0
    l1 = evals.induction_loss(model, batch_size=2, subseq_len=30, seed=5)
    assert l1 == evals.induction_loss(model, batch_size=2, subseq_len=30, seed=5)
    assert 5.0 < l1 < 9.0  # a random model: about ln(1000) = 6.9
    with pytest.raises(ValueError, match="device must be None or 'cpu'"):
        evals.induction_loss(model, device="cuda")


def test_sanity_check(model, ref):
    assert abs(float(evals.sanity_check(model)) - ref[0]["sanity_check"]) < TOL_LOSS


def test_evaluate_on_dataset(model, ref):
    j, t = ref
    data = t["dataset_tokens"]
    assert abs(evals.evaluate_on_dataset(model, data, batch_size=4) - j["evaluate_on_dataset"]) < TOL_LOSS
    assert abs(evals.evaluate_on_dataset(model, data, truncate=2, batch_size=4)
               - j["evaluate_on_dataset_truncate_2"]) < TOL_LOSS
    loader = [{"tokens": data[i:i + 4]} for i in range(0, 20, 4)]  # a TransformerLens-style loader
    assert abs(evals.evaluate_on_dataset(model, loader) - j["evaluate_on_dataset"]) < TOL_LOSS


def test_ioi_dataset_samples_and_eval(model, ref):
    j, _ = ref
    ds = evals.IOIDataset(model.tokenizer, num_samples=30, seed=42)
    assert ds.samples == j["ioi_default_samples"]
    item = ds[0]
    assert item["prompt"][0] == model.tokenizer.bos_token_id and item["prompt"].dtype == np.int64
    got = evals.ioi_eval(model, dataset=ds, batch_size=8)
    assert got["Accuracy"] == pytest.approx(j["ioi_default"]["Accuracy"])
    assert abs(got["Logit Difference"] - j["ioi_default"]["Logit Difference"]) < 1e-5
    ds2 = evals.IOIDataset(model.tokenizer, num_samples=24, symmetric=True, seed=7, **j["ioi_custom_args"])
    assert ds2.samples == j["ioi_custom_samples"]
    got = evals.ioi_eval(model, dataset=ds2, batch_size=5)
    assert got["Accuracy"] == pytest.approx(j["ioi_custom"]["Accuracy"])
    assert abs(got["Logit Difference"] - j["ioi_custom"]["Logit Difference"]) < 1e-5
    random.seed(0)


def test_utils_helpers():
    assert utils.get_act_name("pattern", 1) == "blocks.1.attn.hook_pattern"
    assert utils.get_act_name("scale", 4, "ln1") == "blocks.4.ln1.hook_scale"
    a = np.arange(60).reshape(3, 4, 5)
    assert utils.get_corner(a, 2).shape == (2, 2, 2)
    assert utils.to_numpy([1, 2]).tolist() == [1, 2] and utils.to_numpy(a) is a
    assert utils.remove_batch_dim(a[:1]).shape == (4, 5) and utils.remove_batch_dim(a).shape == (3, 4, 5)
    assert utils.get_device() == "cpu"
