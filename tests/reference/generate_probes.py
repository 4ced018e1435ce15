#!/usr/bin/env python3
"""Linear probes' references: scikit-learn 1.9.1's LogisticRegression, LinearRegression and
Ridge on real activations of a bundled model and on a synthetic multi-class set.

    /opt/refenv/bin/python tests/reference/generate_probes.py

Data (written into ``probes/probes.safetensors``, float32 as the library takes it):

* ``act_train`` / ``act_test``: ``blocks.1.hook_resid_post`` of examples/models/mlp-2l
  (TransformerLens 3.9, loaded as libcircuits loads it by default: LayerNorm folded, writing
  weights centred) over two passages of English prose, one row per byte position; the first
  300 rows train, the other 100 are held out. Labels from the byte each position is followed by
  (the model's next token: decodable, not separable):
  ``vowel_*`` (binary: the byte is a vowel), ``cat_*`` (4 classes: lower-case letter, space,
  upper-case letter, anything else); regression targets ``reg_*`` [n, 2]: the byte / 255 and
  (the byte is a space).
* ``syn_*``: 4 Gaussian clusters in 10 dimensions (multinomial, and a linear target).

Fits (``probes/probes.json`` lists every case: kind, l2 (= 1 / C, or Ridge's alpha),
fit_intercept, the data keys, sklearn's scores on the held-out rows): coefficients
``<case>.coef`` [n_coef, d] and ``<case>.intercept`` [n_coef], and held-out predictions
``<case>.pred`` (predict_proba, or predict) [n_test, n_outputs]. The logistic fits use
solver="newton-cholesky" with tol=1e-12, max_iter=1000 on the float64 upcast of the rows, so
sklearn's solution is exact to ~1e-10; the script checks that lbfgs (tol 1e-12) agrees, and
prints the largest difference.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "examples", "python", "tl"))
sys.dont_write_bytecode = True

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge  # noqa: E402
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, r2_score  # noqa: E402
from tl_load import load_tl_dir  # noqa: E402

torch.set_num_threads(1)
OUT = os.path.join(HERE, "probes")
MODEL = os.path.join(REPO, "examples", "models", "mlp-2l")
HOOK = "blocks.1.hook_resid_post"
N_TRAIN = 300

TEXT = [
    "In the quiet town by the river, the baker opened his shop before dawn. Bread and honey cakes "
    "filled the shelves, and the smell drifted down the lane to where the fishermen mended nets. "
    "Old Thomas came first, as he always did, and asked for a loaf.",
    "When the rain came in the evening, Mary gathered the children inside and told them stories "
    "of kings, of ships, and of a lamp that never went out. They listened until the fire was low. "
    "Then Peter asked for one more tale, and she smiled.",
]


def activations():
    model = load_tl_dir(MODEL)
    rows, toks = [], []
    for t in TEXT:
        b = list(t.encode("ascii"))[:201]
        ids = torch.tensor([b[:200]])
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=[HOOK])
        rows.append(cache[HOOK][0].numpy().astype(np.float32))
        toks.append(np.array(b[1:201]))  # each position's NEXT byte: what the probe predicts
    return np.concatenate(rows), np.concatenate(toks)


def byte_class(b: int) -> int:
    c = chr(b)
    if c.islower():
        return 0
    if c == " ":
        return 1
    if c.isupper():
        return 2
    return 3


def main() -> None:
    assert sklearn.__version__ == "1.9.1", sklearn.__version__
    os.makedirs(OUT, exist_ok=True)
    X, tok = activations()
    assert X.shape == (400, 128), X.shape
    t: dict = {}
    t["act_train"], t["act_test"] = X[:N_TRAIN], X[N_TRAIN:]
    vowel = np.array([chr(b) in "aeiouAEIOU" for b in tok], dtype=np.float32)
    cat = np.array([byte_class(int(b)) for b in tok], dtype=np.float32)
    reg = np.stack([tok / 255.0, (tok == 32)], axis=1).astype(np.float32)
    for k, v in (("vowel", vowel), ("cat", cat), ("reg", reg)):
        t[k + "_train"], t[k + "_test"] = v[:N_TRAIN], v[N_TRAIN:]
    rng = np.random.default_rng(17)
    centres = rng.normal(0, 1.5, (4, 10))
    ys = rng.integers(0, 4, 260)
    Xs = (centres[ys] + rng.normal(0, 1.0, (260, 10))).astype(np.float32)
    t["syn_train"], t["syn_test"] = Xs[:200], Xs[200:]
    t["syncls_train"], t["syncls_test"] = ys[:200].astype(np.float32), ys[200:].astype(np.float32)
    ylin = (Xs @ rng.normal(0, 1, (10, 3)) + rng.normal(0, 0.3, (260, 3)) + 2.0).astype(np.float32)
    t["synlin_train"], t["synlin_test"] = ylin[:200], ylin[200:]

    cases = []
    worst_lbfgs = 0.0

    def add(name, kind, l2, fit_intercept, x, y, est):
        Xtr, Xte = t[x + "_train"].astype(np.float64), t[x + "_test"].astype(np.float64)
        ytr, yte = t[y + "_train"].astype(np.float64), t[y + "_test"].astype(np.float64)
        if kind == "logistic":
            ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)
        est.fit(Xtr, ytr)
        coef = np.atleast_2d(est.coef_)
        icpt = np.atleast_1d(est.intercept_) if fit_intercept else np.zeros(coef.shape[0])
        c = dict(name=name, kind=kind, l2=l2, fit_intercept=fit_intercept, X=x, y=y)
        if kind == "logistic":
            pred = est.predict_proba(Xte)
            c.update(accuracy=float(accuracy_score(yte, est.predict(Xte))), log_loss=float(log_loss(yte, pred)),
                     n_iter=int(np.max(est.n_iter_)))
        else:
            pred = est.predict(Xte).reshape(len(Xte), -1)
            c.update(r2=float(r2_score(yte, pred.reshape(yte.shape))),
                     mse=float(mean_squared_error(yte, pred.reshape(yte.shape))))
        c32 = np.ascontiguousarray  # sklearn's arrays may be Fortran-ordered
        t[name + ".coef"] = c32(coef, dtype=np.float32)
        t[name + ".intercept"] = c32(icpt, dtype=np.float32)
        t[name + ".pred"] = c32(pred, dtype=np.float32)
        # float64 copies of the coefficients: the test measures against these
        t[name + ".coef64"] = c32(coef, dtype=np.float64)
        t[name + ".intercept64"] = c32(icpt, dtype=np.float64)
        cases.append(c)
        return est

    for C in (0.1, 1.0, 10.0):
        for fi in (True, False) if C == 1.0 else (True,):
            kw = dict(C=C, fit_intercept=fi, tol=1e-12, max_iter=1000)
            nm = f"vowel_C{C:g}" + ("" if fi else "_noint")
            est = add(nm, "logistic", 1.0 / C, fi, "act", "vowel", LogisticRegression(solver="newton-cholesky", **kw))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lb = LogisticRegression(solver="lbfgs", **kw).fit(t["act_train"].astype(np.float64),
                                                                  t["vowel_train"].astype(np.int64))
            worst_lbfgs = max(worst_lbfgs, float(np.max(np.abs(lb.coef_ - est.coef_))))
    for C in (0.5, 2.0):
        kw = dict(C=C, tol=1e-12, max_iter=1000)
        nm = f"cat_C{C:g}"
        est = add(nm, "logistic", 1.0 / C, True, "act", "cat", LogisticRegression(solver="newton-cholesky", **kw))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lb = LogisticRegression(solver="lbfgs", **kw).fit(t["act_train"].astype(np.float64),
                                                              t["cat_train"].astype(np.int64))
        worst_lbfgs = max(worst_lbfgs, float(np.max(np.abs(lb.coef_ - est.coef_))))
    add("syn_C1", "logistic", 1.0, True, "syn", "syncls",
        LogisticRegression(solver="newton-cholesky", C=1.0, tol=1e-12, max_iter=1000))
    add("syn_C0.05_noint", "logistic", 20.0, False, "syn", "syncls",
        LogisticRegression(solver="newton-cholesky", C=0.05, fit_intercept=False, tol=1e-12, max_iter=1000))
    add("reg_ols", "linear", 0.0, True, "act", "reg", LinearRegression())
    add("reg_ridge1", "linear", 1.0, True, "act", "reg", Ridge(alpha=1.0, solver="cholesky"))
    add("reg_ridge10_noint", "linear", 10.0, False, "act", "reg", Ridge(alpha=10.0, fit_intercept=False,
                                                                        solver="cholesky"))
    add("synlin_ols", "linear", 0.0, True, "syn", "synlin", LinearRegression())
    add("synlin_ols_noint", "linear", 0.0, False, "syn", "synlin", LinearRegression(fit_intercept=False))
    add("synlin_ridge3", "linear", 3.0, True, "syn", "synlin", Ridge(alpha=3.0, solver="cholesky"))

    save_file(t, os.path.join(OUT, "probes.safetensors"))
    meta = dict(sklearn=sklearn.__version__, model="examples/models/mlp-2l", hook=HOOK, n_train=N_TRAIN,
                lbfgs_vs_newton_cholesky_max_coef_diff=worst_lbfgs, cases=cases)
    with open(os.path.join(OUT, "probes.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases; lbfgs vs newton-cholesky: max |coef diff| {worst_lbfgs:.3g}")


if __name__ == "__main__":
    main()
