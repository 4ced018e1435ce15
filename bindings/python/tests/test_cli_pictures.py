"""`circuits attn`, `circuits lens [--dla]` and `circuits patch` (docs/cli.md): the numbers they
print with --json against the binding computing the same thing its own way on the same model
and tokens: the cached attention pattern, ActivationCache.logit_lens and
direct_logit_attribution (and the model's logits), and patching.get_act_patch_* with a
LogitDiff metric; and one page `patch --html` writes, in headless Chromium with the browser tests'
fixture (test_vis_browser.py). The files and the error paths are tests/test_cli.sh's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import circuits
from circuits import patching
from conftest import REPO, TINY_GPT2
from test_vis_browser import Page, browser, data_of, fmt, label  # noqa: F401 (browser: the fixture)

BYTES = REPO / "examples" / "models" / "attn-only-2l"          # byte-level, no tokenizer of its own
BYTE_TOKENIZER = REPO / "examples" / "train" / "tokenizer.json"
TEXT = "The cat sat on the mat. The cat sat on the mat."


def _cli() -> Path:
    """The `circuits` of the build whose library the binding loads (run_tests.sh's BUILD_DIR)."""
    lib = os.environ.get("CIRCUITS_LIBRARY")
    build = Path(lib).resolve().parent.parent if lib else REPO / "build"
    exe = build / "examples" / "circuits"
    assert exe.is_file(), f"{exe} is not built"
    return exe


def cli_json(*args) -> dict:
    p = subprocess.run([str(_cli()), *map(str, args), "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return json.loads(p.stdout)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


# (model directory, extra CLI options): a GPT-2 with its tokenizer, and the trained byte-level
# induction model with --tokenizer
MODELS = [(TINY_GPT2, ()), (BYTES, ("--tokenizer", BYTE_TOKENIZER))]


@pytest.fixture(scope="module", params=MODELS, ids=["tiny-random-gpt2", "attn-only-2l"])
def subject(request):
    path, extra = request.param
    model = circuits.Model.from_pretrained(path)
    yield model, path, extra
    model.close()


def test_attn_is_the_cached_pattern(subject):
    model, path, extra = subject
    d = cli_json("attn", path, "--prompt", TEXT, "--layer", 1, "--head", 2, "--head", 0, *extra)
    ids = np.array([[t["id"] for t in d["tokens"]]])
    if not extra:  # the model's own tokenizer, BOS first, as to_tokens
        np.testing.assert_array_equal(ids, model.to_tokens(TEXT))
    else:
        assert ids[0].tolist() == list(TEXT.encode())
    assert d["layer"] == 1 and d["heads"] == [2, 0]
    _, cache = model.run_with_cache(ids)
    want = cache["blocks.1.attn.hook_pattern"][0, [2, 0]]
    got = np.array(d["patterns"], dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-7, rtol=1e-6)


def test_lens_is_the_logit_lens(subject):
    model, path, extra = subject
    d = cli_json("lens", path, "--prompt", TEXT, *extra)
    ids = np.array([[t["id"] for t in d["tokens"]]])
    T = ids.shape[1]
    logits, cache = model.run_with_cache(ids)
    lens, labels = cache.logit_lens(return_labels=True)        # [components, batch, pos, vocab]
    assert d["kind"] == "logit_lens" and d["components"] == list(labels)
    want = np.take_along_axis(log_softmax(lens[:, 0, :T - 1]), ids[0, 1:, None][None], -1)[..., 0]
    np.testing.assert_allclose(np.array(d["values"]), want, atol=2e-5, rtol=1e-5)
    # the last row is the model's own prediction: minus its loss on each token
    loss = -np.take_along_axis(log_softmax(logits[0, :T - 1]), ids[0, 1:, None], -1)[:, 0]
    np.testing.assert_allclose(np.array(d["values"][-1]), -loss, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose([t["loss"] for t in d["tokens"][1:]], loss, atol=2e-5, rtol=1e-5)
    assert d["tokens"][0]["loss"] is None


def test_lens_dla_is_direct_logit_attribution(subject):
    model, path, extra = subject
    d = cli_json("lens", path, "--prompt", TEXT, "--dla", *extra)
    ids = np.array([[t["id"] for t in d["tokens"]]])
    T = ids.shape[1]
    logits, cache = model.run_with_cache(ids)
    want, labels = cache.direct_logit_attribution(ids[:, 1:], pos_slice=np.arange(T - 1), return_labels=True)
    want = want.reshape(len(labels), T - 1)
    got = np.array(d["values"])
    assert d["kind"] == "dla" and d["components"] == list(labels)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    # the components add up to the next token's logit, less the unembedding's bias
    nxt = ids[0, 1:]
    b_U = model.b_U if getattr(model, "b_U", None) is not None else np.zeros(logits.shape[-1])
    np.testing.assert_allclose(got.sum(0), logits[0, np.arange(T - 1), nxt] - b_U[nxt], atol=2e-4, rtol=1e-4)


PATCH = dict(clean="The cat sat on the mat. The cat sat on the m", corrupt="The cat sat on the mud. The cat sat on the m",
             answer="a", wrong="u")


@pytest.mark.parametrize("kind,fn", [("resid_pre", "resid_pre"), ("attn_out", "attn_out"),
                                     ("heads", "attn_head_out_all_pos")])
def test_patch_is_activation_patching(kind, fn):
    model = circuits.Model.from_pretrained(BYTES)
    try:
        d = cli_json("patch", BYTES, "--tokenizer", BYTE_TOKENIZER, "--kind", kind,
                     *(x for k, v in PATCH.items() for x in (f"--{k}", v)))
        clean = np.array([list(PATCH["clean"].encode())])
        corrupt = np.array([list(PATCH["corrupt"].encode())])
        assert d["clean_tokens"] == clean[0].tolist() and d["corrupt_tokens"] == corrupt[0].tolist()
        assert d["answer"] == {"id": ord("a"), "text": "a"} and d["wrong"] == {"id": ord("u"), "text": "u"}
        metric = patching.LogitDiff([ord("a")], [ord("u")])
        ld_clean, ld_corrupt = metric(model(clean)), metric(model(corrupt))
        assert d["clean_logit_diff"] == pytest.approx(ld_clean, abs=1e-4)
        assert d["corrupt_logit_diff"] == pytest.approx(ld_corrupt, abs=1e-4)
        _, cache = model.run_with_cache(clean)
        raw = getattr(patching, "get_act_patch_" + fn)(model, corrupt, cache, metric)
        np.testing.assert_allclose(np.array(d["logit_diff"]), raw, atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(np.array(d["values"]), (raw - ld_corrupt) / (ld_clean - ld_corrupt), atol=1e-4)
        assert d["shape"] == list(raw.shape)
    finally:
        model.close()


def test_patch_page_in_a_browser(browser, tmp_path):
    """`circuits patch --html`: the page loads with a clean console, holds one cell per grid value
    with the head and layer labels, and hovering a cell writes its value into div.cv-info."""
    page = tmp_path / "patch.html"
    d = cli_json("patch", BYTES, "--tokenizer", BYTE_TOKENIZER, "--kind", "heads", "--html", page,
                 *(x for k, v in PATCH.items() for x in (f"--{k}", v)))
    assert d["html"] == str(page)
    sent = data_of(page.read_text(encoding="utf-8"))["values"]
    np.testing.assert_allclose(np.array(sent, dtype=np.float64), d["values"], atol=1e-6)
    pg = Page(browser, page)
    root = pg.one("div.cv-view[data-view=grid]")
    rows, cols = d["shape"]
    assert len(pg.all("td.cv-cell", root)) == rows * cols
    assert [th.text for th in pg.all("th.cv-col", root)] == [label(t) for t in d["col_labels"]] == ["H0", "H1", "H2", "H3"]
    assert [th.text for th in pg.all("th.cv-row", root)] == [str(l) for l in range(rows)]
    info = pg.one("div.cv-info", root)
    for r, c in ((1, 0), (0, 3)):
        cell = pg.one(f"td.cv-cell[data-row='{r}'][data-col='{c}']", root)
        pg.hover(cell)
        assert info.text == f"{r}, H{c}: {fmt(sent[r][c])}"
    pg.console_clean()


def _gpt2_dir(path: Path, n_heads: int, d_vocab: int = 16, n_ctx: int = 8) -> Path:
    """A one-layer GPT-2 directory of random weights with n_heads heads of one dimension each."""
    import struct

    d = n_heads
    rng = np.random.default_rng(0)
    shapes = {"wte.weight": (d_vocab, d), "wpe.weight": (n_ctx, d), "h.0.attn.c_attn.weight": (d, 3 * d),
              "h.0.attn.c_attn.bias": (3 * d,), "h.0.attn.c_proj.weight": (d, d), "h.0.attn.c_proj.bias": (d,),
              "h.0.mlp.c_fc.weight": (d, 4 * d), "h.0.mlp.c_fc.bias": (4 * d,), "h.0.mlp.c_proj.weight": (4 * d, d),
              "h.0.mlp.c_proj.bias": (d,)}
    for ln in ("h.0.ln_1", "h.0.ln_2", "ln_f"):
        shapes[ln + ".weight"] = shapes[ln + ".bias"] = (d,)
    header, blobs, off = {}, [], 0
    for name, shape in shapes.items():
        a = (np.ones(shape) if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight"
             else rng.normal(0, 0.1, shape)).astype(np.float32).tobytes()
        header["transformer." + name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(a)]}
        blobs.append(a)
        off += len(a)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.mkdir()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    config = json.loads((TINY_GPT2 / "config.json").read_text())
    config.update(n_embd=d, n_head=n_heads, n_layer=1, vocab_size=d_vocab, n_ctx=n_ctx, n_positions=n_ctx)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_attn_shows_every_head_of_a_wide_layer(tmp_path):
    """Without --head, every head of the layer: 257 of them (the default once stopped at 256)."""
    model = _gpt2_dir(tmp_path / "wide", 257)
    d = cli_json("attn", model, "--tokens", "1,2,3", "--layer", 0, "--html", tmp_path / "a.html")
    assert d["heads"] == list(range(257)) and len(d["patterns"]) == 257
    assert (tmp_path / "a.html").read_text().count("L0H256") == 1
