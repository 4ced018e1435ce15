"""The weight-processing and circuits conformance checks of tests/test_circuits.c, through
Python, against the same committed TransformerLens outputs (processed.safetensors), plus a
port of TransformerLens's induction-score recipe written as a Python hook."""

from __future__ import annotations

import numpy as np
import pytest

import safetensors_np
from conftest import CASES_DIR, NO_PROCESSED_REFERENCE, TOL_HOOK, TOL_LOGITS, TOL_LOSS, TOL_SCORE, TOL_WEIGHT, max_diff

import circuits

FLAG_ORDER = ["fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
              "refactor_factored_attn_matrices"]


def load(case, **kw):
    return circuits.Model.from_pretrained(case.dir, use_attn_result=case.use_attn_result, **kw)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def eig_diff(got, want):
    """Eigenvalues compared as multisets (greedy nearest matching), relative to their size."""
    used = np.zeros(len(want), bool)
    worst = 0.0
    for g in got:
        d = np.abs(want - g)
        d[used] = np.inf
        j = int(np.argmin(d))
        used[j] = True
        worst = max(worst, d[j] / max(1.0, abs(g)))
    return worst


def test_processed_weights_and_forward(processed_case):
    case = processed_case
    ref, unproc = case.processed, case.expected
    with load(case) as m:
        want = {f: bool(v) for f, v in zip(FLAG_ORDER, ref["flags"])}
        assert m.cfg.processing == want
        assert m.cfg.normalization_type == case.json["processed"]["normalization_type"]
        sd = m.state_dict()
        ref_names = [k[7:] for k in ref if k.startswith("weight:")]
        assert sorted(sd) == sorted(ref_names)
        for name, w in sd.items():
            assert not w.flags.writeable
            d = max_diff(w, ref[f"weight:{name}"])
            assert d <= TOL_WEIGHT, f"{name}: {d:.3g}"

        tokens = unproc["tokens"]
        (logits, loss), cache = m.run_with_cache(tokens, return_type="both")
        if "logits" in ref:
            assert max_diff(logits, ref["logits"]) <= TOL_LOGITS
        lp = log_softmax(logits)
        if "log_probs" in ref:
            assert max_diff(lp, ref["log_probs"]) <= TOL_LOGITS
        # processing changes logits only by a per-position constant
        assert max_diff(lp, log_softmax(unproc["logits"])) <= 1e-4
        assert abs(float(loss) - float(ref["loss"])) <= TOL_LOSS
        ptl = m(tokens, return_type="loss", loss_per_token=True)
        assert max_diff(ptl, ref["per_token_loss"]) <= TOL_LOSS
        n = 0
        for name, act in cache.items():
            key = f"hook:{name}"
            if key in ref:
                d = max_diff(act, ref[key])
                assert d <= TOL_HOOK, f"{name}: {d:.3g}"
                n += 1
        assert n > 0

    if "refactor:logits" in ref:
        with load(case, refactor_factored_attn_matrices=True) as mr:
            assert mr.cfg.processing["refactor_factored_attn_matrices"]
            assert max_diff(mr(tokens), ref["refactor:logits"]) <= TOL_LOGITS


def test_ov_qk_circuits(processed_case):
    case = processed_case
    ref = case.processed
    with load(case) as m:
        c = m.cfg
        L, H, D, dh = c.n_layers, c.n_heads, c.d_model, c.d_head
        for which, fm in (("ov", m.OV), ("qk", m.QK)):
            assert fm.shape == (L, H, D, D) and fm.mdim == dh
            assert fm.A.shape == (L, H, D, dh) and fm.B.shape == (L, H, dh, D)
            eig = fm.eigenvalues
            assert eig.shape == (L, H, dh) and np.iscomplexobj(eig)
            want = ref[f"{which}_eig_re"] + 1j * ref[f"{which}_eig_im"]
            for l in range(L):
                for h in range(H):
                    d = eig_diff(eig[l, h], want[l, h])
                    assert d <= 1e-4, f"{which} eigenvalues L{l}H{h}: {d:.3g}"
            nrm = fm.norm()
            e = ref[f"{which}_norm"]
            assert np.all(np.abs(nrm - e) / np.maximum(1.0, np.abs(e)) <= 1e-5)
            if D >= 3:
                corner = fm.get_corner(3)
                assert corner.shape == ref[f"{which}_corner"].shape  # leading dims cut to 3 too
                assert max_diff(corner, ref[f"{which}_corner"]) <= 1e-5
            if which == "ov":
                U, S, V = fm.svd()
                assert U.shape == (L, H, D, dh) and S.shape == (L, H, dh) and V.shape == (L, H, D, dh)
                e = ref["ov_S"]
                assert np.all(np.abs(S - e) / np.maximum(1.0, np.abs(e)) <= 1e-5)
                # singular vectors of layer 0 agree up to sign where singular values are distinct
                for h in range(H):
                    s = S[0, h]
                    for j in range(dh):
                        distinct = (j == 0 or s[j - 1] - s[j] > 1e-3 * s[0]) and (
                            j + 1 == dh or s[j] - s[j + 1] > 1e-3 * s[0])
                        if not distinct or s[j] < 1e-4 * s[0]:
                            continue
                        du = float(U[0, h, :, j] @ ref["ov_U0"][h, :, j])
                        dv = float(V[0, h, :, j] @ ref["ov_V0"][h, :, j])
                        assert abs(abs(du) - 1) < 1e-3 and abs(abs(dv) - 1) < 1e-3 and du * dv > 0


