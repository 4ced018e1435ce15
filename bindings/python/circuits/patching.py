"""Activation patching and ablation: TransformerLens's ``transformer_lens.patching`` over the C
library (``circuits_context_activation_patch``), plus zero / mean / resample ablation.

    import circuits.patching as patching
    _, clean_cache = model.run_with_cache(clean_tokens)
    metric = patching.LogitDiff(answer_tokens, wrong_tokens)       # built in: runs in C
    grid = patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric)  # [n_layers, pos]

The ``get_act_patch_*`` functions take TransformerLens's arguments ``(model, corrupted_tokens,
clean_cache, patching_metric)`` and return its grids as float32 NumPy arrays. The metric is any
Python callable ``metric(logits [batch, pos, d_vocab]) -> scalar`` (called from C once per cell on
a copy of the logits), or one of the built-in metrics below, evaluated in C without calling
Python. ``incremental=True`` (the default; not a TransformerLens argument) starts each patched
run at the patched block and runs only the positions from the patched one (docs/patching.md);
``cells_per_run=0`` (the default) patches several cells in one batched run (1: one run per
cell, as TransformerLens). The results are those of whole re-runs within float32 rounding
(about 1e-6).
"""

from __future__ import annotations

import ctypes
import itertools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _native as N
from ._metric import _ints, _scalar, make_metric
from .cache import act_name
from .errors import RangeError, ShapeError

lib = N.lib

__all__ = [
    "LogitDiff", "Logit", "Prob", "LogProb", "Loss", "TokenLoss", "BuiltinMetric",
    "generic_activation_patch", "make_df_from_ranges",
    "layer_pos_patch_setter", "layer_pos_head_vector_patch_setter", "layer_head_vector_patch_setter",
    "layer_head_pattern_patch_setter", "layer_head_pos_pattern_patch_setter",
    "layer_head_dest_src_pos_pattern_patch_setter",
    "get_act_patch_resid_pre", "get_act_patch_resid_mid", "get_act_patch_resid_post", "get_act_patch_attn_out",
    "get_act_patch_mlp_out", "get_act_patch_attn_head_out_by_pos", "get_act_patch_attn_head_q_by_pos",
    "get_act_patch_attn_head_k_by_pos", "get_act_patch_attn_head_v_by_pos",
    "get_act_patch_attn_head_pattern_by_pos", "get_act_patch_attn_head_pattern_dest_src_pos",
    "get_act_patch_attn_head_out_all_pos", "get_act_patch_attn_head_q_all_pos", "get_act_patch_attn_head_k_all_pos",
    "get_act_patch_attn_head_v_all_pos", "get_act_patch_attn_head_pattern_all_pos",
    "get_act_patch_attn_head_all_pos_every", "get_act_patch_attn_head_by_pos_every", "get_act_patch_block_every",
    "mean_activations", "run_ablated", "Ablation",
]


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------


