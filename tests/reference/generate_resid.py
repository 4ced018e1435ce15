#!/usr/bin/env python3
"""The residual-stream toolkit's references: TransformerLens 3.9's ActivationCache methods.

Run with the reference venv from any directory, AFTER ``generate.py`` (it reads the model
files and the tokens of ``cases/<case>/``):

    /opt/refenv/bin/python tests/reference/generate_resid.py

For a few cases (a processed GPT-2, an unprocessed LayerNorm model with use_attn_result, a
processed gated RMS model, an attention-only RMSPre model) it runs TransformerLens's
``run_with_cache`` on the case's tokens and writes, into ``toolkit/resid/``:

* ``<case>.safetensors``: every method's output for several argument combinations
  (accumulated_resid, decompose_resid, stack_head_results, stack_neuron_results,
  get_full_resid_decomposition, apply_ln_to_stack, compute_head_results, logit_attrs,
  tokens_to_residual_directions, and the logit lens and direct logit attribution as
  TransformerLens users write them), plus the inputs a call needs (random stacks);
* ``resid.json``: per case how to load it, and per call its method, its arguments as
  TransformerLens takes them, the same resolved for the C API (positions, neurons, tokens
  flattened), the output's key and shape, and the labels.

Everything is float32 on CPU, deterministic.
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as G  # noqa: E402  (HF_HUB_OFFLINE, 1 thread, deterministic, no grad)
import generate_circuits as GC  # noqa: E402

import json  # noqa: E402
import logging  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)

OUT = os.path.join(HERE, "toolkit", "resid")

# case -> (processed?, use_attn_result)
CASES = {
    "hf_tiny_random_gpt2": dict(processed=True, use_attn_result=False),
    "tl_gelu_new_attn_result": dict(processed=False, use_attn_result=True),
    "tl_gated_swiglu_rms": dict(processed=True, use_attn_result=False),
    "tl_attn_only_2l_rmspre": dict(processed=False, use_attn_result=False),
}


def slice_json(s: Any) -> Any:
    """A pos_slice / neuron_slice / batch_slice as JSON: null, {"int": i}, {"slice": [a, b, c]},
    {"list": [..]}."""
    if s is None:
        return None
    if isinstance(s, int):
        return {"int": s}
    if isinstance(s, tuple):
        return {"slice": list(s) + [None] * (3 - len(s))}
    return {"list": list(s)}


def resolve(s: Any, n: int) -> Any:
    """The indices a slice selects from n (TL's Slice): None for every one."""
    if s is None:
        return None
    if isinstance(s, int):
        return [s]
    if isinstance(s, tuple):
        return np.arange(n)[slice(*s)].tolist()
    return list(s)


def tokens_json(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return {"tensor": t.tolist()}
    return t


class Writer:
    def __init__(self, model, cache, tokens):
        self.model, self.cache, self.tokens = model, cache, tokens
        self.B, self.T = tokens.shape
        self.tensors: Dict[str, torch.Tensor] = {}
        self.calls: List[dict] = []
        self.n = 0

    def put(self, key: str, t: torch.Tensor) -> str:
        assert key not in self.tensors, key
        self.tensors[key] = t.detach().float().contiguous().clone()
        return key

    def add(self, method: str, args: dict, result: Any, c: dict, **extra) -> None:
        """One call: args as TL takes them (slices as slice_json), c the C API's resolved view."""
        key = f"{self.n:02d}_{method}"
        self.n += 1
        labels = None
        if isinstance(result, tuple):
            result, labels = result
        rec = dict(key=key, method=method, args=args, c=c, shape=list(result.shape), **extra)
        if labels is not None:
            rec["labels"] = list(labels)
        self.put(key, result)
        self.calls.append(rec)


def c_view(w: Writer, pos_slice=None, neuron_slice=None, d_mlp=0, **kw) -> dict:
    c = dict(positions=resolve(pos_slice, w.T), squeeze_pos=isinstance(pos_slice, int))
    if neuron_slice is not None:
        c["neurons"] = resolve(neuron_slice, d_mlp)
    c.update(kw)
    return c


def stack_calls(w: Writer, case: str) -> None:
    m, cache, cfg = w.model, w.cache, w.model.cfg
    NL = cfg.n_layers
    attn_only = cfg.attn_only

    def call(method, kind, tl_args, c_extra=None, skip=False):
        if skip:
            return
        tl = {k: v for k, v in tl_args.items()}
        result = getattr(cache, method)(**tl)
        args = {k: (slice_json(v) if k in ("pos_slice", "neuron_slice") else v) for k, v in tl_args.items()}
        c = c_view(w, tl_args.get("pos_slice"), tl_args.get("neuron_slice"), cfg.d_mlp or 0, kind=kind)
        if c_extra:
            c.update(c_extra)
        w.add(method, args, result, c)

    A = "accumulated_resid"
    call(A, "accumulated", dict(return_labels=True))
    call(A, "accumulated", dict(layer=1, incl_mid=True, pos_slice=-1, return_labels=True), skip=attn_only)
    call(A, "accumulated", dict(apply_ln=True, return_labels=True))
    call(A, "accumulated", dict(layer=1, apply_ln=True, mlp_input=True, pos_slice=[0, 2, 5], return_labels=True),
         skip=attn_only)
    call(A, "accumulated", dict(layer=1, apply_ln=True, pos_slice=(1, 6, 2), return_labels=True))
    call(A, "accumulated", dict(incl_mid=True, apply_ln=True, pos_slice=-1, return_labels=True), skip=attn_only)
    D = "decompose_resid"
    call(D, "decomposed", dict(return_labels=True))
    call(D, "decomposed", dict(layer=1, mlp_input=True, apply_ln=True, pos_slice=-1, return_labels=True),
         skip=attn_only)  # no ln2 to take the scale of
    call(D, "decomposed", dict(layer=1, mlp_input=True, pos_slice=-1, return_labels=True))
    call(D, "decomposed", dict(mode="attn", incl_embeds=False, apply_ln=True, return_labels=True))
    call(D, "decomposed", dict(mode="mlp", pos_slice=(2, 5), return_labels=True))
    H = "stack_head_results"
    call(H, "heads", dict(return_labels=True))
    call(H, "heads", dict(layer=1, incl_remainder=True, pos_slice=-1, apply_ln=True, return_labels=True))
    call(H, "heads", dict(apply_ln=True, pos_slice=[1, 3], return_labels=True))
    call(H, "heads", dict(layer=0, incl_remainder=True, pos_slice=-1, return_labels=True))
    N = "stack_neuron_results"
    call(N, "neurons", dict(layer=1, pos_slice=-1, return_labels=True), skip=attn_only)
    call(N, "neurons", dict(layer=-1, neuron_slice=(0, 5), apply_ln=True, incl_remainder=True, pos_slice=[0, 6],
                            return_labels=True), skip=attn_only)
    call(N, "neurons", dict(layer=NL, neuron_slice=[3, 1, 7], pos_slice=-1, return_labels=True), skip=attn_only)
    F = "get_full_resid_decomposition"
    # TL 3.9 fails on an attention-only model with expand_neurons=True (accumulated_bias reads
    # block.mlp.b_out); libcircuits reads it as expand_neurons=False there (docs/analysis.md)
    call(F, "full", dict(layer=1, pos_slice=-1, return_labels=True, expand_neurons=not attn_only))
    call(F, "full", dict(expand_neurons=False, apply_ln=True, pos_slice=(0, 7, 3), return_labels=True))
    call(F, "full", dict(layer=1, mlp_input=True, apply_ln=True, pos_slice=-1, return_labels=True), skip=attn_only)


def ln_calls(w: Writer) -> None:
    cache, cfg = w.cache, w.model.cfg
    g = torch.Generator().manual_seed(7)
    B, T, Dm = w.B, w.T, cfg.d_model
    for i, (shape, args) in enumerate([
        ((3, B, T, Dm), dict(layer=1, mlp_input=not cfg.attn_only)),
        ((3, B, Dm), dict(layer=None, pos_slice=-1, batch_slice=[1])),
        ((2, B, T, Dm), dict(layer=None, recompute_ln=True)),
        ((2, B, 2, Dm), dict(layer=0, pos_slice=[1, 4])),
    ]):
        stack = torch.randn(*shape, generator=g)
        inp = w.put(f"ln_input{i}", stack)
        out = cache.apply_ln_to_stack(stack.clone(), **args)
        jargs = {k: (slice_json(v) if k in ("pos_slice", "batch_slice") else v) for k, v in args.items()}
        c = c_view(w, args.get("pos_slice"), kind="apply_ln", batch_indices=resolve(args.get("batch_slice"), B))
        w.add("apply_ln_to_stack", jargs, out, c, input=inp)


def head_result_calls(w: Writer) -> None:
    cache, cfg = w.cache, w.model.cfg
    cache.compute_head_results()
    for l in sorted({0, cfg.n_layers - 1}):
        w.add("compute_head_results", dict(layer=l), cache[f"blocks.{l}.attn.hook_result"], dict(kind="head_results"))


def logit_calls(w: Writer) -> None:
    m, cache, cfg = w.model, w.cache, w.model.cfg
    B, T = w.B, w.T
    V = cfg.d_vocab_out
    g = torch.Generator().manual_seed(11)
    answers = torch.randint(0, V, (B,), generator=g)
    wrong = torch.randint(0, V, (B,), generator=g)
    grid = torch.randint(0, V, (B, T), generator=g)

    for i, tok in enumerate([5, grid]):
        w.add("tokens_to_residual_directions", dict(tokens=tokens_json(tok)), m.tokens_to_residual_directions(tok),
              dict(kind="directions", tokens=(torch.as_tensor(tok).reshape(-1).tolist())))

    def attrs(stack_key, stack, tokens, incorrect, pos_slice, flat_tokens, flat_incorrect):
        out = cache.logit_attrs(stack, tokens, incorrect_tokens=incorrect, pos_slice=pos_slice)
        w.add("logit_attrs", dict(stack=stack_key, tokens=tokens_json(tokens), incorrect_tokens=tokens_json(incorrect),
                                  pos_slice=slice_json(pos_slice)), out,
              c_view(w, pos_slice, kind="logit_attrs", tokens=flat_tokens, incorrect_tokens=flat_incorrect))

    s0 = cache.decompose_resid(pos_slice=-1)
    attrs(w.put("stack_decomposed_last", s0), s0, 7, 3, -1, [7], [3])
    s1 = cache.accumulated_resid()
    attrs(w.put("stack_accumulated", s1), s1, grid, None, None, grid.reshape(-1).tolist(), None)
    s2 = cache.stack_head_results(pos_slice=-1)
    attrs(w.put("stack_heads_last", s2), s2, answers, wrong, -1, answers.tolist(), wrong.tolist())

    # the logit lens as TL users write it: unembed(accumulated_resid(apply_ln=True)) at n_layers,
    # unembed(ln_final(accumulated_resid())) elsewhere
    for args, bias in [(dict(pos_slice=-1), True), (dict(layer=1, incl_mid=not cfg.attn_only, pos_slice=-1), True),
                       (dict(layer=2, pos_slice=[0, 3]), False)]:
        acc, labels = cache.accumulated_resid(return_labels=True, **args)
        normed = m.ln_final(acc)  # TL's norms act on the last dim, whatever the leading ones
        lens = normed @ m.W_U + (m.b_U if bias else 0)
        jargs = {k: (slice_json(v) if k == "pos_slice" else v) for k, v in args.items()}
        jargs["unembed_bias"] = bias
        w.add("logit_lens", jargs, (lens, labels), c_view(w, args.get("pos_slice"), kind="logit_lens"))

    # direct logit attribution: logit_attrs(<stack>(pos_slice=-1), answers, wrong, pos_slice=-1)
    for method, kind, extra in [("decompose_resid", "decomposed", {}),
                                ("get_full_resid_decomposition", "full", dict(expand_neurons=False)),
                                ("stack_head_results", "heads", {})]:
        stack, labels = getattr(cache, method)(pos_slice=-1, return_labels=True, **extra)
        out = cache.logit_attrs(stack, answers, incorrect_tokens=wrong, pos_slice=-1)
        w.add("direct_logit_attribution", dict(stack_method=method, tokens=tokens_json(answers),
                                               incorrect_tokens=tokens_json(wrong), pos_slice=slice_json(-1), **extra),
              (out, labels), c_view(w, -1, kind=kind, tokens=answers.tolist(), incorrect_tokens=wrong.tolist(), **extra))


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    index = {"description": "TransformerLens 3.9 ActivationCache references (generate_resid.py)",
             "versions": {"torch": torch.__version__, "transformer_lens": G.md.version("transformer_lens")},
             "cases": {}}
    for name, how in CASES.items():
        cm = GC.CaseModel(name)
        if how["processed"]:
            model, _, _ = GC.load_processed(cm, GC.DEFAULT_FLAGS)
        else:
            model = GC.load_unprocessed(cm)
        model.cfg.use_attn_result = how["use_attn_result"]
        tokens = cm.expected["tokens"].long()
        _, cache = model.run_with_cache(tokens)
        w = Writer(model, cache, tokens)
        w.tensors["tokens"] = tokens.to(torch.int32).contiguous()
        stack_calls(w, name)
        ln_calls(w)
        logit_calls(w)
        head_result_calls(w)  # last: it adds hook_result to the cache
        for k, v in w.tensors.items():
            assert not v.is_floating_point() or torch.isfinite(v).all(), (name, k)
        save_file(w.tensors, os.path.join(OUT, f"{name}.safetensors"), metadata={"case": name})
        index["cases"][name] = dict(how, normalization_type=model.cfg.normalization_type, calls=w.calls)
        print(f"{name:28s} {len(w.calls):3d} calls "
              f"{os.path.getsize(os.path.join(OUT, name + '.safetensors')):8d} bytes")
    with open(os.path.join(OUT, "resid.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
