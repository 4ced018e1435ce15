"""Padding and attention masks as TransformerLens 3.9 builds them (docs/python.md "Padding and
attention masks"): the padded batch of ``to_tokens``, ``utils.get_attention_mask``, and the
rules of ``HookedTransformer.input_to_embed`` for when a mask exists at all. The library applies
the mask (position ids, W_pos, rotary, attention, loss); this module only decides it."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .errors import RangeError, ShapeError

SIDES = ("left", "right")


def check_side(padding_side: Optional[str]) -> None:
    if padding_side is not None and padding_side not in SIDES:
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, padding_side: str) -> np.ndarray:
    """Rows of token ids padded to the longest with ``pad_id`` on ``padding_side``: [batch, pos]
    int64, as the Hugging Face tokenizer inside TransformerLens's ``to_tokens`` pads."""
    check_side(padding_side)
    T = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), T), pad_id, np.int64)
    for i, r in enumerate(rows):
        if padding_side == "right":
            out[i, : len(r)] = r
        else:
            out[i, T - len(r):] = r
    return out


def get_attention_mask(tokens: np.ndarray, pad_id: Optional[int], bos_id: Optional[int], prepend_bos: bool,
                       padding_side: str) -> np.ndarray:
    """TransformerLens's ``utils.get_attention_mask``: 1 everywhere except the trailing pad tokens
    (right padding) or the leading ones (left padding), where a BOS that is the pad token is
    kept real when ``prepend_bos``. Only pads at that end count: a pad id inside a row is real."""
    check_side(padding_side)
    t = np.asarray(tokens)
    mask = np.ones(t.shape, np.int32)
    if pad_id is None:
        return mask
    not_pad = (t != pad_id).astype(np.int64)
    if padding_side == "right":
        mask[np.cumsum(not_pad[:, ::-1], axis=-1)[:, ::-1] == 0] = 0
    else:
        leading = np.cumsum(not_pad, axis=-1) == 0
        mask[leading] = 0
        if prepend_bos and bos_id == pad_id:
            mask[np.arange(t.shape[0]), leading.sum(-1) - 1] = 1
    return mask


def as_mask(mask: Any, shape: Sequence[int], what: str = "tokens") -> np.ndarray:
    """A caller's attention mask (ints or bools, [batch, pos] or 1-D for batch 1) as the int32
    array libcircuits reads; the library checks its values."""
    m = np.asarray(mask)
    if m.dtype == bool:
        m = m.astype(np.int32)
    if m.dtype.kind not in "iu":
        raise TypeError(f"attention_mask must hold integers (1: real token, 0: padding), not {m.dtype}")
    if m.ndim == 1:
        m = m[None, :]
    if tuple(m.shape) != tuple(shape):
        raise ShapeError(f"attention_mask shape {list(m.shape)} does not match {what} shape {list(shape)}")
    if m.size and (int(m.min()) < -(2**31) or int(m.max()) >= 2**31):  # int32 would wrap 2**32 to 0 (padding)
        raise RangeError(f"attention_mask holds {int(m.max())} or {int(m.min())}: values are 0 or 1")
    return np.ascontiguousarray(m, dtype=np.int32)

