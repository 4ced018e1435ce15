"""The core conformance checks of tests/test_reference.c, through Python, against the same
committed TransformerLens / Hugging Face outputs (expected.safetensors of every case, read
with NumPy). The models are loaded with every processing flag off, as the references are
TransformerLens's ``from_pretrained_no_processing``.

The three hook edits are written as Python hooks: a head ablation editing ``hook_z`` in place,
activation patching of ``resid_pre`` from a cache of another prompt, and a replacement of
``hook_pattern`` by a returned array."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TOL_HOOK, TOL_LOGITS, TOL_LOSS, max_diff

import circuits


def load_raw(case):
    return circuits.Model.from_pretrained_no_processing(case.dir, use_attn_result=case.use_attn_result)


def test_forward_logits_and_loss(case):
    exp = case.expected
    tokens = exp["tokens"]
    with load_raw(case) as m:
        logits = m(tokens)
        assert logits.dtype == np.float32 and logits.shape == exp["logits"].shape
        assert max_diff(logits, exp["logits"]) <= TOL_LOGITS
        loss = m(tokens, return_type="loss")
        assert abs(float(loss) - float(exp["loss"])) <= TOL_LOSS
        ptl = m(tokens, return_type="loss", loss_per_token=True)
        assert max_diff(ptl, exp["per_token_loss"]) <= TOL_LOSS
        both = m(tokens, return_type="both")
        assert np.array_equal(both.logits, logits) and both.loss == loss
        if "hf_logits" in exp:
            assert max_diff(logits, exp["hf_logits"]) <= TOL_LOGITS


def test_every_hook_in_order(case):
    exp = case.expected
    order = case.json["hook_names_in_order"]
    with load_raw(case) as m:
        assert m.hook_names() == order, "hook points differ from TransformerLens's firing order"
        logits, cache = m.run_with_cache(exp["tokens"])
        assert list(cache.keys()) == order
        assert max_diff(logits, exp["logits"]) <= TOL_LOGITS
        n = 0
        for name in order:
            key = f"hook:{name}"
            if key not in exp:
                continue  # hooks the generator did not store (identical to stored outputs)
            assert cache[name].shape == exp[key].shape, name
            d = max_diff(cache[name], exp[key])
            assert d <= TOL_HOOK, f"{name}: max-abs diff {d:.3g}"
            n += 1
        assert n >= len(order) - len(case.json.get("hooks_not_stored", []))


def test_edits_as_python_hooks(case):
    exp = case.expected
    edits = case.json["edits"]
    if not edits:
        pytest.skip("case has no edits")
    tokens = exp["tokens"]
    with load_raw(case) as m:
        e = edits["zero_head_z"]
        head = e["head"]

        def zero_head(z, hook):
            z[:, :, head, :] = 0.0  # in place, on the live activation

        out = m.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{e['layer']}.attn.hook_z", zero_head)])
        assert max_diff(out, exp["edit:zero_head_z"]) <= TOL_LOGITS

        e = edits["patch_resid_pre"]
        pos = e["pos"]
        name = f"resid_pre{e['layer']}"  # a short name, on purpose
        _, src = m.run_with_cache(exp["tokens_patch"], names_filter=name)
        assert len(src) == 1
        clean = src[name]

        def patch(resid, hook):
            resid[:, pos, :] = clean[:, pos, :]
            return resid  # returning the activation itself is allowed

        out = m.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
        assert max_diff(out, exp["edit:patch_resid_pre"]) <= TOL_LOGITS

        e = edits["replace_pattern"]
        T = tokens.shape[1]
        tri = np.tril(np.ones((T, T), np.float32))
        uniform = tri / tri.sum(-1, keepdims=True)

        def replace_pattern(pattern, hook):
            return np.broadcast_to(uniform, pattern.shape).astype(np.float32)  # a new array

        out = m.run_with_hooks(tokens, fwd_hooks=[(e["hook"], replace_pattern)])
        assert max_diff(out, exp["edit:replace_pattern"]) <= TOL_LOGITS

        # with the temporary hooks gone, the plain forward is back to the reference
        assert max_diff(m(tokens), exp["logits"]) <= TOL_LOGITS


def test_head_ablation_by_predicate_and_mean_ablation(case):
    """Ablation over every layer via a predicate hook equals per-layer named hooks."""
    exp = case.expected
    tokens = exp["tokens"]
    with load_raw(case) as m:
        calls = []

        def ablate(z, hook):
            calls.append(hook.name)
            z[:, :, 0, :] = z[:, :, 0, :].mean(axis=(0, 1), keepdims=False)

        a = m.run_with_hooks(tokens, fwd_hooks=[(lambda n: n.endswith("attn.hook_z"), ablate)])
        assert calls == [f"blocks.{l}.attn.hook_z" for l in range(m.cfg.n_layers)]
        hooks = [(f"blocks.{l}.attn.hook_z", ablate) for l in range(m.cfg.n_layers)]
        b = m.run_with_hooks(tokens, fwd_hooks=hooks)
        assert np.array_equal(a, b)


def test_partial_runs_and_logit_positions(case):
    """stop_at_layer / start_at_layer as TransformerLens has them, and logits at chosen positions,
    against TransformerLens's hook values and the full run."""
    exp = case.expected
    tokens = exp["tokens"]
    with load_raw(case) as m:
        L = m.cfg.n_layers
        logits, cache = m.run_with_cache(tokens)
        for k in range(L + 1):
            name = f"blocks.{k}.hook_resid_pre" if k < L else f"blocks.{L - 1}.hook_resid_post"
            res = m(tokens, stop_at_layer=k)
            assert np.array_equal(res, cache[name]), name
            if k < L:
                assert np.array_equal(m(tokens, stop_at_layer=k - L), res)
            if f"hook:{name}" in exp:
                assert max_diff(res, exp[f"hook:{name}"]) <= TOL_HOOK, name
            # and starting there gives the full run's logits back, bit for bit
            assert np.array_equal(m(start_at_layer=k, residual=res), logits)
        last = m(tokens, logit_positions=[-1, 0])
        assert last.shape == (tokens.shape[0], 2, m.cfg.d_vocab_out)
        assert max_diff(last[:, 0], logits[:, -1]) <= 1e-5 and max_diff(last[:, 1], logits[:, 0]) <= 1e-5
        with pytest.raises(ValueError):
            m(tokens, stop_at_layer=1, return_type="loss")
        with pytest.raises(ValueError):
            m(start_at_layer=1)
        with pytest.raises(circuits.RangeError):
            m(tokens, stop_at_layer=L + 1)
        with pytest.raises(circuits.RangeError):
            m(tokens, logit_positions=[tokens.shape[1]])
