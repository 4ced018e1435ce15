"""Tokenizer: libcircuits's byte-level BPE tokenizer (``circuits_tokenizer``; docs/tokenizer.md)."""

from __future__ import annotations

import ctypes
import os
from typing import Any, List, Optional, Sequence, Union

import numpy as np

from . import _native as N
from ._arrays import Handle
from .errors import RangeError

lib = N.lib

NO_TOKENIZER = (
    "this libcircuits.so.0 has no tokenizer (it was built before circuits_tokenizer_* were added): "
    "rebuild libcircuits, or tokenize elsewhere and pass token ids"
)


def _require() -> None:
    if not N.has("circuits_tokenizer_encode"):
        raise NotImplementedError(NO_TOKENIZER)


class Tokenizer:
    """A byte-level BPE tokenizer (GPT-2, GPT-NeoX, ...): ``Tokenizer.load(path)`` reads
    tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe or a GGUF file (a file or a
    model directory); a model's own tokenizer is ``model.tokenizer``. Read-only and thread-safe.

    ``add_bos_token`` (Hugging Face's name) is what :meth:`encode` does when not told: a loaded
    tokenizer does not prepend BOS (as Hugging Face's GPT-2 tokenizer), while ``model.tokenizer``
    does, as the tokenizer TransformerLens wraps with ``get_tokenizer_with_bos``:
    ``model.tokenizer.encode("Hi")`` starts with BOS in both (docs/python.md "Tokenizer").
    """

    __slots__ = ("_ptr", "_owner", "add_bos_token", "_padding_side", "__weakref__")

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("create a Tokenizer with Tokenizer.load(path), or use model.tokenizer")

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "Tokenizer":
        _require()
        out = ctypes.c_void_p()
        N.check(lib.circuits_tokenizer_load(ctypes.byref(out), N.cstr(os.fspath(path))))
        return cls._wrap(out.value, Handle(out.value, lib.circuits_tokenizer_free))  # type: ignore[arg-type]

    from_pretrained = load

    @classmethod
    def _wrap(cls, ptr: int, owner: Any) -> "Tokenizer":
        """``owner`` keeps the tokenizer's memory alive (its own handle, or the model's)."""
        self = cls.__new__(cls)
        self._ptr = ptr
        self._owner = owner
        self.add_bos_token = False
        self._padding_side = "right"
        return self

    def with_bos(self) -> "Tokenizer":
        """The same tokenizer with ``add_bos_token=True`` if it has a BOS token (TransformerLens's
        ``utils.get_tokenizer_with_bos``); itself otherwise."""
        if self.bos_token_id is None or self.add_bos_token:
            return self
        t = Tokenizer._wrap(self._ptr, self._owner)
        t.add_bos_token = True
        t._padding_side = self._padding_side
        return t

    @property
    def padding_side(self) -> str:
        """Where ``Model.to_tokens`` pads a list of strings by default, and whether a model run
        builds an attention mask (TransformerLens: ``model.tokenizer.padding_side``; 'right')."""
        return self._padding_side

    @padding_side.setter
    def padding_side(self, side: str) -> None:
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {side!r}")
        self._padding_side = side

    # -- properties -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """1 + the largest token id."""
        return int(lib.circuits_tokenizer_vocab_size(self._ptr))

    @property
    def bos_token_id(self) -> Optional[int]:
        v = int(lib.circuits_tokenizer_bos_id(self._ptr))
        return None if v < 0 else v

    @property
    def eos_token_id(self) -> Optional[int]:
        v = int(lib.circuits_tokenizer_eos_id(self._ptr))
        return None if v < 0 else v

    @property
    def pad_token_id(self) -> Optional[int]:
        """The id used to pad batches (TransformerLens pads GPT-2 with its EOS token)."""
        eos = self.eos_token_id
        return eos if eos is not None else self.bos_token_id

    def __repr__(self) -> str:
        return f"<circuits.Tokenizer vocab_size={self.vocab_size} bos={self.bos_token_id} eos={self.eos_token_id}>"

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, text: Union[str, bytes], prepend_bos: Optional[bool] = None,
               add_prefix_space: Optional[bool] = None, parse_special: bool = True) -> np.ndarray:
        """Token ids (int32, 1-D) of ``text``. prepend_bos: the BOS token first; None:
        ``self.add_bos_token`` (True for ``model.tokenizer``, as TransformerLens's wrapped
        tokenizer; False for a tokenizer from :meth:`load`); add_prefix_space: None for the
        tokenizer's own setting; parse_special: special-token text such as ``<|endoftext|>``
        becomes its id."""
        if prepend_bos is None:
            prepend_bos = self.add_bos_token
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        opts = N.EncodeOptions()
        lib.circuits_encode_options_init(ctypes.byref(opts))
        opts.prepend_bos = int(bool(prepend_bos))
        opts.add_prefix_space = -1 if add_prefix_space is None else int(bool(add_prefix_space))
        opts.parse_special = int(bool(parse_special))
        n = ctypes.c_size_t()
        cap = len(data) + 2  # byte-level BPE: at most one id per byte, plus a BOS
        ids = np.empty(cap, np.int32)
        rc = lib.circuits_tokenizer_encode(self._ptr, data, len(data), ctypes.byref(opts), ids, cap, ctypes.byref(n))
        if rc == N.CIRCUITS_E_RANGE and n.value > cap:  # more ids than bytes: measure and retry
            cap = n.value
            ids = np.empty(cap, np.int32)
            rc = lib.circuits_tokenizer_encode(self._ptr, data, len(data), ctypes.byref(opts), ids, cap,
                                               ctypes.byref(n))
        N.check(rc, "encode")
        return ids[: n.value].copy()

    def decode_bytes(self, ids: Any) -> bytes:
        """The bytes of the tokens, concatenated."""
        a = np.ascontiguousarray(np.asarray(ids).reshape(-1), dtype=np.int64)
        if a.size and (a.min() < -(2**31) or a.max() >= 2**31):
            raise RangeError(f"token id out of range: {a.min()}..{a.max()}")
        a = a.astype(np.int32)
        n = ctypes.c_size_t()
        cap = 64 + 16 * a.size
        for _ in range(2):
            buf = ctypes.create_string_buffer(cap)
            rc = lib.circuits_tokenizer_decode(self._ptr, a, a.size, buf, cap, ctypes.byref(n))
            if rc == N.CIRCUITS_E_RANGE and n.value > cap:
                cap = n.value
                continue
            N.check(rc, "decode")
            return buf.raw[: n.value]
        N.check(rc, "decode")
        return b""

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """The text of the tokens (invalid UTF-8, e.g. a split character, becomes U+FFFD).
        skip_special_tokens: leave out the BOS, EOS and pad tokens (Hugging Face's option; the
        other added special tokens are kept)."""
        if skip_special_tokens:
            special = [t for t in (self.bos_token_id, self.eos_token_id, self.pad_token_id) if t is not None]
            a = np.asarray(ids).reshape(-1)
            ids = a[~np.isin(a, special)]
        return self.decode_bytes(ids).decode("utf-8", "replace")

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> List[str]:
        """Hugging Face's ``batch_decode``: :meth:`decode` of each sequence (each row of a
        [batch, pos] array)."""
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (possibly part of a UTF-8 character)."""
        n = ctypes.c_size_t()
        cap = 64
        for _ in range(2):
            buf = ctypes.create_string_buffer(cap)
            rc = lib.circuits_tokenizer_token(self._ptr, int(token_id), buf, cap, ctypes.byref(n))
            if rc == N.CIRCUITS_E_RANGE and n.value > cap:
                cap = n.value
                continue
            N.check(rc, "token")
            return buf.raw[: n.value]
        N.check(rc, "token")
        return b""

    def token_str(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", "replace")

    def str_tokens(self, ids: Sequence[int]) -> List[str]:
        return [self.token_str(int(i)) for i in np.asarray(ids).reshape(-1)]
