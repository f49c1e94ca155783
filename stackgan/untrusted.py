"""Reading files that may come from anyone (downloads, shared checkpoints, `runs/` from a DVC
remote, folders given to `score`): nothing in them is ever executed.

A pickle names the callables that rebuild its objects, so plain `pickle.load` runs whatever a file
names. The authors' Python-2 metadata and the CIFAR-10 batches only ever hold numbers, strings,
containers and numpy arrays; `load_pickle` admits exactly those. Torch files are read with
`weights_only=True`, which admits tensors and plain containers. Either refuses anything else with
one line that names the file.
"""

import _compat_pickle
import codecs
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from stackgan.errors import UserError

# numpy >= 2 keeps these in numpy._core; old pickles name numpy.core (the path they were written under).
_NUMPY = {"_reconstruct": np._core.multiarray._reconstruct, "scalar": np._core.multiarray.scalar,
          "ndarray": np.ndarray, "dtype": np.dtype}
_ADMITTED = {
    **{(module, name): obj for module in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name, obj in _NUMPY.items() if name in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes at protocol 2 as encode(latin1 text); a codec only transforms data.
    ("_codecs", "encode"): codecs.encode,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,  # arrays at protocol 5
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    **{("builtins", t.__name__): t for t in (list, dict, tuple, set, frozenset, bytearray, bytes, str, int,
                                              float, complex, bool)},
}


class Refused(pickle.UnpicklingError):
    """The pickle names a callable outside the admitted set."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Python-2 pickles name builtins `__builtin__`; map them as pickle itself would.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in _ADMITTED:
            raise Refused(f"it names {module}.{name}, which a data file never needs")
        return _ADMITTED[(module, name)]


def load_pickle(path, remedy: str, data: bytes | None = None):
    """A pickle of numbers, strings, containers and numpy arrays (Python 2 byte strings as latin1).
    With `data`, those bytes are read (an archive member) and `path` only names them."""
    try:
        if data is not None:
            return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"{path} not found; {remedy}") from None
    except Refused as err:
        raise UserError(f"{path} is refused as a pickle ({err}); {remedy}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as err:
        raise UserError(f"{path} cannot be read as a pickle ({type(err).__name__}: {str(err)[:120]}); "
                        f"{remedy}") from None


def load_torch(path, remedy: str):
    """A torch file of tensors and plain containers, on the CPU."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; {remedy}")
    from torch.torch_version import TorchVersion

    try:
        # Configs record torch.__version__, a TorchVersion: a str subclass that builds nothing else.
        with torch.serialization.safe_globals([TorchVersion]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch wraps the reason in advice to load with weights_only=False, the one thing not to do.
        lines = [ln.strip() for ln in str(err).splitlines()]
        why = next((ln for ln in lines if "GLOBAL" in ln or ln.startswith("Unsupported")), "not a torch file")
        raise UserError(f"{path} is refused: it is not only tensors and plain containers ({why[:160]}); "
                        f"{remedy}") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path} is not a readable torch file ({first[:160]}); {remedy}") from None
