"""The module tree TransformerLens users write: ``model.embed.W_E``, ``model.blocks[l].attn.W_Q``,
``model.blocks[l].mlp.W_in``, ``model.blocks[l].ln1.w``, ``model.blocks[l].attn.hook_pattern``, ...

Every weight is :meth:`Model.get_weight` of its TransformerLens state-dict name: a read-only
zero-copy view of the model's own memory (strided where the stored layout differs), which keeps
that memory alive after ``model.close()`` as long as the array lives (a model loaded with
``keep_stored_dtype=True``: its kept matrices are read-only float32 copies, dequantized). Two exceptions, computed
as TransformerLens's properties compute them: under grouped-query attention ``attn.W_K`` /
``W_V`` / ``b_K`` / ``b_V`` are the stored K/V heads repeated over the query heads (a read-only
copy; ``attn._W_K`` / ``_W_V`` / ``_b_K`` / ``_b_V`` are the views), and ``attn.OV`` / ``QK`` are
FactoredMatrix objects (of copies, made by libcircuits).

Hook points are the model's :class:`HookPoint` objects (``hook.name``, ``hook.layer()``,
``hook.ctx``), looked up when read, so they follow ``set_use_attn_result`` and the other
options: ``model.add_hook(model.blocks[0].attn.hook_pattern, fn)`` or
``fwd_hooks=[(model.blocks[0].attn.hook_pattern.name, fn)]``.

The objects hold a reference to the :class:`Model` and nothing else: they look everything up
when read (a closed model raises ClosedError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, List

import numpy as np

from .errors import NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from .factored import FactoredMatrix
    from .model import HookPoint, Model


class Module:
    """A TransformerLens module at ``prefix`` ("blocks.0.attn", "embed", ...): its weights and
    hook points as attributes. ``weights`` lists the weight leaves TransformerLens has there."""

    _weights: tuple = ()
    _tl_class = "Module"

    def __init__(self, model: "Model", prefix: str):
        self._model = model
        self._prefix = prefix

    def _name(self, leaf: str) -> str:
        return f"{self._prefix}.{leaf}" if self._prefix else leaf

    def _weight(self, leaf: str) -> np.ndarray:
        try:
            return self._model.get_weight(self._name(leaf))
        except NotFoundError:
            raise AttributeError(f"'{self._name(leaf)}': this model has no such weight (e.g. LayerNorm weights are "
                                 "folded away by fold_ln, as TransformerLens's LayerNormPre has none)") from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_model", "_prefix"):
            raise AttributeError(name)
        if name.startswith("hook_"):
            hp = self._model.hook_dict.get(self._name(name))
            if hp is None:
                raise AttributeError(f"'{self._name(name)}' is not a hook point of this model (see "
                                     "model.hook_names(); optional points need set_use_...)")
            return hp
        if name in self._weights:
            return self._weight(name)
        raise AttributeError(f"{type(self).__name__} '{self._prefix}' has no attribute '{name}'")

    def hook_points(self) -> List["HookPoint"]:
        """The model's hook points inside this module, in firing order."""
        pre = self._prefix + "."
        return [hp for hp in self._model.hook_points() if hp.name.startswith(pre)]

    def __dir__(self) -> List[str]:
        pre = self._prefix + "."
        hooks = [hp.name[len(pre):] for hp in self._model.hook_points()
                 if hp.name.startswith(pre) and "." not in hp.name[len(pre):]]
        return sorted(set(super().__dir__()) | set(self._weights) | set(hooks))

    def __repr__(self) -> str:
        return f"<{self._tl_class} {self._prefix!r}>"


class Embed(Module):
    _weights = ("W_E",)
    _tl_class = "Embed"

    def __call__(self, tokens: Any) -> np.ndarray:
        """TransformerLens's ``model.embed(tokens)``: ``W_E[tokens]``, [batch, pos, d_model] (a new
        float32 array; text is tokenized as by the model)."""
        tok = self._model._tokens(tokens)
        return np.ascontiguousarray(self._weight("W_E")[tok], dtype=np.float32)


class PosEmbed(Module):
    _weights = ("W_pos",)
    _tl_class = "PosEmbed"

    def __call__(self, tokens: Any, past_kv_pos_offset: int = 0, attention_mask: Any = None) -> np.ndarray:
        """TransformerLens's ``model.pos_embed(tokens)``: ``W_pos[offset : offset + pos]`` for every
        row, [batch, pos, d_model] (a new float32 array). With left padding (attention_mask)
        TransformerLens counts positions from each row's first real token: not provided."""
        if attention_mask is not None:
            raise NotImplementedError("pos_embed(attention_mask=...): run the model with the mask instead")
        tok = self._model._tokens(tokens)
        B, T = tok.shape
        off = int(past_kv_pos_offset)
        w = self._weight("W_pos")
        if off < 0 or off + T > w.shape[0]:
            raise IndexError(f"positions [{off}, {off + T}) exceed n_ctx = {w.shape[0]}")
        return np.ascontiguousarray(np.broadcast_to(w[off:off + T], (B, T, w.shape[1])), dtype=np.float32)


