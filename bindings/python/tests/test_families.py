"""The modern families' config fields and weight properties in Python, against the
tl_config.json (TransformerLens's HookedTransformerConfig.to_dict()) and the TL state dict
(model.safetensors) of every TransformerLens-layout reference case."""

from __future__ import annotations

import json

import numpy as np
import pytest

import circuits
import safetensors_np
from conftest import CASES, CASES_DIR

TL_CASES = [c for c in CASES if (CASES_DIR / c / "tl_config.json").is_file()]

# Config fields whose TransformerLens value is kept as is; the others are checked below.
SAME = ["n_layers", "d_model", "n_heads", "d_head", "n_ctx", "d_vocab", "positional_embedding_type", "gated_mlp",
        "parallel_attn_mlp", "final_rms", "use_normalization_before_and_after", "use_local_attn"]


@pytest.mark.parametrize("name", TL_CASES)
def test_config_fields_as_transformerlens_names_them(name):
    tl = json.loads((CASES_DIR / name / "tl_config.json").read_text())
    with circuits.Model.from_pretrained_no_processing(str(CASES_DIR / name)) as m:
        cfg = m.cfg
    for k in SAME:
        if k in tl:
            assert getattr(cfg, k) == tl[k], k
    kv = tl.get("n_key_value_heads")
    # TL keeps n_key_value_heads = n_heads as given; Config says None when there is no grouping
    assert cfg.n_key_value_heads == (kv if kv not in (None, tl["n_heads"]) else None)
    if tl.get("positional_embedding_type") == "rotary":
        assert cfg.rotary_dim == (tl.get("rotary_dim") or tl["d_head"])
        assert cfg.rotary_base == pytest.approx(float(tl.get("rotary_base", 10000)))
        assert cfg.rotary_adjacent_pairs == bool(tl.get("rotary_adjacent_pairs"))
        assert cfg.use_NTK_by_parts_rope == bool(tl.get("use_NTK_by_parts_rope"))
        if cfg.use_NTK_by_parts_rope:
            for k in ("NTK_by_parts_factor", "NTK_by_parts_low_freq_factor", "NTK_by_parts_high_freq_factor"):
                assert getattr(cfg, k) == pytest.approx(tl[k]), k
            assert cfg.NTK_original_ctx_len == tl["NTK_original_ctx_len"]
        assert cfg.rotary_scaling_factor == pytest.approx(tl.get("rotary_scaling_factor", 1.0))
    else:
        assert cfg.rotary_dim is None
    for k in ("attn_scores_soft_cap", "output_logits_soft_cap"):
        v = tl.get(k, -1.0)
        assert getattr(cfg, k) == (pytest.approx(v) if v > 0 else -1.0), k
    if tl.get("use_local_attn"):
        assert cfg.window_size == tl["window_size"]
        types = tl.get("attn_types") or ["local"] * tl["n_layers"]
        assert cfg.attn_types == types[: tl["n_layers"]]
    else:
        assert cfg.window_size is None and cfg.attn_types is None


@pytest.mark.parametrize("name", TL_CASES)
def test_kv_weights_repeated_per_query_head(name):
    """TransformerLens's W_K / W_V / b_K / b_V properties repeat each stored K/V head
    (attn._W_K under grouped-query attention) for its n_heads / n_key_value_heads query heads."""
    tl = json.loads((CASES_DIR / name / "tl_config.json").read_text())
    sd = safetensors_np.load(str(CASES_DIR / name / "model.safetensors"))
    H = tl["n_heads"]
    with circuits.Model.from_pretrained_no_processing(str(CASES_DIR / name)) as m:
        for leaf, prop in (("W_K", m.W_K), ("W_V", m.W_V), ("b_K", m.b_K), ("b_V", m.b_V)):
            assert prop.shape[:2] == (tl["n_layers"], H), leaf
            for l in range(tl["n_layers"]):
                stored = sd.get(f"blocks.{l}.attn._{leaf}", sd.get(f"blocks.{l}.attn.{leaf}"))
                if stored is None:  # a bias the file omits: zeros
                    assert not prop[l].any(), leaf
                    continue
                want = np.repeat(stored.astype(np.float32), H // stored.shape[0], axis=0)
                np.testing.assert_array_equal(prop[l], want, err_msg=f"{name} {leaf} layer {l}")
        if tl.get("gated_mlp"):
            assert m.W_gate.shape == (tl["n_layers"], tl["d_model"], tl["d_mlp"])
        else:
            assert m.W_gate is None
