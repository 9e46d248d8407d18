"""A pickle reader that can build numpy arrays and plain containers, and nothing else.

The CIFAR python files are pickles. :class:`RestrictedUnpickler` resolves only the three numpy
globals an array needs and refuses anything else before it is looked up, so a hostile file
cannot execute code. It knows no dataset: :mod:`.cifar` reads its files with it.
"""
from __future__ import annotations

import pickle
from typing import Any

import numpy as np

__all__ = ["RefusedGlobalError", "RestrictedUnpickler"]


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: accepted by ``_reconstruct``, never callable."""

    __slots__ = ()


_NDARRAY = _NdarrayToken()


def _checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') then fills it with BUILD,
    # whose size numpy checks against the data actually present. Refuse anything else, so a
    # crafted shape cannot allocate memory the file does not contain.
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError(f"unexpected array reconstruction {subtype!r}, {shape!r:.50}")
    return np.ndarray.__new__(np.ndarray, (0,), dtype)


def _checked_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(obj, (str, bytes)):
        raise pickle.UnpicklingError(f"unexpected dtype argument {obj!r:.50}")
    return np.dtype(obj.decode("latin1") if isinstance(obj, bytes) else obj, bool(align), bool(copy))


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; it was not looked up or run."""

    def __init__(self, name: str):
        super().__init__(f"refused global {name}: only numpy arrays are allowed")
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only build numpy arrays, dicts, lists, numbers and bytes.

    ``find_class`` resolves exactly the globals a pickled numpy array needs (``_reconstruct``
    from ``numpy.core.multiarray`` or ``numpy._core.multiarray``, ``numpy.ndarray`` and
    ``numpy.dtype``), each to a checked stand-in that only builds an empty array of a plain
    dtype (the file's own bytes then fill it, size-checked by numpy), and raises
    :class:`pickle.UnpicklingError` for any other global *before* it is looked up, so no code
    named by the file ever runs. Persistent ids and out-of-band buffers are refused too.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _checked_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise RefusedGlobalError(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id: only numpy arrays are allowed")