class BuiltinMetric:
    """A metric evaluated in C (``circuits_metric``): the mean over the batch of one value per
    row, read at each row's position (``pos``: an int or one per row, negative from the end;
    None: the last), or the loss. Calling it on logits [batch, pos, d_vocab] gives the value,
    as a TransformerLens metric function would."""

    _kind = -1

    def __init__(self, answer: Any = None, wrong: Any = None, pos: Any = None, tokens: Any = None,
                 attention_mask: Any = None):
        self._answer = None if answer is None else _ints(answer, np.int32, "answer")
        self._wrong = None if wrong is None else _ints(wrong, np.int32, "wrong")
        self._pos = None if pos is None else _ints(pos, np.int64, "pos")
        self._tokens = None if tokens is None else _ints(tokens, np.int32, "tokens", 2)
        self._mask = None if attention_mask is None else _ints(attention_mask, np.int32, "attention_mask", 2)

    def _struct(self, batch: int, pos: int) -> Tuple[N.Metric, List[np.ndarray]]:
        """The circuits_metric for logits of `batch` rows and `pos` positions, and the arrays it
        points into (keep them alive for as long as the struct is used)."""
        m = N.Metric()
        lib.circuits_metric_init(ctypes.byref(m))
        m.kind = self._kind
        keep: List[np.ndarray] = []

        def rows(a: Optional[np.ndarray], what: str) -> Optional[int]:
            if a is None:
                return None
            if a.size == 1 and batch > 1:
                a = np.full(batch, a[0], a.dtype)
            if a.shape != (batch,):
                raise ShapeError(f"{what} needs one entry per row ({batch}), got {a.size}")
            keep.append(a)
            return a.ctypes.data

        m.answer = rows(self._answer, "answer")
        m.wrong = rows(self._wrong, "wrong")
        if self._pos is not None:
            m.positions = rows(self._pos, "pos")
        for name, a in (("tokens", self._tokens), ("attention_mask", self._mask)):
            if a is not None:
                if a.shape != (batch, pos):  # C reads [batch, pos] of them
                    raise ShapeError(f"the metric's {name} have shape {list(a.shape)}; the logits are "
                                     f"[batch, pos] = [{batch}, {pos}]")
                keep.append(a)
                setattr(m, name, a.ctypes.data)
        return m, keep

    def __call__(self, logits: Any) -> float:
        lg = np.ascontiguousarray(np.asarray(logits, np.float32))
        if lg.ndim == 2:
            lg = lg[None]
        if lg.ndim != 3:
            raise ShapeError(f"logits must be [batch, pos, d_vocab], got shape {list(lg.shape)}")
        m, keep = self._struct(lg.shape[0], lg.shape[1])
        out = np.zeros(1, np.float32)
        N.check(lib.circuits_metric_eval(ctypes.byref(m), lg, *lg.shape, out))
        del keep
        return float(out[0])


class LogitDiff(BuiltinMetric):
    """mean_b logits[b, pos_b, answer[b]] - logits[b, pos_b, wrong[b]] (TransformerLens's
    ``logits_to_ave_logit_diff``)."""

    _kind = N.CIRCUITS_METRIC_LOGIT_DIFF

    def __init__(self, answer: Any, wrong: Any, pos: Any = None):
        super().__init__(answer=answer, wrong=wrong, pos=pos)


class _AnswerMetric(BuiltinMetric):
    def __init__(self, answer: Any, pos: Any = None):
        super().__init__(answer=answer, pos=pos)


class Logit(_AnswerMetric):
    """mean_b logits[b, pos_b, answer[b]]."""

    _kind = N.CIRCUITS_METRIC_LOGIT


class Prob(_AnswerMetric):
    """mean_b softmax(logits[b, pos_b])[answer[b]]."""

    _kind = N.CIRCUITS_METRIC_PROB


class LogProb(_AnswerMetric):
    """mean_b log_softmax(logits[b, pos_b])[answer[b]]."""

    _kind = N.CIRCUITS_METRIC_LOG_PROB


class Loss(BuiltinMetric):
    """TransformerLens's ``utils.lm_cross_entropy_loss(logits, tokens, attention_mask)``."""

    _kind = N.CIRCUITS_METRIC_LOSS

    def __init__(self, tokens: Any, attention_mask: Any = None):
        super().__init__(tokens=tokens, attention_mask=attention_mask)


class TokenLoss(BuiltinMetric):
    """mean_b -log_softmax(logits[b, pos_b])[tokens[b, pos_b + 1]]: the next-token loss at one
    position per row (``pos``: an int or one per row, negative from the end; pos_b < pos - 1)."""

    _kind = N.CIRCUITS_METRIC_TOKEN_LOSS

    def __init__(self, tokens: Any, pos: Any):
        super().__init__(tokens=tokens, pos=pos)


# ------------------------------------------------------------------------------------------
# TransformerLens's patch setters (pure: they work on NumPy arrays as on torch tensors)
# ------------------------------------------------------------------------------------------


def layer_pos_patch_setter(corrupted_activation, index, clean_activation):
    layer, pos = index
    corrupted_activation[:, pos, ...] = clean_activation[:, pos, ...]
    return corrupted_activation


def layer_pos_head_vector_patch_setter(corrupted_activation, index, clean_activation):
    layer, pos, head_index = index
    corrupted_activation[:, pos, head_index] = clean_activation[:, pos, head_index]
    return corrupted_activation


