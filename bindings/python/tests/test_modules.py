"""The module tree (circuits/modules.py): TransformerLens's attribute paths as zero-copy views
of the model's weights, hook points as attributes."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from conftest import CASES_DIR


def test_weights_are_views_of_the_model(circuits_mod, small):
    m = small
    pairs = {
        "embed.W_E": m.embed.W_E, "pos_embed.W_pos": m.pos_embed.W_pos, "unembed.W_U": m.unembed.W_U,
        "unembed.b_U": m.unembed.b_U, "blocks.1.attn.W_Q": m.blocks[1].attn.W_Q,
        "blocks.1.attn.W_K": m.blocks[1].attn.W_K, "blocks.1.attn.W_V": m.blocks[1].attn.W_V,
        "blocks.1.attn.W_O": m.blocks[1].attn.W_O, "blocks.0.attn.b_Q": m.blocks[0].attn.b_Q,
        "blocks.0.attn.b_O": m.blocks[0].attn.b_O, "blocks.0.mlp.W_in": m.blocks[0].mlp.W_in,
        "blocks.0.mlp.W_out": m.blocks[0].mlp.W_out, "blocks.0.mlp.b_in": m.blocks[0].mlp.b_in,
        "blocks.-1.mlp.b_out": m.blocks[-1].mlp.b_out,
    }
    sd = m.state_dict()
    for name, a in pairs.items():
        want = sd[name.replace("-1", str(m.cfg.n_layers - 1))]
        assert np.shares_memory(a, want), name  # the same memory: no copy
        assert np.array_equal(a, want) and not a.flags.writeable, name
    assert np.array_equal(m.blocks[1].attn.W_Q, m.W_Q[1])
    assert len(m.blocks) == m.cfg.n_layers and [b.layer for b in m.blocks] == list(range(m.cfg.n_layers))
    assert [b.layer for b in m.blocks[-1:]] == [m.cfg.n_layers - 1]
    with pytest.raises(IndexError):
        m.blocks[m.cfg.n_layers]
    with pytest.raises(AttributeError, match="no such weight"):
        m.blocks[0].ln1.w  # LNPre: no weights, as TL's LayerNormPre
    ov = m.blocks[1].attn.OV
    assert np.allclose(ov.AB, m.OV[1].AB)
    assert np.allclose(m.blocks[0].attn.QK.AB, m.QK[0].AB)


def test_views_keep_the_model_memory_alive(circuits_mod):
    m = circuits_mod.Model.from_pretrained_no_processing(CASES_DIR / "tl_gelu_new_attn_result")
    w_out, ln_w, ln_b = m.blocks[1].mlp.W_out, m.blocks[0].ln1.w, m.ln_final.b
    want = (w_out.copy(), ln_w.copy(), ln_b.copy())
    assert np.shares_memory(ln_w, m.get_weight("blocks.0.ln1.w"))
    m.close()
    del m
    gc.collect()
    for got, w in zip((w_out, ln_w, ln_b), want):
        assert np.array_equal(got, w)  # still the model's memory, still mapped


def test_grouped_query_attention(circuits_mod):
    with circuits_mod.Model.from_pretrained(CASES_DIR / "tl_gqa_rotary_rms") as m:
        attn = m.blocks[0].attn
        H, KV = m.cfg.n_heads, m.cfg.n_key_value_heads
        assert attn._W_K.shape[0] == KV and attn.W_K.shape[0] == H
        assert np.shares_memory(attn._W_K, m.get_weight("blocks.0.attn._W_K"))
        assert np.array_equal(attn.W_K, m.W_K[0]) and np.array_equal(attn.b_V, m.b_V[0])
        assert np.array_equal(attn.W_V[1], attn._W_V[1 // (H // KV)])
    with circuits_mod.Model.from_pretrained(CASES_DIR / "tl_2l_lnpre_gelu") as m:
        with pytest.raises(AttributeError, match="grouped-query"):
            m.blocks[0].attn._W_K


def test_hook_points_as_attributes(circuits_mod, small):
    m = small
    hp = m.blocks[0].attn.hook_pattern
    assert hp.name == "blocks.0.attn.hook_pattern" and hp is m.hook_dict[hp.name] and hp.layer() == 0
    assert m.hook_embed.name == "hook_embed" and m.blocks[1].hook_resid_post.name == "blocks.1.hook_resid_post"
    assert m.blocks[1].ln2.hook_scale.name == "blocks.1.ln2.hook_scale"
    assert m.blocks[0].mlp.hook_post.name == "blocks.0.mlp.hook_post"
    seen = []
    m.add_hook(hp, lambda x, h: seen.append((h.name, x.shape)))
    m(np.array([[1, 2, 3]]))
    assert seen == [("blocks.0.attn.hook_pattern", (1, m.cfg.n_heads, 3, 3))]
    m.reset_hooks()
    seen.clear()
    handle = m.blocks[1].ln2.hook_scale.add_hook(lambda x, h: seen.append(h.name))  # TL's HookPoint.add_hook
    m(np.array([[1, 2, 3]]))
    handle.remove()
    m(np.array([[1, 2, 3]]))
    assert seen == ["blocks.1.ln2.hook_scale"]
    zero = m.run_with_hooks(np.array([[1, 2, 3]]), fwd_hooks=[(m.blocks[1].hook_resid_post.name,
                                                                lambda x, h: np.zeros_like(x))])
    assert np.allclose(zero[0, 0], zero[0, 1])  # the logits of a zero residual: the same everywhere
    with pytest.raises(AttributeError, match="set_use"):
        m.blocks[0].hook_q_input
    m.set_use_split_qkv_input(True)
    assert m.blocks[0].hook_q_input.name == "blocks.0.hook_q_input"  # looked up when read
    assert "hook_resid_pre" in dir(m.blocks[0]) and "W_Q" in dir(m.blocks[0].attn)
    with pytest.raises(AttributeError):
        m.hook_nonexistent
    m.close()
    with pytest.raises(circuits_mod.ClosedError):
        m.blocks[0].attn.W_Q


def test_embed_pos_embed_unembed_are_callable(circuits_mod, tiny):
    """model.embed(tokens), model.pos_embed(tokens), model.unembed(residual), as TransformerLens's
    modules: checked against the run's own hook_embed, hook_pos_embed and logits."""
    m = tiny
    tok = np.array([[1, 5, 9, 300, 42, 7, 7, 100], [3, 4, 5, 6, 7, 8, 9, 10]])
    logits, cache = m.run_with_cache(tok)
    np.testing.assert_array_equal(m.embed(tok), cache["hook_embed"])
    np.testing.assert_array_equal(m.pos_embed(tok), cache["hook_pos_embed"])
    np.testing.assert_array_equal(m.pos_embed(tok[:, :3], past_kv_pos_offset=2)[1], m.W_pos[2:5])
    with pytest.raises(IndexError):
        m.pos_embed(tok, past_kv_pos_offset=m.cfg.n_ctx)
    np.testing.assert_allclose(m.unembed(cache["ln_final.hook_normalized"]), logits, atol=1e-5, rtol=0)
    assert m.unembed(cache["ln_final.hook_normalized"][0, 0]).shape == (m.cfg.d_vocab_out,)
    with pytest.raises(ValueError):
        m.unembed(np.zeros((2, 3)))


def test_lm_accuracy(circuits_mod, tiny):
    from circuits import utils

    lg = np.zeros((2, 4, 10), np.float32)
    tok = np.array([[0, 1, 2, 3], [0, 5, 5, 5]])
    lg[0, 0, 1] = lg[0, 1, 2] = lg[0, 2, 9] = 1  # row 0: right, right, wrong
    lg[1, :, 5] = 1                              # row 1: right three times
    per = utils.lm_accuracy(lg, tok, per_token=True)
    assert per.dtype == np.bool_ and per.tolist() == [[True, True, False], [True, True, True]]
    assert utils.lm_accuracy(lg, tok) == np.float32(5 / 6)
