"""Path patching (Wang et al. 2022, the IOI paper), computed in C (docs/patching.md, "Path patching").

    import circuits
    from circuits.path_patching import path_patch, path_patch_sweep

    # every head as the sender, the logits as the receiver: [n_layers, n_heads]
    grid = path_patch_sweep(model, clean_tokens, corrupted_tokens, "logit_diff",
                            answer_tokens=io, wrong_tokens=s)
    # every head as the sender, the queries of heads 9.6 and 9.9 as receivers
    grid = path_patch_sweep(model, clean_tokens, corrupted_tokens, "logit_diff", receivers=[(9, 6), (9, 9)],
                            receiver_input="q", answer_tokens=io, wrong_tokens=s)

Semantics of ARENA's implementation (``get_path_patch_head_to_final_resid_post``,
``get_path_patch_head_to_heads``, also provided under those names): the senders' ``hook_z`` from the
corrupted run, every other head's ``hook_z`` frozen at its clean value, MLPs recomputed (or frozen
with ``freeze_mlps=True``); receiver the logits, or the receivers' ``hook_q`` / ``hook_k`` /
``hook_v`` recorded in that run and patched into a clean run.
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native as N
from ._metric import MetricSpec, make_metric
from .errors import ShapeError
from .model import Model

lib = N.lib

INPUTS = {"q": N.CIRCUITS_READER_Q, "k": N.CIRCUITS_READER_K, "v": N.CIRCUITS_READER_V}

Head = Tuple[int, int]
Receiver = Union[Tuple[int, int], Tuple[int, int, str]]


def _as_tokens(x: Any) -> Any:
    return getattr(x, "toks", x)  # ARENA's datasets carry their ids as .toks


def _pair(model: Model, clean: Any, corrupted: Any) -> Tuple[np.ndarray, np.ndarray]:
    c, k = model._tokens(_as_tokens(clean)), model._tokens(_as_tokens(corrupted))
    if c.shape != k.shape:
        raise ShapeError(f"clean tokens {list(c.shape)} and corrupted tokens {list(k.shape)} differ in shape")
    return c, k


def _heads(items: Sequence[Any], receiver_input: Optional[str]) -> Any:
    """(layer, head) or (layer, head, "q"|"k"|"v") tuples as a circuits_path_head array."""
    arr = (N.PathHead * max(len(items), 1))()
    for i, it in enumerate(items):
        it = tuple(it)
        if len(it) not in (2, 3):
            raise ValueError(f"a head is (layer, head) or (layer, head, input), not {it!r}")
        inp = it[2] if len(it) == 3 else receiver_input
        if receiver_input is not None or len(it) == 3:
            if inp not in INPUTS:
                raise ValueError(f"a receiver's input is 'q', 'k' or 'v', not {inp!r}")
        arr[i].layer = N.check_int(it[0], ctypes.c_int32, "layer")
        arr[i].head = N.check_int(it[1], ctypes.c_int32, "head")
        arr[i].input = INPUTS[inp] if inp is not None else 0
    return arr


def _options(receivers: Optional[Sequence[Receiver]], receiver_input: str, freeze_mlps: bool):
    opts = N.PathPatchOptions()
    lib.circuits_path_patch_options_init(ctypes.byref(opts))
    arr = None
    if receivers:
        arr = _heads(list(receivers), receiver_input)
        opts.receivers = ctypes.cast(arr, ctypes.c_void_p).value
        opts.n_receivers = len(receivers)
    opts.freeze_mlps = int(bool(freeze_mlps))
    return opts, arr  # arr: keep alive for the call


def _metric_for(metric: MetricSpec, clean: np.ndarray, kw: dict):
    B, T = clean.shape
    if metric == "loss" and kw.get("tokens") is None:
        kw = dict(kw, tokens=clean)  # the patched runs are runs of the clean tokens
    return make_metric(metric, B, T, **kw)


def path_patch(model: Model, clean_tokens: Any, corrupted_tokens: Any, metric: MetricSpec,
               senders: Sequence[Head], receivers: Optional[Sequence[Receiver]] = None, *,
               receiver_input: str = "q", freeze_mlps: bool = False, return_logits: bool = False,
               answer_tokens: Any = None, wrong_tokens: Any = None, positions: Any = None,
               attention_mask: Any = None) -> Any:
    """The metric of the path-patched run (np.float32): ``senders`` (layer, head) take their
    corrupted ``hook_z``, every other head is frozen at its clean value; ``receivers`` None: the
    logits; else (layer, head) heads reading ``receiver_input`` (``"q"``, ``"k"``, ``"v"``; k / v index
    the K/V heads), or (layer, head, input) each. ``return_logits=True``: (metric, logits [batch,
    pos, d_vocab_out]). ``metric``: ``"logit_diff"`` (with ``answer_tokens``, ``wrong_tokens``),
    ``"logit"``, ``"prob"``, ``"log_prob"`` (``answer_tokens``), ``"loss"`` (of the clean tokens), or a
    callable on the logits (a numpy copy) returning a float. ``positions``: where each row's metric
    is read (None: the last position)."""
    clean, corrupted = _pair(model, clean_tokens, corrupted_tokens)
    B, T = clean.shape
    mc = _metric_for(metric, clean, dict(answer_tokens=answer_tokens, wrong_tokens=wrong_tokens,
                                                positions=positions, attention_mask=attention_mask))
    opts, keep = _options(receivers, receiver_input, freeze_mlps)
    s = _heads(list(senders), None)
    value = np.zeros(1, np.float32)
    logits = np.empty((B, T, model._dims.d_vocab_out), np.float32) if return_logits else None
    try:
        model._call(lib.circuits_context_path_patch, clean, corrupted, B, T, s, len(senders),
                    ctypes.byref(mc.struct), ctypes.byref(opts), value, logits, multi_run=True)
    except Exception:
        mc.reraise()  # the metric callback's own exception first
        raise
    del keep
    v = np.float32(value[0])
    return (v, logits) if return_logits else v


def path_patch_sweep(model: Model, clean_tokens: Any, corrupted_tokens: Any, metric: MetricSpec,
                     receivers: Optional[Sequence[Receiver]] = None, *, receiver_input: str = "q",
                     freeze_mlps: bool = False, answer_tokens: Any = None, wrong_tokens: Any = None,
                     positions: Any = None, attention_mask: Any = None) -> np.ndarray:
    """The IOI figure's grid [n_layers, n_heads]: cell (l, h) is :func:`path_patch` with head (l, h)
    the only sender. The clean and corrupted runs happen once; each cell runs from its sender's
    layer. Cells at or after every receiver's layer (no path) hold the clean metric."""
    clean, corrupted = _pair(model, clean_tokens, corrupted_tokens)
    B, T = clean.shape
    mc = _metric_for(metric, clean, dict(answer_tokens=answer_tokens, wrong_tokens=wrong_tokens,
                                                positions=positions, attention_mask=attention_mask))
    opts, keep = _options(receivers, receiver_input, freeze_mlps)
    out = np.empty((model._dims.n_layers, model._dims.n_heads), np.float32)  # sized as C reported
    try:
        model._call(lib.circuits_context_path_patch_sweep, clean, corrupted, B, T, ctypes.byref(mc.struct),
                    ctypes.byref(opts), out, multi_run=True)
    except Exception:
        mc.reraise()
        raise
    del keep
    return out