def layer_head_vector_patch_setter(corrupted_activation, index, clean_activation):
    layer, head_index = index
    corrupted_activation[:, :, head_index] = clean_activation[:, :, head_index]
    return corrupted_activation


def layer_head_pattern_patch_setter(corrupted_activation, index, clean_activation):
    layer, head_index = index
    corrupted_activation[:, head_index, :, :] = clean_activation[:, head_index, :, :]
    return corrupted_activation


def layer_head_pos_pattern_patch_setter(corrupted_activation, index, clean_activation):
    layer, head_index, dest_pos = index
    corrupted_activation[:, head_index, dest_pos, :] = clean_activation[:, head_index, dest_pos, :]
    return corrupted_activation


def layer_head_dest_src_pos_pattern_patch_setter(corrupted_activation, index, clean_activation):
    layer, head_index, dest_pos, src_pos = index
    corrupted_activation[:, head_index, dest_pos, src_pos] = clean_activation[:, head_index, dest_pos, src_pos]
    return corrupted_activation


#: (patch_setter, activation_name, index_axis_names) -> the C grid kind
_C_KINDS: Dict[Tuple[Any, str, Tuple[str, ...]], int] = {}
for _name, _kind in (("resid_pre", N.CIRCUITS_PATCH_RESID_PRE), ("resid_mid", N.CIRCUITS_PATCH_RESID_MID),
                     ("resid_post", N.CIRCUITS_PATCH_RESID_POST), ("attn_out", N.CIRCUITS_PATCH_ATTN_OUT),
                     ("mlp_out", N.CIRCUITS_PATCH_MLP_OUT)):
    _C_KINDS[(layer_pos_patch_setter, _name, ("layer", "pos"))] = _kind
for _name, _by_pos, _all in (("z", N.CIRCUITS_PATCH_HEAD_Z_BY_POS, N.CIRCUITS_PATCH_HEAD_Z_ALL_POS),
                             ("q", N.CIRCUITS_PATCH_HEAD_Q_BY_POS, N.CIRCUITS_PATCH_HEAD_Q_ALL_POS),
                             ("k", N.CIRCUITS_PATCH_HEAD_K_BY_POS, N.CIRCUITS_PATCH_HEAD_K_ALL_POS),
                             ("v", N.CIRCUITS_PATCH_HEAD_V_BY_POS, N.CIRCUITS_PATCH_HEAD_V_ALL_POS)):
    _C_KINDS[(layer_pos_head_vector_patch_setter, _name, ("layer", "pos", "head"))] = _by_pos
    _C_KINDS[(layer_head_vector_patch_setter, _name, ("layer", "head"))] = _all
_C_KINDS[(layer_head_pos_pattern_patch_setter, "pattern", ("layer", "head_index", "dest_pos"))] = \
    N.CIRCUITS_PATCH_HEAD_PATTERN_BY_POS
_C_KINDS[(layer_head_dest_src_pos_pattern_patch_setter, "pattern", ("layer", "head_index", "dest_pos", "src_pos"))] = \
    N.CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC
_C_KINDS[(layer_head_pattern_patch_setter, "pattern", ("layer", "head_index"))] = N.CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS


def make_df_from_ranges(column_max_ranges: Sequence[int], column_names: Sequence[str]):
    """TransformerLens's helper: the cartesian product of the ranges as a pandas DataFrame."""
    import pandas as pd  # only this helper (and return_index_df) needs pandas

    return pd.DataFrame(list(itertools.product(*[range(r) for r in column_max_ranges])), columns=list(column_names))


# ------------------------------------------------------------------------------------------
# Patching
# ------------------------------------------------------------------------------------------


def _expected_shape(model: Any, name: str, B: int, T: int) -> Tuple[int, ...]:
    # under the model's lock: close() (or set_use_*) from another thread frees the context
    with model._lock:
        model._check_open()
        idx = [p.name for p in model._points].index(name)
        t = N.Tensor()
        N.check(lib.circuits_context_hook_point(model._ctx, idx, B, T, ctypes.byref(t)))
        return tuple(t.shape[: t.ndim])


