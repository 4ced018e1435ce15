"""Gradient runs from Python (docs/gradients.md "Python"): ``circuits_context_backward`` behind
``Model.backward``, ``run_with_hooks(bwd_hooks=...)`` and ``run_with_cache(incl_bwd=True)``.

    g = model.backward(tokens, "logit_diff", answer_tokens=a, wrong_tokens=w, weight_grads=True)
    g.value, g.logits, g.cache["blocks.0.hook_resid_post_grad"], g.weight_grads["blocks.0.attn.W_Q"]

Memory: a gradient run is one run for the hook machinery of circuits.model. Its forward hooks get
zero-copy views of the run memory, its backward hooks zero-copy views of the gradient buffers
(the context's gradient memory, which ``circuits_context_take_run_memory`` hands over with the run
memory): an array a hook keeps past its call makes the binding take that memory after the call,
so it stays valid (reading what the run last wrote there; copy what you keep). The multi-pass
attribution functions (circuits.attribution) give hooks copies instead, as activation patching
does. The outputs (logits, cache entries, weight gradients, input_grad) are arrays the caller owns
or views of a C cache they keep alive.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from . import _native as N
from ._arrays import Handle
from ._metric import MetricCall, make_metric
from .cache import ActivationCache
from .errors import ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model, _Run

lib = N.lib

__all__ = ["Gradients", "HookLinear", "TokenLoss", "EDIT_GRAD"]

#: ``edit_grad``: how a forward hook's edit passes the gradient (circuits_edit_grad).
EDIT_GRAD = {"replace": N.CIRCUITS_EDIT_GRAD_REPLACE, "through": N.CIRCUITS_EDIT_GRAD_THROUGH}

from .patching import TokenLoss  # noqa: E402  (the metric objects live in circuits.patching)


class HookLinear:
    """The metric sum(activation of ``hook`` * ``direction``): ``direction`` has the hook point's
    shape for the run's [batch, pos] (e.g. [batch, pos, d_model] for ``hook_resid_post``). Gradient
    runs only (it reads no logits). ``hook``: one hook point, full or short name."""

    def __init__(self, hook: str, direction: Any):
        if not isinstance(hook, str):
            raise TypeError(f"HookLinear's hook is a hook name, not {type(hook).__name__}")
        d = np.asarray(direction)
        if d.dtype.kind not in "fiu":
            raise TypeError(f"HookLinear's direction must be a real array, got dtype {d.dtype}")
        self.hook = hook
        self.direction = np.ascontiguousarray(d, dtype=np.float32)

    def _struct_for(self, model: "Model", batch: int, pos: int) -> Tuple[N.Metric, List[Any]]:
        from .patching import _point_shape

        name, shape = _point_shape(model, self.hook, batch, pos)
        if self.direction.shape != shape:
            raise ShapeError(f"HookLinear's direction for '{name}' must have the point's shape {list(shape)} for "
                             f"tokens [{batch}, {pos}], got {list(self.direction.shape)}")
        m = N.Metric()
        lib.circuits_metric_init(ctypes.byref(m))
        m.kind = N.CIRCUITS_METRIC_HOOK_LINEAR
        hb = ctypes.create_string_buffer(N.cstr(name))
        m.hook = ctypes.addressof(hb)
        m.direction = self.direction.ctypes.data
        return m, [hb, self.direction]

    def __call__(self, logits: Any) -> float:
        raise TypeError("HookLinear reads a hook point's activation, not the logits: use it in a gradient run")


class Gradients(NamedTuple):
    """What :meth:`Model.backward` returns."""

    value: np.float32                  #: the metric
    logits: Optional[np.ndarray]       #: [batch, pos, d_vocab_out]
    cache: Optional[ActivationCache]   #: "<name>" activations (cache_activations) and "<name>_grad" gradients
    weight_grads: Dict[str, np.ndarray]  #: d metric / d weight, TransformerLens names and shapes
    input_grad: Optional[np.ndarray]   #: [batch, pos, d_model]: d metric / d the residual stream the run starts from


def metric_call(model: "Model", metric: Any, run: "_Run", **kw: Any) -> MetricCall:
    """The circuits_metric of a gradient run of ``run`` (``"loss"`` and ``"token_loss"`` default to the
    run's tokens, ``"loss"`` to its attention mask)."""
    if metric is None:
        raise ValueError("a gradient run needs a metric: a kind ('loss', 'logit_diff', ...), a metric object "
                         "(circuits.patching.LogitDiff, ..., circuits.grad.HookLinear) or a callable "
                         "logits -> (value, d value / d logits)")
    if kw.get("tokens") is None:
        kw["tokens"] = run.tok
    if kw.get("attention_mask") is None and isinstance(metric, str) and metric == "loss":
        kw["attention_mask"] = run.mask
    if isinstance(metric, str) and metric in ("loss", "token_loss") and kw["tokens"] is None:
        raise ValueError(f"metric {metric!r} of a run from start_at_layer needs the tokens: pass tokens=")
    return make_metric(metric, run.B, run.T, grad=True, model=model, **kw)


def _new_cache() -> Handle:
    out = ctypes.c_void_p()
    N.check(lib.circuits_cache_create(ctypes.byref(out)))
    return Handle(out.value, lib.circuits_cache_free)  # type: ignore[arg-type]


def backward_call(model: "Model", run: "_Run", mc: MetricCall, *, names: Optional[List[str]], cache: bool,
                  cache_activations: bool, weight_grads: bool, input_grad: bool,
                  edit_grad: str) -> Gradients:
    """One circuits_context_backward of ``run`` (checked by Model._prepare) for metric ``mc``. The
    caller holds the model's lock if hooks are registered for this run only."""
    N.require("circuits_context_backward", "a gradient run")
    if edit_grad not in EDIT_GRAD:
        raise ValueError(f"edit_grad must be 'replace' or 'through', not {edit_grad!r}")
    opts = N.BackwardOptions()
    lib.circuits_backward_options_init(ctypes.byref(opts))
    if not run.plain:
        opts.run = ctypes.addressof(run.opts)
    if names is not None and not names:
        cache = False  # selects nothing (NULL / 0 would select every point)
    keep: List[Any] = [run]
    if cache and names is not None:
        arr = (ctypes.c_char_p * len(names))(*[N.cstr(n) for n in names])
        keep.append(arr)
        opts.names_filter = ctypes.addressof(arr)
        opts.n_filter = len(names)
    opts.cache_activations = int(bool(cache_activations))
    opts.edit_grad = EDIT_GRAD[edit_grad]
    opts.weight_grads = int(bool(weight_grads))
    ig = np.empty((run.B, run.T, model._dims.d_model), np.float32) if input_grad else None
    if ig is not None:
        opts.input_grad = ig.ctypes.data
    value = np.zeros(1, np.float32)
    ch = _new_cache() if cache else None
    wh = _new_cache() if weight_grads else None
    try:
        model._call(lib.circuits_context_backward, ctypes.byref(opts), run.tok, run.B, run.T,
                    ctypes.byref(mc.struct), value, run.out, ch.ptr if ch else None, wh.ptr if wh else None)
    except BaseException:
        mc.reraise()  # the metric callback's own exception first
        raise
    del keep
    c = ActivationCache._from_c(ch, model) if ch is not None else None
    if c is not None:
        _backward_order(c.cache_dict)
    wg = dict(ActivationCache._from_c(wh, model).cache_dict) if wh is not None else {}
    return Gradients(np.float32(value[0]), run.out, c, wg, ig)


def _backward_order(d: Dict[str, np.ndarray]) -> None:
    """TransformerLens's incl_bwd cache order, in place: the activations in firing order, then the
    gradients in the order the backward pass reached them (the reverse). The C cache holds each
    gradient right after its activation."""
    for k in [k for k in d if k.endswith("_grad")][::-1]:
        d[k] = d.pop(k)


def names_from_filter(model: "Model", names_filter: Any) -> Optional[List[str]]:
    """run_with_cache's names_filter as a list of names / patterns (None: every point)."""
    if names_filter is None:
        return None
    if isinstance(names_filter, str):
        return [names_filter]
    if callable(names_filter):
        return [p.name for p in model._points if names_filter(p.name)]
    names = list(names_filter)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"names_filter entries must be str, not {type(n).__name__}")
    return names


