#!/usr/bin/env python3
"""Generate libcircuits reference test cases (see README.md in this directory).

Run with the reference venv from any directory:

    /opt/refenv/bin/python tests/reference/generate.py [case_name ...]

Every case is written to ``cases/<case_name>/`` next to this script.  All
numbers are computed on CPU in float32 with fixed seeds.  Needs
transformer_lens 3.x (HookedTransformer was removed in 4.0), transformers,
torch, safetensors, numpy.  Never touches the network.
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hashlib
import importlib.metadata as md
import json
import platform
import shutil
import sys
import types
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
CASES_DIR = os.path.join(HERE, "cases")
# Where the shared third-party test models come from the first time (afterwards the
# copies inside cases/<name>/ are the source of truth and are never rewritten).
SHARED_TESTDATA = os.environ.get("LIBCIRCUITS_TESTDATA", "/work/shared/testdata")

import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model  # noqa: E402

try:
    from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
except ImportError as e:  # transformer_lens >= 4.0
    sys.exit(f"need transformer_lens 3.x with HookedTransformer ({e}); pip install 'transformer_lens==3.9.0'")
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights  # noqa: E402

from tl_export import load_tl_config, save_tl_model, tl_config_dict  # noqa: E402

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
torch.set_grad_enabled(False)

NO_PROCESSING = dict(
    fold_ln=False,
    center_writing_weights=False,
    center_unembed=False,
    fold_value_biases=False,
    refactor_factored_attn_matrices=False,
)
HF_TL_TOL = 1e-4
PATCH_POS = 2


def versions() -> Dict[str, str]:
    v = {"python": platform.python_version()}
    for p in ("torch", "transformers", "transformer_lens", "safetensors", "numpy"):
        v[p] = md.version(p)
    return v


VERSIONS = versions()


# ----------------------------------------------------------------------------- helpers


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def randn_like(p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)


def randomize_hf_gpt2(model: torch.nn.Module, seed: int) -> None:
    """LayerNorm weights ~ 1 + 0.2 N(0,1); every other parameter (incl. biases) ~ 0.3 N(0,1)."""
    g = gen(seed)
    for name, p in model.named_parameters():
        if ".ln_" in name and name.endswith(".weight"):
            p.copy_(1.0 + 0.2 * randn_like(p, g))
        else:
            p.copy_(0.3 * randn_like(p, g))


def randomize_tl(model: HookedTransformer, seed: int, std: float = 0.3) -> None:
    """Norm weights (``*.w``) ~ 1 + 0.2 N(0,1); everything else ~ std * N(0,1)."""
    g = gen(seed)
    for name, p in model.named_parameters():
        if name.endswith(".w"):
            p.copy_(1.0 + 0.2 * randn_like(p, g))
        else:
            p.copy_(std * randn_like(p, g))


def random_tokens(seed: int, B: int, T: int, vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=gen(seed), dtype=torch.int64)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def fresh_dir(d: str, keep: tuple = ()) -> None:
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f in keep:
            continue
        p = os.path.join(d, f)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def hf_to_tl_config(hf_cfg: GPT2Config, arch: str) -> HookedTransformerConfig:
    """HookedTransformerConfig for a GPT-2 checkpoint, as transformer_lens'
    convert_hf_model_config does for GPT2LMHeadModel (n_ctx = n_positions)."""
    return HookedTransformerConfig(
        d_model=hf_cfg.n_embd,
        d_head=hf_cfg.n_embd // hf_cfg.n_head,
        n_heads=hf_cfg.n_head,
        d_mlp=hf_cfg.n_inner if hf_cfg.n_inner is not None else 4 * hf_cfg.n_embd,
        n_layers=hf_cfg.n_layer,
        n_ctx=hf_cfg.n_positions,
        eps=hf_cfg.layer_norm_epsilon,
        d_vocab=hf_cfg.vocab_size,
        act_fn=hf_cfg.activation_function,
        use_attn_scale=getattr(hf_cfg, "scale_attn_weights", True),
        use_local_attn=False,
        scale_attn_by_inverse_layer_idx=hf_cfg.scale_attn_by_inverse_layer_idx,
        normalization_type="LN",
        original_architecture=arch,
        device="cpu",
        dtype=torch.float32,
    )


def tl_from_hf(hf_lm, hf_cfg: GPT2Config, arch: str) -> HookedTransformer:
    """Equivalent of HookedTransformer.from_pretrained_no_processing for a local GPT-2."""
    cfg = hf_to_tl_config(hf_cfg, arch)
    tl = HookedTransformer(cfg)
    sd = {k: v.detach().clone().float() for k, v in convert_gpt2_weights(hf_lm, cfg).items()}
    tl.load_and_process_state_dict(dict(sd), **NO_PROCESSING)
    tl.eval()
    loaded = tl.state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), f"weight {k} changed while loading into TL"
    assert torch.count_nonzero(loaded["unembed.b_U"]) == 0
    return tl


# ----------------------------------------------------------------------------- references


def tl_reference(
    model: HookedTransformer,
    tokens: torch.Tensor,
    tokens_patch: Optional[torch.Tensor],
    do_edits: bool,
    skip_hooks: tuple = (),
    halve: tuple = (),
):
    """Run TL on ``tokens``; return (tensors for expected.safetensors, case.json extras).
    ``halve``: hook names each multiplied by 0.5 in a run of its own (edit:halve:<name>)."""
    cfg = model.cfg
    out: Dict[str, torch.Tensor] = {}
    logits, cache = model.run_with_cache(tokens)  # names_filter=None: every hook
    logits = logits.float()
    per_tok = model(tokens, return_type="loss", loss_per_token=True).float()
    loss = model(tokens, return_type="loss").float()
    # TL's definition, recomputed independently
    lp = torch.log_softmax(logits, dim=-1)
    mine = -lp[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    assert torch.allclose(mine, per_tok, atol=1e-5), (mine - per_tok).abs().max()
    assert torch.allclose(mine.mean(), loss, atol=1e-5)

    out["tokens"] = tokens.to(torch.int32)
    out["logits"] = logits
    out["loss"] = loss.reshape(())
    out["per_token_loss"] = per_tok
    hook_names = list(cache.keys())
    for name in hook_names:
        if name in skip_hooks:
            continue
        out[f"hook:{name}"] = cache[name].detach().float().contiguous()
    if "unembed.hook_out" in cache.cache_dict:
        # output_logits_soft_cap: TL caps what unembed returns, after unembed.hook_out
        cap = cfg.output_logits_soft_cap
        hook_out = cache["unembed.hook_out"]
        if cap is not None and cap > 0:
            assert torch.equal(cap * torch.tanh(hook_out / cap), logits)
            assert not torch.allclose(hook_out, logits, atol=1e-2), "the soft-cap does not bite"
        else:
            assert torch.equal(hook_out, logits)

    edits: Dict[str, dict] = {}
    if do_edits:
        L = cfg.n_layers - 1
        h = 1 if cfg.n_heads > 1 else 0
        B, T = tokens.shape
        assert T > PATCH_POS

        def zero_head(z, hook):
            z[:, :, h, :] = 0.0
            return z

        out["edit:zero_head_z"] = model.run_with_hooks(
            tokens, fwd_hooks=[(f"blocks.{L}.attn.hook_z", zero_head)]
        ).float()
        edits["zero_head_z"] = {"layer": L, "head": h, "hook": f"blocks.{L}.attn.hook_z"}

        rp = f"blocks.{L}.hook_resid_pre"
        _, src_cache = model.run_with_cache(tokens_patch, names_filter=rp)
        src = src_cache[rp]

        def patch(resid, hook):
            resid[:, PATCH_POS, :] = src[:, PATCH_POS, :]
            return resid

        out["tokens_patch"] = tokens_patch.to(torch.int32)
        out["edit:patch_resid_pre"] = model.run_with_hooks(tokens, fwd_hooks=[(rp, patch)]).float()
        edits["patch_resid_pre"] = {"layer": L, "pos": PATCH_POS, "hook": rp}

        tri = torch.tril(torch.ones(T, T, dtype=torch.float32))
        uniform = tri / tri.sum(-1, keepdim=True)

        def replace_pattern(pattern, hook):
            return uniform.to(pattern.dtype).expand_as(pattern).clone()

        out["edit:replace_pattern"] = model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", replace_pattern)]
        ).float()
        edits["replace_pattern"] = {"layer": 0, "hook": "blocks.0.attn.hook_pattern"}
        for name in halve:
            assert name in cache.cache_dict, name
            out[f"edit:halve:{name}"] = model.run_with_hooks(
                tokens, fwd_hooks=[(name, lambda x, hook: x * 0.5)]
            ).float()
        if halve:
            edits["halve"] = list(halve)
        for k in ["edit:zero_head_z", "edit:patch_resid_pre", "edit:replace_pattern"] + [
            f"edit:halve:{n}" for n in halve
        ]:
            assert not torch.equal(out[k], logits), f"{k} had no effect"

    extras = {
        "edits": edits,
        "hook_names_in_order": hook_names,
        "hooks_not_stored": list(skip_hooks),
    }
    return out, extras


def write_case(
    name: str,
    fmt: str,
    description: str,
    tensors: Dict[str, torch.Tensor],
    extras: dict,
    model: HookedTransformer,
    hf_tl_diff: Optional[float],
    more: Optional[dict] = None,
) -> None:
    d = os.path.join(CASES_DIR, name)
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype in (torch.float32, torch.int32), (k, v.dtype)
    save_file(tensors, os.path.join(d, "expected.safetensors"), metadata={"case": name})
    B, T = tensors["tokens"].shape
    case = {
        "name": name,
        "format": fmt,
        "description": description,
        "use_attn_result": bool(model.cfg.use_attn_result),
        "batch": int(B),
        "seq_len": int(T),
        "edits": extras["edits"],
        "versions": VERSIONS,
        "hf_tl_max_abs_logit_diff": hf_tl_diff,
        "hook_names_in_order": extras["hook_names_in_order"],
        "hooks_not_stored": extras["hooks_not_stored"],
    }
    if fmt == "hf":
        case["tl_config"] = tl_config_dict(model.cfg)
    if more:
        case.update(more)
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
        f.write("\n")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)


# ----------------------------------------------------------------------------- HF cases


def hf_case_common(
    name: str,
    description: str,
    lm,  # GPT2LMHeadModel, or namespace(transformer=GPT2Model, lm_head=...) for a base model
    hf_logits_fn: Callable[[torch.Tensor], torch.Tensor],
    hf_cfg: GPT2Config,
    arch: str,
    seed: int,
    B: int = 2,
    T: int = 7,
    do_edits: bool = True,
    skip_hooks: tuple = (),
    more: Optional[dict] = None,
):
    tl = tl_from_hf(lm, hf_cfg, arch)
    tokens = random_tokens(seed, B, T, hf_cfg.vocab_size)
    tokens_patch = random_tokens(seed + 1, B, T, hf_cfg.vocab_size)
    tensors, extras = tl_reference(tl, tokens, tokens_patch, do_edits, skip_hooks)
    hf_logits = hf_logits_fn(tokens).float()
    diff = (hf_logits - tensors["logits"]).abs().max().item()
    assert diff < HF_TL_TOL, f"{name}: HF vs TL logits differ by {diff}"
    tensors["hf_logits"] = hf_logits
    write_case(name, "hf", description, tensors, extras, tl, diff, more)


def load_hf_lm(d: str) -> GPT2LMHeadModel:
    m = GPT2LMHeadModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


def import_shared(name: str, src_name: str) -> str:
    """Make cases/<name>/ hold config.json + model.safetensors + SOURCE.txt of a shared
    test model (copied once, then kept); verify the files against SOURCE.txt's sha256."""
    d = os.path.join(CASES_DIR, name)
    keep = ("config.json", "model.safetensors", "SOURCE.txt")
    fresh_dir(d, keep=keep)
    for f in keep:
        if not os.path.exists(os.path.join(d, f)):
            shutil.copyfile(os.path.join(SHARED_TESTDATA, src_name, f), os.path.join(d, f))
            os.chmod(os.path.join(d, f), 0o644)
    src = open(os.path.join(d, "SOURCE.txt")).read()
    for f in ("config.json", "model.safetensors"):
        h = sha256(os.path.join(d, f))
        assert h in src, f"{name}/{f}: sha256 {h} not listed in SOURCE.txt"
    return d


