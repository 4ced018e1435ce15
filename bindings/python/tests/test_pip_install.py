"""`pip install .` from the repository root (pyproject.toml, meson-python) into a fresh venv:
the library is built and installed inside the package (circuits/_lib/libcircuits.so.0), and the
installed binding finds it with no CIRCUITS_LIBRARY and runs a model.

Offline: the venv sees this interpreter's packages (--system-site-packages: numpy, and
meson-python, which run_tests.sh installs when missing), and pip runs with
--no-build-isolation --no-deps, so nothing is downloaded (build isolation would fetch
meson-python and meson from PyPI for every build; a user's plain `pip install .` does that)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

import pytest

from conftest import REPO, TINY_GPT2

pytest.importorskip("mesonpy", reason="meson-python is not installed (bindings/python/run_tests.sh installs it)")

CHECK = r"""
import os, sys
import numpy as np
import circuits
from circuits import _native as N
lib = os.path.realpath(N.library_path)
pkg = os.path.dirname(os.path.realpath(circuits.__file__))
assert N.library_source != "CIRCUITS_LIBRARY" and lib == os.path.join(pkg, "_lib", "libcircuits.so.0"), (lib, pkg)
assert pkg.startswith(os.path.realpath(sys.prefix)), pkg  # the venv's copy, not the source tree
m = circuits.Model.from_pretrained(sys.argv[1])
assert m.generate("Hello", max_new_tokens=2, do_sample=False, return_type="tokens").shape == (1, 6)
assert m.blocks[0].attn.W_Q.shape == (4, 32, 8)
print("installed ok:", lib)
"""


def test_pip_install_builds_and_bundles_the_library(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("CIRCUITS_LIBRARY", "PYTHONPATH")}
    env["PIP_NO_INDEX"] = "1"  # offline: a missing build dependency fails instead of downloading
    # the venv has no pip of its own (with_pip=False is fast): this interpreter's pip installs into it
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-build-isolation",
                        "--no-deps", "--quiet", str(REPO)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(py), "-c", CHECK, str(TINY_GPT2)], env=env, capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installed ok" in r.stdout
