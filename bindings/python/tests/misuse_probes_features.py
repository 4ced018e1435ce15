"""The misuse probes of SAE feature statistics (0.8.0; circuits.FeatureStats, docs/saes.md
"Feature statistics"), merged into misuse_probes.PROBES / AUDIT at the end of that module. Same
rules: each body runs after misuse_probes.PRELUDE in its own interpreter and must end with ok().

The statistics hold the SAE's address (circuits_context_feature_stats_add reads it) and give
out only copies (frequency, mean, max, top contexts), so the probes are about owners (the SAE
dropped while statistics live; the statistics closed during an add), sizes crossing ctypes
(tokens, latents, options), and re-entry from a hook."""

from __future__ import annotations

# Writes a standard SAE for tiny-random-gpt2 (d_model 32) at `hook` and loads it: circuits.SAE
# when the binding has it, else an object with _live() over circuits_sae_load (the contract
# features.py documents).
_SAE = r'''
import json, struct, ctypes, tempfile
from circuits._arrays import Handle

def write_sae(hook="blocks.1.hook_resid_post", d_sae=24):
    d = tempfile.mkdtemp()
    rng = np.random.default_rng(1)
    w = {"W_dec": rng.uniform(-0.3, 0.3, (d_sae, 32)), "W_enc": rng.uniform(-0.5, 0.5, (32, d_sae)),
         "b_dec": rng.uniform(-0.1, 0.1, 32), "b_enc": rng.uniform(-0.3, 0.3, d_sae)}
    json.dump({"d_in": 32, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
               "normalize_activations": "none", "architecture": "standard",
               "metadata": {"sae_lens_version": "6.54.12", "hook_name": hook}}, open(d + "/cfg.json", "w"))
    hdr, off, blobs = {}, 0, []
    for k, v in w.items():
        b = v.astype(np.float32).tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    open(d + "/sae_weights.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return d

class HandleOnly:
    def __init__(self, path):
        out = ctypes.c_void_p()
        N.check(N.lib.circuits_sae_load(ctypes.byref(out), N.cstr(path)))
        self._h = Handle(out.value, N.lib.circuits_sae_free)
    def _live(self):
        return self._h
    def close(self):
        self._h = None

def load_sae(path):
    cls = getattr(circuits, "SAE", None)
    return cls.load_from_disk(path) if cls is not None else HandleOnly(path)
'''