def case_hf_shared_lm(name: str, src_name: str, description: str, seed: int, **kw):
    d = import_shared(name, src_name)
    lm = load_hf_lm(d)
    hf_cfg = lm.config

    def hf_logits(tokens):
        return lm(tokens).logits

    hf_case_common(name, description, lm, hf_logits, hf_cfg, "GPT2LMHeadModel", seed, **kw)


def case_hf_tiny_noprefix(seed: int):
    name = "hf_tiny_noprefix"
    d = import_shared(name, "gpt2-tiny-noprefix")
    base = GPT2Model.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    hf_cfg = base.config
    # convert_gpt2_weights wants .transformer and .lm_head; the tied head is wte.
    lm = types.SimpleNamespace(transformer=base, lm_head=types.SimpleNamespace(weight=base.wte.weight))

    def hf_logits(tokens):
        return base(tokens).last_hidden_state @ base.wte.weight.T

    hf_case_common(
        name,
        "Shared GPT2Model checkpoint (architectures ['GPT2Model']) whose tensor names have no "
        "'transformer.' prefix (wte.weight, h.0.*, ln_f.*): vocab 21, n_embd 2, 1 head, 1 layer, "
        "n_positions 1024. No lm_head: logits = last_hidden_state @ wte.T (hf_logits computed so).",
        lm, hf_logits, hf_cfg, "GPT2Model", seed,
    )


