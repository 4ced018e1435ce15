"""The misuse probes of steering, control vectors and contrastive vectors (0.8.0;
docs/steering.md), merged into misuse_probes.PROBES / AUDIT at the end of that module. Same
rules: each body runs after misuse_probes.PRELUDE in its own interpreter and must end with ok()."""

from __future__ import annotations

STEER_PROBES = {
    "size_steering": ("size", '''
# vectors, positions and directions handed to C are checked or converted; the library copies
# them at registration (the caller's arrays may change or go away); buffers are sized from the
# numbers the library reported at load, never from cfg
from circuits import steering as S
m = load()
D, L = 32, 5
plain = m(TOK)
refused(lambda: m.add_steering("resid_pre1", np.zeros(31, np.float32)), circuits.ShapeError)
refused(lambda: m.add_steering("resid_pre1", np.zeros((1, 32), np.float32)), circuits.ShapeError)
refused(lambda: m.add_steering("resid_pre1", np.array(["x"] * 32)), TypeError)
refused(lambda: m.add_steering("resid_pre1", np.zeros(32), positions=2**70), TypeError, OverflowError)
refused(lambda: m.add_steering("resid_pre1", np.zeros(32), positions=[[1, 2]]), TypeError)
refused(lambda: m.add_steering("resid_pre1", np.zeros(32), positions=2**40), circuits.RangeError)
refused(lambda: m.add_steering("resid_pre1\\0x", np.zeros(32)), ValueError)
refused(lambda: m.add_steering(b"resid_pre1", np.zeros(32)), TypeError)
refused(lambda: m.add_steering("pattern1", np.zeros(8)), circuits.InvalidArgumentError)
v = np.random.default_rng(0).standard_normal(32)                  # float64: converted
h = m.add_steering("resid_pre1", v, scale=3.0, positions=[0, -1])
a = m(TOK)
v[:] = 1e30                                                        # copied at registration
del v
gc.collect()
churn(m)
same(m(TOK), a)
assert np.abs(a - plain).max() > 0
h.remove(); h.remove()                                             # twice: nothing
same(m(TOK), plain)
d = np.zeros((L, D)); d[2] = 1.0
refused(lambda: m.add_control_vector(d[:4]), circuits.ShapeError)
refused(lambda: m.add_control_vector(d[:, :31]), circuits.ShapeError)
refused(lambda: m.add_control_vector(d.reshape(-1)), circuits.ShapeError)
h = m.add_control_vector(d[:, ::1].T.T)                            # non-contiguous views: copied
refused(lambda: S.load_control_vector(os.path.join(REPO, "tests/reference/control_vectors/full.gguf"), 2**31, 16),
        OverflowError, CircuitsError)
refused(lambda: S.load_control_vector(os.path.join(REPO, "tests/reference/control_vectors/full.gguf"), 5, -1),
        circuits.ShapeError)
refused(lambda: S.load_control_vector(os.path.join(REPO, "tests/reference/control_vectors/full.gguf"), 5, 2**62),
        MemoryError, ValueError, CircuitsError)
refused(lambda: S.save_control_vector("/nonexistent-dir/x.gguf", np.zeros((3, 4))), circuits.CircuitsIOError)
for attr in ("d_model", "n_layers"):
    object.__setattr__(m.cfg, attr, 1)                             # informational only
got = S.load_control_vector(os.path.join(REPO, "tests/reference/control_vectors/sparse.gguf"), 5, 16)
assert got.shape == (5, 16); touch(got)
cv = m.contrastive_vector(TOK, TOK_SAME, "blocks.*.hook_resid_post")
assert cv.shape == (L, D); touch(cv)
refused(lambda: m.contrastive_vector(TOK, TOK_SAME, "resid_post1", positive_mask=np.ones((1, 3), int)), CircuitsError)
refused(lambda: m.contrastive_vector(TOK, TOK_SAME, "resid_post1", positive_mask=np.full((1, 8), 2**33)),
        CircuitsError, OverflowError)
refused(lambda: m.contrastive_vector(TOK, TOK_SAME[:, :3], "resid_post1"), circuits.ShapeError)
refused(lambda: m.contrastive_vector(TOK, TOK_SAME, "blocks.0.*"), circuits.ShapeError)
refused(lambda: m.contrastive_vector(TOK, TOK_SAME, "q0"), circuits.InvalidArgumentError)
m.close()
refused(lambda: m.add_steering("resid_pre1", np.zeros(32)), circuits.ClosedError)
refused(lambda: m.contrastive_vector(TOK, TOK_SAME, "resid_post1"), circuits.ClosedError)
h.remove()
ok()
'''),
    "kept_contrastive_hooks": ("kept", '''
# a contrastive vector runs two passes in one C call: hooks get copies there, so keeping them is
# safe and keeps their values; steering added from inside a hook is refused
m = load()
kept, snaps = [], []
def keep(a, hook):
    kept.append(a)
    snaps.append(a.copy())
m.add_hook("blocks.1.hook_resid_post", keep)
m.contrastive_vector(TOK, TOK_SAME, "blocks.*.hook_resid_post", reduce="mean")
assert len(kept) == 2
m.reset_hooks()
def reenter(a, hook):
    m.add_steering("resid_pre1", np.zeros(32))
refused(lambda: m.run_with_hooks(TOK, fwd_hooks=[("resid_pre0", reenter)]), CircuitsError)
churn(m)
m.close()
gc.collect()
for a, s in zip(kept, snaps):
    same(a, s)
    touch(a)
ok()
'''),
}

STEER_AUDIT = {
    "circuits_steering_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_context_add_steering": ["size_steering", "kept_contrastive_hooks"],
    "circuits_control_vector_load": ["size_steering"],
    "circuits_control_vector_save": ["size_steering"],
    "circuits_context_add_control_vector": ["size_steering"],
    "circuits_contrast_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_context_contrastive_vector": ["size_steering", "kept_contrastive_hooks"],
}
