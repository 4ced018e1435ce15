"""SAELens twin of examples/python/sae_features.py: the same cells with SAELens 6.54 and
TransformerLens 3.9 (torch), on the same weights, SAE and prompt. Run by
examples/python/generate_expected.py (/opt/refenv/bin/python), which commits its output as
examples/python/expected/sae_features.txt."""

import os

import numpy as np
import torch
from sae_lens import SAE, HookedSAETransformer
from tl_load import REPO, load_tl


def show(label, x):
    if isinstance(x, (list, tuple)):
        x = torch.stack([torch.as_tensor(v) for v in x])
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    print(f"{label}: {np.round(x.astype(np.float64), 4).tolist()}")


model = load_tl(os.path.join(REPO, "examples", "models", "tiny-random-gpt2"), model_class=HookedSAETransformer)
sae = SAE.load_from_disk(os.path.join(REPO, "tests", "reference", "saes", "hf_tiny_random_gpt2", "standard"))
hook = sae.cfg.metadata.hook_name
print("hook:", hook, "d_in:", sae.cfg.d_in, "d_sae:", sae.cfg.d_sae, "architecture:", sae.cfg.architecture())

prompt = "When John and Mary went to the shops, John gave the bag to"
tokens = model.to_tokens(prompt)
print("tokens:", tokens.shape[1])

logits, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
acts = cache[hook + ".hook_sae_acts_post"]
print("acts:", list(acts.shape))
show("L0 per position", (acts[0] > 0).sum(-1))
top = torch.argsort(-acts[0, -1])[:5]
print("top latents at the last position:", top.tolist())
show("their activations", acts[0, -1, top])
show("mean activation over positions of those latents", acts[0][:, top].mean(0))

x = cache[hook + ".hook_sae_input"]
recons = cache[hook + ".hook_sae_recons"]
show("relative reconstruction error per position", (recons - x).norm(dim=-1)[0] / x.norm(dim=-1)[0])
loss_clean = model(tokens, return_type="loss")
loss_sae = model.run_with_saes(tokens, saes=[sae], return_type="loss")
loss_err = model.run_with_saes(tokens, saes=[sae], use_error_term=True, return_type="loss")
show("loss: clean, with the SAE, with the SAE and its error term", [loss_clean, loss_sae, loss_err])

_, cache_e = model.run_with_cache_with_saes(tokens, saes=[sae], use_error_term=True,
                                            names_filter=lambda name: name.startswith(hook + ".hook_sae"))
print("cached:", [name[len(hook) + 1:] for name in cache_e.keys()])
show("error norm per position", cache_e[hook + ".hook_sae_error"][0].norm(dim=-1))

latent = int(top[0])


def ablate(acts, hook):
    acts[:, :, latent] = 0.0
    return acts


model.add_sae(sae, use_error_term=True)
loss_ablated = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook + ".hook_sae_acts_post", ablate)])
show("loss with latent %d ablated, minus the loss with the error term" % latent, loss_ablated - loss_err)
last = model.run_with_hooks(tokens, fwd_hooks=[(hook + ".hook_sae_acts_post", ablate)])[0, -1]
model.reset_saes()
show("change of the last position's top-5 logits", (last - logits[0, -1])[torch.argsort(-logits[0, -1])[:5]])

feature_acts = sae.encode(x)
show("encode(x) equals the cached acts (to 1e-5)", (feature_acts - acts).abs().max() < 1e-5)
show("decode(encode(x)) equals the cached reconstruction (to 1e-5)", (sae.decode(feature_acts) - recons).abs().max() < 1e-5)
show("norm of the latent's decoder row", sae.W_dec[latent].norm())
show("its encoder column's cosine with the decoder row",
     sae.W_enc[:, latent] @ sae.W_dec[latent] / sae.W_enc[:, latent].norm() / sae.W_dec[latent].norm())
