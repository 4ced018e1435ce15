#!/usr/bin/env python3
"""SAELens references for libcircuits's SAEs and transcoders (issue 17, "Proof").

Run with the reference venv from any directory, after generate.py / generate_families.py /
generate_circuits.py (it reads their case directories):

    /opt/refenv/bin/python tests/reference/generate_saes.py [case ...]

For each model case it builds the model as libcircuits loads it by default (TransformerLens's
from_pretrained processing: generate_circuits.py's load_processed with DEFAULT_FLAGS) as a
SAELens ``HookedSAETransformer``, checks its log-probs against the Hugging Face model's, creates
random-init SAEs of every architecture WITH SAELENS ITSELF (its config and SAE classes, saved with
``sae.save_model``), loads each back with ``SAE.load_from_disk`` and records what SAELens computes:

* ``saes/<case>/<sae>/``: ``cfg.json`` + ``sae_weights.safetensors`` as SAELens wrote them
  (+ ``sparsity.safetensors`` for one SAE, written as SAELens's trainer writes it);
* ``saes/<case>/expected.safetensors``: encode / decode on fixed rows, and the logits and every
  ``hook_sae_*`` value of ``run_with_cache_with_saes`` runs (see README.md, "SAEs");
* ``saes/<case>/manifest.json``: versions, what each SAE is, each run's SAEs / error term / edit
  and its cache keys in firing order, and the measured margins from every jump.

Thresholds, gate biases and encoder biases are chosen from the inputs each SAE sees so that about a
third to a half of the latents fire and every pre-activation stays away from its jump (JumpReLU
threshold, gate sign, top-k boundary) by far more than the tests' tolerance; the generator asserts
the margins on every recorded run. Deterministic: re-runs give the same values.
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as G  # noqa: E402  (offline, 1 thread, deterministic, no grad)
import generate_circuits as C  # noqa: E402

import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
from typing import Dict, List  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import sae_lens  # noqa: E402
from sae_lens import (  # noqa: E402
    SAE,
    GatedSAE,
    GatedSAEConfig,
    HookedSAETransformer,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    JumpReLUSkipTranscoder,
    JumpReLUSkipTranscoderConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
    SkipTranscoder,
    SkipTranscoderConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    Transcoder,
    TranscoderConfig,
)
import sae_lens.analysis.hooked_sae_transformer as HSAE  # noqa: E402
from sae_lens.saes.sae import SAEMetadata, _disable_hooks  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)
logging.getLogger("sae_lens").setLevel(logging.ERROR)

OUT = os.path.join(HERE, "saes")
MARGIN_MIN = 1e-3  # smallest margin from a jump accepted, relative to max |acts_pre| (tests use 1e-4)
HF_TOL = 1e-4
EDIT_LATENT = 3
# Logits are stored whole up to MAX_COLUMNS vocabulary entries, else their first LOGIT_COLUMNS
# (>= d_model: generic unembedding columns then determine the final residual completely).
MAX_COLUMNS = 256
LOGIT_COLUMNS = 64

ARCH = {
    "standard": (StandardSAE, StandardSAEConfig),
    "gated": (GatedSAE, GatedSAEConfig),
    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
    "topk": (TopKSAE, TopKSAEConfig),
    "transcoder": (Transcoder, TranscoderConfig),
    "skip_transcoder": (SkipTranscoder, SkipTranscoderConfig),
    "jumprelu_transcoder": (JumpReLUTranscoder, JumpReLUTranscoderConfig),
    "jumprelu_skip_transcoder": (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig),
}
TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")


def versions() -> Dict[str, str]:
    v = dict(G.VERSIONS)
    v["sae_lens"] = md.version("sae-lens")
    return v


def spec(name, arch, hook, layer_out=None, d_sae=96, apply_b_dec=True, norm="none", reshape="none", k=None,
         rescale=False, dtype="float32", edit=False, sparsity=False, seed=0):
    return dict(name=name, arch=arch, hook=hook, hook_out=layer_out, d_sae=d_sae, apply_b_dec=apply_b_dec,
                norm=norm, reshape=reshape, k=k, rescale=rescale, dtype=dtype, edit=edit, sparsity=sparsity,
                seed=seed)


def sae_specs(a: int, b: int) -> List[dict]:
    """The SAEs of a case; a < b are two layers."""
    return [
        spec("standard", "standard", f"blocks.{a}.hook_resid_pre", edit=True, sparsity=True, seed=1),
        spec("standard_no_bdec_avg", "standard", f"blocks.{a}.hook_mlp_out", apply_b_dec=False,
             norm="expected_average_only_in", seed=2),
        spec("standard_layer_norm", "standard", f"blocks.{b}.hook_resid_pre", norm="layer_norm", seed=3),
        spec("gated", "gated", f"blocks.{a}.hook_resid_mid", edit=True, seed=4),
        spec("jumprelu", "jumprelu", f"blocks.{a}.hook_attn_out", apply_b_dec=False, edit=True, seed=5),
        spec("jumprelu_cnr", "jumprelu", f"blocks.{b}.hook_resid_mid", norm="constant_norm_rescale", seed=6),
        spec("topk", "topk", f"blocks.{a}.hook_resid_post", k=32, edit=True, seed=7),
        spec("topk_rescale", "topk", f"blocks.{b}.hook_resid_post", k=32, rescale=True, norm="layer_norm", seed=8),
        spec("hook_z", "standard", f"blocks.{a}.attn.hook_z", reshape="hook_z", norm="constant_norm_rescale",
             edit=True, seed=9),
        spec("hook_z_topk", "topk", f"blocks.{b}.attn.hook_z", reshape="hook_z", apply_b_dec=False, k=32,
             seed=10),
        spec("transcoder", "transcoder", f"blocks.{a}.ln2.hook_normalized", f"blocks.{a}.hook_mlp_out",
             apply_b_dec=False, edit=True, seed=11),
        spec("skip_transcoder", "skip_transcoder", f"blocks.{b}.ln2.hook_normalized", f"blocks.{b}.hook_mlp_out",
             apply_b_dec=False, seed=12),
        spec("jumprelu_transcoder", "jumprelu_transcoder", f"blocks.{b}.ln2.hook_normalized",
             f"blocks.{b}.hook_mlp_out", apply_b_dec=False, seed=13),
        spec("jumprelu_skip_transcoder", "jumprelu_skip_transcoder", f"blocks.{a}.ln2.hook_normalized",
             f"blocks.{a}.hook_mlp_out", apply_b_dec=False, seed=14),
        spec("standard_bf16", "standard", f"blocks.{b}.hook_resid_post", dtype="bfloat16", seed=15),
        # SAELens normalizes a transcoder's input but does not undo it on the output
        spec("transcoder_cnr", "transcoder", f"blocks.{b}.ln2.hook_normalized", f"blocks.{b}.hook_mlp_out",
             apply_b_dec=False, norm="constant_norm_rescale", seed=16),
        # few latents per row (libcircuits decodes sparsely below 1/16 density), saved in F16
        spec("topk_k4_f16", "topk", f"blocks.{a}.hook_resid_pre", k=4, dtype="float16", seed=17),
    ]


# the model cases: name -> (layers a < b, tokens seed, batch, positions)
CASES = {
    "hf_tiny_random_gpt2": dict(layers=(1, 3), seed=1701, B=2, T=6),
    "hf_llama_gqa": dict(layers=(0, 1), seed=1702, B=2, T=6),
    "hf_gemma2": dict(layers=(0, 2), seed=1703, B=2, T=6),
}
# the second SAE of the several-at-once runs: attached after "standard", at layer b, its jumps
# placed from the inputs it sees with "standard" attached (error term off and on) and without
MULTI_SECOND = "multi_jumprelu"


# ----------------------------------------------------------------------------- the model


def build_model(case: str, tokens: torch.Tensor):
    """The processed model (libcircuits's default load) as a HookedSAETransformer, checked against
    Hugging Face and against the plain HookedTransformer it was copied from."""
    cm = C.CaseModel(case)
    ht, flags, applied = C.load_processed(cm, C.DEFAULT_FLAGS)
    model = HookedSAETransformer(ht.cfg).eval()
    model.load_state_dict(ht.state_dict(), strict=True)
    logits = model(tokens)
    assert torch.equal(logits, ht(tokens)), case
    hf = cm.lm(tokens).logits.float()
    lp_diff = float((logits.log_softmax(-1) - hf.log_softmax(-1)).abs().max())
    assert lp_diff <= HF_TOL, (case, lp_diff)
    return model, dict(flags_applied=applied, hf_max_abs_log_prob_diff=lp_diff)


# ----------------------------------------------------------------------------- random SAEs


def gap_midpoint(v: torch.Tensor, q: float) -> float:
    """A value that splits v near its quantile q, in the middle of the widest gap nearby."""
    s, _ = torch.sort(v.double())
    n = s.numel()
    i = min(max(int(round(q * n)), 1), n - 1)
    w = max(2, n // 10)
    lo, hi = max(1, i - w), min(n - 1, i + w)
    gaps = s[lo: hi + 1] - s[lo - 1: hi]
    j = int(torch.argmax(gaps)) + lo
    return float((s[j - 1] + s[j]) / 2)


def make_sae(case: str, sp: dict, x: torch.Tensor, out_scale: float, d_out: int):
    """A SAELens SAE of sp's architecture whose biases / thresholds suit inputs x ([n, d_in]; for
    hook_z [n, heads, d_head]), built in fp32 (cast to sp's dtype at the end)."""
    g = G.gen(10_000 + sp["seed"])
    arch = sp["arch"]
    sae_cls, cfg_cls = ARCH[arch]
    xf = x.reshape(x.shape[0], -1)
    d_in = xf.shape[1]
    d_sae = sp["d_sae"]
    md_kw = dict(hook_name=sp["hook"], model_name=case, context_size=64, prepend_bos=False)
    if sp["hook_out"]:
        md_kw["hook_name_out"] = sp["hook_out"]
    kw = dict(d_in=d_in, d_sae=d_sae, dtype="float32", apply_b_dec_to_input=sp["apply_b_dec"],
              normalize_activations=sp["norm"], reshape_activations=sp["reshape"], metadata=SAEMetadata(**md_kw))
    if arch == "topk":
        kw.update(k=sp["k"], rescale_acts_by_decoder_norm=sp["rescale"])
    if arch in TRANSCODERS:
        kw["d_out"] = d_out
    sae = sae_cls(cfg_cls(**kw))
    p = dict(sae.named_parameters())

    def rn(*shape):
        return torch.randn(*shape, generator=g)

    def ru(*shape):
        return torch.rand(*shape, generator=g)

    # the encoder's input as SAELens makes it (reshape, normalization, - b_dec)
    p["W_enc"].data.copy_(rn(d_in, d_sae) / d_in ** 0.5)
    d_o = d_out if arch in TRANSCODERS else d_in
    if sp["apply_b_dec"] or arch in TRANSCODERS or True:
        in_scale = float(sae.run_time_activation_norm_fn_in(xf.clone()).pow(2).mean().sqrt())
        b_dec_scale = in_scale if arch not in TRANSCODERS else out_scale
        p["b_dec"].data.copy_(0.3 * b_dec_scale * rn(d_o))
    proc = sae.process_sae_in(x.clone())
    if hasattr(sae, "x_norm_coeff"):
        del sae.x_norm_coeff
    for a in ("ln_mu", "ln_std"):
        if hasattr(sae, a):
            delattr(sae, a)
    pre0 = proc @ p["W_enc"]  # [n, d_sae] without the encoder bias
    std = pre0.std(0)
    q = 0.5 + ru(d_sae) * (2.0 / 3.0 - 0.5)  # fire on 1/3 .. 1/2 of the rows
    if arch in ("standard", "transcoder", "skip_transcoder"):
        b = torch.tensor([-float(torch.quantile(pre0[:, j], q[j])) for j in range(d_sae)])
        p["b_enc"].data.copy_(b)
    elif arch == "topk":
        # per-latent offsets as large as the rows' spread (so the ranking depends on both), shifted
        # so that about 1.5 k latents per row are positive (the k kept are then all > 0)
        b = -pre0.mean(0) + std * rn(d_sae)
        h = pre0 + b
        r = min(int(1.5 * sp["k"]), d_sae - 1)
        b = b - torch.sort(h, dim=-1, descending=True)[0][:, r].mean()
        p["b_enc"].data.copy_(b)
    elif arch in ("jumprelu", "jumprelu_transcoder", "jumprelu_skip_transcoder"):
        tau = (0.05 + 0.25 * ru(d_sae)) * std
        m = torch.tensor([gap_midpoint(pre0[:, j], float(q[j])) for j in range(d_sae)])
        p["b_enc"].data.copy_(tau - m)
        p["threshold"].data.copy_(tau)
    elif arch == "gated":
        m = torch.tensor([gap_midpoint(pre0[:, j], float(q[j])) for j in range(d_sae)])
        p["b_gate"].data.copy_(-m)
        r = 0.3 * rn(d_sae)
        p["r_mag"].data.copy_(r)
        lo = torch.tensor([float(torch.quantile(pre0[:, j], max(float(q[j]) - 0.25, 0.0))) for j in range(d_sae)])
        p["b_mag"].data.copy_(-lo * r.exp())  # magnitudes > 0 on more rows than the gate opens
    # the decoder: rows of different norms, outputs on the point's scale
    act_scale = float(std.mean())
    W_dec = rn(d_sae, d_o) * (0.5 + ru(d_sae, 1)) * out_scale / (act_scale * (0.4 * d_sae) ** 0.5)
    p["W_dec"].data.copy_(W_dec)
    if arch in ("skip_transcoder", "jumprelu_skip_transcoder"):
        p["W_skip"].data.copy_(0.3 * out_scale / max(in_scale, 1e-6) * rn(d_o, d_in) / d_in ** 0.5)
    if sp["dtype"] != "float32":
        sae = sae.to(dtype=G_DTYPES[sp["dtype"]])
    return sae


G_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def encode_margin(sae, x: torch.Tensor) -> dict:
    """margins() on sae.encode of rows x directly."""
    c = {}
    hooks = [("hook_sae_acts_pre", lambda t, hook: c.__setitem__("o.hook_sae_acts_pre", t.clone())),
             ("hook_sae_input", lambda t, hook: c.__setitem__("o.hook_sae_input", t.clone()))]
    with sae.hooks(fwd_hooks=hooks):
        sae.decode(sae.encode(x.clone()))
    return margins(sae, c, "o")


def pick_seed(case: str, sp: dict, x, out_scale: float, d_out, tries: int = 400):
    """make_sae with the first seed (sp's, then sp's + 1000 i) whose jump margin on x is at least
    twice MARGIN_MIN (top-k boundaries cannot be placed by hand: the k is shared by the rows)."""
    base = sp["seed"]
    for i in range(tries):
        s = dict(sp, seed=base + 1000 * i)
        sae = make_sae(case, s, x, out_scale, d_out)
        m = encode_margin(sae, x)
        if m.get("rel", 1.0) >= 2 * MARGIN_MIN:
            sp["seed"] = s["seed"]
            return sae
    raise AssertionError((case, sp["name"], "no seed gives the margin", m))


def save_and_reload(sae, d: str, sparsity: torch.Tensor = None):
    if os.path.isdir(d):
        shutil.rmtree(d)
    sae.save_model(d)
    if sparsity is not None:  # as SAELens's trainer writes it: log10 of the firing frequency
        save_file({"sparsity": torch.log10(sparsity + 1e-10)}, os.path.join(d, "sparsity.safetensors"))
    return SAE.load_from_disk(d, dtype="float32")


# ----------------------------------------------------------------------------- runs


def is_sae_key(k: str) -> bool:
    return ".hook_sae_" in k


def flat(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.reshape(n, -1).contiguous()


def margins(sae, cache: dict, out_name: str) -> dict:
    """The smallest distance of any recorded pre-activation from the SAE's jump, absolute and
    relative to max |acts_pre|."""
    arch = sae.cfg.architecture()
    pre = cache[out_name + ".hook_sae_acts_pre"].reshape(-1, sae.cfg.d_sae).double()
    scale = float(pre.abs().max())
    if arch in ("jumprelu", "jumprelu_transcoder", "jumprelu_skip_transcoder"):
        m = float((pre - sae.threshold.double()).abs().min())
        kind = "|acts_pre - threshold|"
    elif arch == "gated":
        inp = cache[out_name + ".hook_sae_input"].reshape(-1, sae.cfg.d_in)
        proc = sae.run_time_activation_norm_fn_in(inp.clone()) - sae.b_dec * sae.cfg.apply_b_dec_to_input
        gate = (proc @ sae.W_enc + sae.b_gate).double()
        m = float(gate.abs().min())
        scale = max(scale, float(gate.abs().max()))
        kind = "|gate pre-activation|"
    elif arch == "topk":
        h = pre * sae.W_dec.norm(dim=-1).double() if sae.cfg.rescale_acts_by_decoder_norm else pre
        scale = float(h.abs().max())  # acts_post holds these values
        s, _ = torch.sort(h, dim=-1, descending=True)
        k = sae.cfg.k
        m = float((s[:, k - 1] - s[:, k]).min())
        kind = "k-th minus (k+1)-th largest (ranking values) per row"
    else:
        return dict(kind="none (continuous activation)")
    return dict(kind=kind, abs=m, rel=m / scale)


class with_skip_in_splice:
    """HookedSAETransformer's wrapper as it is, except that a skip transcoder's output (the hooked
    one and the clean one the error term subtracts) includes x W_skip^T, as SkipTranscoder.forward
    computes: SAELens 6.54.12's wrapper calls encode + decode only and so leaves W_skip out of the
    spliced model. libcircuits keeps it; these runs (":skip_errN") are its reference."""

    def __enter__(self):
        self.saved = HSAE._SAEWrapper.forward

        def forward(w, original_output):
            sae = w.sae
            x = w._captured_input if w._captured_input is not None else original_output
            try:
                skip = x @ sae.W_skip.T
                out = sae.decode(sae.encode(x)) + skip
                if w.use_error_term:
                    with _disable_hooks(sae):
                        clean = sae.decode(sae.encode(x)) + skip
                    out = out + w.hook_sae_error(original_output - clean)
                return w.hook_sae_output(out)
            finally:
                w._captured_input = None

        HSAE._SAEWrapper.forward = forward
        return self

    def __exit__(self, *exc):
        HSAE._SAEWrapper.forward = self.saved


class Recorder:
    def __init__(self, B: int, T: int):
        self.out: Dict[str, torch.Tensor] = {}
        self.runs: Dict[str, dict] = {}
        self.B, self.T = B, T

    def put(self, key: str, t: torch.Tensor) -> None:
        assert key not in self.out, key
        self.out[key] = t.detach().float().contiguous().clone()

    def run(self, model, run: str, tokens, saes: list, names: list, err: bool, edit=None) -> dict:
        """run_with_cache_with_saes (with a forward hook zeroing a latent of acts_post for edit =
        (sae name, hook name)); stores logits and every hook_sae_* value; returns the cache."""
        hooks = []
        if edit:
            def zero(act, hook):
                act[..., EDIT_LATENT] = 0.0
                return act

            hooks = [(edit[1], zero)]
        with model.saes(saes=saes, use_error_term=err):
            with model.hooks(fwd_hooks=hooks):
                logits, cache = model.run_with_cache(tokens)
        cache = dict(cache.items())
        keys = list(cache.keys())
        self.put(f"{run}:logits", logits[..., : self.columns])
        for k in keys:
            # an edit changes nothing before acts_post: those values are the unedited run's
            if is_sae_key(k) and not (edit and k.endswith((".hook_sae_input", ".hook_sae_acts_pre"))):
                self.put(f"{run}:{k}", cache[k])
        replaced = [s.cfg.metadata.hook_name_out or s.cfg.metadata.hook_name for s in saes]
        for r in replaced:
            assert r not in cache, (run, r)
        sae_keys = [k for k in keys if is_sae_key(k)]
        # the key order is the clean run's with each replaced point's name giving way to its
        # SAE's six (five) points: checked here, so the manifest need not list every run's keys
        want = []
        for k in self.clean_keys:
            if k in replaced:
                want += [s for s in sae_keys if s.startswith(k + ".")]
            else:
                want.append(k)
        assert want == keys, (run, want, keys)
        self.runs[run] = dict(saes=names, use_error_term=err,
                              edit=dict(sae=edit[0], hook=edit[1], latent=EDIT_LATENT) if edit else None,
                              replaced=replaced, sae_keys=sae_keys)
        return cache


def check_error_semantics(sae, cache: dict, out_name: str, x_out: torch.Tensor, x_in: torch.Tensor) -> float:
    """hook_sae_error = the point's value - decode(encode(input)) without hooks (SAELens's wrapper:
    encode + decode, no skip connection)."""
    shape = cache[out_name + ".hook_sae_error"].shape
    clean = sae.decode(sae.encode(x_in.clone()))
    err = x_out - clean.reshape(shape)
    return float((err - cache[out_name + ".hook_sae_error"]).abs().max())


def process_case(case: str) -> dict:
    cc = CASES[case]
    B, T = cc["B"], cc["T"]
    a, b = cc["layers"]
    cm_case = json.load(open(os.path.join(C.CASES_DIR, case, "case.json")))
    vocab = cm_case["tl_config"]["d_vocab"]
    tokens = G.random_tokens(cc["seed"], B, T, vocab)
    model, check = build_model(case, tokens)
    out_dir = os.path.join(OUT, case)
    os.makedirs(out_dir, exist_ok=True)
    n = B * T
    logits0, clean = model.run_with_cache(tokens)
    clean = dict(clean.items())
    rec = Recorder(B, T)
    rec.out["tokens"] = tokens.to(torch.int32)
    rec.columns = vocab if vocab <= MAX_COLUMNS else LOGIT_COLUMNS
    rec.put("logits", logits0[..., : rec.columns])
    rec.clean_keys = list(clean.keys())
    info = dict(case=case, versions=versions(), model=dict(load="processed (libcircuits default)", **check),
                batch=B, pos=T, logit_columns=rec.columns, edit_latent=EDIT_LATENT,
                clean_cache_keys=rec.clean_keys,
                hookedsae_only_keys=[k for k in rec.clean_keys if k.endswith(".mlp.hook_in")],
                saes={}, runs=rec.runs)

    specs = sae_specs(a, b)
    saes = {}
    for sp in specs:
        name = sp["name"]
        x = clean[sp["hook"]]  # [B, T, d] or [B, T, H, d_head]
        xr = x.reshape(n, *x.shape[2:])
        out_point = clean[sp["hook_out"] or sp["hook"]]
        out_scale = float(out_point.pow(2).mean().sqrt())
        d_out = out_point.shape[-1] if sp["arch"] in TRANSCODERS else None
        sae = pick_seed(case, sp, xr, out_scale, d_out)
        sparsity = None
        if sp["sparsity"]:
            sparsity = (sae.encode(xr.clone()) > 0).float().mean(0)
        sae = save_and_reload(sae, os.path.join(out_dir, name), sparsity)
        saes[name] = sae
        # encode / decode on the fixed rows
        acts = {}
        with sae.hooks(fwd_hooks=[("hook_sae_acts_pre", lambda t, hook: acts.__setitem__("pre", t.clone()))]):
            post = sae.encode(xr.clone())
        dec = sae.decode(post)
        fwd = sae(xr.clone())
        rec.put(f"{name}:x", flat(xr, n))
        rec.put(f"{name}:acts_pre", flat(acts["pre"], n))
        rec.put(f"{name}:acts_post", flat(post, n))
        rec.put(f"{name}:decode", flat(dec, n))
        rec.put(f"{name}:forward", flat(fwd, n))
        fired = float((post > 0).float().mean())
        # the spliced runs
        out_name = sp["hook_out"] or sp["hook"]
        ms = []
        err_diffs = []
        for err in (False, True):
            c = rec.run(model, f"{name}:err{int(err)}", tokens, [sae], [name], err)
            ms.append(margins(sae, c, out_name))
            if err:
                err_diffs.append(check_error_semantics(sae, c, out_name, clean[out_name], x))
            if sp["edit"]:
                ce = rec.run(model, f"{name}:edit{int(err)}", tokens, [sae], [name], err,
                             edit=(name, out_name + ".hook_sae_acts_post"))
                assert float(ce[out_name + ".hook_sae_acts_post"][..., EDIT_LATENT].abs().max()) == 0.0
                if err:
                    d = float((ce[out_name + ".hook_sae_error"] - c[out_name + ".hook_sae_error"]).abs().max())
                    assert d == 0.0, (name, "hook_sae_error changed by the edit", d)
        # the edited latent must fire somewhere, or the edit proves nothing
        if sp["edit"]:
            assert float(post[:, EDIT_LATENT].abs().max()) > 0, (case, name, "latent 3 never fires")
        if "skip" in sp["arch"]:
            with with_skip_in_splice():
                for err in (False, True):
                    c = rec.run(model, f"{name}:skip_err{int(err)}", tokens, [sae], [name], err)
                    ms.append(margins(sae, c, out_name))
                    got = c[out_name + ".hook_sae_output"].reshape(n, -1)
                    if not err:
                        assert torch.allclose(got, fwd, atol=1e-6), name  # = SkipTranscoder.forward
            skip_effect = float((rec.out[f"{name}:skip_err0:{out_name}.hook_sae_output"]
                                 - rec.out[f"{name}:err0:{out_name}.hook_sae_output"]).abs().max())
        m = min(ms, key=lambda d: d.get("rel", 1.0))
        if "rel" in m:
            assert m["rel"] >= MARGIN_MIN, (case, name, m)
        info["saes"][name] = dict(
            dir=name, architecture=sae.cfg.architecture(), hook_name=sp["hook"],
            hook_name_out=sp["hook_out"] or sp["hook"], d_in=sae.cfg.d_in, d_sae=sae.cfg.d_sae,
            d_out=getattr(sae.cfg, "d_out", sae.cfg.d_in), apply_b_dec_to_input=sp["apply_b_dec"],
            normalize_activations=sp["norm"], reshape_activations=sp["reshape"], k=sp["k"],
            rescale_acts_by_decoder_norm=sp["rescale"], saved_dtype=sp["dtype"], sparsity_file=sp["sparsity"],
            seed=sp["seed"], fraction_fired=fired, margin=m, edit=sp["edit"],
            error_semantics_max_abs=max(err_diffs) if err_diffs else None,
            skip_in_splice=None if "skip" not in sp["arch"] else dict(
                note="SAELens 6.54.12's HookedSAETransformer calls encode + decode and leaves W_skip out of "
                "the spliced model (runs ':errN'); ':forward' and the runs ':skip_errN' have it",
                max_abs_output_difference=skip_effect))

    # several SAEs at once: "standard" at layer a, a JumpReLU SAE at layer b whose threshold gaps
    # are placed from the inputs it sees in those runs
    first = saes["standard"]
    hook2 = f"blocks.{b}.hook_resid_pre"
    xs = [clean[hook2].reshape(n, -1)]
    for err in (False, True):
        with model.saes(saes=[first], use_error_term=err):
            _, c = model.run_with_cache(tokens, names_filter=[hook2])
        xs.append(c[hook2].reshape(n, -1))
    sp2 = spec(MULTI_SECOND, "jumprelu", hook2, seed=20)
    xall = torch.cat(xs, 0)
    sae2 = pick_seed(case, sp2, xall, float(xall.pow(2).mean().sqrt()), None)
    sae2 = save_and_reload(sae2, os.path.join(out_dir, MULTI_SECOND))
    saes[MULTI_SECOND] = sae2
    ms = []
    for err in (False, True):
        c = rec.run(model, f"multi:err{int(err)}", tokens, [first, sae2], ["standard", MULTI_SECOND], err)
        ms.append(margins(sae2, c, hook2))
    m = min(ms, key=lambda d: d["rel"])
    assert m["rel"] >= MARGIN_MIN, (case, MULTI_SECOND, m)
    info["saes"][MULTI_SECOND] = dict(
        dir=MULTI_SECOND, architecture="jumprelu", hook_name=hook2, hook_name_out=hook2, d_in=sae2.cfg.d_in,
        d_sae=sae2.cfg.d_sae, d_out=sae2.cfg.d_in, apply_b_dec_to_input=True, normalize_activations="none",
        reshape_activations="none", k=None, rescale_acts_by_decoder_norm=False, saved_dtype="float32",
        sparsity_file=False, margin=m, edit=False, only_in="multi:*",
        fraction_fired=float((c[hook2 + ".hook_sae_acts_post"] > 0).float().mean()))

    save_file(rec.out, os.path.join(out_dir, "expected.safetensors"), metadata={"case": case})
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return info


def main(argv: List[str]) -> None:
    names = argv or list(CASES)
    for c in names:
        info = process_case(c)
        worst = min((s["margin"].get("rel", 1.0) for s in info["saes"].values()))
        print(f"{c}: {len(info['saes'])} SAEs, {len(info['runs'])} runs, HF log-prob diff "
              f"{info['model']['hf_max_abs_log_prob_diff']:.2e}, smallest jump margin (rel) {worst:.3g}")
        for s, v in info["saes"].items():
            print(f"  {s:26s} {v['architecture']:24s} fired {v.get('fraction_fired', 0):.2f} margin {v['margin']}")


if __name__ == "__main__":
    main(sys.argv[1:])