def test_composition_and_copying_scores(processed_case):
    case = processed_case
    ref = case.processed
    with load(case) as m:
        L, H = m.cfg.n_layers, m.cfg.n_heads
        if L >= 2 and "comp_Q" in ref:
            for mode in "QKV":
                sc = m.all_composition_scores(mode)
                assert sc.shape == (L, H, L, H)
                assert max_diff(sc, ref[f"comp_{mode}"]) <= TOL_SCORE, mode
        assert max_diff(m.copying_scores(), ref["copying_ov"]) <= 1e-4
        if "copying_full_ov" in ref:
            assert max_diff(m.copying_scores(full=True), ref["copying_full_ov"]) <= 1e-4
        if "full_ov_eig_re" in ref:
            full = m.circuit("full_OV")
            assert full.shape == (L, H, m.cfg.d_vocab, m.cfg.d_vocab_out)
            eig = full.eigenvalues
            want = ref["full_ov_eig_re"] + 1j * ref["full_ov_eig_im"]
            for l in range(L):
                for h in range(H):
                    assert eig_diff(eig[l, h], want[l, h]) <= 1e-4


HEADS = ("previous_token_head", "duplicate_token_head", "induction_head")


def test_head_detectors(processed_case):
    case = processed_case
    ref = case.processed
    if "tokens_det" not in ref:
        pytest.skip("no detector references")
    tok = ref["tokens_det"]
    with load(case) as m:
        for kind in HEADS:
            got = circuits.detect_head(m, tok, kind, error_measure="mul")
            assert max_diff(got, ref[f"detect:{kind}:mul"]) <= 1e-5, kind
            got = circuits.detect_head(m, tok, kind, error_measure="abs")
            assert max_diff(got, ref[f"detect:{kind}:abs:unrounded"]) <= 1e-5, kind
            # TransformerLens rounds abs scores to 3 places
            assert max_diff(np.round(got * 1000) / 1000, ref[f"detect:{kind}:abs"]) <= 1.01e-3
        got = circuits.detect_head(m, tok, "induction_head", exclude_bos=True)
        assert max_diff(got, ref["detect:induction_head:mul:exclude_bos"]) <= 1e-5
        # a custom pattern equal to the previous-token pattern gives the same scores
        T = tok.shape[0]
        pat = np.zeros((T, T), np.float32)
        pat[np.arange(1, T), np.arange(T - 1)] = 1.0
        assert np.array_equal(circuits.detect_head(m, tok, pat), circuits.detect_head(m, tok, "previous_token_head"))
        # heads= restricts the result, the others are -1 (TransformerLens)
        sel = circuits.detect_head(m, tok, "previous_token_head", heads=[(0, 0)])
        assert sel[0, 0] == circuits.detect_head(m, tok, "previous_token_head")[0, 0]
        assert np.all(sel.ravel()[1:] == -1)
        pat[0, 1] = 1.0  # not lower triangular
        with pytest.raises(circuits.ShapeError, match="lower triangular"):
            circuits.detect_head(m, tok, pat)


def induction_score_tl_recipe(model, rep_tokens, seq_len):
    """TransformerLens's Main_Demo recipe as a Python hook: hook every hook_pattern through a
    predicate, take the diagonal at offset 1 - seq_len, average over batch and diagonal."""
    scores = np.zeros((model.cfg.n_layers, model.cfg.n_heads), np.float32)

    def induction_score_hook(pattern, hook):
        stripe = np.diagonal(pattern, offset=1 - seq_len, axis1=-2, axis2=-1)  # [batch, head, n_diag]
        scores[hook.layer()] = stripe.mean(axis=(0, 2))

    model.run_with_hooks(rep_tokens, return_type=None,
                         fwd_hooks=[(lambda name: name.endswith("pattern"), induction_score_hook)])
    return scores