class Unembed(Module):
    _weights = ("W_U", "b_U")
    _tl_class = "Unembed"

    def __call__(self, residual: Any) -> np.ndarray:
        """TransformerLens's ``model.unembed(residual)``: ``residual @ W_U + b_U`` over the last
        axis, [..., d_vocab_out] (float32; no final LayerNorm: apply it first, e.g.
        ``cache.accumulated_resid(apply_ln=True)``, or use ``cache.logit_lens``)."""
        r = np.asarray(residual, dtype=np.float32)
        w = self._weight("W_U")
        if r.ndim < 1 or r.shape[-1] != w.shape[0]:
            raise ValueError(f"residual must be [..., d_model = {w.shape[0]}], got shape {list(r.shape)}")
        out = r @ w
        try:
            out += self._weight("b_U")
        except AttributeError:  # no unembedding bias
            pass
        return out


class LayerNorm(Module):
    """ln1 / ln2 / ln_final (and ln1_post, ln2_post, mlp.ln): ``w`` and ``b`` where the model
    has them (an RMSNorm has ``w`` only; a folded or Pre norm neither), ``hook_scale``,
    ``hook_normalized``."""

    _weights = ("w", "b")
    _tl_class = "LayerNorm"


class Attention(Module):
    _weights = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "_W_K", "_W_V", "_b_K", "_b_V")
    _tl_class = "Attention"

    def __init__(self, model: "Model", prefix: str, layer: int):
        super().__init__(model, prefix)
        self._layer = layer

    def _weight(self, leaf: str) -> np.ndarray:
        d = self._model._dims
        grouped = d.n_key_value_heads != d.n_heads
        if leaf in ("W_K", "W_V", "b_K", "b_V") and grouped:
            # TransformerLens's GroupedQueryAttention.W_K: _W_K.repeat_interleave(group, dim=0)
            a = super()._weight("_" + leaf)
            out = np.repeat(a, d.n_heads // d.n_key_value_heads, axis=0)
            out.flags.writeable = False
            return out
        if leaf.startswith("_") and not grouped:
            raise AttributeError(f"'{self._name(leaf)}': only grouped-query attention stores K/V heads apart "
                                 f"(use {leaf[1:]})")
        return super()._weight(leaf)

    @property
    def OV(self) -> "FactoredMatrix":
        """[n_heads, d_model, d_model]: W_V @ W_O per head (TransformerLens's ``attn.OV``)."""
        return self._model.circuit("OV", layer=self._layer)

    @property
    def QK(self) -> "FactoredMatrix":
        """[n_heads, d_model, d_model]: W_Q @ W_K^T per head (TransformerLens's ``attn.QK``)."""
        return self._model.circuit("QK", layer=self._layer)


class MLP(Module):
    _weights = ("W_in", "W_out", "W_gate", "b_in", "b_out")
    _tl_class = "MLP"

    @property
    def ln(self) -> LayerNorm:
        """SoLU-LN models' LayerNorm over d_mlp (``mlp.ln``)."""
        return LayerNorm(self._model, self._name("ln"))


class TransformerBlock(Module):
    _tl_class = "TransformerBlock"

    def __init__(self, model: "Model", layer: int):
        super().__init__(model, f"blocks.{layer}")
        self.layer = layer

    @property
    def attn(self) -> Attention:
        return Attention(self._model, self._name("attn"), self.layer)

    @property
    def mlp(self) -> MLP:
        if self._model._dims.attn_only:
            raise AttributeError(f"blocks.{self.layer}: this model is attention-only (no mlp)")
        return MLP(self._model, self._name("mlp"))

    @property
    def ln1(self) -> LayerNorm:
        return LayerNorm(self._model, self._name("ln1"))

    @property
    def ln2(self) -> LayerNorm:
        return LayerNorm(self._model, self._name("ln2"))

    @property
    def ln1_post(self) -> LayerNorm:
        return LayerNorm(self._model, self._name("ln1_post"))

    @property
    def ln2_post(self) -> LayerNorm:
        return LayerNorm(self._model, self._name("ln2_post"))


class Blocks:
    """``model.blocks``: indexable (negative indices and slices too), iterable, sized, as
    TransformerLens's ``nn.ModuleList``."""

    def __init__(self, model: "Model"):
        self._model = model

    def __len__(self) -> int:
        return self._model._dims.n_layers

    def __getitem__(self, i: Any) -> Any:
        n = len(self)
        if isinstance(i, slice):
            return [TransformerBlock(self._model, l) for l in range(n)[i]]
        l = int(i)
        if not -n <= l < n:
            raise IndexError(f"block index {i} out of range for {n} blocks")
        return TransformerBlock(self._model, l % n)

    def __iter__(self) -> Iterator[TransformerBlock]:
        return (TransformerBlock(self._model, l) for l in range(len(self)))

    def __repr__(self) -> str:
        return f"<blocks: {len(self)} TransformerBlocks>"