def new_random_hf(name: str, seed: int, save_dtype=torch.float32, max_shard_size=None, **cfg_kw):
    """Build a random GPT2LMHeadModel, save it to cases/<name>/ (config.json + safetensors),
    and return the model re-loaded from disk in float32 (so references use the stored,
    possibly rounded, weights)."""
    d = os.path.join(CASES_DIR, name)
    fresh_dir(d)
    base = dict(n_positions=32, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,
                layer_norm_epsilon=1e-5, activation_function="gelu_new",
                bos_token_id=0, eos_token_id=0)
    base.update(cfg_kw)
    cfg = GPT2Config(**base)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    randomize_hf_gpt2(model, seed)
    if save_dtype != torch.float32:
        model = model.to(save_dtype)
    kw = {"safe_serialization": True}
    if max_shard_size is not None:
        kw["max_shard_size"] = max_shard_size
    model.save_pretrained(d, **kw)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors", "model.safetensors.index.json") and not (
            f.startswith("model-") and f.endswith(".safetensors")
        ):
            os.remove(os.path.join(d, f))
    return load_hf_lm(d)


def case_hf_random(name: str, description: str, seed: int, save_dtype=torch.float32,
                   max_shard_size=None, **cfg_kw):
    lm = new_random_hf(name, seed, save_dtype, max_shard_size, **cfg_kw)
    d = os.path.join(CASES_DIR, name)
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors") or f.endswith(".json"))
    if max_shard_size is not None:
        shards = [f for f in files if f.startswith("model-")]
        assert len(shards) >= 2 and "model.safetensors.index.json" in files, files
    else:
        assert "model.safetensors" in files, files
    if not cfg_kw.get("tie_word_embeddings", True):
        assert not torch.equal(lm.lm_head.weight, lm.transformer.wte.weight)

    def hf_logits(tokens):
        return lm(tokens).logits

    more = {"weights_dtype": str(save_dtype).replace("torch.", "")}
    hf_case_common(name, description, lm, hf_logits, lm.config, "GPT2LMHeadModel", seed, more=more)


