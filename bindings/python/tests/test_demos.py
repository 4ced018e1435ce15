"""The TransformerLens demos written with libcircuits (examples/python/*.py) print the numbers
their TransformerLens twins print on the same weights and tokens (examples/python/expected/,
written by examples/python/generate_expected.py).

Comparison: the outputs have the same lines; on each line the same text once numbers are taken
out, and numbers that agree within one unit of their last printed digit plus TOL_DEMO (float32
arithmetic in a different order: TransformerLens's own tolerance for logits is 5e-5)."""

from __future__ import annotations

import contextlib
import io
import re
import runpy

import pytest

from conftest import REPO

EXAMPLES = REPO / "examples" / "python"
DEMOS = sorted(p.stem for p in (EXAMPLES / "expected").glob("*.txt"))
NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:e[-+]?\d+)?")
TOL_DEMO = 2e-4


def compare(got: str, want: str, tol: float = TOL_DEMO) -> list:
    problems = []
    g_lines, w_lines = got.splitlines(), want.splitlines()
    if len(g_lines) != len(w_lines):
        return [f"{len(g_lines)} lines printed, {len(w_lines)} expected"]
    for i, (g, w) in enumerate(zip(g_lines, w_lines)):
        if NUMBER.sub("#", g) != NUMBER.sub("#", w):
            problems.append(f"line {i + 1}: text differs:\n  got  {g[:200]}\n  want {w[:200]}")
            continue
        for gm, wm in zip(NUMBER.finditer(g), NUMBER.finditer(w)):
            digits = min(len(gm.group(1) or ""), len(wm.group(1) or ""))
            a, b = float(gm.group(0)), float(wm.group(0))
            if abs(a - b) > 10.0 ** -digits + tol:
                problems.append(f"line {i + 1}: {a} vs TransformerLens {b}")
    return problems


@pytest.mark.parametrize("demo", DEMOS)
def test_demo_prints_transformerlens_numbers(demo):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        runpy.run_path(str(EXAMPLES / f"{demo}.py"), run_name="__main__")
    problems = compare(buf.getvalue(), (EXAMPLES / "expected" / f"{demo}.txt").read_text())
    assert not problems, "\n".join(problems[:20])


def test_compare_catches_differences():
    assert compare("loss: 1.2345\n", "loss: 1.2346\n") == []
    assert compare("loss: 1.2345\n", "loss: 1.2395\n")
    assert compare("a: [1.0, 2.0]\n", "b: [1.0, 2.0]\n")
    assert compare("x\n", "x\ny\n")
