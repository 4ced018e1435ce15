"""The residual stream of a cached run: TransformerLens's ActivationCache methods
(``accumulated_resid``, ``decompose_resid``, ``stack_head_results``, ``stack_neuron_results``,
``get_full_resid_decomposition``, ``compute_head_results``, ``apply_ln_to_stack``,
``logit_attrs``) plus the logit lens and direct logit attribution as one call each.

Thin over the C calls of lib/analysis/resid.c (``circuits_resid_*``, ``circuits_logit_lens``,
``circuits_direct_logit_attribution``): this module turns TransformerLens's arguments (``layer``,
``pos_slice`` as an int / tuple / slice / list, ``neuron_slice``, ``batch_slice``, token strings)
into the C options and the C results into NumPy arrays of TransformerLens's shapes.
:class:`ResidStreamMixin` is mixed into :class:`circuits.cache.ActivationCache`. The arrays
returned are new (owned by NumPy), not views of the cache. docs/analysis.md has the list.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, List, Optional, Tuple, Union

import numpy as np

from . import _native as N
from .errors import RangeError, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model

lib = N.lib

_KINDS = {
    "accumulated": N.CIRCUITS_RESID_ACCUMULATED,
    "decompose": N.CIRCUITS_RESID_DECOMPOSED,
    "heads": N.CIRCUITS_RESID_HEADS,
    "neurons": N.CIRCUITS_RESID_NEURONS,
    "full": N.CIRCUITS_RESID_FULL,
}
_MODES = {"all": N.CIRCUITS_RESID_MODE_ALL, "mlp": N.CIRCUITS_RESID_MODE_MLP, "attn": N.CIRCUITS_RESID_MODE_ATTN}


def slice_indices(s: Any, n: int) -> Tuple[Optional[np.ndarray], bool]:
    """TransformerLens's ``Slice`` of an axis of length n as (indices or None for all, whether
    the axis collapses). int i: [i], collapsing; tuple t: ``slice(*t)``; a slice; a list /
    array of indices (or a boolean mask); None: every index. A TransformerLens ``Slice`` object
    is read through its ``slice`` and ``mode``."""
    if s is not None and hasattr(s, "mode") and hasattr(s, "slice"):  # transformer_lens.utils.Slice
        s = None if s.mode == "identity" else s.slice
    if s is None:
        return None, False
    if isinstance(s, (bool, np.bool_)):
        raise TypeError("a slice cannot be a bool")
    if isinstance(s, (int, np.integer)):
        return np.array([int(s)], dtype=np.int64), True
    if isinstance(s, tuple):
        s = slice(*s)
    if isinstance(s, slice):
        return np.ascontiguousarray(np.arange(n, dtype=np.int64)[s]), False
    a = np.asarray(s)
    if a.dtype == np.bool_:
        if a.shape != (n,):
            raise ShapeError(f"a boolean mask over {n} entries has shape {list(a.shape)}")
        return np.nonzero(a)[0].astype(np.int64), False
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"a slice must be None, an int, a tuple, a slice or a 1-D list of ints, not {s!r}")
    if a.dtype.kind == "u" and a.size and int(a.max()) >= 2**63:  # would wrap to a negative index
        raise RangeError(f"index {int(a.max())} does not fit in int64")
    return np.ascontiguousarray(a, dtype=np.int64), False


#: the int32 flags of circuits_resid_options a caller may set (direct_logit_attribution's
#: ``**options`` reach here: anything else, "size", "n_positions" or a pointer field included, is
#: refused rather than written into the struct)
_FLAGS = ("incl_mid", "mlp_input", "apply_ln", "incl_embeds", "mode", "incl_remainder", "expand_neurons",
          "recompute_ln", "unembed_bias")


class _Opts:
    """A ``circuits_resid_options`` and the index arrays it points to (kept alive with it)."""

    def __init__(self, layer: Optional[int] = None, **fields: Any):
        self.s = N.ResidOptions()
        lib.circuits_resid_options_init(ctypes.byref(self.s))
        self.s.layer = N.check_int(-1 if layer is None else layer, ctypes.c_int32, "layer")
        self._keep: List[np.ndarray] = []
        for k, v in fields.items():
            if k in ("positions", "neurons", "batch_indices"):
                if v is not None:
                    # int64 C-contiguous, its length the count C reads
                    a = np.ascontiguousarray(v, dtype=np.int64).reshape(-1)
                    self._keep.append(a)
                    setattr(self.s, k, a.ctypes.data)
                    setattr(self.s, "n_" + k, a.size)
            elif k in _FLAGS:
                if isinstance(v, (bool, np.bool_)):
                    v = int(v)
                setattr(self.s, k, N.check_int(v, ctypes.c_int32, k))
            else:
                raise TypeError(f"unknown residual-stream option {k!r} (options: {', '.join(_FLAGS)})")

    @property
    def ref(self) -> Any:
        return ctypes.byref(self.s)


def _tokens(model: "Model", t: Any) -> np.ndarray:
    """Token ids as TransformerLens's tokens_to_residual_directions reads them: a str (one
    token), an int, or an array of ids."""
    if isinstance(t, str):
        return np.array(model.to_single_token(t), dtype=np.int32)
    if hasattr(t, "detach"):  # a torch tensor
        t = t.detach().cpu().numpy()
    a = np.asarray(t)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"tokens must be a str, an int or integer ids, not {a.dtype}")
    if a.size and (int(a.min()) < -(2**31) or int(a.max()) >= 2**31):
        raise RangeError(f"token ids must fit in int32 (got {int(a.min())} .. {int(a.max())})")
    return a.astype(np.int32)


def tokens_to_residual_directions(model: "Model", tokens: Any) -> np.ndarray:
    """``W_U[:, tokens]`` moved to the last axis (TransformerLens's HookedTransformer method):
    [d_model] for one token, [..., d_model] for an array of them."""
    t = _tokens(model, tokens)
    flat = np.ascontiguousarray(t.reshape(-1))
    out = np.empty((flat.size, model._dims.d_model), dtype=np.float32)
    N.check(lib.circuits_model_residual_directions(model._live(), flat, flat.size, out), "tokens_to_residual_directions")
    return out.reshape(t.shape + (model._dims.d_model,))


class ResidStreamMixin:
    """The residual-stream methods of :class:`circuits.cache.ActivationCache`."""

    # set by ActivationCache
    model: Any
    has_batch_dim: bool
    cache_dict: dict

    def _c(self) -> Tuple[Any, int]:
        h = getattr(self, "_handle", None)
        if h is None or not h.ptr:
            raise TypeError("this ActivationCache has no C cache behind it (make it with model.run_with_cache)")
        if self.model is None:
            raise TypeError("the residual-stream methods need the cache's model")
        # the model's handle, not its pointer: the caller's local keeps the model alive
        # through its calls if another thread closes the Model meanwhile
        return self.model._live(), h.ptr

    def _n_pos(self) -> int:
        ptr = self._c()[1]
        t = N.Tensor()
        for i in range(lib.circuits_cache_count(ptr)):
            N.check(lib.circuits_cache_at(ptr, i, ctypes.byref(t)))
            name = N.decode(t.name)
            if t.ndim >= 3 and "pattern" not in name and "attn_scores" not in name:
                return int(t.shape[1])
        return 0

    def _stack(self, kind: str, pos_slice: Any, return_labels: bool, labels_too: bool = True, **fields: Any):
        m, c = self._c()
        pos, squeeze = slice_indices(pos_slice, self._n_pos())
        o = _Opts(positions=pos, **fields)
        k = _KINDS[kind]
        shape = np.zeros(4, dtype=np.int64)
        N.check(lib.circuits_resid_shape(m, c, k, o.ref, shape), kind)
        out = np.empty(tuple(int(x) for x in shape), dtype=np.float32)
        N.check(lib.circuits_resid_stack(m, c, k, o.ref, out, out.size), kind)
        out = self._squeeze(out, squeeze)
        if not return_labels:
            return out
        return out, self._labels(k, o, int(shape[0]))

    def _labels(self, k: int, o: _Opts, n: int) -> List[str]:
        m, c = self._c()
        need = ctypes.c_size_t()
        N.check(lib.circuits_resid_labels(m, c, k, o.ref, None, 0, ctypes.byref(need)), "labels")
        buf = ctypes.create_string_buffer(max(need.value, 1))
        N.check(lib.circuits_resid_labels(m, c, k, o.ref, buf, len(buf), ctypes.byref(need)), "labels")
        labels = buf.raw[: need.value].split(b"\0")[:-1]
        if len(labels) != n:
            raise ShapeError(f"{len(labels)} labels for {n} components")
        return [x.decode() for x in labels]

    def _squeeze(self, out: np.ndarray, squeeze_pos: bool) -> np.ndarray:
        """[n, batch, pos, ...] -> TransformerLens's shape: pos gone for an int pos_slice, batch
        gone without a batch dim."""
        if squeeze_pos:
            out = out[:, :, 0]
        if not self.has_batch_dim:
            out = out[:, 0]
        return out

    @staticmethod
    def _project(stack: Any, project_output_onto: Optional[np.ndarray]):
        if project_output_onto is None:
            return stack
        labels = None
        if isinstance(stack, tuple):
            stack, labels = stack
        p = np.asarray(project_output_onto, dtype=np.float32)
        out = stack @ p
        return out if labels is None else (out, labels)

    # -- TransformerLens's methods -------------------------------------------------------------

    def accumulated_resid(self, layer: Optional[int] = None, incl_mid: bool = False, apply_ln: bool = False,
                          pos_slice: Any = None, mlp_input: bool = False, return_labels: bool = False):
        """The residual stream before each layer (``"0_pre"``, ``"0_mid"``, ..., ``"final_post"``)
        up to the input of ``layer`` (None / -1: n_layers, the unembed): [n, batch, pos, d_model]
        (``circuits_resid_stack``, ACCUMULATED). apply_ln at n_layers puts each through ln_final
        (statistics recomputed), elsewhere divides by the cached scale, as TransformerLens."""
        return self._stack("accumulated", pos_slice, return_labels, layer=layer, incl_mid=incl_mid,
                           apply_ln=apply_ln, mlp_input=mlp_input)

    def decompose_resid(self, layer: Optional[int] = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice: Any = None, incl_embeds: bool = True,
                        return_labels: bool = False):
        """The residual stream at the input of ``layer`` as the sum of its writers:
        ``"embed"``, ``"pos_embed"``, ``"{l}_attn_out"``, ``"{l}_mlp_out"`` (mode "all", "attn",
        "mlp")."""
        if mode not in _MODES:
            raise ValueError(f"mode must be 'all', 'mlp' or 'attn', not {mode!r}")
        return self._stack("decompose", pos_slice, return_labels, layer=layer, mlp_input=mlp_input,
                           mode=_MODES[mode], apply_ln=apply_ln, incl_embeds=incl_embeds)

    def stack_head_results(self, layer: int = -1, return_labels: bool = False, incl_remainder: bool = False,
                           pos_slice: Any = None, apply_ln: bool = False):
        """Every head's result (its z @ W_O, or the cached hook_result) in the layers before
        ``layer``: ``"L0H0"``, ..., and ``"remainder"`` (resid_post of layer - 1 minus them)."""
        return self._stack("heads", pos_slice, return_labels, layer=layer, incl_remainder=incl_remainder,
                           apply_ln=apply_ln)

    def stack_neuron_results(self, layer: Optional[int], pos_slice: Any = None, neuron_slice: Any = None,
                             return_labels: bool = False, incl_remainder: bool = False, apply_ln: bool = False,
                             project_output_onto: Optional[np.ndarray] = None):
        """Every neuron's result (hook_post[.., n] * W_out[n]) in the layers before ``layer``:
        ``"L0N0"``, ...; ``neuron_slice`` selects neurons (an int keeps the axis: [n], see
        docs/analysis.md). ``project_output_onto`` ([d_model] or [d_model, k]) is applied last."""
        neurons, _ = slice_indices(neuron_slice, self.model._dims.d_mlp)
        out = self._stack("neurons", pos_slice, return_labels, layer=layer, neurons=neurons,
                          incl_remainder=incl_remainder, apply_ln=apply_ln)
        return self._project(out, project_output_onto)

    def get_neuron_results(self, layer: int, neuron_slice: Any = None, pos_slice: Any = None,
                           project_output_onto: Optional[np.ndarray] = None) -> np.ndarray:
        """TransformerLens's ``get_neuron_results``: each neuron's write into the residual stream,
        ``hook_post[..., n, None] * W_out[n]``: [(batch,) pos, neurons, d_model] (an int
        ``pos_slice`` / ``neuron_slice`` drops its axis). With ``project_output_onto`` ([d_model]
        or [d_model, k]) W_out is projected first: [..., neurons] or [..., neurons, k]. NumPy,
        on the cached ``hook_post`` (edits to it are seen) and the model's W_out."""
        acts = np.asarray(self[("post", layer)], dtype=np.float32)
        w_out = np.asarray(self.model.blocks[layer].mlp.W_out, dtype=np.float32)  # [d_mlp, d_model]
        pos, squeeze_pos = slice_indices(pos_slice, acts.shape[-2])
        if pos is not None:
            acts = np.take(acts, pos, axis=-2)
            if squeeze_pos:
                acts = acts[..., 0, :]
        neurons, squeeze_n = slice_indices(neuron_slice, acts.shape[-1])
        if neurons is not None:
            acts = np.take(acts, neurons, axis=-1)
            w_out = w_out[neurons]
            if squeeze_n:
                acts, w_out = acts[..., 0], w_out[0]
        if project_output_onto is None:
            return acts[..., None] * w_out
        projected = w_out @ np.asarray(project_output_onto, dtype=np.float32)
        if projected.ndim == w_out.ndim - 1:  # a [d_model] projection
            return acts * projected
        return acts[..., None] * projected

    def get_full_resid_decomposition(self, layer: Optional[int] = None, mlp_input: bool = False,
                                     expand_neurons: bool = True, apply_ln: bool = False, pos_slice: Any = None,
                                     return_labels: bool = False, project_output_onto: Optional[np.ndarray] = None):
        """Every head, every neuron (or each MLP with expand_neurons=False), ``"embed"``,
        ``"pos_embed"`` and ``"bias"`` (the summed b_O / b_out), at the input of ``layer``."""
        out = self._stack("full", pos_slice, return_labels, layer=layer, mlp_input=mlp_input,
                          expand_neurons=expand_neurons, apply_ln=apply_ln)
        return self._project(out, project_output_onto)

    def compute_head_results(self) -> None:
        """Adds ``blocks.{l}.attn.hook_result`` [batch, pos, n_heads, d_model] (each head's
        z @ W_O) to the cache, as TransformerLens does; nothing if they are there already."""
        if "blocks.0.attn.hook_result" in self.cache_dict:
            return
        st = self._stack("heads", None, False)  # [L*H, (batch,) pos, d_model]
        d = self.model._dims
        st = st.reshape((d.n_layers, d.n_heads) + st.shape[1:])
        for l in range(d.n_layers):
            self.cache_dict[f"blocks.{l}.attn.hook_result"] = np.ascontiguousarray(np.moveaxis(st[l], 0, -2))

    def _stack_arg(self, residual_stack: Any, pos_slice: Any, batch_slice: Any, has_batch_dim: bool):
        """A caller's stack [n, (batch,) (pos,) d_model] as C's [n, nb, np, d_model], the options
        of its positions and batch rows, and how to give the result TransformerLens's shape."""
        s = np.array(residual_stack, dtype=np.float32)  # a copy: C works on it in place
        pos, squeeze_pos = slice_indices(pos_slice, self._n_pos())
        rows, squeeze_batch = (None, False)
        if has_batch_dim and batch_slice is not None:
            ptr = self._c()[1]
            t = N.Tensor()
            N.check(lib.circuits_cache_at(ptr, 0, ctypes.byref(t)))
            rows, squeeze_batch = slice_indices(batch_slice, int(t.shape[0]))
        if s.ndim < 2:
            raise ShapeError(f"a residual stack is [n_components, ..., d_model], not {list(s.shape)}")
        lead = list(s.shape[1:-1])
        if has_batch_dim and rows is not None:
            if not lead:
                raise ShapeError("batch_slice needs a stack with a batch dim")
            s = s[:, rows]  # TransformerLens slices the stack's batch rows too
            lead[0] = len(rows)
        shape_out = (s.shape[0],) + tuple(lead)
        dims = list(lead)
        nb = dims.pop(0) if has_batch_dim and dims else 1
        np_ = 1 if squeeze_pos else (dims.pop(0) if dims else 1)
        if dims:
            raise ShapeError(f"a stack of shape {list(np.shape(residual_stack))} has more dims than "
                             f"[n, batch, pos, d_model] with has_batch_dim={has_batch_dim}, pos_slice={pos_slice!r}")
        o = _Opts(positions=pos, batch_indices=rows)
        return np.ascontiguousarray(s.reshape(s.shape[0], nb, np_, s.shape[-1])), o, shape_out, squeeze_batch

    def apply_ln_to_stack(self, residual_stack: Any, layer: Optional[int] = None, mlp_input: bool = False,
                          pos_slice: Any = None, batch_slice: Any = None, has_batch_dim: bool = True,
                          recompute_ln: bool = False) -> np.ndarray:
        """A stack treated as the input of ``layer`` (ln1, ln2 with mlp_input; None/-1/n_layers:
        ln_final): centred (LN, LNPre) and divided by the cached hook_scale of those positions
        (``pos_slice``, already applied to the stack) and batch rows (``batch_slice``, applied to
        both); with recompute_ln at n_layers, ln_final itself per component."""
        m, c = self._c()
        st = np.asarray(residual_stack)
        if has_batch_dim and st.ndim == 2 and batch_slice is None and st.shape[0] > 1:
            # [batch, d_model], one component (the Exploratory Analysis Demo's
            # final_token_residual_stream): TransformerLens broadcasts it against the cached
            # scale [batch, 1], so its rows are the batch rows
            t = N.Tensor()
            N.check(lib.circuits_cache_at(c, 0, ctypes.byref(t)))
            if int(t.shape[0]) == st.shape[0]:
                return self.apply_ln_to_stack(st[None], layer, mlp_input, pos_slice, None, True, recompute_ln)[0]
        s, o, shape_out, squeeze_batch = self._stack_arg(residual_stack, pos_slice, batch_slice, has_batch_dim)
        o.s.layer = -1 if layer is None else N.check_int(layer, ctypes.c_int32, "layer")
        o.s.mlp_input = int(mlp_input)
        o.s.recompute_ln = int(recompute_ln)
        N.check(lib.circuits_resid_apply_ln(m, c, o.ref, s, s.shape[0], s.shape[1], s.shape[2]), "apply_ln_to_stack")
        out = s.reshape(shape_out + (s.shape[-1],))
        return out[:, 0] if squeeze_batch else out

    def logit_attrs(self, residual_stack: Any, tokens: Any, incorrect_tokens: Any = None, pos_slice: Any = None,
                    batch_slice: Any = None, has_batch_dim: bool = True) -> np.ndarray:
        """Each component's direct contribution to the logit of ``tokens`` (minus that of
        ``incorrect_tokens``): apply_ln_to_stack at the unembed, dotted with
        tokens_to_residual_directions. Tokens broadcast against the stack's batch/pos dims."""
        m, c = self._c()
        s, o, shape_out, squeeze_batch = self._stack_arg(residual_stack, pos_slice, batch_slice, has_batch_dim)
        lead = shape_out[1:]
        t = _tokens(self.model, tokens)
        w = None
        if incorrect_tokens is not None:
            w = _tokens(self.model, incorrect_tokens)
            if w.shape != t.shape:
                raise ValueError(f"tokens and incorrect_tokens must have the same shape ({list(t.shape)} vs {list(w.shape)})")
        rows = s.shape[1] * s.shape[2]

        def flat(a: np.ndarray) -> np.ndarray:
            if a.size == 1:
                return np.ascontiguousarray(a.reshape(1))
            try:
                b = np.broadcast_to(a, lead)
            except ValueError:
                raise ShapeError(f"tokens of shape {list(a.shape)} do not broadcast to the stack's {list(lead)}") from None
            return np.ascontiguousarray(b.reshape(-1))

        ft = flat(t)
        fw = flat(w) if w is not None else None
        if ft.size not in (1, rows):
            raise ShapeError(f"{ft.size} tokens for {rows} rows")
        out = np.empty((s.shape[0], s.shape[1], s.shape[2]), dtype=np.float32)
        N.check(lib.circuits_resid_logit_attrs(m, c, o.ref, s, s.shape[0], s.shape[1], s.shape[2], ft, fw, ft.size, out),
                "logit_attrs")
        out = out.reshape(shape_out)
        return out[:, 0] if squeeze_batch else out

    # -- one call each ---------------------------------------------------------------------------

    def logit_lens(self, layer: Optional[int] = None, incl_mid: bool = False, pos_slice: Any = None,
                   mlp_input: bool = False, return_labels: bool = False, unembed_bias: bool = True):
        """The logit lens (``circuits_logit_lens``): ln_final(each accumulated_resid component,
        statistics recomputed) @ W_U (+ b_U): [n, batch, pos, d_vocab_out], labels as
        accumulated_resid's. In TransformerLens:
        ``model.unembed(cache.accumulated_resid(apply_ln=True))`` at the default layer."""
        m, c = self._c()
        pos, squeeze = slice_indices(pos_slice, self._n_pos())
        o = _Opts(layer=layer, positions=pos, incl_mid=incl_mid, mlp_input=mlp_input, unembed_bias=unembed_bias)
        k = N.CIRCUITS_RESID_ACCUMULATED
        shape = np.zeros(4, dtype=np.int64)
        N.check(lib.circuits_resid_shape(m, c, k, o.ref, shape), "logit_lens")
        out = np.empty((int(shape[0]), int(shape[1]), int(shape[2]), self.model._dims.d_vocab_out), dtype=np.float32)
        N.check(lib.circuits_logit_lens(m, c, o.ref, out, out.size), "logit_lens")
        out = self._squeeze(out, squeeze)
        return (out, self._labels(k, o, int(shape[0]))) if return_labels else out

    def direct_logit_attribution(self, tokens: Any, incorrect_tokens: Any = None, kind: str = "decompose",
                                 layer: Optional[int] = None, pos_slice: Any = None, return_labels: bool = False,
                                 **options: Any):
        """Direct logit attribution (``circuits_direct_logit_attribution``): the stack of
        ``kind`` ("decompose", "full", "heads", "neurons", "accumulated"; ``options`` are that
        method's: mode, incl_embeds, expand_neurons, mlp_input, incl_mid, incl_remainder,
        neuron_slice) through logit_attrs at the same positions: [n, batch, pos]. In
        TransformerLens: ``cache.logit_attrs(cache.decompose_resid(pos_slice=p), tokens,
        incorrect_tokens, pos_slice=p)``."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, not {kind!r}")
        m, c = self._c()
        pos, squeeze = slice_indices(pos_slice, self._n_pos())
        fields = dict(options)
        if "mode" in fields:
            fields["mode"] = _MODES[fields["mode"]]
        neurons = None
        if "neuron_slice" in fields:
            neurons, _ = slice_indices(fields.pop("neuron_slice"), self.model._dims.d_mlp)
        o = _Opts(layer=layer, positions=pos, neurons=neurons, **fields)
        k = _KINDS[kind]
        shape = np.zeros(4, dtype=np.int64)
        N.check(lib.circuits_resid_shape(m, c, k, o.ref, shape), "direct_logit_attribution")
        n, B, P = (int(x) for x in shape[:3])
        lead = (B, P)
        t = _tokens(self.model, tokens)
        w = _tokens(self.model, incorrect_tokens) if incorrect_tokens is not None else None

        def flat(a: np.ndarray) -> np.ndarray:
            if a.size == 1:
                return np.ascontiguousarray(a.reshape(1))
            if a.ndim == 1 and a.shape[0] == B:  # one answer per prompt
                a = a[:, None]
            return np.ascontiguousarray(np.broadcast_to(a, lead).reshape(-1))

        ft = flat(t)
        fw = flat(w) if w is not None else None
        out = np.empty((n, B, P), dtype=np.float32)
        N.check(lib.circuits_direct_logit_attribution(m, c, k, o.ref, ft, fw, ft.size, out, out.size),
                "direct_logit_attribution")
        out = self._squeeze(out, squeeze)
        return (out, self._labels(k, o, n)) if return_labels else out