def _clean_arrays(model: Any, clean_cache: Any, activation_name: str, B: int, T: int) -> List[np.ndarray]:
    """The clean activation of every block, float32 C-contiguous, checked against the hook's shape
    (the C side reads them as such)."""
    out = []
    for layer in range(model._dims.n_layers):
        name = act_name(activation_name, layer)
        a = np.ascontiguousarray(np.asarray(clean_cache[name]), np.float32)
        want = _expected_shape(model, name, B, T)
        if a.shape != want:
            raise ShapeError(f"clean_cache['{name}'] has shape {list(a.shape)}; patching corrupted tokens "
                             f"[{B}, {T}] needs {list(want)} (a cache of a run of the same shape, with its batch axis)")
        out.append(a)
    return out


def _c_patch(model: Any, kind: int, corrupted_tokens: Any, clean_cache: Any, patching_metric: Any,
             activation_name: str, incremental: bool, cells_per_run: int) -> np.ndarray:
    tok = model._tokens(corrupted_tokens)
    B, T = tok.shape
    clean = _clean_arrays(model, clean_cache, activation_name, B, T)
    ptrs = (ctypes.c_void_p * len(clean))(*[a.ctypes.data for a in clean])
    shape = (ctypes.c_int64 * 4)()
    nd = ctypes.c_int32()
    N.check(lib.circuits_patch_grid_shape(model._live(), kind, T, shape, ctypes.byref(nd)))
    out = np.empty(tuple(shape[: nd.value]), np.float32)
    opts = N.PatchOptions()
    lib.circuits_patch_options_init(ctypes.byref(opts))
    opts.incremental = int(bool(incremental))
    opts.cells_per_run = N.check_int(cells_per_run, ctypes.c_int32, "cells_per_run")
    # the metric as circuits._metric makes it for path patching too: a BuiltinMetric, a
    # callable (on a copy of the logits), or a kind name ("loss": of the corrupted tokens)
    mc = make_metric(patching_metric, B, T, tokens=tok)
    try:
        model._call(lib.circuits_context_activation_patch, kind, tok, B, T, ptrs, ctypes.byref(mc.struct),
                    ctypes.byref(opts), out, multi_run=True)
    except BaseException:
        mc.reraise()  # the metric callback's own exception first
        raise
    del mc, clean
    return out


def generic_activation_patch(model: Any, corrupted_tokens: Any, clean_cache: Any, patching_metric: Callable,
                             patch_setter: Callable, activation_name: str,
                             index_axis_names: Optional[Sequence[str]] = None, index_df: Any = None,
                             return_index_df: bool = False, *, incremental: bool = True,
                             cells_per_run: int = 0) -> Any:
    """TransformerLens's ``generic_activation_patch``. TransformerLens's own patch setters with
    their grids run in C (``incremental``, ``cells_per_run``: circuits_patch_options); any other
    setter (or an explicit ``index_df``) runs one Python-hooked run per index, as TransformerLens
    does."""
    if index_df is None and index_axis_names is not None:
        kind = _C_KINDS.get((patch_setter, activation_name, tuple(index_axis_names)))
        if kind is not None and not return_index_df:
            return _c_patch(model, kind, corrupted_tokens, clean_cache, patching_metric, activation_name, incremental,
                            cells_per_run)
    tok = model._tokens(corrupted_tokens)
    cfg = model.cfg
    if index_df is None:
        assert index_axis_names is not None
        heads = cfg.n_heads
        if activation_name in ("k", "v") and getattr(cfg, "n_key_value_heads", None):
            heads = cfg.n_key_value_heads
        ranges = {"layer": cfg.n_layers, "pos": tok.shape[-1], "head_index": heads, "head": heads,
                  "src_pos": tok.shape[-1], "dest_pos": tok.shape[-1]}
        sizes = [ranges[a] for a in index_axis_names]
        rows = list(itertools.product(*[range(s) for s in sizes]))
        out = np.zeros(sizes, np.float32)
        flat = False
    else:
        rows = [tuple(int(v) for v in r) for r in index_df.itertuples(index=False)]
        out = np.zeros(len(rows), np.float32)
        flat = True
    for c, index in enumerate(rows):
        name = act_name(activation_name, index[0])
        clean = np.asarray(clean_cache[name])

        def hook(act, hook, index=index, clean=clean):
            patch_setter(act, list(index), clean)

        logits = model.run_with_hooks(tok, fwd_hooks=[(name, hook)])
        out[c if flat else index] = _scalar(patching_metric(logits))
    if return_index_df:
        if index_df is None:
            index_df = make_df_from_ranges(sizes, index_axis_names)
        return out, index_df
    return out


