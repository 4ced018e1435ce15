"""TransformerLens's ``utils`` helpers that interpretability code calls, over numpy arrays:
``lm_cross_entropy_loss`` (``circuits_lm_cross_entropy``), ``test_prompt`` (the ranked answer
report, ``circuits_logits_rank``), ``get_act_name``, ``to_numpy``, ``get_corner``,
``remove_batch_dim``, ``get_device``.

    from circuits import utils        # where TransformerLens code has
                                       # import transformer_lens.utils as utils
"""

from __future__ import annotations

from typing import Any, List, Optional, Union

import numpy as np

from . import _native as N
from .cache import act_name as get_act_name
from .errors import ShapeError

lib = N.lib

__all__ = [
    "lm_cross_entropy_loss",
    "lm_accuracy",
    "get_attention_mask",
    "test_prompt",
    "get_act_name",
    "to_numpy",
    "get_corner",
    "remove_batch_dim",
    "get_device",
]


def lm_cross_entropy_loss(logits: Any, tokens: Any, attention_mask: Any = None,
                          per_token: bool = False) -> Union[np.float32, np.ndarray]:
    """TransformerLens's ``utils.lm_cross_entropy_loss``: the loss of predicting each NEXT token.

    logits [batch, pos, d_vocab], tokens [batch, pos] (ints), attention_mask [batch, pos] of 0/1
    or bool (None: every position). ``per_token=True`` returns [batch, pos - 1]: the loss of
    predicting tokens[:, i + 1] from position i, 0 where the mask excludes position i or i + 1;
    otherwise the mean over the included pairs (np.float32). Computed by
    ``circuits_lm_cross_entropy`` (log-softmax and the mean in C, sums in double)."""
    lg = np.ascontiguousarray(logits, dtype=np.float32)
    tok = np.asarray(tokens)
    if tok.dtype.kind not in "iu":
        raise TypeError(f"tokens must be an integer array, got dtype {tok.dtype}")
    if lg.ndim == 2 and tok.ndim == 1:  # one sequence without its batch axis
        lg, tok = lg[None], tok[None]
        attention_mask = None if attention_mask is None else np.asarray(attention_mask)[None]
    if lg.ndim != 3 or tok.shape != lg.shape[:2]:
        raise ShapeError(f"logits must be [batch, pos, d_vocab] and tokens [batch, pos]; got {list(lg.shape)} and "
                         f"{list(tok.shape)}")
    B, T, V = lg.shape
    if T < 2:
        raise ShapeError(f"the next-token loss needs at least 2 positions, got pos {T}")
    if tok.size and (tok.min() < 0 or tok.max() >= 2**31):
        raise ValueError("token ids must be in [0, 2^31)")
    tok32 = np.ascontiguousarray(tok, dtype=np.int32)
    mask = None
    if attention_mask is not None:
        m = np.asarray(attention_mask)
        if m.shape != tok.shape:
            raise ShapeError(f"attention_mask must have the same shape as tokens, got {list(m.shape)} and "
                             f"{list(tok.shape)}")
        mask = np.ascontiguousarray(m != 0, dtype=np.int32)
    return _cross_entropy(lg, tok32, mask, per_token)


def get_attention_mask(tokenizer: Any, tokens: Any, prepend_bos: bool, padding_side: Optional[str] = None) -> np.ndarray:
    """TransformerLens's ``utils.get_attention_mask(tokenizer, tokens, prepend_bos, padding_side)``:
    int64 [batch, pos], 0 at the trailing (right padding) or leading (left padding, the
    tokenizer's side by default) pad tokens, 1 elsewhere; with left padding and ``prepend_bos`` a
    BOS that is the pad token stays real. (:func:`circuits.padding.get_attention_mask` is the
    same with explicit ids.)"""
    from . import padding as _pad

    t = np.asarray(tokens)
    if tokenizer is None:
        return np.ones(t.shape, np.int64)
    side = padding_side if padding_side is not None else getattr(tokenizer, "padding_side", "right")
    t2 = t[None] if t.ndim == 1 else t
    pad = tokenizer.pad_token_id
    bos = tokenizer.bos_token_id
    mask = _pad.get_attention_mask(t2, pad, bos, bool(prepend_bos), "right" if side == "right" else "left")
    return mask.reshape(t.shape).astype(np.int64)


def lm_accuracy(logits: Any, tokens: Any, per_token: bool = False) -> Union[np.float32, np.ndarray]:
    """TransformerLens's ``utils.lm_accuracy``: whether the top logit at position i is
    tokens[:, i + 1]: bool [batch, pos - 1] with ``per_token=True``, else their mean (np.float32)."""
    lg = np.asarray(logits)
    tok = np.asarray(tokens)
    if lg.ndim == 2 and tok.ndim == 1:  # one sequence without its batch axis
        lg, tok = lg[None], tok[None]
    if lg.ndim != 3 or tok.shape != lg.shape[:2]:
        raise ShapeError(f"logits must be [batch, pos, d_vocab] and tokens [batch, pos]; got {list(lg.shape)} and "
                         f"{list(tok.shape)}")
    correct = lg.argmax(axis=-1)[:, :-1] == tok[:, 1:]
    if per_token:
        return correct
    return np.float32(correct.sum() / correct.size) if correct.size else np.float32(np.nan)