@pytest.mark.parametrize("variant", ["", "_bos"])
def test_induction_scores(processed_case, variant):
    case = processed_case
    ref = case.processed
    if f"rep_tokens{variant}" not in ref:
        pytest.skip("no induction references")
    rep = ref[f"rep_tokens{variant}"]
    want = ref[f"induction_score{variant}"]
    B, T = rep.shape
    L = T // 2
    with load(case) as m:
        # the Python port of TransformerLens's recipe
        assert max_diff(induction_score_tl_recipe(m, rep, L), want) <= 1e-5
        # the same through run_with_cache and a names_filter predicate
        _, cache = m.run_with_cache(rep, names_filter=lambda n: n.endswith("hook_pattern"), return_type=None)
        assert len(cache) == m.cfg.n_layers
        via_cache = np.stack([np.diagonal(cache["pattern", l], offset=1 - L, axis1=-2, axis2=-1).mean(axis=(0, 2))
                              for l in range(m.cfg.n_layers)])
        assert max_diff(via_cache, want) <= 1e-5
        # and libcircuits's own circuits_context_induction_scores
        scores, lf, lr = m.induction_scores(rep, L, return_losses=True)
        assert max_diff(scores, want) <= 1e-5
        if not variant and "rep_per_token_loss" in ref:
            p = ref["rep_per_token_loss"].astype(np.float64)
            f = p[:, 0 : L - 1].mean()
            s = p[:, L : 2 * L - 1].mean()
            assert abs(lf - f) < 4e-5 and abs(lr - s) < 4e-5


COMPOSITION_DIR = CASES_DIR.parent / "composition"  # d_head 24 > d_model 16, generate_composition.py


@pytest.mark.parametrize("processed", [True, False])
def test_composition_scores_wide_heads(processed):
    """d_head > d_model (wide, partly rank-deficient factors): TransformerLens's
    all_composition_scores, as tests/test_composition_reference.c."""
    ref = safetensors_np.load(str(COMPOSITION_DIR / "expected.safetensors"))
    prefix = "" if processed else "unprocessed:"
    load_fn = circuits.Model.from_pretrained if processed else circuits.Model.from_pretrained_no_processing
    with load_fn(COMPOSITION_DIR) as m:
        L, H = m.cfg.n_layers, m.cfg.n_heads
        assert m.cfg.d_head > m.cfg.d_model
        for mode in "QKV":
            sc = m.all_composition_scores(mode)
            want = ref[f"{prefix}comp_{mode}"]
            assert sc.shape == want.shape == (L, H, L, H)
            assert max_diff(sc, want) <= TOL_SCORE, mode
            nz = want != 0
            assert np.all(sc[~nz] == 0)
            assert np.max(np.abs(sc[nz] - want[nz]) / np.abs(want[nz])) <= 1e-5, mode
        mean, std = circuits.composition_baseline(m, n_samples=400, seed=5)
        bs = ref["baseline_scores"].astype(np.float64)
        se = np.sqrt(bs.var() / bs.size + std ** 2 / 400)
        assert abs(mean - bs.mean()) < 4 * se


@pytest.mark.parametrize("name", NO_PROCESSED_REFERENCE)
def test_processing_without_tl_reference(name):
    """TransformerLens misprocesses these two; the library's processing keeps the log-probs of
    TransformerLens's unprocessed run (expected.safetensors): final_rms folded as an RMSNorm, and
    fold_ln of a gated MLP after LN refused (the other steps still apply)."""
    from conftest import get_case

    case = get_case(name)
    unproc = case.expected
    kw = {}
    if name == "tl_gated_geglu_ln":
        with pytest.raises(circuits.UnsupportedError, match="fold_ln of a gated MLP"):
            load(case)
        kw["fold_ln"] = False
    with load(case, **kw) as m:
        final_rms = name == "tl_final_rms_ln"
        assert m.cfg.processing == {"fold_ln": final_rms, "center_writing_weights": not final_rms,
                                    "center_unembed": True, "fold_value_biases": True,
                                    "refactor_factored_attn_matrices": False}
        logits = m(unproc["tokens"])
        d = np.abs(log_softmax(logits) - log_softmax(unproc["logits"])).max()
        assert d <= 1e-4, d
