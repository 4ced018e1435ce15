"""SAE features with HookedSAETransformer, as SAELens's tutorials use it (loading an SAE,
run_with_cache_with_saes, the latents firing on a prompt, the reconstruction and its loss, the
error term, ablating a latent, encode / decode by hand), written with libcircuits. Its SAELens
twin is tl/sae_features.py; both print the same numbers (examples/python/expected/).

What changed from a tutorial: the import and the loading lines; the model (GPT-2 small -> the
bundled tiny-random-gpt2) and the SAE (a released one -> a random-init standard SAE that SAELens
created and saved for libcircuits's tests, tests/reference/saes/hf_tiny_random_gpt2/standard, at
blocks.1.hook_resid_pre); numpy instead of torch.

    python examples/python/sae_features.py
"""

import os

import numpy as np

from circuits import SAE, HookedSAETransformer

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def show(label, x):
    print(f"{label}: {np.round(np.asarray(x, np.float64), 4).tolist()}")


model = HookedSAETransformer.from_pretrained(os.path.join(REPO, "examples", "models", "tiny-random-gpt2"))
sae = SAE.load_from_disk(os.path.join(REPO, "tests", "reference", "saes", "hf_tiny_random_gpt2", "standard"))
hook = sae.cfg.metadata.hook_name
print("hook:", hook, "d_in:", sae.cfg.d_in, "d_sae:", sae.cfg.d_sae, "architecture:", sae.cfg.architecture)

prompt = "When John and Mary went to the shops, John gave the bag to"
tokens = model.to_tokens(prompt)
print("tokens:", tokens.shape[1])

# the latents on the prompt
logits, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
acts = cache[hook + ".hook_sae_acts_post"]
print("acts:", list(acts.shape))
show("L0 per position", (acts[0] > 0).sum(-1))
top = np.argsort(-acts[0, -1])[:5]
print("top latents at the last position:", top.tolist())
show("their activations", acts[0, -1, top])
show("mean activation over positions of those latents", acts[0][:, top].mean(0))

# the reconstruction: how much of the residual stream it keeps, and the loss with it spliced in
x = cache[hook + ".hook_sae_input"]
recons = cache[hook + ".hook_sae_recons"]
show("relative reconstruction error per position", np.linalg.norm(recons - x, axis=-1)[0] / np.linalg.norm(x, axis=-1)[0])
loss_clean = model(tokens, return_type="loss")
loss_sae = model.run_with_saes(tokens, saes=[sae], return_type="loss")
loss_err = model.run_with_saes(tokens, saes=[sae], use_error_term=True, return_type="loss")
show("loss: clean, with the SAE, with the SAE and its error term", [loss_clean, loss_sae, loss_err])

# the error term: the model's own activation minus the reconstruction
_, cache_e = model.run_with_cache_with_saes(tokens, saes=[sae], use_error_term=True,
                                            names_filter=lambda name: name.startswith(hook + ".hook_sae"))
print("cached:", [name[len(hook) + 1:] for name in cache_e.keys()])
show("error norm per position", np.linalg.norm(cache_e[hook + ".hook_sae_error"][0], axis=-1))

# ablating the top latent at every position (error term on: only its own effect)
latent = int(top[0])


def ablate(acts, hook):
    acts[:, :, latent] = 0.0


model.add_sae(sae, use_error_term=True)
loss_ablated = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook + ".hook_sae_acts_post", ablate)])
show("loss with latent %d ablated, minus the loss with the error term" % latent, loss_ablated - loss_err)
last = model.run_with_hooks(tokens, fwd_hooks=[(hook + ".hook_sae_acts_post", ablate)])[0, -1]
model.reset_saes()
show("change of the last position's top-5 logits", (last - logits[0, -1])[np.argsort(-logits[0, -1])[:5]])

# encode / decode by hand, and the latent's decoder direction
feature_acts = sae.encode(x)
show("encode(x) equals the cached acts (to 1e-5)", np.abs(feature_acts - acts).max() < 1e-5)
show("decode(encode(x)) equals the cached reconstruction (to 1e-5)", np.abs(sae.decode(feature_acts) - recons).max() < 1e-5)
show("norm of the latent's decoder row", np.linalg.norm(sae.W_dec[latent]))
show("its encoder column's cosine with the decoder row",
     sae.W_enc[:, latent] @ sae.W_dec[latent] / np.linalg.norm(sae.W_enc[:, latent]) / np.linalg.norm(sae.W_dec[latent]))
