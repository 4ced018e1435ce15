"""circuits.patching against TransformerLens's patching functions (tests/reference/toolkit/patching/,
written by tests/reference/generate_patching.py): every get_act_patch_* grid and the "every"
sweeps with a built-in metric and with the same metric as a Python callable, the generic
Python path for other patch setters, and ablation through Python."""

from __future__ import annotations

import numpy as np
import pytest

import safetensors_np
from conftest import CASES_DIR, REPO

import circuits
import circuits.patching as patching

REF = REPO / "tests" / "reference" / "toolkit" / "patching"
CASES = ("tl_2l_lnpre_gelu", "tl_gqa_rotary_rms", "tl_shortformer_relu", "tl_attn_only_2l_none")
GRIDS = (
    "resid_pre", "resid_mid", "attn_out", "mlp_out",
    "attn_head_out_by_pos", "attn_head_q_by_pos", "attn_head_k_by_pos", "attn_head_v_by_pos",
    "attn_head_pattern_by_pos", "attn_head_pattern_dest_src_pos",
    "attn_head_out_all_pos", "attn_head_q_all_pos", "attn_head_k_all_pos", "attn_head_v_all_pos",
    "attn_head_pattern_all_pos",
)
TOL = 1e-4


def close(got, want) -> bool:
    return got.shape == want.shape and float(np.max(np.abs(got - want))) <= TOL * max(1.0, float(np.max(np.abs(want))))


@pytest.fixture(scope="module", params=CASES)
def setup(request):
    ref = safetensors_np.load(str(REF / f"{request.param}.safetensors"))
    model = circuits.Model.from_pretrained_no_processing(str(CASES_DIR / request.param))
    _, cache = model.run_with_cache(ref["clean_tokens"])
    yield model, cache, ref
    model.close()


def test_grids_builtin_metric(setup):
    model, cache, ref = setup
    metric = patching.LogitDiff(ref["answer"], ref["wrong"])
    rowpos = patching.LogitDiff(ref["answer"], ref["wrong"], pos=ref["positions"])
    loss = patching.Loss(ref["corrupted_tokens"])
    n = 0
    for fn in GRIDS:
        f = getattr(patching, "get_act_patch_" + fn)
        for prefix, m in (("logit_diff", metric), ("rowpos", rowpos), ("loss", loss)):
            key = f"{prefix}.{fn}"
            if key in ref:
                got = f(model, ref["corrupted_tokens"], cache, m)
                assert close(got, ref[key]), key
                n += 1
    assert n >= 15


def test_grids_python_metric(setup):
    """A TransformerLens-style Python metric, called from C once per cell."""
    model, cache, ref = setup
    a, w = ref["answer"], ref["wrong"]
    rows = np.arange(len(a))

    def logit_diff(logits):
        return (logits[rows, -1, a] - logits[rows, -1, w]).mean()

    for fn in ("resid_pre", "attn_head_out_by_pos", "attn_head_pattern_all_pos"):
        got = getattr(patching, "get_act_patch_" + fn)(model, ref["corrupted_tokens"], cache, logit_diff)
        assert close(got, ref["logit_diff." + fn]), fn


def test_every(setup):
    model, cache, ref = setup
    metric = patching.LogitDiff(ref["answer"], ref["wrong"])
    tok = ref["corrupted_tokens"]
    if "every.block" in ref:
        assert close(patching.get_act_patch_block_every(model, tok, cache, metric), ref["every.block"])
    assert close(patching.get_act_patch_attn_head_all_pos_every(model, tok, cache, metric), ref["every.head_all_pos"])
    got = patching.get_act_patch_attn_head_by_pos_every(model, tok, cache, metric, incremental=False)
    assert close(got, ref["every.head_by_pos"])


def test_generic_python_path(setup):
    """A patch setter that is not TransformerLens's runs through Python hooks, as in TL; with
    TL's setter it must give the C grid."""
    model, cache, ref = setup
    metric = patching.LogitDiff(ref["answer"], ref["wrong"])
    tok = ref["corrupted_tokens"]

    def my_setter(act, index, clean):
        return patching.layer_pos_patch_setter(act, index, clean)

    got = patching.generic_activation_patch(model, tok, cache, metric, my_setter, "resid_pre", ("layer", "pos"))
    assert close(got, ref["logit_diff.resid_pre"])


def test_metric_errors(setup):
    model, cache, ref = setup
    tok = ref["corrupted_tokens"]

    def bad(logits):
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        patching.get_act_patch_resid_pre(model, tok, cache, bad)
    with pytest.raises(circuits.ShapeError):
        patching.get_act_patch_resid_pre(model, tok[:1], cache, patching.LogitDiff(ref["answer"][:1], ref["wrong"][:1]))
    with pytest.raises(circuits.RangeError):
        patching.get_act_patch_resid_pre(model, tok, cache, patching.LogitDiff([10**6, 1], [1, 1]))
    assert patching.LogitDiff(ref["answer"], ref["wrong"])(model(tok)) == pytest.approx(
        float(np.mean([model(tok)[b, -1, ref["answer"][b]] - model(tok)[b, -1, ref["wrong"][b]] for b in range(2)])),
        abs=1e-5)


def test_ablation():
    model = circuits.Model.from_pretrained_no_processing(str(CASES_DIR / "tl_2l_lnpre_gelu"))
    rng = np.random.default_rng(0)
    tok = rng.integers(0, 50, (6, 5))

    def zero_head(z, hook):
        z[:, :, 1] = 0.0

    want = model.run_with_hooks(tok, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)])
    got = patching.run_ablated(model, tok, [patching.Ablation("z1", head=1)])
    assert np.array_equal(got, want)
    means = patching.mean_activations(model, tok, ["resid_pre1", "blocks.0.mlp.hook_post"], batch_size=4)
    _, cache = model.run_with_cache(tok)
    assert np.allclose(means["blocks.1.hook_resid_pre"], cache["resid_pre", 1].mean(0), atol=1e-6)
    m = means["blocks.0.mlp.hook_post"]

    def mean_neuron(post, hook):
        post[:, 2, 7] = m[2, 7]

    want = model.run_with_hooks(tok, fwd_hooks=[("blocks.0.mlp.hook_post", mean_neuron)])
    got = patching.run_ablated(model, tok, [patching.Ablation("blocks.0.mlp.hook_post", "mean", neuron=7, position=2,
                                                              values=m)])
    assert np.array_equal(got, want)
    src = cache["v", 0][:3].copy()
    out = patching.run_ablated(model, tok, [patching.Ablation("v0", "resample", head=0, values=src, seed=3)],
                               return_type="both")
    assert out.logits.shape == (6, 5, 50) and np.isfinite(out.loss)
    with pytest.raises(circuits.ShapeError):
        patching.run_ablated(model, tok, [patching.Ablation("v0", "mean", values=src)])
    model.close()