FEATURES_PROBES = {
    "owner_feature_stats_sae_dropped": ("owner", _SAE + '''
# the statistics keep the SAE's handle: the SAE object closed and dropped, collected, the heap
# churned, an add still reads a live circuits_sae; results are copies that outlive the statistics
m = load()
sae = load_sae(write_sae())
st = circuits.FeatureStats(sae, top_k=3)
sae.close()
del sae
gc.collect()
churn(m)
st.add(m, TOK_BIG, batch_size=2)
freq, mx, top = st.frequency, st.max, st.top(3)
before = snap([freq, mx, top.values])
path = tempfile.mkdtemp() + "/s.safetensors"
st.save(path)
st.close()
del st
gc.collect()
churn(m)
for a, s in zip([freq, mx, top.values], before):
    same(a, s)
    touch(a)
back = circuits.FeatureStats.load(path)
same(back.frequency, before[0])
refused(lambda: back.add(m, TOK), circuits.UnsupportedError)
m.close()
refused(lambda: circuits.FeatureStats(load_sae(write_sae())).add(m, TOK), circuits.ClosedError)
ok()
'''),
    "size_feature_stats_inputs": ("size", _SAE + '''
# every size and number crossing ctypes is checked: tokens of the wrong dtype, rank, values;
# latents and options that do not fit their C types; files that are not statistics
m = load()
sae = load_sae(write_sae())
st = circuits.FeatureStats(sae)
refused(lambda: st.add(m, TOK.astype(np.float32)), TypeError)
refused(lambda: st.add(m, TOK[None]), circuits.ShapeError)
refused(lambda: st.add(m, TOK + 1000), circuits.RangeError)
refused(lambda: st.add(m, TOK, batch_size=2**70), circuits.RangeError, OverflowError, TypeError)
refused(lambda: st.add(m, TOK, batch_size=-1), ValueError)
refused(lambda: st.add(m, np.zeros((1, 5000), np.int64)), circuits.RangeError)  # past n_ctx
refused(lambda: st.top(2**70), circuits.RangeError, OverflowError, TypeError)
refused(lambda: st.top(-1), circuits.RangeError)
refused(lambda: st.top(24), circuits.RangeError)
refused(lambda: circuits.FeatureStats(sae, top_k=2**40), circuits.RangeError, OverflowError, TypeError)
refused(lambda: circuits.FeatureStats(sae, top_k=10**6), circuits.InvalidArgumentError)
refused(lambda: circuits.FeatureStats(sae, context_left=-1), circuits.InvalidArgumentError)
refused(lambda: circuits.FeatureStats(sae, threshold=float("inf")), circuits.InvalidArgumentError)
refused(lambda: circuits.FeatureStats(None), TypeError)
st.add(m, np.asarray(TOK_BIG, dtype=np.int64)[:, ::2])  # strided and int64: copied to int32 rows
assert st.n_tokens == TOK_BIG.shape[0] * 20
t = st.top(0)
assert t.windows.shape[1] == st.window and t.values.dtype == np.float32 and t.rows.dtype == np.int64
bad = tempfile.mkdtemp() + "/bad.safetensors"
open(bad, "wb").write(struct.pack("<Q", 2**62) + b"{}")
refused(lambda: circuits.FeatureStats.load(bad), CircuitsError)
refused(lambda: circuits.FeatureStats.load(TINY + "/model.safetensors"), CircuitsError)
other = load_sae(write_sae(hook="blocks.0.attn.hook_z"))  # 32 wide but hook_z without reshape: [.., 4, 8]
refused(lambda: circuits.FeatureStats(other).add(m, TOK), circuits.ShapeError)
m.close()
ok()
'''),
    "owner_feature_stats_close_race": ("owner", _SAE + '''
# statistics closed from another thread while an add runs: the add holds the C object for its
# calls; later use raises ClosedError; nothing is freed under a call
m = load()
sae = load_sae(write_sae())
st = circuits.FeatureStats(sae)
done = threading.Event()
def closer():
    done.wait(0.01)
    st.close()
t = threading.Thread(target=closer)
t.start()
try:
    for _ in range(20):
        st.add(m, TOK_BIG)
except circuits.ClosedError:
    pass
done.set()
t.join()
refused(lambda: st.frequency, circuits.ClosedError)
refused(lambda: st.save("/tmp/never.safetensors"), circuits.ClosedError)
m.close()
ok()
'''),
    "reenter_feature_stats_from_hook": ("kept", _SAE + '''
# a hook of the model calling back into the same statistics during an add: the same model is
# refused (the context is running); another model's add completes; the arrays the hooks see
# during an add are copies (several passes per call): kept, they read what they read then
m = load()
m2 = load()
sae = load_sae(write_sae())
st = circuits.FeatureStats(sae)
errors, kept = [], []
def hook(a, hook):
    kept.append(a)
    try:
        st.add(m, TOK_SMALL)
    except CircuitsError as e:
        errors.append(e)
    if len(kept) == 1:
        st.add(m2, TOK_SMALL)
m.add_hook("blocks.0.hook_resid_post", hook)
st.add(m, TOK_BIG, batch_size=3)
assert errors and len(kept) == TOK_BIG.shape[0]
m.reset_hooks()
after = snap(kept)
churn(m)
m.close()
gc.collect()
for a, s in zip(kept, after):
    same(a, s)
    touch(a)
assert st.n_tokens == TOK_BIG.size + TOK_SMALL.size
ok()
'''),
}

FEATURES_AUDIT = {
    "circuits_feature_stats_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_feature_stats_create": ["owner_feature_stats_sae_dropped", "size_feature_stats_inputs"],
    "circuits_feature_stats_free": ["owner_feature_stats_sae_dropped", "owner_feature_stats_close_race"],
    "circuits_context_feature_stats_add": ["size_feature_stats_inputs", "owner_feature_stats_close_race",
                                           "reenter_feature_stats_from_hook", "owner_feature_stats_sae_dropped"],
    "circuits_feature_stats_dims": ["size_feature_stats_inputs"],
    "circuits_feature_stats_get_options": ["size_feature_stats_inputs"],
    "circuits_feature_stats_get": ["owner_feature_stats_sae_dropped", "owner_feature_stats_close_race"],
    "circuits_feature_stats_top": ["size_feature_stats_inputs", "owner_feature_stats_sae_dropped"],
    "circuits_feature_stats_save": ["owner_feature_stats_sae_dropped", "owner_feature_stats_close_race"],
    "circuits_feature_stats_load": ["owner_feature_stats_sae_dropped", "size_feature_stats_inputs"],
}