# ---- ARENA's names (chapter 1.4, Indirect Object Identification) ----


def get_path_patch_head_to_final_resid_post(model: Model, patching_metric: MetricSpec, new_dataset: Any,
                                            orig_dataset: Any, new_cache: Any = None, orig_cache: Any = None,
                                            **metric_kw: Any) -> np.ndarray:
    """ARENA's function: every head as the sender, the logits as the receiver, [n_layers, n_heads].
    ``new_dataset`` is the corrupted run, ``orig_dataset`` the clean one (token ids, or objects with
    ``.toks``); the caches are not needed (the library caches what it needs in one run each)."""
    del new_cache, orig_cache
    return path_patch_sweep(model, orig_dataset, new_dataset, patching_metric, **metric_kw)


def get_path_patch_head_to_heads(receiver_heads: Sequence[Head], receiver_input: str, model: Model,
                                 patching_metric: MetricSpec, new_dataset: Any, orig_dataset: Any,
                                 new_cache: Any = None, orig_cache: Any = None, **metric_kw: Any) -> np.ndarray:
    """ARENA's function: every head of the layers before the last receiver as the sender, the
    receivers' ``receiver_input`` as the receiver: [max receiver layer, n_heads], as ARENA returns."""
    del new_cache, orig_cache
    grid = path_patch_sweep(model, orig_dataset, new_dataset, patching_metric, receivers=receiver_heads,
                            receiver_input=receiver_input, **metric_kw)
    return grid[: max(layer for layer, *_ in receiver_heads)]
