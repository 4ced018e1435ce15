"""Attribution from gradients (docs/gradients.md "Python"): attribution patching, edge attribution
patching (EAP, EAP-IG) and integrated gradients, over the C library.

    import circuits.attribution as attr
    _, clean_cache = model.run_with_cache(clean_tokens)
    est = attr.get_attr_patch_resid_pre(model, corrupted_tokens, clean_cache, metric)   # [n_layers, pos]
    act = patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric)
    # est ~ act - metric(corrupted run): the same grid, one forward and backward instead of one run per cell

Metrics are given as circuits.patching's and path patching's are (a kind with ``answer_tokens`` /
``wrong_tokens`` / ``positions``, a metric object), or as a callable ``metric(logits) -> (value,
d value / d logits)``. Every function here runs several passes in one C call: Python hooks
registered on the model fire in them with their own copies of the activations and gradients.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Tuple, Union

import numpy as np

from . import _native as N
from ._metric import make_metric
from .errors import ShapeError
from .patching import _clean_arrays, _point_shape

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model

lib = N.lib

__all__ = ["KINDS", "attribution_patch", "edge_attribution", "EdgeAttribution", "eap_nodes", "integrated_gradients"]

#: kind name (circuits.patching's get_act_patch_<name>) -> (circuits_patch_kind, the patched activation)
KINDS: Dict[str, Tuple[int, str]] = {
    "resid_pre": (N.CIRCUITS_PATCH_RESID_PRE, "resid_pre"),
    "resid_mid": (N.CIRCUITS_PATCH_RESID_MID, "resid_mid"),
    "resid_post": (N.CIRCUITS_PATCH_RESID_POST, "resid_post"),
    "attn_out": (N.CIRCUITS_PATCH_ATTN_OUT, "attn_out"),
    "mlp_out": (N.CIRCUITS_PATCH_MLP_OUT, "mlp_out"),
    "attn_head_out_by_pos": (N.CIRCUITS_PATCH_HEAD_Z_BY_POS, "z"),
    "attn_head_q_by_pos": (N.CIRCUITS_PATCH_HEAD_Q_BY_POS, "q"),
    "attn_head_k_by_pos": (N.CIRCUITS_PATCH_HEAD_K_BY_POS, "k"),
    "attn_head_v_by_pos": (N.CIRCUITS_PATCH_HEAD_V_BY_POS, "v"),
    "attn_head_pattern_by_pos": (N.CIRCUITS_PATCH_HEAD_PATTERN_BY_POS, "pattern"),
    "attn_head_pattern_dest_src_pos": (N.CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC, "pattern"),
    "attn_head_out_all_pos": (N.CIRCUITS_PATCH_HEAD_Z_ALL_POS, "z"),
    "attn_head_q_all_pos": (N.CIRCUITS_PATCH_HEAD_Q_ALL_POS, "q"),
    "attn_head_k_all_pos": (N.CIRCUITS_PATCH_HEAD_K_ALL_POS, "k"),
    "attn_head_v_all_pos": (N.CIRCUITS_PATCH_HEAD_V_ALL_POS, "v"),
    "attn_head_pattern_all_pos": (N.CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS, "pattern"),
}


def _metric(model: "Model", metric: Any, B: int, T: int, tokens: np.ndarray, kw: Dict[str, Any]):
    if metric is None:
        raise ValueError("an attribution needs a metric (a kind, a metric object, or a callable logits -> "
                         "(value, d value / d logits))")
    kw = dict(kw)
    kw.setdefault("tokens", tokens)
    return make_metric(metric, B, T, grad=True, model=model, **kw)


def _c_call(model: "Model", mc: Any, fn: Callable[..., int], *args: Any) -> None:
    try:
        model._call(fn, *args, multi_run=True)
    except BaseException:
        mc.reraise()  # the metric callback's own exception first
        raise


def attribution_patch(model: "Model", kind: Union[str, int], tokens: Any, source: Any, metric: Any,
                      return_value: bool = False, **metric_kw: Any) -> Any:
    """Attribution patching (``circuits_context_attribution_patch``): for every cell of the grid
    of ``kind`` (a name of :data:`KINDS`, e.g. ``"resid_pre"``, ``"attn_head_out_all_pos"``; the
    grids and shapes of circuits.patching's get_act_patch_<kind>), sum over the cell's slice and
    the batch of (source - base) * d metric / d activation, from one forward and backward of
    ``tokens`` (the base run): the estimate of metric(base run with the cell patched from
    ``source``) - metric(base run). ``source``: an ActivationCache (or dict) of a run of the other
    tokens, same [batch, pos], holding the patched activation of every block. With
    ``return_value``: (grid, the base run's metric)."""
    N.require("circuits_context_attribution_patch", "attribution patching")
    if isinstance(kind, str):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, not {kind!r}")
        ckind, act = KINDS[kind]
    else:
        found = [(k, a) for k, a in KINDS.values() if k == kind]
        if not found:
            raise ValueError(f"unknown patch kind {kind!r}")
        ckind, act = found[0]
    tok = model._tokens(tokens)
    B, T = tok.shape
    src = _clean_arrays(model, source, act, B, T)
    ptrs = (ctypes.c_void_p * len(src))(*[a.ctypes.data for a in src])
    shape = (ctypes.c_int64 * 4)()
    nd = ctypes.c_int32()
    N.check(lib.circuits_patch_grid_shape(model._live(), ckind, T, shape, ctypes.byref(nd)))
    out = np.empty(tuple(shape[: nd.value]), np.float32)
    value = np.zeros(1, np.float32)
    mc = _metric(model, metric, B, T, tok, metric_kw)
    _c_call(model, mc, lib.circuits_context_attribution_patch, ckind, tok, B, T, ptrs, ctypes.byref(mc.struct),
            value, out)
    del src, mc
    return (out, np.float32(value[0])) if return_value else out


def _attr_grid(kind: str) -> Callable:
    def fn(model: "Model", corrupted_tokens: Any, clean_cache: Any, patching_metric: Any, **metric_kw: Any):
        return attribution_patch(model, kind, corrupted_tokens, clean_cache, patching_metric, **metric_kw)

    fn.__name__ = fn.__qualname__ = "get_attr_patch_" + kind
    fn.__doc__ = (f"get_act_patch_{kind}'s arguments (model, corrupted_tokens, clean_cache, patching_metric) and "
                  f"grid, estimated by attribution patching: cell ~ get_act_patch_{kind}(...)[cell] - "
                  "metric(corrupted run). See attribution_patch.")
    return fn


for _k in KINDS:
    globals()["get_attr_patch_" + _k] = _attr_grid(_k)
    __all__.append("get_attr_patch_" + _k)


class EdgeAttribution(NamedTuple):
    """Edge scores of EAP / EAP-IG: ``scores`` [n_upstream, n_downstream] (0 where no edge runs),
    ``upstream`` / ``downstream`` the node names ("input", "a1.h3", "m0"; "a2.h0<q>", "m1",
    "logits")."""

    scores: np.ndarray
    upstream: List[str]
    downstream: List[str]

    def top_edges(self, k: int = 10) -> List[Tuple[str, str, float]]:
        """The k edges of largest |score| as (upstream, downstream, score) (``circuits_eap_top_edges``:
        ties go to the lower upstream, then downstream index)."""
        N.require("circuits_eap_top_edges", "top_edges")
        U, D = self.scores.shape
        s = np.ascontiguousarray(self.scores, np.float32)
        k = int(k)
        if not 0 <= k <= U * D:
            raise ValueError(f"k must be in [0, {U * D}], not {k}")
        up, down, sc = np.empty(k, np.int64), np.empty(k, np.int64), np.empty(k, np.float32)
        N.check(lib.circuits_eap_top_edges(s, U, D, k, up, down, sc))
        return [(self.upstream[u], self.downstream[d], float(v)) for u, d, v in zip(up, down, sc)]


def eap_nodes(model: "Model") -> Tuple[List[str], List[str]]:
    """The EAP graph's upstream and downstream node names for ``model`` (circuits_eap_graph)."""
    N.require("circuits_eap_graph", "the EAP graph")
    h = model._live()
    nu, nd = ctypes.c_int64(), ctypes.c_int64()
    N.check(lib.circuits_eap_graph(h.ptr, ctypes.byref(nu), ctypes.byref(nd)))
    buf = ctypes.create_string_buffer(128)
    names: Tuple[List[str], List[str]] = ([], [])
    for down, n in ((0, nu.value), (1, nd.value)):
        for i in range(n):
            N.check(lib.circuits_eap_node_name(h.ptr, down, i, buf, len(buf)))
            names[down].append(buf.value.decode())
    return names


def edge_attribution(model: "Model", clean_tokens: Any, corrupted_tokens: Any, metric: Any, ig_steps: int = 0,
                     **metric_kw: Any) -> EdgeAttribution:
    """Edge attribution patching (Syed et al. 2023; ``ig_steps`` > 0: EAP-IG, Hanna et al. 2024)
    over heads and MLPs: score(u -> v) = sum over batch and positions of (a_u(corrupted) -
    a_u(clean)) . g_v, g_v the gradient of ``metric`` at v's input on the clean tokens (EAP-IG:
    its mean over ig_steps runs whose embeddings go from the corrupted to the clean ones)."""
    N.require("circuits_context_edge_attribution", "edge attribution")
    clean, corr = model._tokens(clean_tokens), model._tokens(corrupted_tokens)
    if clean.shape != corr.shape:
        raise ShapeError(f"clean {list(clean.shape)} and corrupted {list(corr.shape)} tokens must have one shape")
    B, T = clean.shape
    up, down = eap_nodes(model)
    opts = N.EapOptions()
    lib.circuits_eap_options_init(ctypes.byref(opts))
    opts.ig_steps = N.check_int(ig_steps, ctypes.c_int32, "ig_steps")
    scores = np.zeros((len(up), len(down)), np.float32)
    mc = _metric(model, metric, B, T, clean, metric_kw)
    _c_call(model, mc, lib.circuits_context_edge_attribution, clean, corr, B, T, ctypes.byref(mc.struct),
            ctypes.byref(opts), scores)
    del mc
    return EdgeAttribution(scores, up, down)


def integrated_gradients(model: "Model", hook: str, tokens: Any, baseline_tokens: Any = None, steps: int = 20,
                         metric: Any = "loss", **metric_kw: Any) -> Tuple[np.ndarray, float]:
    """Integrated gradients (Sundararajan et al. 2017) at hook point ``hook`` (e.g.
    ``"hook_embed"``): attributions (the point's shape for ``tokens``) = (a - a0) * the mean
    gradient over ``steps`` runs with the point set to a0 + alpha (a - a0), a0 the point's
    activation on ``baseline_tokens`` (None: zeros). Returns (attributions, completeness):
    completeness = metric(a) - metric(a0) - sum(attributions), near 0 (shrinks as steps grows)."""
    N.require("circuits_context_integrated_gradients", "integrated gradients")
    tok = model._tokens(tokens)
    B, T = tok.shape
    base = None
    if baseline_tokens is not None:
        base = model._tokens(baseline_tokens)
        if base.shape != tok.shape:
            raise ShapeError(f"baseline_tokens {list(base.shape)} must have the tokens' shape {list(tok.shape)}")
    name, shape = _point_shape(model, hook, B, T)
    out = np.empty(shape, np.float32)
    comp = np.zeros(1, np.float32)
    mc = _metric(model, metric, B, T, tok, metric_kw)
    _c_call(model, mc, lib.circuits_context_integrated_gradients, N.cstr(name), tok, base, B, T,
            N.check_int(steps, ctypes.c_int32, "steps"), ctypes.byref(mc.struct), out, comp)
    del mc
    return out, float(comp[0])
