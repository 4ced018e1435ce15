"""Files that change under a mapping (docs/loading.md#files-that-change-under-a-mapping).

``Model.from_pretrained(path, mmap=False)`` reads the weight files into memory: truncating them
afterwards changes nothing. The default (``mmap=True``) maps them: a file truncated under an
unprocessed model kills the next forward with SIGBUS, shown here in a subprocess."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import circuits
from circuits import _native as N
from conftest import BINDING, TINY_GPT2

TOKENS = np.array([[5, 17, 300, 2, 999, 41, 8, 8], [1, 2, 3, 4, 5, 6, 7, 8]], dtype=np.int64)


def copy_model(dst):
    dst.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copyfile(TINY_GPT2 / f, dst / f)
    return dst


def truncate(d, size=0):
    with open(d / "model.safetensors", "r+b") as f:
        f.truncate(size)


def mapped(d) -> bool:
    path = str(d / "model.safetensors")
    with open("/proc/self/maps") as f:
        return any(path in line for line in f)


def test_load_options_layout():
    # appended at the end; 0.2.0's struct ends where read_into_memory begins, 0.3.0's where
    # keep_stored_dtype (0.6.0) begins
    assert N.LoadOptions.read_into_memory.offset == 24
    assert N.LoadOptions.keep_stored_dtype.offset == 28
    assert ctypes.sizeof(N.LoadOptions) == 32


@pytest.mark.parametrize("processing", [False, True])
def test_read_into_memory_survives_truncation(tmp_path, processing):
    d = copy_model(tmp_path / "m")
    load = circuits.Model.from_pretrained if processing else circuits.Model.from_pretrained_no_processing
    with load(TINY_GPT2) as ref, load(d, mmap=False) as m:
        assert not mapped(d)
        want = ref(TOKENS)
        truncate(d, 0)
        got = m(TOKENS)
        np.testing.assert_array_equal(got, want)
        truncate(d, 1 << 20)  # re-extended with zeros
        np.testing.assert_array_equal(m(TOKENS), want)
        want_w, got_w = ref.state_dict(), m.state_dict()
        assert list(got_w) == list(want_w)
        for name in want_w:
            np.testing.assert_array_equal(got_w[name], want_w[name], err_msg=name)


def test_mmap_default_maps(tmp_path):
    d = copy_model(tmp_path / "m")
    with circuits.Model.from_pretrained_no_processing(d) as m:
        assert mapped(d)
        assert m(TOKENS).shape == (2, 8, 1000)
    with circuits.Model.from_pretrained_no_processing(d, mmap=True) as m:
        assert mapped(d)
    assert not mapped(d)


def test_mapped_truncation_is_sigbus(tmp_path):
    """The documented behaviour of the default: the process dies of SIGBUS."""
    d = copy_model(tmp_path / "m")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(BINDING)!r})
        import numpy as np, circuits
        m = circuits.Model.from_pretrained_no_processing({str(d)!r})
        with open({str(d / "model.safetensors")!r}, "r+b") as f:
            f.truncate(0)
        m(np.array([[1, 2, 3, 4]]))
        print("survived")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if os.environ.get("CIRCUITS_TEST_SANITIZER") and r.returncode > 0:
        # a sanitizer build (run_tests.sh build-asan): ASan's own handler reports the SIGBUS
        # ("AddressSanitizer: BUS on unknown address") and exits instead of the default action
        assert "BUS" in r.stderr, r.stderr
        return
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stdout, r.stderr)
    assert "survived" not in r.stdout