def _grid(setter: Callable, activation_name: str, axes: Tuple[str, ...], doc: str) -> Callable:
    def fn(model: Any, corrupted_tokens: Any, clean_cache: Any, patching_metric: Callable, *,
           incremental: bool = True, cells_per_run: int = 0) -> np.ndarray:
        return generic_activation_patch(model, corrupted_tokens, clean_cache, patching_metric, setter,
                                        activation_name, axes, incremental=incremental, cells_per_run=cells_per_run)

    fn.__doc__ = (f"TransformerLens's ``patching.get_act_patch_*`` of '{activation_name}' (patch setter "
                  f"``{setter.__name__}``): {doc}\n\n(model, corrupted_tokens [batch, pos], clean_cache, "
                  "patching_metric) -> float32 grid; ``incremental``, ``cells_per_run``: see the module.")
    return fn


_LP = ("layer", "pos")
get_act_patch_resid_pre = _grid(layer_pos_patch_setter, "resid_pre", _LP, "resid_pre patching: [n_layers, pos].")
get_act_patch_resid_mid = _grid(layer_pos_patch_setter, "resid_mid", _LP, "resid_mid patching: [n_layers, pos].")
get_act_patch_resid_post = _grid(layer_pos_patch_setter, "resid_post", _LP,
                                 "resid_post patching: [n_layers, pos] (not in TransformerLens).")
get_act_patch_attn_out = _grid(layer_pos_patch_setter, "attn_out", _LP, "attn_out patching: [n_layers, pos].")
get_act_patch_mlp_out = _grid(layer_pos_patch_setter, "mlp_out", _LP, "mlp_out patching: [n_layers, pos].")
_LPH = ("layer", "pos", "head")
get_act_patch_attn_head_out_by_pos = _grid(layer_pos_head_vector_patch_setter, "z", _LPH,
                                           "hook_z of each head by position: [n_layers, pos, n_heads].")
get_act_patch_attn_head_q_by_pos = _grid(layer_pos_head_vector_patch_setter, "q", _LPH,
                                         "hook_q of each head by position: [n_layers, pos, n_heads].")
get_act_patch_attn_head_k_by_pos = _grid(layer_pos_head_vector_patch_setter, "k", _LPH,
                                         "hook_k of each K/V head by position: [n_layers, pos, n_key_value_heads].")
get_act_patch_attn_head_v_by_pos = _grid(layer_pos_head_vector_patch_setter, "v", _LPH,
                                         "hook_v of each K/V head by position: [n_layers, pos, n_key_value_heads].")
get_act_patch_attn_head_pattern_by_pos = _grid(layer_head_pos_pattern_patch_setter, "pattern",
                                               ("layer", "head_index", "dest_pos"),
                                               "pattern rows of each head by dest: [n_layers, n_heads, pos].")
get_act_patch_attn_head_pattern_dest_src_pos = _grid(
    layer_head_dest_src_pos_pattern_patch_setter, "pattern", ("layer", "head_index", "dest_pos", "src_pos"),
    "pattern entries of each head: [n_layers, n_heads, dest_pos, src_pos].")
_LH = ("layer", "head")
get_act_patch_attn_head_out_all_pos = _grid(layer_head_vector_patch_setter, "z", _LH,
                                            "hook_z of each head, all positions: [n_layers, n_heads].")
get_act_patch_attn_head_q_all_pos = _grid(layer_head_vector_patch_setter, "q", _LH,
                                          "hook_q of each head, all positions: [n_layers, n_heads].")
get_act_patch_attn_head_k_all_pos = _grid(layer_head_vector_patch_setter, "k", _LH,
                                          "hook_k of each K/V head, all positions: [n_layers, n_key_value_heads].")
get_act_patch_attn_head_v_all_pos = _grid(layer_head_vector_patch_setter, "v", _LH,
                                          "hook_v of each K/V head, all positions: [n_layers, n_key_value_heads].")
