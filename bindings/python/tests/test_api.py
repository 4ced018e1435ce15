"""The Python API: library lookup and the ABI check, typed errors, config, weights (zero-copy,
strides, lifetimes), caches, FactoredMatrix against NumPy, composition and analysis helpers,
the tokenizer placeholders, and installation with pip."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import BINDING, CASES, CASES_DIR, REPO, TINY_GPT2, get_case

import circuits
from circuits import _native as N

TOK = np.array([[11, 42, 7, 11, 42, 7]])


def run_py(code: str, env_update=None, cwd=None, pythonpath=None):
    env = dict(os.environ)
    env.pop("CIRCUITS_LIBRARY", None)
    env.update(env_update or {})
    env["PYTHONPATH"] = str(pythonpath or BINDING)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd or "/",
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------ loading


def test_library_found_and_versions():
    assert Path(circuits.library_path).exists() or circuits.library_source.startswith("system")
    assert circuits.library_version() == N.CIRCUITS_VERSION_STRING
    assert N.lib.circuits_version_number() == N.CIRCUITS_VERSION_NUMBER


def test_lookup_build_tree_without_env():
    r = run_py("import circuits; print(circuits.library_source); print(circuits.library_path)")
    assert r.returncode == 0, r.stderr
    src, path = r.stdout.split("\n")[:2]
    if (BINDING / "circuits" / "_lib" / "libcircuits.so.0").exists():
        assert src == "bundled"
    else:
        assert src == "build tree" and Path(path) == REPO / "build" / "lib" / "libcircuits.so.0"


def test_lookup_env_var_wins_and_accepts_a_directory():
    lib_dir = str(Path(circuits.library_path).resolve().parent)
    r = run_py("import circuits; print(circuits.library_source, circuits.library_path)",
               {"CIRCUITS_LIBRARY": lib_dir})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CIRCUITS_LIBRARY " + lib_dir)


def test_lookup_bundled_copy(tmp_path):
    pkg = tmp_path / "circuits"
    shutil.copytree(BINDING / "circuits", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so*"))
    (pkg / "_lib").mkdir(exist_ok=True)
    shutil.copy(circuits.library_path, pkg / "_lib" / "libcircuits.so.0")
    r = run_py("import circuits; print(circuits.library_source, circuits.library_path)", pythonpath=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["bundled", str(pkg / "_lib" / "libcircuits.so.0")]


def test_missing_library_is_a_clear_import_error():
    r = run_py("""
        try:
            import circuits
        except ImportError as e:
            print(type(e).__name__); print(e)
    """, {"CIRCUITS_LIBRARY": "/nonexistent/libcircuits.so.0"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("LibraryNotFoundError")
    assert "CIRCUITS_LIBRARY: /nonexistent/libcircuits.so.0" in r.stdout
    assert "meson setup build" in r.stdout


def _compile_so(tmp_path, body: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "fake.c"
    src.write_text(body)
    so = tmp_path / "libfake.so"
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(so)], check=True)
    return str(so)


def test_abi_mismatch_is_refused(tmp_path):
    so = _compile_so(tmp_path, "int circuits_abi_version(void) { return 1; }\n")
    r = run_py("""
        try:
            import circuits
        except ImportError as e:
            print(type(e).__name__); print(e)
    """, {"CIRCUITS_LIBRARY": so})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ABIMismatchError")
    assert "ABI version 1" in r.stdout and "written for ABI 0" in r.stdout


def test_library_missing_symbols_is_refused(tmp_path):
    so = _compile_so(tmp_path, "int circuits_abi_version(void) { return 0; }\n")
    r = run_py("""
        try:
            import circuits
        except ImportError as e:
            print(type(e).__name__); print(e)
    """, {"CIRCUITS_LIBRARY": so})
    assert r.stdout.startswith("ABIMismatchError") and "does not export" in r.stdout, r.stdout + r.stderr


def test_pip_install(tmp_path):
    """`pip install bindings/python` (into a target directory), then use it from outside the
    repository with CIRCUITS_LIBRARY. pip's build isolation fetches setuptools from the
    package index; without an index the test is skipped."""
    target = tmp_path / "site"
    src = tmp_path / "src"  # a copy: building in place would leave build/ and *.egg-info in the tree
    shutil.copytree(BINDING, src, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "build",
                                                                "*.egg-info", "*.so*"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-cache-dir",
                        "--target", str(target), str(src)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and ("No module named pip" in r.stderr or "Could not find a version" in r.stderr
                              or "NewConnectionError" in r.stderr or "Network is unreachable" in r.stderr):
        pytest.skip(f"pip cannot build here (no package index?): {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    assert (target / "circuits" / "model.py").exists() and (target / "circuits" / "py.typed").exists()
    code = f"""
        import numpy as np, circuits
        print(circuits.__file__)
        m = circuits.Model.from_pretrained({str(TINY_GPT2)!r})
        print(float(m(np.array([[1, 2, 3, 4]]), return_type="loss")))
    """
    r = run_py(code, {"CIRCUITS_LIBRARY": circuits.library_path}, pythonpath=target)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(target / "circuits"))


# ------------------------------------------------------------------------------ errors


def test_errors_are_typed_and_carry_last_error(tmp_path):
    with pytest.raises(circuits.CircuitsIOError) as ei:
        circuits.Model.from_pretrained(tmp_path / "nope")
    e = ei.value
    assert isinstance(e, OSError) and isinstance(e, circuits.CircuitsError)
    assert e.status == -3 and e.status_name == "CIRCUITS_E_IO"
    assert str(tmp_path / "nope") in e.message and "CIRCUITS_E_IO" in str(e)

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    with pytest.raises(circuits.FormatError, match="config.json"):
        circuits.Model.from_pretrained(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(circuits.CircuitsError) as ei:
        circuits.Model.from_pretrained(tmp_path / "bad")
    assert ei.value.status in (-5, -6)


def test_run_errors(tiny):
    with pytest.raises(circuits.RangeError, match="outside the vocabulary"):
        tiny(np.array([[1, 2, 1000]]))
    with pytest.raises(circuits.RangeError):
        tiny(np.array([[1, 2, 2**40]]))  # no silent int32 wrap-around
    with pytest.raises(circuits.RangeError, match="n_ctx"):
        tiny(np.zeros((1, 513), np.int64))
    with pytest.raises(circuits.ShapeError):
        tiny(np.zeros((1, 0), np.int64))
    with pytest.raises(circuits.ShapeError):
        tiny(np.zeros((1, 2, 3), np.int64))
    with pytest.raises(circuits.ShapeError, match="at least 2 positions"):
        tiny(np.array([[5]]), return_type="loss")
    with pytest.raises(TypeError):
        tiny(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError):
        tiny(TOK, return_type="probs")
    with pytest.raises(circuits.NotFoundError) as ei:
        tiny.get_weight("blocks.9.attn.W_Q")
    assert isinstance(ei.value, KeyError) and ei.value.status == -11
    with pytest.raises(circuits.NotFoundError, match="use_attn_result"):
        tiny.run_with_cache(TOK, names_filter="blocks.0.attn.hook_result")
    with pytest.raises(ValueError):
        tiny.all_composition_scores("X")
    assert tiny(TOK[0]).shape == (1, 6, 1000)  # 1-D tokens: batch 1
    assert tiny(TOK.astype(np.uint8)).shape == (1, 6, 1000)
    assert tiny([[1, 2, 3]]).shape == (1, 3, 1000)


# Reference ids from Hugging Face tokenizers (transformers 5.23, AutoTokenizer) for the bundled
# tiny GPT-2's tokenizer (vocab 1000; BOS = EOS = <|endoftext|> = 0).
HF_IDS = {
    "Hello world": [40, 416, 79, 206, 750],
    " The quick brown fox jumps over the lazy dog.": [261, 755, 673, 219, 228, 574, 214, 79, 88, 536, 327, 80, 83,
                                                      547, 198, 250, 949, 89, 231, 432, 14],
    "naïve café 👍": [78, 65, 125, 107, 711, 212, 65, 70, 125, 102, 159, 191, 177, 173],
    "<|endoftext|>a": [0, 65],
}


@pytest.mark.skipif(not N.has("circuits_tokenizer_encode"), reason="library built without the tokenizer")
def test_tokenizer(tiny):
    tok = tiny.tokenizer
    assert isinstance(tok, circuits.Tokenizer)
    assert tok.vocab_size == 1000 and tok.bos_token_id == 0 and tok.eos_token_id == 0
    for text, ids in HF_IDS.items():
        # model.tokenizer prepends BOS, as TransformerLens's wrapped tokenizer (get_tokenizer_with_bos)
        assert tok.add_bos_token and tok.encode(text).tolist() == [0] + ids, text
        assert tok.encode(text, prepend_bos=False).tolist() == ids, text
        assert tiny.to_tokens(text).tolist() == [[0] + ids]  # TransformerLens prepends BOS
        assert tiny.to_tokens(text, prepend_bos=False).tolist() == [ids]
    assert tok.decode(HF_IDS["Hello world"]) == "Hello world"
    assert tiny.to_string(np.array([0] + HF_IDS["Hello world"])) == "<|endoftext|>Hello world"
    assert tiny.to_string(np.array([HF_IDS["Hello world"]])) == ["Hello world"]
    assert tiny.to_str_tokens("Hello world") == ["<|endoftext|>", "H", "ell", "o", " w", "orld"]
    assert tiny.to_str_tokens(np.array([[40, 416]])) == ["H", "ell"]
    assert tiny.to_str_tokens(["Hello", "world"], prepend_bos=False) == [["H", "ell", "o"], ["w", "orld"]]
    assert tok.token_bytes(125) == b"\xc3"  # part of a UTF-8 character
    assert tiny.to_single_token("H") == 40 and tiny.to_single_str_token(40) == "H"
    with pytest.raises(ValueError):
        tiny.to_single_token("Hello")
    # batches are padded on the right with the pad (= EOS) token, or on the left
    b = tiny.to_tokens(["Hello world", " The"], prepend_bos=False)
    assert b.shape == (2, 5) and b[1].tolist() == [261, 0, 0, 0, 0]
    assert tiny.to_tokens(["Hello world", " The"], prepend_bos=False, padding_side="left")[1].tolist() == [0, 0, 0, 0,
                                                                                                          261]
    # text input runs through to_tokens, as in TransformerLens
    assert np.array_equal(tiny("Hello world"), tiny(tiny.to_tokens("Hello world")))
    _, cache = tiny.run_with_cache("Hello world", names_filter="hook_embed")
    assert cache["embed"].shape == (1, 6, 32)
    assert circuits.detect_head(tiny, "Hello world Hello world", "induction_head").shape == (5, 4)
    # a standalone tokenizer, from the same files
    t2 = circuits.Tokenizer.load(TINY_GPT2)
    assert t2.encode("Hello world", prepend_bos=True).tolist() == [0] + HF_IDS["Hello world"]
    assert not t2.add_bos_token and t2.encode("Hello world").tolist() == HF_IDS["Hello world"]  # as HF's GPT-2
    assert t2.with_bos().encode("Hello world").tolist() == [0] + HF_IDS["Hello world"]
    tiny.set_tokenizer(t2)  # TransformerLens's set_tokenizer wraps it with BOS; t2 itself unchanged
    assert tiny.tokenizer.add_bos_token and not t2.add_bos_token
    assert tok.decode([0] + HF_IDS["Hello world"] + [0], skip_special_tokens=True) == "Hello world"
    with pytest.raises(circuits.CircuitsIOError):
        circuits.Tokenizer.load("/nonexistent")
    with pytest.raises(circuits.RangeError):
        tok.decode([5000])
    # the model's tokenizer keeps working while referenced, even after close
    tiny.close()
    assert tok.encode("Hello").tolist() == [0, 40, 416, 79]


def test_tokenizer_batch_decode(tiny):
    tok = tiny.tokenizer
    rows = np.array([[5, 6], [7, 8]])
    assert tok.batch_decode(rows) == [tok.decode(rows[0]), tok.decode(rows[1])]
    assert tok.batch_decode([[5, 6], [7]]) == [tok.decode([5, 6]), tok.decode([7])]


def test_model_without_tokenizer():
    with circuits.Model.from_pretrained(CASES_DIR / "tl_2l_lnpre_gelu") as m:
        assert m.tokenizer is None
        with pytest.raises(ValueError, match="no tokenizer"):
            m.to_tokens("hi")
        with pytest.raises(ValueError, match="no tokenizer"):
            m("hi")
        if N.has("circuits_tokenizer_load"):
            m.tokenizer = circuits.Tokenizer.load(TINY_GPT2)
            assert m.to_tokens("H", prepend_bos=False).tolist() == [[40]]


@pytest.mark.parametrize("kv", [True, False])
def test_generate_greedy_is_argmax_of_forward(tiny, kv):
    prompt = np.array([[5, 17, 300, 42], [9, 9, 1, 2]])
    out = tiny.generate(prompt, max_new_tokens=5, do_sample=False, stop_at_eos=False, use_past_kv_cache=kv)
    assert out.shape == (2, 9) and out.dtype == np.int64 and np.array_equal(out[:, :4], prompt)
    seq = prompt.copy()
    for _ in range(5):
        nxt = tiny(seq)[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    assert np.array_equal(out, seq)
    a = tiny.generate(prompt, max_new_tokens=3, seed=7, stop_at_eos=False, use_past_kv_cache=kv)
    b = tiny.generate(prompt, max_new_tokens=3, seed=7, stop_at_eos=False, use_past_kv_cache=kv)
    assert np.array_equal(a, b)
    if tiny.tokenizer is not None:
        s = tiny.generate("Hello", max_new_tokens=2, do_sample=False, stop_at_eos=False)
        # TL decodes with skip_special_tokens=True: the prompt's text without its BOS
        assert isinstance(s, str) and s.startswith(tiny.to_string(tiny.to_tokens("Hello", prepend_bos=False)[0]))
    with pytest.raises(circuits.RangeError):
        tiny.generate(prompt, max_new_tokens=tiny.cfg.n_ctx)


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize("name", CASES)
def test_config_matches_tl_config(name):
    case = get_case(name)
    p = case.dir / "tl_config.json"
    tl = json.loads(p.read_text()) if p.exists() else case.json.get("tl_config")
    family = case.json.get("family")  # a Hugging Face family case (generate_families.py)
    with circuits.Model.from_pretrained_no_processing(case.dir) as m:
        c = m.cfg
        # the library names an activation by the formula it computes: torch's tanh GELU is gelu_new's
        same_formula = {"gelu_pytorch_tanh": "gelu_new", "swish": "silu"}
        for k in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "d_vocab_out", "n_ctx", "act_fn",
                  "normalization_type", "positional_embedding_type", "attn_only", "scale_attn_by_inverse_layer_idx"):
            if k == "n_ctx" and family == "mistral":
                continue  # TL caps Mistral's n_ctx at 2048; libcircuits reads max_position_embeddings
            want = same_formula.get(tl[k], tl[k]) if k == "act_fn" else tl[k]
            assert getattr(c, k) == want, k
        assert c.eps == pytest.approx(tl["eps"], rel=1e-6)
        assert c.d_mlp == (None if tl["attn_only"] else tl["d_mlp"])
        assert c.attn_scale == pytest.approx(tl["attn_scale"], rel=1e-6)
        assert c.format == ("transformerlens" if p.exists() else "hf_" + (family or "gpt2"))
        assert not any(c.processing.values())
        assert c.to_dict()["n_layers"] == c.n_layers


# ------------------------------------------------------------------------------ weights


def test_weights_zero_copy_strided_readonly():
    with circuits.Model.from_pretrained_no_processing(CASES_DIR / "hf_tiny_random_gpt2") as m:
        c = m.cfg
        W_Q = m.get_weight("blocks.0.attn.W_Q")
        assert W_Q.shape == (c.n_heads, c.d_model, c.d_head)
        # GPT-2's fused c_attn viewed in place: strides [d_head, 3 d_model, 1] elements
        assert W_Q.strides == (4 * c.d_head, 4 * 3 * c.d_model, 4)
        assert np.shares_memory(W_Q, m.get_weight("blocks.0.attn.W_Q"))
        assert not W_Q.flags.writeable
        with pytest.raises(ValueError):
            W_Q[0, 0, 0] = 1.0
        with pytest.raises(ValueError):
            W_Q.flags.writeable = True
        # a tied W_U is W_E transposed, in the same memory
        assert np.shares_memory(m.W_U, m.W_E) and np.array_equal(m.W_U, m.W_E.T)
        sd = m.state_dict()
        assert list(sd) == m.weight_names()
        assert all(not v.flags.writeable for v in sd.values())
        # stacked TransformerLens properties
        L, H, D, dh, M = c.n_layers, c.n_heads, c.d_model, c.d_head, c.d_mlp
        shapes = {"W_Q": (L, H, D, dh), "W_K": (L, H, D, dh), "W_V": (L, H, D, dh), "W_O": (L, H, dh, D),
                  "b_Q": (L, H, dh), "b_K": (L, H, dh), "b_V": (L, H, dh), "b_O": (L, D), "W_in": (L, D, M),
                  "W_out": (L, M, D), "b_in": (L, M), "b_out": (L, D), "W_E": (c.d_vocab, D), "W_pos": (c.n_ctx, D),
                  "W_U": (D, c.d_vocab_out), "b_U": (c.d_vocab_out,), "W_E_pos": (c.d_vocab + c.n_ctx, D)}
        for k, s in shapes.items():
            a = getattr(m, k)
            assert a.shape == s and a.dtype == np.float32 and not a.flags.writeable, k
        assert np.array_equal(m.W_Q[1], m.get_weight("blocks.1.attn.W_Q"))
        assert np.array_equal(m.W_out[2], m.get_weight("blocks.2.mlp.W_out"))


def test_weights_match_stored_tl_file():
    import safetensors_np

    d = CASES_DIR / "tl_gelu_new_attn_result"
    stored = safetensors_np.load(str(d / "model.safetensors"))
    with circuits.Model.from_pretrained_no_processing(d) as m:
        for k, v in stored.items():
            assert np.array_equal(m.get_weight(k), v), k


def test_attn_only_has_no_mlp_weights():
    with circuits.Model.from_pretrained_no_processing(CASES_DIR / "tl_attn_only_2l_none") as m:
        with pytest.raises(AttributeError, match="attention-only"):
            m.W_in
        with pytest.raises(circuits.UnsupportedError):
            m.mlp_composition_scores("Q")


# ------------------------------------------------------------------------------ caches


def test_cache_is_dict_like(tiny):
    logits, cache = tiny.run_with_cache(TOK)
    names = tiny.hook_names()
    assert list(cache) == names == list(cache.keys()) and len(cache) == 91
    assert [k for k, _ in cache.items()] == names and len(list(cache.values())) == 91
    assert "blocks.0.hook_resid_post" in cache and "resid_pre0" in cache and ("pattern", 1) in cache
    assert "blocks.9.hook_resid_post" not in cache and 3 not in cache
    assert cache["pattern", 1] is cache["blocks.1.attn.hook_pattern"]
    assert cache["pattern1"] is cache["blocks.1.attn.hook_pattern"]
    assert cache["resid_pre", 0] is cache["blocks.0.hook_resid_pre"]
    assert cache["resid_post", -1] is cache["blocks.4.hook_resid_post"]
    assert cache["q", 2, "attn"].shape == (1, 6, 4, 8)
    assert cache["normalized"] is cache["ln_final.hook_normalized"]
    assert cache["embed"].shape == (1, 6, 32)
    assert np.array_equal(cache["unembed.hook_out"], logits)
    assert cache.get("nope") is None
    with pytest.raises(KeyError):
        cache["blocks.0.hook_nope"]
    assert cache.nbytes == sum(v.nbytes for v in cache.values())
    assert cache.stack_activation("resid_post").shape == (5, 1, 6, 32)
    assert cache["pattern", 0].flags.writeable  # the cache's own copy, as TL's tensors
    assert cache.remove_batch_dim() is cache and not cache.has_batch_dim
    assert cache["pattern", 0].shape == (4, 6, 6)
    with pytest.raises(circuits.ShapeError):
        tiny.run_with_cache(np.stack([TOK[0], TOK[0]]), remove_batch_dim=True)
    _, c1 = tiny.run_with_cache(TOK, remove_batch_dim=True, names_filter="resid_pre2")
    assert c1["resid_pre2"].shape == (6, 32)
    _, d = tiny.run_with_cache(TOK, names_filter="hook_embed", return_cache_object=False)
    assert isinstance(d, dict) and list(d) == ["hook_embed"]


def test_names_filter_forms(tiny):
    def keys(f):
        return list(tiny.run_with_cache(TOK, names_filter=f)[1].keys())

    assert keys("pattern1") == ["blocks.1.attn.hook_pattern"]
    assert keys("blocks.*.attn.hook_pattern") == [f"blocks.{l}.attn.hook_pattern" for l in range(5)]
    assert keys(["resid_post4", "hook_embed"]) == ["hook_embed", "blocks.4.hook_resid_post"]  # firing order
    assert keys(lambda n: n.endswith("hook_v")) == [f"blocks.{l}.attn.hook_v" for l in range(5)]
    assert keys([]) == [] and keys(lambda n: False) == []
    with pytest.raises(circuits.NotFoundError):
        keys(["hook_embed", "blocks.7.hook_resid_pre"])
    out, cache = tiny.run_with_cache(TOK, names_filter="hook_embed", return_type="loss")
    assert out == tiny(TOK, return_type="loss")
    out, cache = tiny.run_with_cache(TOK, names_filter=[], return_type="both")
    assert out.logits.shape == (1, 6, 1000) and len(cache) == 0


def test_cache_outlives_model_and_its_own_object():
    m = circuits.Model.from_pretrained(TINY_GPT2)
    _, cache = m.run_with_cache(TOK)
    pat = cache["pattern", 0]
    want = pat.copy()
    m.close()
    del cache
    gc.collect()
    assert np.array_equal(pat, want)
    assert np.allclose(pat.sum(-1), 1.0, atol=1e-5)


def test_act_name():
    assert circuits.act_name("pattern", 1) == "blocks.1.attn.hook_pattern"
    assert circuits.act_name("resid_pre", 2) == "blocks.2.hook_resid_pre"
    assert circuits.act_name("scale", 4, "ln1") == "blocks.4.ln1.hook_scale"
    assert circuits.act_name("k", 6, "a") == "blocks.6.attn.hook_k"
    assert circuits.act_name("embed") == "hook_embed"
    assert circuits.act_name("scale") == "ln_final.hook_scale"
    assert circuits.get_act_name is circuits.act_name


# ------------------------------------------------------------------------------ FactoredMatrix


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_factored_matrix_against_numpy(rng):
    A = rng.standard_normal((2, 3, 6, 4)).astype(np.float32)
    B = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    fm = circuits.FactoredMatrix(A, B)
    M = A @ B
    assert fm.shape == (2, 3, 6, 6) and fm.mdim == 4 and fm.ndim == 4
    assert np.array_equal(fm.A, A) and np.array_equal(fm.B, B) and not fm.A.flags.writeable
    assert np.allclose(fm.AB, M, atol=1e-5)
    assert np.allclose(fm.BA, B @ A, atol=1e-5)
    assert np.allclose(fm.T.AB, np.swapaxes(M, -1, -2), atol=1e-5)
    U, S, V = fm.svd()
    assert U.shape == (2, 3, 6, 4) and S.shape == (2, 3, 4) and V.shape == (2, 3, 6, 4)
    assert np.allclose(S, np.linalg.svd(M, compute_uv=False)[..., :4], atol=1e-4)
    assert np.allclose((U * S[..., None, :]) @ np.swapaxes(V, -1, -2), M, atol=1e-4)
    assert fm.U is U and fm.S is S and fm.V is V
    assert np.allclose(fm.norm(), np.linalg.norm(M, axis=(-2, -1)), rtol=1e-5)
    ev = fm.eigenvalues
    assert ev.shape == (2, 3, 4) and ev.dtype == np.complex64
    for i in range(2):
        for j in range(3):
            want = np.linalg.eigvals(M[i, j].astype(np.float64))
            want = want[np.argsort(-np.abs(want))][:4]  # M has rank 4: its non-zero eigenvalues
            got = ev[i, j]
            for g in got:
                assert np.min(np.abs(want - g)) < 1e-3 * max(1, abs(g))
    assert np.allclose(fm.get_corner(2), M[:2, :2, :2, :2], atol=1e-5)  # TL's get_corner cuts all dims
    assert np.allclose(fm.diagonal(), np.diagonal(M, axis1=-2, axis2=-1), atol=1e-5)
    assert np.allclose(fm[1, 2].AB, M[1, 2], atol=1e-5) and fm[1].shape == (3, 6, 6)
    assert np.allclose((fm * 2).AB, 2 * M, atol=1e-5) and np.allclose((fm / 2).AB, M / 2, atol=1e-5)
    assert np.allclose(fm.make_even().AB, M, atol=1e-4)
    assert np.allclose(fm.collapse_l().shape, (2, 3, 4, 6))
    assert np.allclose(fm.collapse_r() @ fm.collapse_l() * 0 + M, M)
    assert "Shape([2, 3, 6, 6]), Hidden Dim(4)" in repr(fm)


def test_factored_products(rng):
    A = rng.standard_normal((3, 5, 2)).astype(np.float32)
    B = rng.standard_normal((3, 2, 5)).astype(np.float32)
    fm = circuits.FactoredMatrix(A, B)
    M = A @ B
    X = rng.standard_normal((5, 7)).astype(np.float32)
    x = rng.standard_normal(5).astype(np.float32)
    assert np.allclose((fm @ X).AB, M @ X, atol=1e-4)
    assert np.allclose((X.T @ fm).AB, X.T @ M, atol=1e-4)
    assert np.allclose(fm @ x, M @ x, atol=1e-4) and (fm @ x).shape == (3, 5)
    assert np.allclose(x @ fm, x @ M, atol=1e-4)
    Xb = rng.standard_normal((3, 5, 4)).astype(np.float32)
    assert np.allclose((fm @ Xb).AB, M @ Xb, atol=1e-4)
    other = circuits.FactoredMatrix(rng.standard_normal((5, 3)).astype(np.float32),
                                    rng.standard_normal((3, 5)).astype(np.float32))
    assert np.allclose((fm @ other).AB, M @ other.AB, atol=1e-4)
    assert np.allclose((other @ fm).AB, other.AB @ M, atol=1e-4)
    # broadcasting that C cannot do directly: [2, 1] x [3]
    g = circuits.FactoredMatrix(rng.standard_normal((2, 1, 5, 2)).astype(np.float32),
                                rng.standard_normal((2, 1, 2, 5)).astype(np.float32))
    prod = g @ fm
    assert prod.shape == (2, 3, 5, 5)
    assert np.allclose(prod.AB, g.AB @ M, atol=1e-4)
    with pytest.raises(circuits.ShapeError):
        fm @ np.zeros((4, 4), np.float32)
    with pytest.raises(circuits.ShapeError):
        circuits.FactoredMatrix(np.zeros((3, 4), np.float32), np.zeros((5, 3), np.float32))


def test_factored_topk(rng):
    A = rng.standard_normal((2, 40, 3)).astype(np.float32)
    B = rng.standard_normal((2, 3, 30)).astype(np.float32)
    fm = circuits.FactoredMatrix(A, B)
    M = A @ B
    v, r, c = fm.topk(5, batch_index=1)
    order = np.argsort(-M[1].ravel())[:5]
    assert np.allclose(v, M[1].ravel()[order], atol=1e-5)
    assert np.array_equal(r * 30 + c, order)
    v, r, c = fm.topk(3, axis="row", index=7)
    assert np.all(r == 7) and np.allclose(v, np.sort(M[0, 7])[::-1][:3], atol=1e-5)
    v, r, c = fm.topk(3, axis="column", index=4)
    assert np.all(c == 4) and np.allclose(v, np.sort(M[0, :, 4])[::-1][:3], atol=1e-5)
    with pytest.raises(circuits.RangeError):
        fm.topk(3, batch_index=2)
    with pytest.raises(circuits.RangeError):
        fm.materialize(max_elements=10)


def test_big_circuit_without_materialising():
    """The full OV circuit of a 50257-token vocabulary: top entries without the 10 GB matrix."""
    with circuits.Model.from_pretrained(CASES_DIR / "hf_fake_1layer") as m:
        f = m.circuit("full_OV", 0, 0)
        assert f.shape == (50257, 50257) and f.mdim == m.cfg.d_head
        v, r, c = f.topk(3, axis="row", index=123)
        row = (m.W_E[123] @ m.W_V[0, 0] @ m.W_O[0, 0]) @ m.W_U
        assert np.allclose(v, np.sort(row)[::-1][:3], rtol=1e-4, atol=1e-5)
        assert f.norm() > 0


def test_model_circuits_match_weights(small):
    W_V, W_O, W_Q, W_K = small.W_V, small.W_O, small.W_Q, small.W_K
    assert np.allclose(small.OV.AB, W_V @ W_O, atol=1e-5)
    assert np.allclose(small.QK.AB, W_Q @ np.swapaxes(W_K, -1, -2), atol=1e-5)
    assert np.allclose(small.circuit("OV", 1, 0).AB, W_V[1, 0] @ W_O[1, 0], atol=1e-5)
    assert small.circuit("OV", layer=1).shape == (2, 16, 16)
    assert small.circuit("OV", head=1).shape == (2, 16, 16)
    assert np.allclose(small.circuit("pos_QK", 0, 1).AB,
                       small.W_pos @ W_Q[0, 1] @ W_K[0, 1].T @ small.W_pos.T, atol=1e-4)
    vo = small.virtual_OV(0, 0, 1, 1)
    assert np.allclose(vo.AB, (W_V[0, 0] @ W_O[0, 0]) @ (W_V[1, 1] @ W_O[1, 1]), atol=1e-4)
    vw = small.virtual_weights("head", "q", 0, 1, 1, 0)
    assert np.allclose(vw.AB, W_O[0, 1] @ W_Q[1, 0], atol=1e-5)
    vw = small.virtual_weights("embed", "unembed")
    assert np.allclose(vw.AB, small.W_E @ small.W_U, atol=1e-4)
    cc = small.composition_circuit("V", 0, 0, 1, 1)
    assert cc.shape == (small.cfg.d_vocab, small.cfg.d_vocab_out)
    with pytest.raises(ValueError):
        small.virtual_weights("nope", "q")
    with pytest.raises(circuits.RangeError):
        small.circuit("OV", 5, 0)


def test_composition_scores_and_baseline(small):
    L, H = small.cfg.n_layers, small.cfg.n_heads
    q = small.all_composition_scores("Q")
    assert q.shape == (L, H, L, H) and np.all(q[1, :, 0, :] == 0) and np.all(q[0, :, 1, :] > 0)
    # the definition, with NumPy
    W_OV = small.W_V[0, 0] @ small.W_O[0, 0]
    R = small.W_Q[1, 1] @ small.W_K[1, 1].T
    want = np.linalg.norm(W_OV @ R) / (np.linalg.norm(W_OV) * np.linalg.norm(R))
    assert q[0, 0, 1, 1] == pytest.approx(want, rel=1e-4)
    mlp = small.mlp_composition_scores("K")
    assert mlp.shape == (L, L, H) and np.all(mlp[1] == 0) and np.all(mlp[0, 1] > 0)
    mean, std = circuits.composition_baseline(small, n_samples=50, seed=1)
    assert 0 < mean < 1 and std >= 0
    assert circuits.composition_baseline(16, 8, n_samples=50, seed=1) == (mean, std)  # deterministic
    mean_mlp, _ = circuits.composition_baseline(16, 8, d_mlp=64, n_samples=20)
    assert 0 < mean_mlp < 1
    cs = small.copying_scores()
    assert cs.shape == (L, H) and np.all(np.abs(cs) <= 1 + 1e-6)


def test_repeated_tokens_and_induction(small):
    t = circuits.repeated_tokens(3, 5, small, seed=7)
    assert t.shape == (3, 10) and t.dtype == np.int32
    assert np.array_equal(t[:, :5], t[:, 5:]) and t.min() >= 0 and t.max() < small.cfg.d_vocab
    assert np.array_equal(t, circuits.repeated_tokens(3, 5, small.cfg.d_vocab, seed=7))
    tb = circuits.repeated_tokens(2, 4, 50, seed=1, bos=0)
    assert tb.shape == (2, 9) and np.all(tb[:, 0] == 0)
    sc = small.induction_scores(t)
    assert sc.shape == (2, 2) and np.all((sc >= 0) & (sc <= 1))
    with pytest.raises(circuits.ShapeError):
        small.induction_scores(t, seq_len=3)


def test_threads_setting():
    n = circuits.get_num_threads()
    circuits.set_num_threads(1)
    assert circuits.get_num_threads() == 1
    circuits.set_num_threads(0)
    assert circuits.get_num_threads() == n


def _write_safetensors(path, tensors):
    """A minimal F32 safetensors writer (8-byte header length, JSON header, data in order)."""
    import json
    import struct
    header, off, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_induction_scores_with_a_narrow_unembedding(tmp_path):
    """TransformerLens scores induction on a model whose d_vocab_out < d_vocab: the scores read
    only the patterns. Cutting the unembedding leaves them identical; the losses are refused
    (a target beyond the unembedding) only when asked for."""
    import json
    from conftest import CASES_DIR
    from safetensors_np import load as st_load

    src = CASES_DIR / "tl_attn_only_2l_none"
    full = circuits.Model.from_pretrained_no_processing(src)
    w = st_load(str(src / "model.safetensors"))
    w["unembed.W_U"] = w["unembed.W_U"][:, :7]
    w["unembed.b_U"] = w["unembed.b_U"][:7]
    _write_safetensors(tmp_path / "model.safetensors", w)
    cfg = json.loads((src / "tl_config.json").read_text())
    cfg["d_vocab_out"] = 7
    (tmp_path / "tl_config.json").write_text(json.dumps(cfg))
    cut = circuits.Model.from_pretrained_no_processing(tmp_path)
    assert cut.cfg.d_vocab_out == 7 and cut.cfg.d_vocab == full.cfg.d_vocab
    t = circuits.repeated_tokens(3, 8, full.cfg.d_vocab, seed=7)
    assert t.max() >= 7
    assert np.array_equal(cut.induction_scores(t), full.induction_scores(t))
    with pytest.raises(circuits.RangeError, match="outside d_vocab_out = 7"):
        cut.induction_scores(t, return_losses=True)


@pytest.mark.parametrize("name,layer,head", [("tl_rotary_gptj", 1, 1), ("tl_gqa_rotary_rms", 1, 3)])
def test_rotary_qk_matches_numpy(circuits_mod, name, layer, head):
    """rotary_QK = W_Q R(delta) W_K^T, the rotation written out here: GPT-J adjacent pairs with a
    partial rotary_dim, and rotate-half under GQA (W_K the repeated property)."""
    m = circuits_mod.Model.from_pretrained_no_processing(CASES_DIR / name)
    cfg = m.cfg
    n = 5
    f = m.rotary_QK(layer, head, n)
    assert f.shape == (n, cfg.d_model, cfg.d_model)
    half = cfg.rotary_dim // 2
    inv = 1.0 / cfg.rotary_base ** (np.arange(half, dtype=np.float32) * 2 / np.float32(cfg.rotary_dim))
    Wq, Wk = m.W_Q[layer, head], m.W_K[layer, head]
    for d in range(n):
        R = np.eye(cfg.d_head)
        for i in range(half):
            a, b = (2 * i, 2 * i + 1) if cfg.rotary_adjacent_pairs else (i, i + half)
            c, s = np.cos(d * inv[i]), np.sin(d * inv[i])
            R[a, a], R[a, b], R[b, a], R[b, b] = c, s, -s, c  # row vectors: x R
        assert np.allclose(f.AB[d], Wq @ R @ Wk.T, atol=1e-5)
    with pytest.raises(circuits_mod.UnsupportedError, match="not rotary"):
        circuits_mod.Model.from_pretrained_no_processing(CASES_DIR / "tl_2l_lnpre_gelu").rotary_QK(0, 0, 2)
