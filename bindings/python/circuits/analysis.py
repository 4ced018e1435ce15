"""Model-independent helpers: head detectors, repeated random tokens, the composition baseline."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from . import _native as N
from .errors import RangeError
from .model import Model
from .padding import pad_rows

lib = N.lib

HEAD_KINDS = {
    "previous_token_head": N.CIRCUITS_HEAD_PREVIOUS_TOKEN,
    "duplicate_token_head": N.CIRCUITS_HEAD_DUPLICATE_TOKEN,
    "induction_head": N.CIRCUITS_HEAD_INDUCTION,
}
ERROR_MEASURES = {"mul": N.CIRCUITS_DETECT_MUL, "abs": N.CIRCUITS_DETECT_ABS}


def detect_head(
    model: Model,
    tokens: Any,
    detection_pattern: Union[str, np.ndarray],
    heads: Optional[Union[List[Tuple[int, int]], Dict[int, List[int]]]] = None,
    cache: Any = None,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: str = "mul",
    attention_mask: Any = None,
) -> np.ndarray:
    """TransformerLens's ``head_detector.detect_head``: how much each head's attention pattern
    matches a detection pattern, [n_layers, n_heads] (mean over the batch). ``tokens``: token ids
    [batch, pos], or text (tokenized with ``model.to_tokens``; a list of texts is averaged).

    detection_pattern: ``"previous_token_head"``, ``"duplicate_token_head"``,
    ``"induction_head"``, or a lower-triangular [pos, pos] array.
    error_measure: ``"mul"`` (share of attention on the pattern) or ``"abs"`` (1 - mean |P - D|
    * pos; unlike TransformerLens not rounded to 3 places).
    heads: restrict to these heads (a list of (layer, head) or {layer: [heads]}); the others
    are -1, as in TransformerLens. ``cache`` (a precomputed cache) is not supported: the
    patterns are scored during a run. ``attention_mask`` [batch, pos] (1 real, 0 padding): a
    padded batch, each row scored on its real positions as if alone; a list of texts with a
    named pattern runs as one left-padded batch that way (the scores TransformerLens's one by one
    gives).
    """
    if isinstance(tokens, str):
        tokens = model.to_tokens(tokens)  # as TransformerLens: model.to_tokens(seq)
    elif isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str):
        # TransformerLens scores a list of prompts one by one and averages: with a named pattern,
        # one padded batch whose rows are scored as if alone gives that mean
        if isinstance(detection_pattern, str) and attention_mask is None:
            rows = [model.to_tokens(s)[0] for s in tokens]
            toks = pad_rows(rows, 0, "left")
            mask = (np.arange(toks.shape[1]) >= toks.shape[1] - np.array([[len(r)] for r in rows])).astype(np.int32)
            return detect_head(model, toks, detection_pattern, heads, cache, exclude_bos=exclude_bos,
                               exclude_current_token=exclude_current_token, error_measure=error_measure,
                               attention_mask=mask)
        return np.mean([detect_head(model, s, detection_pattern, heads, cache, exclude_bos=exclude_bos,
                                    exclude_current_token=exclude_current_token, error_measure=error_measure)
                        for s in tokens], axis=0).astype(np.float32)
    if cache is not None:
        raise NotImplementedError("detect_head(cache=...) is not supported: pass tokens; patterns are scored "
                                  "during the run")
    if error_measure not in ERROR_MEASURES:
        raise ValueError(f"error_measure must be 'mul' or 'abs', not {error_measure!r}")
    custom = None
    if isinstance(detection_pattern, str):
        if detection_pattern not in HEAD_KINDS:
            raise ValueError(f"detection_pattern must be one of {list(HEAD_KINDS)} or a [pos, pos] array, "
                             f"not {detection_pattern!r}")
        kind = HEAD_KINDS[detection_pattern]
    else:
        kind = N.CIRCUITS_HEAD_CUSTOM
        custom = np.ascontiguousarray(np.asarray(detection_pattern), dtype=np.float32)
    scores = model._detect(tokens, kind, custom, ERROR_MEASURES[error_measure], exclude_bos, exclude_current_token,
                           attention_mask)
    if heads is not None:
        keep = np.zeros(scores.shape, bool)
        items = heads.items() if isinstance(heads, dict) else ((l, [h]) for l, h in heads)
        for l, hs in items:
            for h in hs:
                keep[l, h] = True
        scores = np.where(keep, scores, np.float32(-1)).astype(np.float32)
    return scores


def repeated_tokens(batch: int, seq_len: int, d_vocab: Union[int, Model], seed: int = 0,
                    bos: Optional[int] = None) -> np.ndarray:
    """Random tokens repeated twice, int32 [batch, 2 * seq_len (+1 with a BOS)]: each row is
    ``[bos?, r_1..r_L, r_1..r_L]`` with r uniform in [0, d_vocab) from a seeded generator
    (``circuits_repeated_tokens``). ``d_vocab`` may be a Model (its cfg.d_vocab)."""
    if isinstance(d_vocab, Model):
        d_vocab = d_vocab._dims.d_vocab
    if bos is not None and int(bos) < 0:  # C reads bos < 0 as "none": the rows would be one shorter
        raise RangeError(f"bos must be a token id >= 0 (or None for no BOS), not {bos}")
    T = 2 * int(seq_len) + (bos is not None)
    if batch < 1 or seq_len < 1:
        raise RangeError("repeated_tokens needs batch >= 1 and seq_len >= 1")
    out = np.empty((int(batch), T), np.int32)
    N.check(lib.circuits_repeated_tokens(int(batch), int(seq_len), int(d_vocab), int(seed),
                                         -1 if bos is None else int(bos), out))
    return out


def composition_baseline(d_model: Union[int, Model], d_head: Optional[int] = None, d_mlp: int = 0,
                         n_samples: int = 200, seed: int = 0) -> Tuple[float, float]:
    """The composition score of random Gaussian matrices of a model's shapes: (mean, std) over
    ``n_samples`` draws (roughly 1/sqrt(d_model)). ``d_model`` may be a Model (its d_model and
    d_head; d_mlp stays as given: 0 scores head writers, d_mlp > 0 an MLP's W_out)."""
    if isinstance(d_model, Model):
        if d_head is None:
            d_head = d_model._dims.d_head
        d_model = d_model._dims.d_model
    if d_head is None:
        raise TypeError("composition_baseline needs d_head")
    mean = np.empty(1, np.float32)
    std = np.empty(1, np.float32)
    N.check(lib.circuits_composition_baseline(int(d_model), int(d_head), int(d_mlp), int(n_samples), int(seed),
                                              mean, std))
    return float(mean[0]), float(std[0])