get_act_patch_attn_head_pattern_all_pos = _grid(layer_head_pattern_patch_setter, "pattern", ("layer", "head_index"),
                                                "the whole pattern of each head: [n_layers, n_heads].")


def _pad_heads(a: np.ndarray, n: int) -> np.ndarray:
    """TransformerLens pads k and v grids of grouped-query models with zeros to n_heads."""
    if a.shape[-1] == n:
        return a
    pad = [(0, 0)] * (a.ndim - 1) + [(0, n - a.shape[-1])]
    return np.pad(a, pad)


def _every_head(grids: Sequence[Callable], pattern_to_pos_head: bool, args: Tuple, kw: Dict[str, Any]) -> np.ndarray:
    """z, q, k, v and pattern grids stacked as TransformerLens stacks them: k and v padded to
    n_heads, the by-position pattern grid [layer, head, pos] transposed to [layer, pos, head]."""
    out = [g(*args, **kw) for g in grids]
    H = out[0].shape[-1]
    out[2], out[3] = _pad_heads(out[2], H), _pad_heads(out[3], H)
    if pattern_to_pos_head:
        out[4] = np.ascontiguousarray(out[4].transpose(0, 2, 1))
    return np.stack(out)


def get_act_patch_attn_head_all_pos_every(model: Any, corrupted_tokens: Any, clean_cache: Any, metric: Callable, *,
                                          incremental: bool = True, cells_per_run: int = 0) -> np.ndarray:
    """[5, n_layers, n_heads]: z, q, k, v, pattern of every head over all positions."""
    return _every_head((get_act_patch_attn_head_out_all_pos, get_act_patch_attn_head_q_all_pos,
                        get_act_patch_attn_head_k_all_pos, get_act_patch_attn_head_v_all_pos,
                        get_act_patch_attn_head_pattern_all_pos), False,
                       (model, corrupted_tokens, clean_cache, metric),
                       dict(incremental=incremental, cells_per_run=cells_per_run))


def get_act_patch_attn_head_by_pos_every(model: Any, corrupted_tokens: Any, clean_cache: Any, metric: Callable, *,
                                         incremental: bool = True, cells_per_run: int = 0) -> np.ndarray:
    """[5, n_layers, pos, n_heads]: z, q, k, v and pattern (by dest) of every head by position."""
    return _every_head((get_act_patch_attn_head_out_by_pos, get_act_patch_attn_head_q_by_pos,
                        get_act_patch_attn_head_k_by_pos, get_act_patch_attn_head_v_by_pos,
                        get_act_patch_attn_head_pattern_by_pos), True,
                       (model, corrupted_tokens, clean_cache, metric),
                       dict(incremental=incremental, cells_per_run=cells_per_run))


def get_act_patch_block_every(model: Any, corrupted_tokens: Any, clean_cache: Any, metric: Callable, *,
                              incremental: bool = True, cells_per_run: int = 0) -> np.ndarray:
    """[3, n_layers, pos]: resid_pre, attn_out and mlp_out by position."""
    kw = dict(incremental=incremental, cells_per_run=cells_per_run)
    return np.stack([get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric, **kw),
                     get_act_patch_attn_out(model, corrupted_tokens, clean_cache, metric, **kw),
                     get_act_patch_mlp_out(model, corrupted_tokens, clean_cache, metric, **kw)])


# ------------------------------------------------------------------------------------------
# Ablation
# ------------------------------------------------------------------------------------------


class Ablation:
    """One ablation for :func:`run_ablated`: ``kind`` "zero", "mean" (``values``: the point's
    mean from :func:`mean_activations`) or "resample" (``values``: another batch's activations of
    the point, [source_batch, ...]; each row takes a source row drawn with ``seed``), of hook
    point ``hook`` narrowed to a ``head``, a ``neuron`` (last axis) and a ``position`` (dest for
    patterns), each optional."""

    def __init__(self, hook: str, kind: str = "zero", head: Optional[int] = None, neuron: Optional[int] = None,
                 position: Optional[int] = None, values: Any = None, seed: int = 0):
        kinds = {"zero": N.CIRCUITS_ABLATE_ZERO, "mean": N.CIRCUITS_ABLATE_MEAN,
                 "resample": N.CIRCUITS_ABLATE_RESAMPLE}
        if kind not in kinds:
            raise ValueError(f"kind must be 'zero', 'mean' or 'resample', not {kind!r}")
        self.hook, self.kind, self.head, self.neuron, self.position, self.seed = hook, kind, head, neuron, position, seed
        self._kind = kinds[kind]
        self.values = None if values is None else np.ascontiguousarray(np.asarray(values), np.float32)


