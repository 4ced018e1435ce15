"""The TransformerLens side of the demos' twins: a local GPT-2 directory (Hugging Face
config.json + model.safetensors + tokenizer files) loaded into a HookedTransformer as
``HookedTransformer.from_pretrained`` would load it (its default weight processing: fold_ln,
center_writing_weights, center_unembed, fold_value_biases), with its own tokenizer.
from_pretrained itself only takes names of models on the Hugging Face hub; this never touches
the network. Run with /opt/refenv/bin/python (TransformerLens 3.9, torch, transformers)."""

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights  # noqa: E402
from transformers import AutoTokenizer, GPT2LMHeadModel  # noqa: E402

warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
transformers.utils.logging.set_verbosity_error()
torch.set_num_threads(1)
torch.set_grad_enabled(False)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def load_tl(path: str, model_class=HookedTransformer, **processing) -> HookedTransformer:
    """``HookedTransformer.from_pretrained(path)`` for a local GPT-2 directory (``model_class``:
    a subclass, e.g. SAELens's HookedSAETransformer)."""
    hf = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner if c.n_inner is not None else 4 * c.n_embd, n_layers=c.n_layer, n_ctx=c.n_positions,
        eps=c.layer_norm_epsilon, d_vocab=c.vocab_size, act_fn=c.activation_function,
        use_attn_scale=getattr(c, "scale_attn_weights", True), use_local_attn=False,
        scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx, normalization_type="LN",
        original_architecture="GPT2LMHeadModel", device="cpu", dtype=torch.float32,
        default_prepend_bos=True,
    )
    model = model_class(cfg, tokenizer=AutoTokenizer.from_pretrained(path))
    opts = dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True,
                refactor_factored_attn_matrices=False)
    opts.update(processing)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), **opts)
    return model.eval()


def load_tl_dir(path: str, **processing) -> HookedTransformer:
    """``HookedTransformer.from_pretrained`` for a directory in TransformerLens layout
    (tl_config.json + model.safetensors, e.g. examples/models/attn-only-2l): no tokenizer."""
    import json

    from safetensors.torch import load_file

    with open(os.path.join(path, "tl_config.json")) as f:
        d = json.load(f)
    d.update(dtype=torch.float32, device="cpu", seed=None)
    cfg = HookedTransformerConfig.from_dict(d)
    model = HookedTransformer(cfg)
    opts = dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True,
                refactor_factored_attn_matrices=False)
    opts.update(processing)
    # from_pretrained casts the stored weights (F16 in the checkpoints) to cfg.dtype before processing
    state = {k: v.to(torch.float32) for k, v in load_file(os.path.join(path, "model.safetensors")).items()}
    model.load_and_process_state_dict(state, **opts)
    return model.eval()


def byte_tokenizer():
    """examples/train/tokenizer.json (the byte tokenizer of the bundled toy models) as the
    Hugging Face tokenizer TransformerLens's set_tokenizer needs: loaded with from_pretrained
    from a directory, with a pad token (NUL, id 0; libcircuits pads with 0 too), no BOS."""
    import json
    import shutil
    import tempfile

    d = tempfile.mkdtemp()
    shutil.copy(os.path.join(REPO, "examples", "train", "tokenizer.json"), d)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "\u0100", "add_bos_token": False}, f)
    tok = AutoTokenizer.from_pretrained(d)
    shutil.rmtree(d)
    return tok
