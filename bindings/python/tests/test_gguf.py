"""Loading a GGUF file in Python: ``Model.from_pretrained("model.gguf")`` is the model of the
Hugging Face directory it was converted from (tests/reference/generate_gguf_f32.py): the same
config, weights, logits and cache, and the file's own tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import circuits
from conftest import CASES_DIR

# the conversions that keep the whole computation (tests/test_gguf_load.c lists the others)
WHOLE = ["hf_llama_gqa", "hf_llama3_rope", "hf_qwen2_bias", "hf_gemma", "hf_gptj", "hf_tiny_random_gpt2"]


@pytest.mark.parametrize("name", WHOLE)
@pytest.mark.parametrize("processing", [False, True])
@pytest.mark.parametrize("as_path", [False, True])
def test_gguf_file_is_the_directorys_model(name, processing, as_path):
    d = CASES_DIR / name
    f = CASES_DIR.parent / "gguf" / f"{name}.f32.gguf"
    load = circuits.Model.from_pretrained if processing else circuits.Model.from_pretrained_no_processing
    with load(str(d)) as hf, load(f if as_path else str(f), mmap=as_path) as gg:
        assert hf.cfg.n_layers == gg.cfg.n_layers and hf.cfg.d_vocab == gg.cfg.d_vocab
        for k, v in hf.state_dict().items():
            np.testing.assert_array_equal(gg.state_dict()[k], v, err_msg=k)
        tokens = np.arange(6, dtype=np.int64)[None, :] % hf.cfg.d_vocab
        a, cache_a = hf.run_with_cache(tokens)
        b, cache_b = gg.run_with_cache(tokens)
        # the same weights at other addresses (a mapped file, a copy): OpenBLAS's kernels may sum in
        # another order for other alignments (seen: 5.8e-6 on a machine whose kernels do), so equal
        # to float rounding, not bit for bit
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(b).max()))
        assert list(cache_a.keys()) == list(cache_b.keys())
        assert gg.tokenizer is not None and gg.tokenizer.vocab_size == gg.cfg.d_vocab


def test_gguf_errors_are_python_errors(tmp_path: Path):
    bad = tmp_path / "bad.gguf"
    data = (CASES_DIR.parent / "gguf" / "hf_llama_gqa.f32.gguf").read_bytes()
    bad.write_bytes(data[:4] + (9).to_bytes(4, "little") + data[8:])  # version 9
    with pytest.raises(circuits.UnsupportedError, match="GGUF version 9 is not supported"):
        circuits.Model.from_pretrained(str(bad))
