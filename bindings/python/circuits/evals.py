"""TransformerLens's ``evals`` that need no dataset download: ``sanity_check``,
``induction_loss``, ``evaluate_on_dataset`` (on token arrays you supply), ``IOIDataset`` and
``ioi_eval``. The forward passes and losses run in the library; the datasets and the loops are
TransformerLens's.

``IOIDataset``'s default names, templates and nouns, and its sampling procedure, are copied from
TransformerLens 3.9.0's ``transformer_lens/evals.py`` (MIT License, Copyright (c) 2022
TransformerLensOrg), so the same seed gives the same prompts as TransformerLens.

The WikiText / OpenWebText / Pile / code / MMLU loaders and ``evaluate`` download datasets and
are not provided: tokenize your text and pass the token array to ``evaluate_on_dataset``.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from . import _native as N
from .errors import RangeError, ShapeError
from .tokenizer import Tokenizer

lib = N.lib

__all__ = ["sanity_check", "induction_loss", "evaluate_on_dataset", "IOIDataset", "ioi_eval",
           "induction_tokens"]

SANITY_TEXT = ("Many important transition points in the history of science have been moments when science "
               "'zoomed in.' At these points, we develop a visualization or tool that allows us to see the world "
               "in a new level of detail, and a new field of science develops to study the world through this lens.")


def _check_device(device: Any) -> None:
    if device is not None and str(device) != "cpu":
        raise ValueError(f"libcircuits runs on the CPU: device must be None or 'cpu', not {device!r}")


def sanity_check(model: Any) -> np.float32:
    """The loss on the first paragraph of "Circuits: Zoom In" (TransformerLens's sanity_check):
    below ~5 the model is probably fine, above ~7 something is wrong."""
    return model(SANITY_TEXT, return_type="loss")


def induction_tokens(batch_size: int, subseq_len: int, d_vocab: int, seed: int = 0,
                     low: int = 100, high: int = 20000) -> np.ndarray:
    """The first half of induction_loss's sequences: int64 [batch_size, subseq_len], uniform in
    [low, min(high, d_vocab)) (TransformerLens draws torch.randint(100, 20000); a vocabulary
    smaller than 20000 caps the range, and one of at most ``low`` ids starts it at 0). They come
    from the library's seeded stream (``circuits_repeated_tokens``, splitmix64): reproducible on
    every platform, but not torch's numbers — pass ``first_half_tokens`` to induction_loss to
    use TransformerLens's own."""
    hi = min(int(high), int(d_vocab))
    lo = int(low) if int(low) < hi else 0
    rep = np.empty((int(batch_size), 2 * int(subseq_len)), np.int32)
    if batch_size < 1 or subseq_len < 1:
        raise RangeError(f"batch_size {batch_size} and subseq_len {subseq_len} must be at least 1")
    N.check(lib.circuits_repeated_tokens(int(batch_size), int(subseq_len), hi - lo, int(seed), -1, rep),
            "induction_tokens")
    return rep[:, : int(subseq_len)].astype(np.int64) + lo


def induction_loss(model: Any, tokenizer: Any = None, batch_size: int = 4, subseq_len: int = 384,
                   prepend_bos: Optional[bool] = None, device: Any = None, *, seed: int = 0,
                   first_half_tokens: Any = None) -> np.float32:
    """TransformerLens's ``evals.induction_loss``: random tokens repeated twice [batch_size,
    2 * subseq_len], the first token overwritten by BOS (``prepend_bos``, default
    ``model.cfg.default_prepend_bos``), and the mean loss on the second half (per-token losses
    from position subseq_len + 1 on). ``seed`` seeds :func:`induction_tokens`;
    ``first_half_tokens`` [batch, subseq_len] replaces them (e.g. TransformerLens's torch.randint
    draw, to compare digit for digit). ``device``: None or "cpu"."""
    _check_device(device)
    if first_half_tokens is None:
        first = induction_tokens(batch_size, subseq_len, model.cfg.d_vocab, seed)
    else:
        first = np.asarray(first_half_tokens)
        if first.ndim != 2:
            raise ShapeError(f"first_half_tokens must be [batch, subseq_len], not {list(first.shape)}")
        subseq_len = first.shape[1]
    tokens = np.concatenate([first, first], axis=1).astype(np.int64)
    if prepend_bos is None:
        prepend_bos = model.cfg.default_prepend_bos
    if prepend_bos:
        tok = tokenizer if tokenizer is not None else model.tokenizer
        if tok is None or tok.bos_token_id is None:
            raise ValueError("induction_loss with prepend_bos needs a tokenizer with a BOS token "
                             "(or pass prepend_bos=False)")
        tokens[:, 0] = tok.bos_token_id
    per_token = model(tokens, return_type="loss", loss_per_token=True)  # [batch, 2 L - 1], in C
    return np.float32(per_token[:, subseq_len + 1:].mean(dtype=np.float64))


def _batches(data_loader: Any, batch_size: int) -> Iterable[Any]:
    """Batches of token ids: rows of a numpy int array [n, pos] in order (TransformerLens's loaders
    drop the last partial batch: so does this), or the items of any iterable (arrays, or dicts
    with a "tokens" entry, as TransformerLens's data loaders give)."""
    if isinstance(data_loader, np.ndarray):
        a = data_loader
        if a.ndim != 2:
            raise ShapeError(f"a token array must be [n, pos], not {list(a.shape)}")
        for i in range(0, a.shape[0] - batch_size + 1, batch_size):
            yield a[i:i + batch_size]
        return
    for b in data_loader:
        yield b["tokens"] if isinstance(b, dict) else b


def evaluate_on_dataset(model: Any, data_loader: Any, truncate: int = 100, device: Any = None, *,
                        batch_size: int = 8) -> float:
    """TransformerLens's ``evals.evaluate_on_dataset``: the mean over batches of the model's
    loss. ``data_loader``: a token array [n, pos] (cut into batches of ``batch_size``, the last
    partial one dropped) or an iterable of batches. As TransformerLens, it stops after
    ``truncate + 1`` batches."""
    _check_device(device)
    running_loss = 0.0
    total = 0
    for batch in _batches(data_loader, int(batch_size)):
        running_loss += float(model(np.asarray(batch), return_type="loss"))
        total += 1
        if total > truncate:
            break
    if total == 0:
        raise ValueError("evaluate_on_dataset: the data loader gave no batch")
    return running_loss / total


class IOIDataset:
    """TransformerLens's ``evals.IOIDataset`` (Indirect Object Identification, Wang et al.
    2022, https://arxiv.org/pdf/2211.00593.pdf): prompts from templates with two names, the
    indirect object (IO) and the subject (S). Item i is a dict of int64 arrays: "prompt"
    (BOS first when ``prepend_bos``), "IO" and "S" (the names' tokens, with a leading space).
    As in TransformerLens, whose model.tokenizer prepends BOS to every encode, each of the three
    starts with the BOS token of a circuits.Tokenizer (the prompt with two when
    ``prepend_bos``); ioi_eval skips the identical prefix of IO and S.
    The same ``seed`` gives TransformerLens's samples (the same ``random`` calls); None uses the
    current state of Python's ``random``."""

    def __init__(self, tokenizer: Any, templates: Optional[List[str]] = None, names: Optional[List[str]] = None,
                 nouns: Optional[Dict[str, List[str]]] = None, num_samples: int = 1000, symmetric: bool = False,
                 prepend_bos: bool = True, seed: Optional[int] = None):
        self.tokenizer = tokenizer
        self.prepend_bos = prepend_bos
        if seed is not None:
            random.seed(seed)
        self.templates = templates if templates is not None else self.get_default_templates()
        self.names = names if names is not None else self.get_default_names()
        self.nouns = nouns if nouns is not None else self.get_default_nouns()
        self.samples: List[Dict[str, str]] = []
        for _ in range(num_samples // 2 if symmetric else num_samples):
            self.samples.extend(self.get_sample(symmetric=symmetric))

    def __len__(self) -> int:
        return len(self.samples)

    def _encode(self, text: str) -> List[int]:
        # TransformerLens hands model.tokenizer to the dataset: a Hugging Face tokenizer its
        # get_tokenizer_with_bos made prepend BOS, so every encode here starts with BOS (and a
        # prompt with prepend_bos=True with two). A circuits.Tokenizer does the same here, so
        # the numbers are TransformerLens's; any other tokenizer is called as TransformerLens does.
        if isinstance(self.tokenizer, Tokenizer):
            return [int(t) for t in self.tokenizer.encode(text, prepend_bos=self.tokenizer.bos_token_id is not None)]
        return [int(t) for t in self.tokenizer.encode(text)]

    def __getitem__(self, idx: int) -> Dict[str, np.ndarray]:
        sample = self.samples[idx]
        prompt = self._encode(sample["text"])
        if self.prepend_bos:
            prompt = [self.tokenizer.bos_token_id] + prompt
        return {"prompt": np.array(prompt, np.int64), "IO": np.array(self._encode(sample["IO"]), np.int64),
                "S": np.array(self._encode(sample["S"]), np.int64)}

    def get_sample(self, symmetric: bool = False) -> List[Dict[str, str]]:
        template: str = random.choice(self.templates)
        for noun_type, noun_list in self.nouns.items():
            template = template.replace(f"[{noun_type}]", random.choice(noun_list))
        samples: List[Dict[str, str]] = []
        names = random.sample(self.names, 2)  # two names without replacement
        sample = template.replace("[A]", names[0]).replace("[B]", names[1])
        # a space before IO and S: the target is " Mary", not "Mary"
        samples.append({"text": sample, "IO": " " + names[0], "S": " " + names[1]})
        if symmetric:
            sample_2 = template.replace("[A]", names[1]).replace("[B]", names[0])
            samples.append({"text": sample_2, "IO": " " + names[1], "S": " " + names[0]})
        return samples

    @staticmethod
    def get_default_names() -> List[str]:
        return ["John", "Mary"]

    @staticmethod
    def get_default_templates() -> List[str]:
        return [
            "[A] and [B] went to the [LOCATION] to buy [OBJECT]. [B] handed the [OBJECT] to [A]",
            "Then, [B] and [A] went to the [LOCATION]. [B] gave the [OBJECT] to [A]",
        ]

    @staticmethod
    def get_default_nouns() -> Dict[str, List[str]]:
        return {
            "LOCATION": ["store", "market"],
            "OBJECT": ["milk", "eggs", "bread"],
        }


def ioi_eval(model: Any, dataset: Any = None, batch_size: int = 8, num_samples: int = 1000, tokenizer: Any = None,
             symmetric: bool = False) -> Dict[str, float]:
    """TransformerLens's ``evals.ioi_eval``: the mean logit difference (IO minus S, at the first
    token where the names differ) and the accuracy (share of samples with a positive
    difference). Prompts are right-padded with 0 per batch, as TransformerLens's collate does;
    TransformerLens shuffles the batches, this goes in order (the means are the same)."""
    if tokenizer is None:
        tokenizer = model.tokenizer
    if dataset is None:
        dataset = IOIDataset(tokenizer, num_samples=num_samples, symmetric=symmetric)
    total_correct = 0
    total_logit_diff = 0.0
    n = len(dataset)
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        lengths = [len(it["prompt"]) for it in items]
        prompts = np.zeros((len(items), max(lengths)), np.int64)
        for i, it in enumerate(items):
            prompts[i, : lengths[i]] = it["prompt"]
        batch_logits = model(prompts, return_type="logits")
        for i, it in enumerate(items):
            io, s = np.asarray(it["IO"]), np.asarray(it["S"])
            prefix_length = lengths[i] - io.shape[0]
            m = min(io.shape[0], s.shape[0])
            io, s = io[:m], s[:m]
            start_idx = int(np.nonzero(io != s)[0][0])  # skip an identical prefix
            logits = batch_logits[i, prefix_length + start_idx - 1]
            logit_diff = float(logits[io[start_idx]] - logits[s[start_idx]])  # float32, as torch
            total_correct += logit_diff > 0
            total_logit_diff += logit_diff
    return {"Logit Difference": total_logit_diff / n, "Accuracy": total_correct / n}
