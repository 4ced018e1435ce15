"""libcircuits for Python: TransformerLens-shaped mechanistic interpretability over the C library.

    import circuits
    model = circuits.Model.from_pretrained("examples/models/tiny-random-gpt2")
    logits, cache = model.run_with_cache(tokens)          # tokens: int array [batch, pos]
    cache["pattern", 0]                                   # [batch, head, query, key]

    def ablate(z, hook):                                  # a zero-copy view of the activation
        z[:, :, 1, :] = 0.0
    loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[("blocks.0.attn.hook_z", ablate)])

See docs/python.md. The shared library is found via CIRCUITS_LIBRARY, a copy bundled in
circuits/_lib/, the repository's build/lib/, or the system path (``circuits.library_path``).
"""

from __future__ import annotations

from . import _native
from . import errors as _errors
from .analysis import composition_baseline, detect_head, repeated_tokens
from .cache import ActivationCache, act_name
from .errors import (
    ABIMismatchError,
    CallbackError,
    CircuitsError,
    CircuitsIOError,
    ClosedError,
    ConfigError,
    DtypeError,
    FormatError,
    HookReturnError,
    HookStopped,
    InvalidArgumentError,
    LibraryNotFoundError,
    NotFoundError,
    OutOfMemoryError,
    ProvenanceError,
    RangeError,
    ShapeError,
    TensorMissingError,
    TensorUnexpectedError,
    UnsupportedError,
    VersionError,
)
from .factored import FactoredMatrix
from .model import Config, HookedTransformer, HookHandle, HookPoint, HookViewWarning, Model, Output
from .tokenizer import Tokenizer
from .quant import dequantize, dtype_block, dtype_name
from . import evals, utils  # noqa: E402  (TransformerLens's evals and utils modules)
from . import patching  # noqa: E402,F401 -- circuits.patching: TransformerLens's patching module
from .compare import DiffResult, diff  # noqa: E402 -- comparing two models (docs/quantization.md)
from . import grad, attribution  # noqa: E402,F401 -- gradients (docs/gradients.md)
from .sae import SAE  # noqa: E402 -- SAEs and transcoders (docs/saes.md)
from . import steering  # noqa: E402,F401 -- steering and control vectors (docs/steering.md)
from .features import FeatureStats, TopContexts  # noqa: E402 -- SAE feature statistics (docs/saes.md)
from .probe import Probe  # noqa: E402 -- linear probes (docs/probes.md)
from .jobs import Dataset, Job, JobStatus, load_job_output, merge  # noqa: E402 -- jobs (docs/jobs.md)
from . import vis  # noqa: E402,F401 -- interactive views, CircuitsVis's names (docs/pictures.md)

HookedSAETransformer = Model  # SAELens's name: Model has add_sae, run_with_saes, ... (docs/saes.md "Python")

__version__ = "0.10.0"

#: Path of the loaded libcircuits.so.0, and how it was found.
library_path: str = _native.library_path
library_source: str = _native.library_source

#: The ABI this binding was written for (checked against circuits_abi_version() at import).
ABI_VERSION: int = _native.CIRCUITS_ABI_VERSION

get_act_name = act_name  # TransformerLens's utils.get_act_name


def library_version() -> str:
    """The loaded library's version string (``circuits_version_string()``)."""
    return _native.lib.circuits_version_string().decode()


def set_num_threads(n: int) -> None:
    """Sets the size of libcircuits's thread pool, the calling thread included (process-wide;
    OpenBLAS runs single-threaded inside it). n <= 0 restores the default: CIRCUITS_NUM_THREADS,
    else the CPUs the process may use."""
    _native.lib.circuits_set_num_threads(int(n))


def get_num_threads() -> int:
    """The size of libcircuits's thread pool (``circuits_get_num_threads()``), the calling
    thread included."""
    return int(_native.lib.circuits_get_num_threads())


__all__ = [
    "Model",
    "HookedTransformer",
    "Config",
    "HookPoint",
    "HookHandle",
    "HookViewWarning",
    "Output",
    "ActivationCache",
    "FactoredMatrix",
    "Tokenizer",
    "evals",
    "utils",
    "act_name",
    "get_act_name",
    "detect_head",
    "repeated_tokens",
    "composition_baseline",
    "diff",
    "DiffResult",
    "grad",
    "attribution",
    "steering",
    "vis",
    "FeatureStats",
    "TopContexts",
    "library_version",
    "set_num_threads",
    "get_num_threads",
    "SAE",
    "Dataset",
    "Job",
    "JobStatus",
    "merge",
    "load_job_output",
    "HookedSAETransformer",
    "dequantize",
    "dtype_block",
    "dtype_name",
    "library_path",
    "library_source",
    "ABI_VERSION",
    # the exception classes, as circuits.errors lists them
    *(name for name in _errors.__all__ if name != "error_class"),
]