def check_grad_run(a: Dict[str, Any]) -> None:
    """Refuses what a gradient run cannot do, before anything runs."""
    if a.get("stop_at_layer") is not None:
        raise ValueError("a gradient run goes on to the logits: stop_at_layer is refused (use a HookLinear metric "
                         "on the residual stream instead)")
    if a.get("logit_positions") is not None:
        raise ValueError("a gradient run needs the logits at every position: logit_positions is refused")


def default_metric(metric: Any, return_type: Optional[str], loss_per_token: bool) -> Any:
    """TransformerLens differentiates the model's output (``loss.backward()``): without a metric, a
    gradient run of return_type "loss" takes the mean loss as its metric."""
    if metric is not None:
        return metric
    if return_type == "loss" and not loss_per_token:
        return "loss"
    raise ValueError("a gradient run (bwd_hooks / incl_bwd) needs metric=: TransformerLens differentiates the "
                     "output you call .backward() on; here pass the metric (e.g. metric='loss', "
                     "patching.LogitDiff(answer, wrong), or a callable logits -> (value, grad)), or use "
                     "return_type='loss' for the mean loss")


def run_grad(model: "Model", a: Dict[str, Any], metric: Any, *, names: Optional[List[str]], cache: bool,
             edit_grad: str, metric_kw: Optional[Dict[str, Any]] = None, cache_activations: bool = True,
             weight_grads: bool = False, input_grad: bool = False,
             run: Optional["_Run"] = None) -> Tuple[Any, Gradients]:
    """A gradient run of forward's arguments ``a`` (``run``: already prepared from them): (forward's
    output for a["return_type"], Gradients)."""
    check_grad_run(a)
    if run is None:
        run = model._prepare(**a)
    mc = metric_call(model, metric, run, **(metric_kw or {}))
    g = backward_call(model, run, mc, names=names, cache=cache, cache_activations=cache_activations,
                      weight_grads=weight_grads, input_grad=input_grad, edit_grad=edit_grad)
    return model._finish(run, a["return_type"], a["loss_per_token"]), g
