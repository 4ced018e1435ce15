"""The screenshots of docs/pictures.md "Interactive views": each view made by circuits.vis from a
real model's run, opened in headless Chromium (the browser tests' setup, bindings/python/tests/
browser.py), hovered as a reader would, and captured.

    python3 docs/img/pictures/screenshots.py [BUILD_DIR]     # default: build

The model is examples/models/attn-only-2l (a 2-layer attention-only byte-level model with
induction heads); the text repeats a sentence, so layer 1's induction heads show. Writes
views_attention.png, views_tokens.png, views_grid.png next to this script (and the pages, .html,
into a temporary directory it prints)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
build = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build"
os.environ.setdefault("CIRCUITS_LIBRARY", str((build if build.is_absolute() else REPO / build) / "lib" / "libcircuits.so.0"))
sys.path.insert(0, str(REPO / "bindings" / "python"))
sys.path.insert(0, str(REPO / "bindings" / "python" / "tests"))

import numpy as np  # noqa: E402

import browser  # noqa: E402
import circuits  # noqa: E402
import circuits.vis as cv  # noqa: E402
from circuits import patching  # noqa: E402

MODEL = REPO / "examples" / "models" / "attn-only-2l"
TEXT = "And Moses went up. And Moses went up."


def byte_tokens(text: str):
    b = text.encode()
    return np.array([list(b)]), [chr(x) for x in b]


def main() -> None:
    model = circuits.Model.from_pretrained(str(MODEL))
    toks, strs = byte_tokens(TEXT)
    n = len(strs)
    _, cache = model.run_with_cache(toks)
    pattern = np.asarray(cache["pattern", 1])[0]  # [heads, q, k]
    # the induction score of each layer-1 head: attention from the repeat to the byte after the
    # same byte's first occurrence (the byte at q - period + 1)
    period = TEXT.index(" And") + 1
    score = [float(np.mean([pattern[h, q, q - period + 1] for q in range(period, n)])) for h in range(pattern.shape[0])]
    head = int(np.argmax(score))
    names = [f"L1H{h} (induction {score[h]:.2f})" for h in range(pattern.shape[0])]
    sub = f"attn-only-2l (bytes of the King James Bible), input {TEXT!r}"
    attention = cv.attention_patterns(strs, pattern, attention_head_names=names, title="Layer 1 attention patterns",
                                      subtitle=sub)

    # tokens coloured by the loss of predicting them, and by what layer 1's heads add to it
    loss = np.asarray(model(toks, return_type="loss", loss_per_token=True))[0]  # [n - 1]: predicting byte i + 1

    def zero_z(z, hook):
        z[...] = 0.0

    ablated = np.asarray(model.run_with_hooks(toks, return_type="loss", loss_per_token=True,
                                              fwd_hooks=[("blocks.1.attn.hook_z", zero_z)]))[0]
    per_token = np.full((n, 2), np.nan, np.float32)  # the first byte is predicted by nothing
    per_token[1:, 0] = loss
    per_token[1:, 1] = ablated - loss
    tokens = cv.colored_tokens_multi(strs, per_token, labels=["loss (nats)", "loss without layer 1's heads - loss"],
                                     title="Per-byte loss", subtitle=sub)

    # activation patching of resid_pre: the clean run's 'u' after the repeated "went " against a
    # corrupted first occurrence ("went in"); normalised logit difference u - i
    clean_text, corrupt_text = "And Moses went up. And Moses went ", "And Moses went in. And Moses went "
    clean, cstrs = byte_tokens(clean_text)
    corrupt, _ = byte_tokens(corrupt_text)
    u, i = ord("u"), ord("i")

    def logit_diff(logits):
        lg = np.asarray(logits)[0, -1]
        return float(lg[u] - lg[i])

    _, clean_cache = model.run_with_cache(clean)
    ld_clean, ld_corrupt = logit_diff(model(clean)), logit_diff(model(corrupt))
    grid_vals = patching.get_act_patch_resid_pre(model, corrupt, clean_cache,
                                                 lambda lg: (logit_diff(lg) - ld_corrupt) / (ld_clean - ld_corrupt))
    grid = cv.grid(np.asarray(grid_vals), row_labels=[f"resid_pre {layer}" for layer in range(grid_vals.shape[0])],
                   col_labels=cstrs, row_title="layer", col_title="position", value_title="normalised logit diff",
                   title="Activation patching: resid_pre", subtitle=f"attn-only-2l, clean {clean_text!r}, corrupted "
                   f"{corrupt_text!r}, answer 'u' vs 'i'")
    model.close()

    out = Path(tempfile.mkdtemp(prefix="circuits_views_"))
    driver = browser.chrome(scale=1.0, width=1100, height=1000)
    try:
        best = np.unravel_index(np.nanargmax(np.asarray(grid_vals)), np.shape(grid_vals))  # the cell that restores most
        for name, view, act in (("attention", attention, ("head", head, n - 3)), ("tokens", tokens, ("series", 1, n - 3)),
                                ("grid", grid, ("cell", int(best[0]), int(best[1])))):
            page = out / f"views_{name}.html"
            view.save(page)
            driver.get(page.as_uri())
            bad = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]
            if bad:
                raise SystemExit(f"{page}: console messages {bad}")
            from selenium.webdriver.common.actions.action_builder import ActionBuilder
            from selenium.webdriver.common.by import By

            def hover(el):
                r = driver.execute_script("var r = arguments[0].getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];", el)
                ab = ActionBuilder(driver)
                ab.pointer_action.move_to_location(int(r[0]), int(r[1]))
                ab.perform()

            kind, which, pos = act
            if kind == "head":  # the induction head, and a byte of the repeat hovered
                driver.find_element(By.CSS_SELECTOR, f"button.cv-head[data-head='{which}']").click()
                hover(driver.find_element(By.CSS_SELECTOR, f"span.cv-token[data-pos='{pos}']"))
            elif kind == "series":
                driver.find_element(By.CSS_SELECTOR, f"button.cv-series[data-series='{which}']").click()
                hover(driver.find_element(By.CSS_SELECTOR, f"span.cv-token[data-pos='{pos}']"))
            else:
                hover(driver.find_element(By.CSS_SELECTOR, f"td.cv-cell[data-row='{which}'][data-col='{pos}']"))
            root = driver.find_element(By.CSS_SELECTOR, "div.cv-view")
            png = HERE / f"views_{name}.png"
            png.write_bytes(root.screenshot_as_png)
            print(f"{png.relative_to(REPO)}: {png.stat().st_size // 1024} KB ({page})")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
