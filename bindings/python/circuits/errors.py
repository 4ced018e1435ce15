"""The exception hierarchy of the ``circuits`` package.

Every libcircuits status code (``circuits_status`` in ``include/circuits.h``) has one
exception class; a failed C call raises the class of its status, carrying the message of
``circuits_last_error()`` (``exc.message``), the status value (``exc.status``) and its name
(``exc.status_name``). All of them derive from :class:`CircuitsError`, and each also derives
from the closest built-in exception (``ShapeError`` is a ``ValueError``, ``NotFoundError`` a
``KeyError``, ...) so that generic ``except ValueError`` code keeps working.

Errors that are not C status codes:

* :class:`HookReturnError` — a Python hook returned something that is not ``None``, the
  activation itself, or a float32 array of the activation's shape.
* :class:`ClosedError` — a model (or cache) was used after ``close()``.
* :class:`LibraryNotFoundError`, :class:`ABIMismatchError` — ``libcircuits.so.0`` could not be
  found or loaded, or is not the ABI this binding was written for (both are ``ImportError``).

This module does not load the C library, so it can be imported even when loading fails.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "CircuitsError",
    "InvalidArgumentError",
    "OutOfMemoryError",
    "CircuitsIOError",
    "FormatError",
    "ConfigError",
    "UnsupportedError",
    "TensorMissingError",
    "TensorUnexpectedError",
    "ShapeError",
    "DtypeError",
    "NotFoundError",
    "RangeError",
    "CallbackError",
    "HookStopped",
    "VersionError",
    "ProvenanceError",
    "HookReturnError",
    "ClosedError",
    "LibraryNotFoundError",
    "ABIMismatchError",
    "error_class",
]


class CircuitsError(Exception):
    """Base class of every error raised by the ``circuits`` package for a libcircuits failure.

    Attributes:
        status: the ``circuits_status`` value (negative int), or ``None`` for errors that the
            binding itself detected.
        status_name: e.g. ``"CIRCUITS_E_SHAPE"`` (``None`` when ``status`` is ``None``).
        message: the text of ``circuits_last_error()`` (or the binding's own message).
    """

    status: Optional[int] = None
    status_name: Optional[str] = None

    def __init__(self, message: str = "", status: Optional[int] = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
            self.status_name = _STATUS_NAMES.get(status)

    def __str__(self) -> str:
        if self.status_name:
            return f"{self.message} [{self.status_name}]"
        return self.message


class InvalidArgumentError(CircuitsError, ValueError):
    """CIRCUITS_E_INVALID_ARGUMENT: NULL pointer, bad size, bad option, re-entrant call."""

    status, status_name = -1, "CIRCUITS_E_INVALID_ARGUMENT"


class OutOfMemoryError(CircuitsError, MemoryError):
    """CIRCUITS_E_OUT_OF_MEMORY: an allocation failed; nothing was changed."""

    status, status_name = -2, "CIRCUITS_E_OUT_OF_MEMORY"


class CircuitsIOError(CircuitsError, OSError):
    """CIRCUITS_E_IO: a file could not be opened, read or mapped."""

    status, status_name = -3, "CIRCUITS_E_IO"

    def __init__(self, message: str = "", status: Optional[int] = None):
        # OSError's constructor interprets (errno, strerror): give it only the message.
        CircuitsError.__init__(self, message, status)

    def __str__(self) -> str:
        return CircuitsError.__str__(self)


class FormatError(CircuitsError, ValueError):
    """CIRCUITS_E_FORMAT: a file is malformed (safetensors header, JSON)."""

    status, status_name = -4, "CIRCUITS_E_FORMAT"


class ConfigError(CircuitsError, ValueError):
    """CIRCUITS_E_CONFIG: a model config is missing a field or is inconsistent."""

    status, status_name = -5, "CIRCUITS_E_CONFIG"


class UnsupportedError(CircuitsError, NotImplementedError):
    """CIRCUITS_E_UNSUPPORTED: valid, but not something libcircuits implements."""

    status, status_name = -6, "CIRCUITS_E_UNSUPPORTED"


class TensorMissingError(CircuitsError, LookupError):
    """CIRCUITS_E_TENSOR_MISSING: a required weight tensor is absent."""

    status, status_name = -7, "CIRCUITS_E_TENSOR_MISSING"


class TensorUnexpectedError(CircuitsError, ValueError):
    """CIRCUITS_E_TENSOR_UNEXPECTED: a stored tensor the architecture has no place for."""

    status, status_name = -8, "CIRCUITS_E_TENSOR_UNEXPECTED"


class ShapeError(CircuitsError, ValueError):
    """CIRCUITS_E_SHAPE: a shape disagrees with the config or the call."""

    status, status_name = -9, "CIRCUITS_E_SHAPE"


class DtypeError(CircuitsError, TypeError):
    """CIRCUITS_E_DTYPE: an unknown or unusable tensor dtype."""

    status, status_name = -10, "CIRCUITS_E_DTYPE"


class NotFoundError(CircuitsError, KeyError):
    """CIRCUITS_E_NOT_FOUND: no such hook point, weight, cache entry or hook id."""

    status, status_name = -11, "CIRCUITS_E_NOT_FOUND"


class RangeError(CircuitsError, ValueError):
    """CIRCUITS_E_RANGE: token id out of vocabulary, too many positions, index out of range."""

    status, status_name = -12, "CIRCUITS_E_RANGE"


class CallbackError(CircuitsError, RuntimeError):
    """CIRCUITS_E_CALLBACK: a hook callback failed.

    An exception raised by a *Python* hook is re-raised as itself (with its traceback), not
    as CallbackError; this class is what a failing C-level callback produces, and the base
    of :class:`HookReturnError`."""

    status, status_name = -13, "CIRCUITS_E_CALLBACK"


class HookStopped(CircuitsError):
    """CIRCUITS_E_STOPPED: a hook asked to stop the run.

    Raise it (or a subclass) inside a Python hook to end the run early; the run's caller then
    gets that same exception. Outputs of a stopped run are not produced and a cache it was
    filling stays empty."""

    status, status_name = -14, "CIRCUITS_E_STOPPED"


class VersionError(CircuitsError):
    """CIRCUITS_E_VERSION: an options/config struct of a size this library does not know."""

    status, status_name = -15, "CIRCUITS_E_VERSION"


class ProvenanceError(CircuitsError, ValueError):
    """CIRCUITS_E_PROVENANCE (0.9.0): job outputs whose provenance records disagree (another
    model, dataset, library, hook semantics or job parameters): never resumed or merged."""

    status, status_name = -16, "CIRCUITS_E_PROVENANCE"


class HookReturnError(CallbackError, TypeError):
    """A Python hook returned something other than None, the activation itself, or a float32
    NumPy array of exactly the activation's shape. Raised after the (stopped) run."""


class ClosedError(CircuitsError, ValueError):
    """A model or cache was used after ``close()`` (like I/O on a closed file)."""


class LibraryNotFoundError(ImportError):
    """libcircuits.so.0 could not be found or loaded (see the message for where it looked)."""


class ABIMismatchError(ImportError):
    """The loaded libcircuits has a different ABI version than this binding was written for."""


_BY_STATUS: Dict[int, Type[CircuitsError]] = {
    cls.status: cls  # type: ignore[misc]
    for cls in (
        InvalidArgumentError,
        OutOfMemoryError,
        CircuitsIOError,
        FormatError,
        ConfigError,
        UnsupportedError,
        TensorMissingError,
        TensorUnexpectedError,
        ShapeError,
        DtypeError,
        NotFoundError,
        RangeError,
        CallbackError,
        HookStopped,
        VersionError,
        ProvenanceError,
    )
}
_STATUS_NAMES: Dict[int, str] = {s: c.status_name for s, c in _BY_STATUS.items()}  # type: ignore[misc]


def error_class(status: int) -> Type[CircuitsError]:
    """The exception class of a (negative) ``circuits_status`` value; CircuitsError if unknown."""
    return _BY_STATUS.get(status, CircuitsError)
