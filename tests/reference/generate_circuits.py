#!/usr/bin/env python3
"""Weight-processing and circuits references for every case in ``cases/``.

Run with the reference venv from any directory, AFTER ``generate.py`` (it reads the
model files, ``case.json`` and ``expected.safetensors`` that generate.py wrote):

    /opt/refenv/bin/python tests/reference/generate_circuits.py [case_name ...]

For each case it writes ``cases/<case>/processed.safetensors`` and adds a
``"processed"`` entry to ``cases/<case>/case.json`` (see README.md, section
"Weight processing and circuits").  Everything is computed by TransformerLens 3.x
itself (``load_and_process_state_dict``, ``FactoredMatrix``,
``all_composition_scores``, ``head_detector``), on CPU, float32, deterministic.
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# generate.py sets HF_HUB_OFFLINE, 1 thread, deterministic algorithms, no grad, and
# silences the HookedTransformer deprecation warning; its main() is not run on import.
import generate as G  # noqa: E402

import json  # noqa: E402
import logging  # noqa: E402
import types  # noqa: E402
from typing import Dict, List, Tuple  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import GPT2Model  # noqa: E402

import transformer_lens.head_detector as HD  # noqa: E402
from transformer_lens import FactoredMatrix, HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights  # noqa: E402
from transformer_lens.utilities.activation_functions import softcap_enabled  # noqa: E402
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES  # noqa: E402

from tl_export import load_tl_config, tl_config_dict  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)  # TL's "Skipping fold" etc. are expected here

CASES_DIR = G.CASES_DIR
DEFAULT_FLAGS = dict(  # HookedTransformer.from_pretrained defaults
    fold_ln=True,
    center_writing_weights=True,
    center_unembed=True,
    fold_value_biases=True,
    refactor_factored_attn_matrices=False,
)
FLAG_ORDER = list(DEFAULT_FLAGS)
LOGPROB_TOL = 1e-4
# Vocab above which per-token vocab-sized tensors (logits, log_probs, unembed.hook_out,
# refactor:logits) are not stored (hf_fake_1layer: 50257).
LARGE_VOCAB = 10000
IND_BATCH = 4
# Cases whose from_pretrained processing in TransformerLens 3.9 computes another function
# (processed log-probs differ from the unprocessed ones by > 1): no processed reference.
# libcircuits refuses the first and folds the second correctly (docs/differences.md).
TL_MISPROCESSES = {
    "tl_gated_geglu_ln": "fold_ln of a gated MLP after LN: TL adds ln2.b . W_in to b_in (added after "
    "the gate product) and drops the gate's share (log-probs off by 3.05)",
    "tl_final_rms_ln": "fold_ln with final_rms in an LN model: TL folds the final RMSNorm as a "
    "LayerNorm (centres W_U; ln_final becomes LayerNormPre) (log-probs off by 1.55)",
}
HEAD_NAMES = ("previous_token_head", "duplicate_token_head", "induction_head")


# ----------------------------------------------------------------------------- loading


class CaseModel:
    """How to rebuild a case's config and (unprocessed TL-format) state dict, the way
    generate.py does: HF cases via hf_to_tl_config + convert_gpt2_weights, TL cases
    from tl_config.json + model.safetensors."""

    def __init__(self, name: str):
        self.name = name
        self.dir = os.path.join(CASES_DIR, name)
        with open(os.path.join(self.dir, "case.json")) as f:
            self.case = json.load(f)
        self.expected = load_file(os.path.join(self.dir, "expected.safetensors"))
        self.format = self.case["format"]
        self.family = self.case.get("family")  # generate_families.py: a transformers model type
        if self.family:
            import generate_families as F

            self.lm = F.load_hf(self.dir, self.family)
            self.convert = F.FAMILIES[self.family][2]
            assert tl_config_dict(self.make_cfg()) == self.case["tl_config"], name
        elif self.format == "hf":
            arch = self.case["tl_config"]["original_architecture"]
            if arch == "GPT2Model":  # hf_tiny_noprefix: base model, tied head = wte
                base = GPT2Model.from_pretrained(
                    self.dir, dtype=torch.float32, attn_implementation="eager"
                ).eval()
                self.hf_cfg = base.config
                self.lm = types.SimpleNamespace(
                    transformer=base, lm_head=types.SimpleNamespace(weight=base.wte.weight)
                )
            else:
                self.lm = G.load_hf_lm(self.dir)
                self.hf_cfg = self.lm.config
            self.arch = arch
            assert tl_config_dict(self.make_cfg()) == self.case["tl_config"], name
        else:
            self.tl_sd = {
                k: v.float() for k, v in load_file(os.path.join(self.dir, "model.safetensors")).items()
            }

    def make_cfg(self, **changes) -> HookedTransformerConfig:
        if self.family:  # the config the generator built (TL's, or by hand for Gemma)
            d = dict(self.case["tl_config"])
            d["dtype"] = torch.float32
            d["device"] = "cpu"
            cfg = HookedTransformerConfig.from_dict(d)
        elif self.format == "hf":
            cfg = G.hf_to_tl_config(self.hf_cfg, self.arch)
        else:
            cfg = HookedTransformerConfig.from_dict(load_tl_config(self.dir))
        if changes:
            d = cfg.to_dict()
            d.update(changes)
            cfg = HookedTransformerConfig.from_dict(d)
        return cfg

    def make_state_dict(self, cfg) -> Dict[str, torch.Tensor]:
        """What from_pretrained would hand to load_and_process_state_dict."""
        if self.family:
            return {k: v.detach().clone().float() for k, v in self.convert(self.lm, cfg).items()}
        if self.format == "hf":
            return {k: v.detach().clone().float() for k, v in convert_gpt2_weights(self.lm, cfg).items()}
        return {k: v.clone() for k, v in self.tl_sd.items()}


def from_pretrained_overrides(cfg: HookedTransformerConfig, flags: dict) -> dict:
    """The automatic flag overrides of HookedTransformer.from_pretrained (TL 3.9)."""
    f = dict(flags)
    if cfg.positional_embedding_type == "shortformer":
        f["fold_ln"] = False
        f["center_unembed"] = False
        f["center_writing_weights"] = False
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        f["fold_ln"] = False
        f["center_writing_weights"] = False
    if f["center_unembed"] and softcap_enabled(cfg.output_logits_soft_cap):
        f["center_unembed"] = False
    return f


def load_unprocessed(cm: CaseModel) -> HookedTransformer:
    cfg = cm.make_cfg()
    model = HookedTransformer(cfg).eval()
    model.load_and_process_state_dict(cm.make_state_dict(cfg), **G.NO_PROCESSING)
    return model


def load_processed(cm: CaseModel, requested: dict, route: str = "from_pretrained"):
    """Processed model as from_pretrained builds it.

    route="from_pretrained": like TL's get_pretrained_model_config, the config already
    says LNPre (RMSPre) when fold_ln survives the overrides, then HookedTransformer(cfg)
    + load_and_process_state_dict(state_dict, **flags).
    route="swap": config keeps LN; load_and_process_state_dict swaps in LayerNormPre
    itself (what process_weights_/a direct call does). Both must agree.
    Returns (model, flags after overrides, flags actually applied)."""
    cfg0 = cm.make_cfg()
    flags = from_pretrained_overrides(cfg0, requested)
    norm0 = cfg0.normalization_type
    changes = {}
    if route == "from_pretrained" and flags["fold_ln"]:
        if norm0 in ("LN", "LNPre"):
            changes["normalization_type"] = "LNPre"
        elif norm0 in ("RMS", "RMSPre"):
            changes["normalization_type"] = "RMSPre"
    cfg = cm.make_cfg(**changes)
    sd = cm.make_state_dict(cfg)
    model = HookedTransformer(cfg).eval()
    # TL's own conditions (load_and_process_state_dict, process_weights), used to
    # report what really happened; checked against the weights below.
    filled = model.fill_missing_keys(dict(sd))
    ln_present = any(k.endswith((".ln1.w", ".ln2.w", "ln_final.w")) for k in filled)
    fold_applied = bool(flags["fold_ln"] and norm0 in ("LN", "LNPre", "RMS", "RMSPre") and ln_present)
    model.load_and_process_state_dict(sd, **flags)
    norm1 = model.cfg.normalization_type
    applied = {
        "fold_ln": fold_applied,
        "center_writing_weights": bool(
            flags["center_writing_weights"] and norm1 in ("LN", "LNPre") and not model.cfg.final_rms
        ),
        "center_unembed": bool(flags["center_unembed"]),
        "fold_value_biases": bool(flags["fold_value_biases"]),
        "refactor_factored_attn_matrices": bool(flags["refactor_factored_attn_matrices"]),
    }
    check_applied(model, applied)
    return model, flags, applied


def _zero_mean(t: torch.Tensor, dim: int) -> bool:
    return bool(t.mean(dim).abs().max() < 1e-5)


def check_applied(model: HookedTransformer, applied: dict) -> None:
    """Assert that the weights show exactly the processing we claim was applied."""
    m = model
    if applied["fold_ln"]:
        assert m.cfg.normalization_type in ("LNPre", "RMSPre")
        # ln1_post / ln2_post (use_normalization_before_and_after) are RMSNorms that fold_ln
        # keeps: they normalise a sublayer's output, no weight reads them
        assert not any(
            (".ln" in k and "_post." not in k) or k.startswith("ln_final") for k, _ in m.named_parameters()
        )
    # reading weights are centred (over d_model) only by fold_ln.  (The refactor
    # re-factorises W_Q/W_K/W_V/W_O by SVD; singular vectors of zero singular values
    # are arbitrary there, so these checks are skipped for it.)
    # Folding an RMSNorm (-> RMSPre) multiplies by w only: no bias, no centring.
    centred = applied["fold_ln"] and m.cfg.normalization_type == "LNPre"
    refactor = applied["refactor_factored_attn_matrices"]
    if not refactor:
        assert _zero_mean(m.W_Q, -2) == centred, "W_Q centring vs fold_ln"
        assert _zero_mean(m.W_V, -2) == centred
        assert _zero_mean(m.W_O, -1) == applied["center_writing_weights"]
    if not m.cfg.attn_only:
        assert _zero_mean(m.W_in, -2) == centred
    assert _zero_mean(m.W_E, -1) == applied["center_writing_weights"], "W_E centring"
    assert _zero_mean(m.W_U, -1) == applied["center_unembed"], "W_U centring"
    if applied["fold_value_biases"] or applied["refactor_factored_attn_matrices"]:
        assert torch.count_nonzero(m.b_V) == 0


def param_dict(model: HookedTransformer) -> Dict[str, torch.Tensor]:
    """Parameters by libcircuits' weight names: TL's, except that K/V are W_K / W_V / b_K / b_V
    (not GroupedQueryAttention's _W_K ...) when n_key_value_heads == n_heads (nothing grouped)."""
    names = {n for n, _ in model.named_parameters()}
    ungrouped = model.cfg.n_key_value_heads == model.cfg.n_heads

    def ours(k: str) -> str:
        return k.replace(".attn._", ".attn.") if ungrouped else k

    return {ours(k): v for k, v in model.state_dict().items() if k in names}


# ----------------------------------------------------------------------------- circuits


def split_complex(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return z.real.float().contiguous(), z.imag.float().contiguous()


def copying_score(eig: torch.Tensor) -> torch.Tensor:
    """copying = Re(sum_i lambda_i) / sum_i |lambda_i| over the last dim (eigenvalues
    of one head); complex eigenvalues come in conjugate pairs, so the sum is real."""
    return (eig.sum(-1).real / eig.abs().sum(-1)).float()


def full_ov_eigenvalues(model: HookedTransformer) -> torch.Tensor:
    """eig of FactoredMatrix(W_E @ W_V[l,h], W_O[l,h] @ W_U) per head -> [L, H, d_head]."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    rows = []
    for l in range(L):
        row = []
        for h in range(H):
            fm = FactoredMatrix(model.W_E @ model.W_V[l, h], model.W_O[l, h] @ model.W_U)
            row.append(fm.eigenvalues)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def detect_scores(model: HookedTransformer, tokens_det: torch.Tensor, out: Dict[str, torch.Tensor]):
    """head_detector.detect_head on a token tensor.

    detect_head only needs model.to_tokens(seq) to turn `seq` into ids, so we call the
    real detect_head with to_tokens temporarily replaced by the identity on a [1, T]
    id tensor.  Everything else (run_with_cache(remove_batch_dim=True), the
    get_*_detection_pattern(tokens) functions, compute_head_attention_similarity_score)
    is TL's own code.  The result is re-derived by hand and must match:
      mul: P' = P with P'[:,0]=0 if exclude_bos, diag(P')=0 if exclude_current_token;
           score = sum(P' * D) / sum(P')
      abs: score = 1 - round(mean(|P - D|) * T, 3)     (= 1 - round(sum|P-D| / T, 3))
           (exclude_* zero the |P-D| entries before the mean, not used here)
    where P = softmax pattern [T, T] of the head, D = detection pattern [T, T]."""
    seq = tokens_det[None, :].long()
    T = seq.shape[-1]
    model.to_tokens = lambda s, *a, **k: s  # instance attribute shadows the method
    try:
        results = {}
        for name in HEAD_NAMES:
            for em in ("mul", "abs"):
                results[(name, em, False)] = HD.detect_head(model, seq, name, error_measure=em)
        results[("induction_head", "mul", True)] = HD.detect_head(
            model, seq, "induction_head", error_measure="mul", exclude_bos=True
        )
    finally:
        del model.to_tokens
    _, cache = model.run_with_cache(seq, remove_batch_dim=True)
    for name in HEAD_NAMES:
        D = getattr(HD, f"get_{name}_detection_pattern")(seq.cpu()).float()
        assert D.shape == (T, T)
        out[f"detect_pattern:{name}"] = D.contiguous()
        for (n, em, ex_bos), scores in results.items():
            if n != name:
                continue
            mine = torch.empty(model.cfg.n_layers, model.cfg.n_heads)
            unrounded = torch.empty(model.cfg.n_layers, model.cfg.n_heads)
            for l in range(model.cfg.n_layers):
                for h in range(model.cfg.n_heads):
                    P = cache["pattern", l, "attn"][h].float()
                    if em == "mul":
                        Pm = P.clone()
                        if ex_bos:
                            Pm[:, 0] = 0
                        mine[l, h] = ((Pm * D).sum() / Pm.sum()).item()
                    else:
                        raw = ((P - D).abs().mean() * T).item()
                        mine[l, h] = 1 - round(raw, 3)
                        unrounded[l, h] = 1 - raw
            assert torch.allclose(mine, scores.float(), atol=1e-6), (name, em, mine, scores)
            key = f"detect:{name}:{em}" + (":exclude_bos" if ex_bos else "")
            out[key] = scores.float().contiguous()
            if em == "abs":
                out[key + ":unrounded"] = unrounded.contiguous()


def induction_scores(model: HookedTransformer, out: Dict[str, torch.Tensor]) -> int:
    """TL Main_Demo recipe: random tokens repeated twice; score[l, h] = mean over batch
    and diagonal entries of pattern.diagonal(offset=1-L) (L = length of one repeat)."""
    cfg = model.cfg
    L = min(10, cfg.n_ctx // 2)
    torch.manual_seed(0)
    rand = torch.randint(0, cfg.d_vocab, (IND_BATCH, L))
    rep = torch.cat([rand, rand], dim=1)  # [4, 2L]
    rep_bos = torch.cat([torch.zeros(IND_BATCH, 1, dtype=rep.dtype), rep], dim=1)  # [4, 2L+1]
    assert rep_bos.shape[1] <= cfg.n_ctx

    def score(tokens):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
        rows = []
        for l in range(cfg.n_layers):
            pat = cache["pattern", l, "attn"]  # [batch, head, q, k]
            stripe = pat.diagonal(offset=1 - L, dim1=-2, dim2=-1)  # [batch, head, n_diag]
            rows.append(stripe.mean(dim=(0, 2)))
        return torch.stack(rows).float()

    out["rep_tokens"] = rep.to(torch.int32)
    out["induction_score"] = score(rep)
    out["rep_tokens_bos"] = rep_bos.to(torch.int32)
    out["induction_score_bos"] = score(rep_bos)
    out["rep_per_token_loss"] = model(rep, return_type="loss", loss_per_token=True).float()
    assert out["rep_per_token_loss"].shape == (IND_BATCH, 2 * L - 1)
    return L


def circuits(model: HookedTransformer, out: Dict[str, torch.Tensor], tokens: torch.Tensor) -> dict:
    cfg = model.cfg
    L, H, dh = cfg.n_layers, cfg.n_heads, cfg.d_head
    OV, QK = model.OV, model.QK
    ov_eig, qk_eig = OV.eigenvalues, QK.eigenvalues
    assert ov_eig.shape == (L, H, dh) and qk_eig.shape == (L, H, dh)
    out["ov_eig_re"], out["ov_eig_im"] = split_complex(ov_eig)
    out["qk_eig_re"], out["qk_eig_im"] = split_complex(qk_eig)
    out["ov_norm"] = OV.norm().float()
    out["qk_norm"] = QK.norm().float()
    out["ov_S"] = OV.S.float()
    out["ov_U0"] = OV.U[0].float()
    out["ov_V0"] = OV.V[0].float()
    out["ov_corner"] = OV.get_corner(3).float()
    out["qk_corner"] = QK.get_corner(3).float()
    if L >= 2:
        for mode in ("Q", "K", "V"):
            out[f"comp_{mode}"] = model.all_composition_scores(mode).float()
            assert out[f"comp_{mode}"].shape == (L, H, L, H)
    full = full_ov_eigenvalues(model)
    assert full.shape == (L, H, dh)
    out["full_ov_eig_re"], out["full_ov_eig_im"] = split_complex(full)
    out["copying_ov"] = copying_score(ov_eig)
    out["copying_full_ov"] = copying_score(full)

    T = min(2 * tokens.shape[1], cfg.n_ctx - 1)  # detect_head asserts 1 < T < n_ctx
    tokens_det = torch.cat([tokens[0], tokens[0]])[:T]
    out["tokens_det"] = tokens_det.to(torch.int32)
    detect_scores(model, tokens_det, out)
    rep_len = induction_scores(model, out)
    return {"tokens_det_len": int(T), "rep_len": rep_len, "rep_batch": IND_BATCH}


# ----------------------------------------------------------------------------- one case


def hook_diffs(c_un, c_pr) -> Dict[str, float]:
    d = {}
    for k in c_pr.keys():
        if k in c_un.cache_dict:
            a, b = c_un[k].float(), c_pr[k].float()
            if a.shape != b.shape:
                d[k] = float("nan")
                continue
            fin = torch.isfinite(a) & torch.isfinite(b)
            assert torch.equal(torch.isfinite(a), torch.isfinite(b)), k
            d[k] = (a[fin] - b[fin]).abs().max().item() if fin.any() else 0.0
    return d


def process_case(name: str) -> dict:
    cm = CaseModel(name)
    exp = cm.expected
    tokens = exp["tokens"].long()
    big_vocab = cm.make_cfg().d_vocab_out > LARGE_VOCAB

    un = load_unprocessed(cm)
    logits_un = un(tokens)
    assert torch.equal(logits_un.float(), exp["logits"]), f"{name}: unprocessed model != expected"
    lp_un = torch.log_softmax(logits_un, -1)

    model, flags, applied = load_processed(cm, DEFAULT_FLAGS)
    model_b, _, applied_b = load_processed(cm, DEFAULT_FLAGS, route="swap")
    assert applied_b == applied
    pd, pdb = param_dict(model), param_dict(model_b)
    assert pd.keys() == pdb.keys()
    for k in pd:
        assert torch.equal(pd[k], pdb[k]), f"{name}: routes differ on {k}"

    out: Dict[str, torch.Tensor] = {}
    for k, v in pd.items():
        out[f"weight:{k}"] = v.float()
    # shapes: same as the unprocessed parameter when it still exists
    up = param_dict(un)
    for k, v in pd.items():
        if k in up:
            assert v.shape == up[k].shape, (k, v.shape, up[k].shape)
    out["flags"] = torch.tensor([int(applied[f]) for f in FLAG_ORDER], dtype=torch.int32)

    logits, cache = model.run_with_cache(tokens)
    logits = logits.float()
    lp = torch.log_softmax(logits, -1)
    dlp = (lp - lp_un).abs().max().item()
    assert dlp < LOGPROB_TOL, f"{name}: processed log_probs differ by {dlp}"
    per_tok = model(tokens, return_type="loss", loss_per_token=True).float()
    loss = model(tokens, return_type="loss").float()
    if not big_vocab:
        out["logits"] = logits
        out["log_probs"] = lp
    out["loss"] = loss.reshape(())
    out["per_token_loss"] = per_tok
    assert torch.allclose(per_tok, exp["per_token_loss"], atol=1e-4)
    # unembed.hook_out is bitwise equal to logits: not stored (as for hf_fake_1layer
    # in expected.safetensors)
    cap = model.cfg.output_logits_soft_cap
    hook_out = cache["unembed.hook_out"].float()
    if softcap_enabled(cap):  # TL caps after unembed.hook_out
        assert torch.equal(cap * torch.tanh(hook_out / cap), logits)
    else:
        assert torch.equal(hook_out, logits)
    for k in cache.keys():
        if k == "unembed.hook_out":
            continue
        out[f"hook:{k}"] = cache[k].detach().float()
    _, cache_un = un.run_with_cache(tokens)
    hdiff = hook_diffs(cache_un, cache)

    # refactor_factored_attn_matrices=True, other flags default. TransformerLens refuses it
    # for rotary models (the QK matrix depends on the positions): no refactor:* tensors then.
    dlp_r = None
    if cm.make_cfg().positional_embedding_type != "rotary":
        rflags = dict(DEFAULT_FLAGS, refactor_factored_attn_matrices=True)
        model_r, _, applied_r = load_processed(cm, rflags)
        assert applied_r["refactor_factored_attn_matrices"]
        for k, v in param_dict(model_r).items():
            if k.startswith("blocks.") and ".attn." in k:
                out[f"refactor:weight:{k}"] = v.float()
        logits_r = model_r(tokens).float()
        dlp_r = (torch.log_softmax(logits_r, -1) - lp_un).abs().max().item()
        assert dlp_r < LOGPROB_TOL, f"{name}: refactored log_probs differ by {dlp_r}"
        if not big_vocab:
            out["refactor:logits"] = logits_r

    info = circuits(model, out, tokens)

    out = {k: v.detach().contiguous().clone() for k, v in out.items()}
    for k, v in out.items():
        assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
        if v.dtype == torch.float32 and not k.startswith("hook:blocks.") and "attn_scores" not in k:
            assert torch.isfinite(v).all(), k
    path = os.path.join(cm.dir, "processed.safetensors")
    # one metadata key only: safetensors writes the metadata map in hash order, so
    # two keys would make the header (and the file bytes) vary from run to run
    save_file(out, path, metadata={"case": name})
    os.chmod(path, 0o644)

    case = cm.case
    case["processed"] = {
        "flags": applied,
        "flags_after_from_pretrained_overrides": flags,
        "normalization_type": model.cfg.normalization_type,
        "normalization_type_unprocessed": un.cfg.normalization_type,
        "large_vocab_tensors_omitted": big_vocab,
        "max_abs_log_prob_diff_vs_unprocessed": dlp,
        "max_abs_refactor_log_prob_diff_vs_unprocessed": dlp_r,
        **info,
    }
    with open(os.path.join(cm.dir, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
        f.write("\n")
    return {
        "name": name,
        "flags": [int(applied[f]) for f in FLAG_ORDER],
        "norm": f"{un.cfg.normalization_type}->{model.cfg.normalization_type}",
        "n": len(out),
        "bytes": os.path.getsize(path),
        "dlp": dlp,
        "dlp_r": dlp_r,
        "hook_diffs": hdiff,
    }


def main(argv: List[str]) -> None:
    all_names = sorted(
        d for d in os.listdir(CASES_DIR) if os.path.isfile(os.path.join(CASES_DIR, d, "case.json"))
    )
    names = argv or [n for n in all_names if n not in TL_MISPROCESSES]
    refused = [n for n in names if n in TL_MISPROCESSES]
    if refused:
        sys.exit(f"no processed reference for {refused}: {[TL_MISPROCESSES[n] for n in refused]}")
    unknown = [n for n in names if n not in all_names]
    if unknown:
        sys.exit(f"unknown case(s): {unknown}; known: {all_names}")
    rows = []
    for n in names:
        print(f"processing {n} ...", flush=True)
        rows.append(process_case(n))
    verbose = os.environ.get("VERBOSE_HOOKS") == "1"
    print()
    print(f"{'case':26s} {'fold/cww/cu/fvb/ref':19s} {'norm':12s} {'n':>4s} {'bytes':>9s} "
          f"{'dlogprob':>9s} {'refactor':>9s}  hooks differing > 1e-4")
    for r in rows:
        diff = sorted(k for k, v in r["hook_diffs"].items() if not (v <= 1e-4))
        short = sorted({k.split(".", 2)[-1] if k.startswith("blocks.") else k for k in diff})
        print(f"{r['name']:26s} {str(r['flags']):19s} {r['norm']:12s} {r['n']:4d} {r['bytes']:9d} "
              f"{r['dlp']:9.2g} {r['dlp_r'] if r['dlp_r'] is not None else float('nan'):9.2g}  {', '.join(short)}")
        if verbose:
            for k, v in r["hook_diffs"].items():
                print(f"    {k:40s} {v:.3g}")
    print(f"processed total: {sum(r['bytes'] for r in rows)} bytes; "
          f"all of {HERE}: {G.dir_bytes(HERE)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