def _cross_entropy(logits: np.ndarray, tokens: np.ndarray, mask: Optional[np.ndarray],
                   per_token: bool) -> Union[np.float32, np.ndarray]:
    """``circuits_lm_cross_entropy`` on checked arrays: logits float32 [batch, pos, d_vocab],
    tokens and mask (or None) int32 [batch, pos], all C-contiguous (the one call of the binding:
    lm_cross_entropy_loss, loss_fn and the forward pass's masked loss)."""
    B, T, V = logits.shape
    ptl = np.empty((B, max(T - 1, 0)), np.float32) if per_token else None
    loss = None if per_token else np.empty(1, np.float32)
    N.check(lib.circuits_lm_cross_entropy(logits, tokens, mask, B, T, V, ptl, loss), "lm_cross_entropy_loss")
    return ptl if per_token else np.float32(loss[0])


def _rank(row: np.ndarray, token: int, k: int):
    """(rank, prob, top_ids, top_probs) of one logits row (``circuits_logits_rank``)."""
    row = np.ascontiguousarray(row, dtype=np.float32)
    rank = np.empty(1, np.int64)
    prob = np.empty(1, np.float32)
    ids = np.empty(k, np.int32) if k else None
    probs = np.empty(k, np.float32) if k else None
    N.check(lib.circuits_logits_rank(row, row.shape[0], int(token), int(k), rank, prob, ids, probs), "test_prompt")
    return int(rank[0]), float(prob[0]), ids, probs


def test_prompt(prompt: str, answer: Union[str, List[str]], model: Any, prepend_space_to_answer: bool = True,
                print_details: bool = True, prepend_bos: Optional[bool] = None, top_k: int = 10) -> None:
    """TransformerLens's ``utils.test_prompt``: prints how the model ranks ``answer`` after
    ``prompt`` — the tokenized prompt and answer, for each answer token its rank, logit and
    probability, and the ``top_k`` most likely tokens — in TransformerLens's layout (plain text:
    TransformerLens prints the bold lines through ``rich``). A list of answers compares the
    first token of each. Returns None, as TransformerLens. Ranks and probabilities come from
    ``circuits_logits_rank`` (ties ranked by id)."""
    answers = [answer] if isinstance(answer, str) else list(answer)
    n_answers = len(answers)
    multi = n_answers > 1
    if prepend_space_to_answer:
        answers = [a if a.startswith(" ") else " " + a for a in answers]
    prompt_tokens = np.asarray(model.to_tokens(prompt, prepend_bos=prepend_bos))
    answer_tokens = np.asarray(model.to_tokens(answers, prepend_bos=False))
    if multi:
        answer_tokens = answer_tokens[:, :1]
    prompt_tokens = np.repeat(prompt_tokens, answer_tokens.shape[0], axis=0)
    tokens = np.concatenate([prompt_tokens, answer_tokens], axis=1)
    prompt_str_tokens = model.to_str_tokens(prompt, prepend_bos=prepend_bos)
    answer_str_tokens_list = [model.to_str_tokens(a, prepend_bos=False) for a in answers]
    prompt_length = len(prompt_str_tokens)
    answer_length = 1 if multi else len(answer_str_tokens_list[0])
    if print_details:
        print("Tokenized prompt:", prompt_str_tokens)
        if multi:
            print("Tokenized answers:", answer_str_tokens_list)
        else:
            print("Tokenized answer:", answer_str_tokens_list[0])
    logits = np.asarray(model(tokens))
    answer_ranks = []
    for index in range(prompt_length, prompt_length + answer_length):
        toks = tokens[:, index]
        strs = [a[index - prompt_length] for a in answer_str_tokens_list]
        rows = [_rank(logits[i, index - 1], toks[i], top_k if (i == 0 and print_details) else 0)
                for i in range(n_answers)]
        answer_ranks.append([(strs[i], rows[i][0]) for i in range(n_answers)])
        if print_details:
            print(f"Performance on answer token{'s' if n_answers > 1 else ''}:\n" + "\n".join(
                f"Rank: {rows[i][0]: <8} Logit: {logits[i, index - 1, toks[i]].item():5.2f} "
                f"Prob: {rows[i][1]:6.2%} Token: |{strs[i]}|" for i in range(n_answers)))
            _, _, top_ids, top_probs = rows[0]
            for i in range(top_k):
                print(f"Top {i}th token. Logit: {logits[0, index - 1, top_ids[i]].item():5.2f} "
                      f"Prob: {float(top_probs[i]):6.2%} Token: |{model.to_string(int(top_ids[i]))}|")
    if not multi:
        print(f"Ranks of the answer tokens: {[r[0] for r in answer_ranks]}")
    else:
        print(f"Ranks of the answer tokens: {answer_ranks}")


test_prompt.__test__ = False  # type: ignore[attr-defined]  # a report, not a pytest test


def to_numpy(tensor: Any) -> np.ndarray:
    """TransformerLens's ``utils.to_numpy``: arrays unchanged, lists/tuples/scalars as arrays
    (anything with a ``.numpy()``, e.g. a CPU torch tensor, through it)."""
    if isinstance(tensor, np.ndarray):
        return tensor
    if isinstance(tensor, (list, tuple, int, float, bool, str, np.generic)):
        return np.array(tensor)
    if hasattr(tensor, "detach") and hasattr(tensor, "numpy"):
        return tensor.detach().cpu().numpy()
    raise ValueError(f"Input to to_numpy has invalid type: {type(tensor)}")


def get_corner(tensor: Any, n: int = 3) -> Any:
    """The top left corner of an array: ``tensor[:n, :n, ...]`` on every axis."""
    return tensor[tuple(slice(n) for _ in range(tensor.ndim))]


def remove_batch_dim(tensor: Any) -> Any:
    """Drops the first axis if it has size 1."""
    return tensor[0] if tensor.shape[0] == 1 else tensor


def get_device() -> str:
    """libcircuits runs on the CPU: always ``"cpu"``."""
    return "cpu"