# ----------------------------------------------------------------------------- TL cases


def case_tl(
    name: str,
    description: str,
    seed: int,
    save_dtype=torch.float32,
    omit_biases: bool = False,
    std: float = 0.3,
    halve: tuple = (),
    **cfg_kw,
):
    d = os.path.join(CASES_DIR, name)
    fresh_dir(d)
    kw = dict(n_ctx=32, d_vocab=50, eps=1e-5, seed=seed, device="cpu", dtype=torch.float32,
              init_weights=True)
    kw.update(cfg_kw)
    cfg = HookedTransformerConfig(**kw)
    model = HookedTransformer(cfg).eval()
    randomize_tl(model, seed, std)
    if omit_biases:
        for n, p in model.named_parameters():
            if n.rsplit(".", 1)[-1] in ("b_Q", "b_K", "b_V", "_b_K", "_b_V", "b_O", "b_in", "b_out", "b_U"):
                p.zero_()
    if save_dtype != torch.float32:
        # reference = fp32 computation on the rounded weights
        for _, p in model.named_parameters():
            p.copy_(p.to(save_dtype).float())
    written = save_tl_model(model, d, dtype=save_dtype, omit_biases=omit_biases)

    # round trip: rebuild from tl_config.json + model.safetensors and compare
    cfg2 = HookedTransformerConfig.from_dict(load_tl_config(d))
    model2 = HookedTransformer(cfg2).eval()
    sd = {k: v.float() for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    assert set(sd) == set(written)
    model2.load_and_process_state_dict(sd, **NO_PROCESSING)
    for k, v in model.state_dict().items():
        assert torch.equal(model2.state_dict()[k], v), f"{name}: round trip changed {k}"

    tokens = random_tokens(seed + 100, 2, 7, cfg.d_vocab)
    tokens_patch = random_tokens(seed + 101, 2, 7, cfg.d_vocab)
    tensors, extras = tl_reference(model, tokens, tokens_patch, True, halve=halve)
    assert torch.equal(model2(tokens), tensors["logits"])
    more = {
        "weights_dtype": str(save_dtype).replace("torch.", ""),
        "biases_omitted": omit_biases,
        "model_tensors": sorted(written),
    }
    write_case(name, "tl", description, tensors, extras, model, None, more)


# ----------------------------------------------------------------------------- case table


def all_cases() -> Dict[str, Callable[[], None]]:
    C: Dict[str, Callable[[], None]] = {}
    small = dict(vocab_size=64)

    C["hf_tiny_random_gpt2"] = lambda: case_hf_shared_lm(
        "hf_tiny_random_gpt2", "hf-tiny-random-gpt2",
        "Shared hf-internal-testing/tiny-random-gpt2 (GPT2LMHeadModel, vocab 1000, n_embd 32, "
        "4 heads, 5 layers, n_positions 512, gelu_new, tied lm_head absent from the file), as is.",
        seed=1,
    )
    C["hf_tiny_noprefix"] = lambda: case_hf_tiny_noprefix(seed=2)
    C["hf_fake_1layer"] = lambda: case_hf_shared_lm(
        "hf_fake_1layer", "gpt2-fake-1layer",
        "Shared fake GPT-2 (GPT2LMHeadModel, full 50257 vocab, n_embd 2, 1 head, 1 layer, "
        "n_positions 1024, tied). B=1, T=5; no edits; hook:unembed.hook_out not stored "
        "(it is bitwise identical to 'logits').",
        seed=3, B=1, T=5, do_edits=False, skip_hooks=("unembed.hook_out",),
    )
    C["hf_random_untied"] = lambda: case_hf_random(
        "hf_random_untied",
        "Random GPT2LMHeadModel, 2 layers, 4 heads, n_embd 16, vocab 64, n_positions 32, gelu_new, "
        "tie_word_embeddings=False: the file has a separate lm_head.weight [64,16].",
        seed=4, n_layer=2, n_head=4, n_embd=16, tie_word_embeddings=False, **small,
    )
    C["hf_random_f16"] = lambda: case_hf_random(
        "hf_random_f16",
        "Random GPT2LMHeadModel (2 layers, 2 heads, n_embd 16, vocab 64) stored as F16; "
        "references computed in fp32 from the rounded weights.",
        seed=5, save_dtype=torch.float16, n_layer=2, n_head=2, n_embd=16, **small,
    )
    C["hf_random_bf16"] = lambda: case_hf_random(
        "hf_random_bf16",
        "Random GPT2LMHeadModel (2 layers, 2 heads, n_embd 16, vocab 64) stored as BF16; "
        "references computed in fp32 from the rounded weights.",
        seed=6, save_dtype=torch.bfloat16, n_layer=2, n_head=2, n_embd=16, **small,
    )
    C["hf_random_sharded"] = lambda: case_hf_random(
        "hf_random_sharded",
        "Random GPT2LMHeadModel (3 layers, 2 heads, n_embd 16, vocab 64, relu) saved in several "
        "safetensors shards + model.safetensors.index.json.",
        seed=7, max_shard_size="20KB", n_layer=3, n_head=2, n_embd=16,
        activation_function="relu", **small,
    )
    C["hf_random_scale_inv"] = lambda: case_hf_random(
        "hf_random_scale_inv",
        "Random GPT2LMHeadModel (2 layers, 2 heads, n_embd 16, vocab 64) with "
        "scale_attn_by_inverse_layer_idx=True (scores of layer l also divided by l+1).",
        seed=8, n_layer=2, n_head=2, n_embd=16, scale_attn_by_inverse_layer_idx=True, **small,
    )

    C["tl_attn_only_2l_none"] = lambda: case_tl(
        "tl_attn_only_2l_none",
        "HookedTransformer, attn_only, 2 layers, normalization_type=None, standard positions, "
        "d_model 32, 4 heads x d_head 8, vocab 50, n_ctx 32. Parameters ~ 0.2 N(0,1) (no norm).",
        seed=11, std=0.2, attn_only=True, n_layers=2, d_model=32, n_heads=4, d_head=8,
        normalization_type=None,
    )
    C["tl_attn_only_1l_ln"] = lambda: case_tl(
        "tl_attn_only_1l_ln",
        "HookedTransformer, attn_only, 1 layer, LN, d_model 16, 2 heads x d_head 8, vocab 50.",
        seed=12, attn_only=True, n_layers=1, d_model=16, n_heads=2, d_head=8,
        normalization_type="LN",
    )
    C["tl_2l_lnpre_gelu"] = lambda: case_tl(
        "tl_2l_lnpre_gelu",
        "HookedTransformer, 2 layers with MLP (d_mlp 64), normalization_type=LNPre, act_fn=gelu "
        "(exact erf), d_model 16, 2 heads x d_head 8.",
        seed=13, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=64,
        normalization_type="LNPre", act_fn="gelu",
    )
    C["tl_1l_solu_ln"] = lambda: case_tl(
        "tl_1l_solu_ln",
        "HookedTransformer, 1 layer, LN, act_fn=solu_ln (x*softmax(x) then LayerNorm over d_mlp "
        "with its own w,b: mlp.ln.*), d_model 16, 2 heads, d_mlp 32.",
        seed=14, n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        normalization_type="LN", act_fn="solu_ln",
    )
    C["tl_shortformer_relu"] = lambda: case_tl(
        "tl_shortformer_relu",
        "HookedTransformer, 2 layers, positional_embedding_type=shortformer (W_pos added to the "
        "Q/K inputs only, after ln1; not to the residual), act_fn=relu, LN, d_model 16, 2 heads.",
        seed=15, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        normalization_type="LN", act_fn="relu", positional_embedding_type="shortformer",
    )
    C["tl_gelu_new_attn_result"] = lambda: case_tl(
        "tl_gelu_new_attn_result",
        "HookedTransformer, 2 layers, LN, gelu_new, d_model 24 with 4 heads x d_head 8 "
        "(d_model != n_heads*d_head), use_attn_result=True (hook_result fired).",
        seed=16, n_layers=2, d_model=24, n_heads=4, d_head=8, d_mlp=48,
        normalization_type="LN", act_fn="gelu_new", use_attn_result=True,
    )
    C["tl_gelu_fast"] = lambda: case_tl(
        "tl_gelu_fast",
        "HookedTransformer, 1 layer, LN, act_fn=gelu_fast, d_model 16, 2 heads, d_mlp 32.",
        seed=17, n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        normalization_type="LN", act_fn="gelu_fast",
    )
    C["tl_silu"] = lambda: case_tl(
        "tl_silu",
        "HookedTransformer, 1 layer, LN, act_fn=silu, d_model 16, 2 heads, d_mlp 32.",
        seed=18, n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        normalization_type="LN", act_fn="silu",
    )
    C["tl_no_biases"] = lambda: case_tl(
        "tl_no_biases",
        "HookedTransformer, 1 layer with MLP, LN, gelu_new; b_Q,b_K,b_V,b_O,b_in,b_out,b_U are all "
        "zero and OMITTED from model.safetensors (loader must treat missing biases as zeros); "
        "LN w,b are present.",
        seed=19, omit_biases=True, n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        normalization_type="LN", act_fn="gelu_new",
    )
    C["tl_f16"] = lambda: case_tl(
        "tl_f16",
        "HookedTransformer, 2 layers, LN, gelu_new, d_model 16, 2 heads; model.safetensors stores "
        "F16 tensors; references computed in fp32 from the rounded weights (tl_config dtype "
        "stays float32 = compute dtype).",
        seed=20, save_dtype=torch.float16, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        normalization_type="LN", act_fn="gelu_new",
    )
    C["tl_2l_rms_gelu"] = lambda: case_tl(
        "tl_2l_rms_gelu",
        "HookedTransformer, 2 layers with MLP (d_mlp 32), normalization_type=RMS (RMSNorm: "
        "x / sqrt(mean(x^2) + eps) * w, no centring, no bias), act_fn=gelu, d_model 16, "
        "2 heads x d_head 8, n_ctx 32.",
        seed=21, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        normalization_type="RMS", act_fn="gelu",
    )
    C["tl_attn_only_2l_rmspre"] = lambda: case_tl(
        "tl_attn_only_2l_rmspre",
        "HookedTransformer, attn_only, 2 layers, normalization_type=RMSPre (RMSNorm without w), "
        "d_model 16, 2 heads x d_head 8, n_ctx 32.",
        seed=22, attn_only=True, n_layers=2, d_model=16, n_heads=2, d_head=8,
        normalization_type="RMSPre",
    )
    # ---- the attention side of the modern families (rotary, GQA, local attention, soft-cap)
    # d_mlp != d_model throughout: TransformerLens 3.9's fold_ln picks W_in's axis by comparing
    # shapes, and folds ln2 along the wrong axis of a square W_in (processed references).
    rot = dict(positional_embedding_type="rotary")
    C["tl_rotary_neox_quarter"] = lambda: case_tl(
        "tl_rotary_neox_quarter",
        "HookedTransformer, 2 layers, LN, gelu, rotary 'rotate half' (GPT-NeoX / Pythia layout) on "
        "rotary_dim 4 of d_head 16 (Pythia's 25%; the other 12 dims pass through), rotary_base "
        "10000, d_model 32, 2 heads, d_mlp 48. No pos_embed (no W_pos, no hook_pos_embed).",
        seed=31, n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=48, normalization_type="LN",
        act_fn="gelu", rotary_dim=4, rotary_adjacent_pairs=False, **rot,
    )
    C["tl_rotary_gptj"] = lambda: case_tl(
        "tl_rotary_gptj",
        "HookedTransformer, 2 layers, LN, gelu_new, rotary on ADJACENT pairs (GPT-J layout) on "
        "rotary_dim 8 of d_head 16, rotary_base 1000, d_model 32, 2 heads; n_key_value_heads = "
        "n_heads = 2 given explicitly, so TL builds GroupedQueryAttention and saves attn._W_K / "
        "_W_V / _b_K / _b_V although nothing is grouped.",
        seed=32, n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=48, normalization_type="LN",
        act_fn="gelu_new", rotary_dim=8, rotary_adjacent_pairs=True, rotary_base=1000,
        n_key_value_heads=2, **rot,
    )
    C["tl_gqa_rotary_rms"] = lambda: case_tl(
        "tl_gqa_rotary_rms",
        "HookedTransformer, 2 layers, RMS, silu, grouped-query attention: 4 query heads, 2 K/V "
        "heads (query head h reads K/V head h // 2; hook_k/hook_v/hook_rot_k [B, T, 2, 8]), "
        "rotary rotate-half on the whole head (rotary_dim = d_head = 8), d_model 32, d_mlp 48.",
        seed=33, n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=48, normalization_type="RMS",
        act_fn="silu", rotary_dim=8, n_key_value_heads=2, **rot,
    )
    C["tl_rope_llama3"] = lambda: case_tl(
        "tl_rope_llama3",
        "HookedTransformer, 1 layer, RMS, silu, rotary with use_NTK_by_parts_rope (Llama 3.1 "
        "scaling): rotary_dim 16, base 10000, factor 8, low/high freq factors 1/4, original ctx "
        "256, so the 8 wavelengths (6.3 .. 19869) fall in all three bands (kept < 64 <= blended "
        "<= 256 < divided by 8). 4 heads, 2 K/V heads, d_head 16, d_model 32.",
        seed=34, n_layers=1, d_model=32, n_heads=4, d_head=16, d_mlp=48, normalization_type="RMS",
        act_fn="silu", rotary_dim=16, n_key_value_heads=2, use_NTK_by_parts_rope=True,
        NTK_by_parts_factor=8.0, NTK_by_parts_low_freq_factor=1.0,
        NTK_by_parts_high_freq_factor=4.0, NTK_original_ctx_len=256, **rot,
    )
    C["tl_rope_linear_mqa"] = lambda: case_tl(
        "tl_rope_linear_mqa",
        "HookedTransformer, 1 layer, LN, gelu, rotary rotate-half rotary_dim 8 of d_head 8 with "
        "linear scaling rotary_scaling_factor 4 (angles / 4), multi-query attention: 4 query "
        "heads share 1 K/V head. d_model 32.",
        seed=35, n_layers=1, d_model=32, n_heads=4, d_head=8, d_mlp=48, normalization_type="LN",
        act_fn="gelu", rotary_dim=8, n_key_value_heads=1, rotary_scaling_factor=4.0, **rot,
    )
    C["tl_local_all"] = lambda: case_tl(
        "tl_local_all",
        "HookedTransformer, 2 layers, LN, gelu_new, standard positions, every layer local "
        "(use_local_attn, attn_types ['local', 'local']) with window_size 3 < T = 7: query i "
        "sees keys i-2 .. i. d_model 16, 2 heads.",
        seed=36, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, normalization_type="LN",
        act_fn="gelu_new", use_local_attn=True, window_size=3, attn_types=["local", "local"],
    )
    C["tl_local_alternating_rotary"] = lambda: case_tl(
        "tl_local_alternating_rotary",
        "HookedTransformer, 3 layers, RMS, gelu, attn_types ['global', 'local', 'global'] (Gemma 2's "
        "alternation) with window_size 2; rotary rotate-half (rotary_dim 8 = d_head) with "
        "rotary_scaling_factor 2, which TransformerLens applies on the global layers only. "
        "4 heads, 2 K/V heads, d_model 32.",
        seed=37, n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=48, normalization_type="RMS",
        act_fn="gelu", use_local_attn=True, window_size=2, attn_types=["global", "local", "global"],
        rotary_dim=8, n_key_value_heads=2, rotary_scaling_factor=2.0, **rot,
    )
    C["tl_attn_softcap"] = lambda: case_tl(
        "tl_attn_softcap",
        "HookedTransformer, 2 layers, LN, gelu_new, standard positions, attn_scores_soft_cap 1.5: "
        "scores = 1.5 tanh((q.k / sqrt(d_head)) / 1.5) before the mask (hook_attn_scores shows the "
        "capped values). Parameters ~ 0.5 N(0,1) so that the cap bites. d_model 16, 2 heads.",
        seed=38, std=0.5, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
        normalization_type="LN", act_fn="gelu_new", attn_scores_soft_cap=1.5,
    )
    # ---- the block structure of the modern families (gated MLP, parallel attention + MLP,
    # final_rms, norms after each sublayer, logit soft-cap); d_mlp != d_model as above
    C["tl_gated_swiglu_rms"] = lambda: case_tl(
        "tl_gated_swiglu_rms",
        "HookedTransformer, 2 layers, RMS, gated MLP (SwiGLU): hook_pre = x W_gate, "
        "hook_pre_linear = x W_in, hook_post = silu(pre) * pre_linear + b_in, then W_out + b_out. "
        "Standard positions, d_model 16, 2 heads x d_head 8, d_mlp 40.",
        seed=41, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=40, normalization_type="RMS",
        act_fn="silu", gated_mlp=True,
        halve=("blocks.1.mlp.hook_pre_linear", "blocks.0.mlp.hook_pre"),
    )
    C["tl_gated_geglu_ln"] = lambda: case_tl(
        "tl_gated_geglu_ln",
        "HookedTransformer, 2 layers, LN, gated MLP with act_fn gelu_pytorch_tanh (GeGLU, torch's "
        "tanh-approximate GELU). d_model 16, 2 heads x d_head 8, d_mlp 40.",
        seed=42, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=40, normalization_type="LN",
        act_fn="gelu_pytorch_tanh", gated_mlp=True,
        halve=("blocks.1.mlp.hook_pre_linear",),
    )
    C["tl_parallel_ln"] = lambda: case_tl(
        "tl_parallel_ln",
        "HookedTransformer, 2 layers, LN, gelu, parallel_attn_mlp (GPT-NeoX / GPT-J block): the MLP "
        "reads ln2(resid_pre), resid_post = resid_pre + attn_out + mlp_out, no hook_resid_mid. "
        "Standard positions, d_model 16, 2 heads x d_head 8, d_mlp 40.",
        seed=43, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=40, normalization_type="LN",
        act_fn="gelu", parallel_attn_mlp=True,
        halve=("blocks.0.ln2.hook_normalized", "blocks.1.hook_attn_out"),
    )
    C["tl_final_rms_ln"] = lambda: case_tl(
        "tl_final_rms_ln",
        "HookedTransformer, 2 layers, LN blocks with final_rms: ln_final is an RMSNorm (ln_final.w, "
        "no ln_final.b). gelu_new, d_model 16, 2 heads x d_head 8, d_mlp 40.",
        seed=44, n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=40, normalization_type="LN",
        act_fn="gelu_new", final_rms=True,
        halve=("ln_final.hook_scale",),
    )
    C["tl_gemma2_block"] = lambda: case_tl(
        "tl_gemma2_block",
        "HookedTransformer, 2 layers, a Gemma-2-like block: RMS, use_normalization_before_and_after "
        "(ln1_post on attn_out and ln2_post on mlp_out, RMSNorms with their own weights, before "
        "hook_attn_out / hook_mlp_out), gated MLP with gelu_pytorch_tanh, rotary rotate-half "
        "(rotary_dim 8 = d_head), 4 heads with 2 K/V heads, attn_scores_soft_cap 3, "
        "output_logits_soft_cap 2 (logits = 2 tanh(logits / 2) after unembed.hook_out; the loss "
        "reads capped logits). d_model 32, d_mlp 48.",
        seed=45, n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=48, normalization_type="RMS",
        act_fn="gelu_pytorch_tanh", gated_mlp=True, use_normalization_before_and_after=True,
        rotary_dim=8, n_key_value_heads=2, attn_scores_soft_cap=3.0, output_logits_soft_cap=2.0,
        halve=("blocks.0.ln1_post.hook_normalized", "blocks.1.ln2_post.hook_scale",
               "blocks.1.mlp.hook_pre_linear", "unembed.hook_out"),
        **rot,
    )
    C["tl_pythia_like"] = lambda: case_tl(
        "tl_pythia_like",
        "HookedTransformer, 2 layers, a Pythia-like block: LN, gelu, parallel_attn_mlp, rotary "
        "rotate-half on rotary_dim 4 of d_head 16. d_model 32, 2 heads, d_mlp 48.",
        seed=46, n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=48, normalization_type="LN",
        act_fn="gelu", parallel_attn_mlp=True, rotary_dim=4, **rot,
        halve=("blocks.1.ln2.hook_normalized",),
    )
    C["tl_llama_like"] = lambda: case_tl(
        "tl_llama_like",
        "HookedTransformer, 2 layers, a Llama-like block: RMS, gated SwiGLU MLP, grouped-query "
        "attention (4 query heads, 2 K/V heads), rotary rotate-half rotary_dim 8 = d_head, no "
        "biases saved (zeros, as Llama has none). d_model 32, d_mlp 48.",
        seed=47, n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=48, normalization_type="RMS",
        act_fn="silu", gated_mlp=True, rotary_dim=8, n_key_value_heads=2, omit_biases=True, **rot,
        halve=("blocks.0.mlp.hook_pre_linear",),
    )
    return C


def dir_bytes(d: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def main(argv: List[str]) -> None:
    cases = all_cases()
    names = argv or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        sys.exit(f"unknown case(s): {unknown}; known: {list(cases)}")
    os.makedirs(CASES_DIR, exist_ok=True)
    for n in names:
        print(f"generating {n} ...", flush=True)
        cases[n]()
    print()
    print(f"{'case':28s} {'fmt':3s} {'n_tensors':>9s} {'bytes':>10s}  hf_vs_tl_max_abs")
    total = 0
    for n in names:
        d = os.path.join(CASES_DIR, n)
        case = json.load(open(os.path.join(d, "case.json")))
        nt = len(load_file(os.path.join(d, "expected.safetensors")))
        b = dir_bytes(d)
        total += b
        diff = case["hf_tl_max_abs_logit_diff"]
        print(f"{n:28s} {case['format']:3s} {nt:9d} {b:10d}  {'-' if diff is None else f'{diff:.3g}'}")
    print(f"{'total':28s} {'':3s} {'':9s} {total:10d}")
    print(f"all of {HERE}: {dir_bytes(HERE)} bytes")
    print("versions:", json.dumps(VERSIONS))


if __name__ == "__main__":
    main(sys.argv[1:])