def _point_shape(model: Any, hook: str, B: int, T: int) -> Tuple[str, Tuple[int, ...]]:
    """The full name of the one hook point `hook` names (full or short name), and its shape."""
    buf = ctypes.create_string_buffer(256)
    count = ctypes.c_size_t(0)
    with model._lock:  # as _expected_shape: the context must not be freed under the call
        model._check_open()
        N.check(lib.circuits_context_resolve_hook_name(model._ctx, N.cstr(hook), 0, buf, len(buf), ctypes.byref(count)))
    if count.value != 1:
        raise ValueError(f"'{hook}' selects {count.value} hook points; name exactly one")
    name = buf.value.decode()
    return name, _expected_shape(model, name, B, T)


def run_ablated(model: Any, tokens: Any, ablations: Sequence[Ablation], return_type: Optional[str] = "logits") -> Any:
    """``model(tokens, return_type=...)`` ("logits", "loss", "both", None) with the ablations
    applied (in C, after the Python hooks of their points)."""
    tok = model._tokens(tokens)
    B, T = tok.shape
    arr = (N.Ablation * max(1, len(ablations)))()
    keep: List[Any] = []
    for i, a in enumerate(ablations):
        name, shape = _point_shape(model, a.hook, B, T)
        s = arr[i]
        lib.circuits_ablation_init(ctypes.byref(s))
        s.kind = a._kind
        hb = N.cstr(name)
        keep.append(hb)
        s.hook = ctypes.cast(ctypes.c_char_p(hb), ctypes.c_void_p).value
        if a.head is not None:
            s.head = N.check_int(a.head, ctypes.c_int32, "head")
        if a.neuron is not None:
            s.neuron = N.check_int(a.neuron, ctypes.c_int64, "neuron")
        if a.position is not None:
            s.position = N.check_int(a.position, ctypes.c_int64, "position")
        if a.kind != "zero":
            if a.values is None:
                raise ValueError(f"a {a.kind} ablation needs values")
            v = a.values
            if a.kind == "mean" and v.shape != shape[1:]:
                raise ShapeError(f"mean values for '{name}' must have shape {list(shape[1:])}, got {list(v.shape)}")
            if a.kind == "resample" and (v.ndim != len(shape) or v.shape[1:] != shape[1:]):
                raise ShapeError(f"resample values for '{name}' must have shape [source_batch, "
                                 f"{', '.join(map(str, shape[1:]))}], got {list(v.shape)}")
            keep.append(v)
            s.values = v.ctypes.data
            s.source_batch = v.shape[0] if a.kind == "resample" else 0
        s.seed = int(a.seed) & 0xFFFFFFFFFFFFFFFF
    logits, loss, _ = model._outputs(B, T, return_type, False)
    model._call(lib.circuits_context_run_ablated, arr, len(ablations), tok, B, T, logits, loss)
    del keep
    return model._result(return_type, logits, loss, None)


def mean_activations(model: Any, tokens: Any, hooks: Sequence[str], batch_size: int = 32) -> Dict[str, np.ndarray]:
    """The mean over the rows of ``tokens`` [n_rows, pos] of each hook point (its shape without the
    batch axis), in one streaming pass of ``batch_size`` rows at a time (memory: one batch)."""
    tok = model._tokens(tokens)
    R, T = tok.shape
    names = [_point_shape(model, h, 1, T)[0] for h in hooks]
    outs = [np.empty(_expected_shape(model, n, 1, T)[1:], np.float32) for n in names]
    cn = (ctypes.c_char_p * len(names))(*[N.cstr(n) for n in names])
    ptrs = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
    model._call(lib.circuits_context_mean_activations, cn, len(names), tok, R, T, int(batch_size), ptrs,
                multi_run=True)
    return dict(zip(names, outs))
