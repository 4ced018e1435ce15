"""circuits.path_patching against plain TransformerLens hooks following ARENA
(tests/reference/toolkit/path_patching/, written by tests/reference/generate_path_patching.py), the
invariants, the Python metric callback and the ARENA-named entry points."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CASES_DIR, REPO

import circuits
import safetensors_np
from circuits.path_patching import (
    get_path_patch_head_to_final_resid_post,
    get_path_patch_head_to_heads,
    path_patch,
    path_patch_sweep,
)

REF = REPO / "tests" / "reference" / "toolkit" / "path_patching"
META = json.loads((REF / "case.json").read_text())
TOL = 1e-5


@pytest.fixture(scope="module", params=sorted(META["cases"]))
def case(request):
    name = request.param
    model = circuits.Model.from_pretrained_no_processing(CASES_DIR / name)
    ref = safetensors_np.load(str(REF / f"{name}.safetensors"))
    yield name, model, ref, META["cases"][name]
    model.close()


def _kw(ref):
    return dict(answer_tokens=ref["answer"], wrong_tokens=ref["wrong"])


def test_sweeps_match_transformerlens(case):
    _, model, ref, meta = case
    clean, corrupted = ref["clean_tokens"], ref["corrupted_tokens"]
    got = path_patch_sweep(model, clean, corrupted, "logit_diff", **_kw(ref))
    np.testing.assert_allclose(got, ref["sweep:logits"], atol=TOL, rtol=0)
    got = path_patch_sweep(model, clean, corrupted, "logit_diff", freeze_mlps=True, **_kw(ref))
    np.testing.assert_allclose(got, ref["sweep:logits:freeze_mlps"], atol=TOL, rtol=0)
    for inp, receivers in meta["receivers"].items():
        heads = [(layer, head) for layer, head, _ in receivers]
        got = path_patch_sweep(model, clean, corrupted, "logit_diff", receivers=heads, receiver_input=inp, **_kw(ref))
        np.testing.assert_allclose(got, ref[f"sweep:heads:{inp}"], atol=TOL, rtol=0)


def test_singles_match_transformerlens(case):
    _, model, ref, meta = case
    for name, s in meta["singles"].items():
        receivers = None if s["receivers"] is None else [tuple(r) for r in s["receivers"]]
        v, logits = path_patch(model, ref["clean_tokens"], ref["corrupted_tokens"], "logit_diff",
                               [tuple(x) for x in s["senders"]], receivers, freeze_mlps=s["freeze_mlps"],
                               return_logits=True, **_kw(ref))
        np.testing.assert_allclose(logits, ref[f"single:{name}:logits"], atol=TOL, rtol=0)
        assert abs(v - ref[f"single:{name}:metric"]) <= TOL


def test_invariants(case):
    _, model, ref, _ = case
    clean, corrupted = ref["clean_tokens"], ref["corrupted_tokens"]
    clean_metric = float(ref["clean_metric"])
    # no sender: the clean run; corrupted == clean: the clean metric in every cell
    assert abs(path_patch(model, clean, corrupted, "logit_diff", [], **_kw(ref)) - clean_metric) <= TOL
    grid = path_patch_sweep(model, clean, clean, "logit_diff", receivers=[(1, 0)], **_kw(ref))
    np.testing.assert_allclose(grid, np.full(grid.shape, clean_metric), atol=TOL, rtol=0)


def test_callback_metric_and_arena_names(case):
    _, model, ref, meta = case
    clean, corrupted = ref["clean_tokens"], ref["corrupted_tokens"]
    a, w = ref["answer"], ref["wrong"]
    seen = []

    def logits_to_ave_logit_diff(logits):  # ARENA's metric, on numpy logits
        seen.append(logits.shape)
        rows = np.arange(logits.shape[0])
        return float((logits[rows, -1, a] - logits[rows, -1, w]).mean())

    grid = get_path_patch_head_to_final_resid_post(model, logits_to_ave_logit_diff, corrupted, clean)
    np.testing.assert_allclose(grid, ref["sweep:logits"], atol=TOL, rtol=0)
    assert seen and all(s == (clean.shape[0], clean.shape[1], model.cfg.d_vocab_out) for s in seen)

    class Dataset:  # ARENA passes datasets with .toks
        def __init__(self, toks):
            self.toks = toks

    heads = [(layer, head) for layer, head, _ in meta["receivers"]["q"]]
    grid = get_path_patch_head_to_heads(heads, "q", model, "logit_diff", Dataset(corrupted), Dataset(clean), **_kw(ref))
    np.testing.assert_allclose(grid, ref["sweep:heads:q"][: heads[0][0]], atol=TOL, rtol=0)


def test_errors(case):
    _, model, ref, _ = case
    clean, corrupted = ref["clean_tokens"], ref["corrupted_tokens"]

    def boom(logits):
        raise KeyError("from the metric")

    with pytest.raises(KeyError, match="from the metric"):
        path_patch(model, clean, corrupted, boom, [(0, 0)])
    with pytest.raises(circuits.RangeError, match="sender 0 .* is outside"):
        path_patch(model, clean, corrupted, "logit_diff", [(0, 99)], **_kw(ref))
    with pytest.raises(ValueError, match="'q', 'k' or 'v'"):
        path_patch_sweep(model, clean, corrupted, "logit_diff", receivers=[(1, 0)], receiver_input="x", **_kw(ref))
    with pytest.raises(circuits.ShapeError, match="differ in shape"):
        path_patch(model, clean, corrupted[:, :-1], "logit_diff", [(0, 0)], **_kw(ref))
    with pytest.raises(ValueError, match="needs wrong_tokens"):
        path_patch(model, clean, corrupted, "logit_diff", [(0, 0)], answer_tokens=ref["answer"])
    # the model still runs normally afterwards, with no hook left behind
    np.testing.assert_allclose(model(clean), ref["clean_logits"], atol=TOL, rtol=0)


def test_loss_metric_is_the_clean_loss_without_senders(case):
    _, model, ref, _ = case
    clean, corrupted = ref["clean_tokens"], ref["corrupted_tokens"]
    got = path_patch(model, clean, corrupted, "loss", [])
    assert abs(got - model(clean, return_type="loss")) <= TOL


def test_metric_object_with_struct(case):
    """A built-in metric object (anything with _struct(batch, pos), as circuits.patching's LogitDiff) is
    evaluated in C, not called back."""
    _, model, ref, _ = case
    from circuits import _native as N
    from circuits._metric import make_metric

    class LogitDiffObject:
        def __init__(self, answer, wrong):
            self.answer, self.wrong = answer, wrong

        def _struct(self, batch, pos):
            mc = make_metric("logit_diff", batch, pos, answer_tokens=self.answer, wrong_tokens=self.wrong)
            assert mc.struct.kind == N.CIRCUITS_METRIC_LOGIT_DIFF
            return mc.struct, mc

        def __call__(self, logits):
            raise AssertionError("a metric with _struct is evaluated in C")

    grid = path_patch_sweep(model, ref["clean_tokens"], ref["corrupted_tokens"],
                            LogitDiffObject(ref["answer"], ref["wrong"]))
    np.testing.assert_allclose(grid, ref["sweep:logits"], atol=TOL, rtol=0)
