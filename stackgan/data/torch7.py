"""Read the caption files that Reed's get_embedding.lua writes with torch.save: a Torch7 table
{raw_txt = {caption, ...}, fea_txt = {1x1024 tensor, ...}}, one embedding per caption (the
authors' COCO test split, test/val_captions.t7; spec §3a, §5).

torchfile parses the format. Its habits handled here: it returns Lua strings as bytes; its
list conversion of tables indexed 1..N compares each element with the table, which numpy 2
rejects for tensors, so tables are read as {index: value} dicts and ordered here; and it returns
strings and storages cut off by the end of the file short instead of failing.
"""

from pathlib import Path

import numpy as np
import torchfile

from stackgan.data.staging import TEXT_DIM as EMBEDDING_DIM
from stackgan.errors import UserError

DEFAULT_REMEDY = "re-create it with get_embedding.lua or download it again"


def _text(value):
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _lua_array(table, path: Path, name: str, remedy: str) -> list:
    """The values of a table indexed 1..N, in index order."""
    if not isinstance(table, dict) or sorted(table) != list(range(1, len(table) + 1)):
        raise UserError(f"{path}: {name} is not a list (a table indexed 1..N); {remedy}")
    return [table[i] for i in range(1, len(table) + 1)]


class _Reader(torchfile.T7Reader):
    """torchfile's reader, except that a string cut off by the end of the file is an error."""

    def read_string(self, disable_utf8=False):
        size = self.read_int()
        data = self.f.read(size) if size >= 0 else b""
        if size < 0 or len(data) != size:
            raise EOFError(f"a string of {size} bytes ends after {len(data)}")
        return data


def _inside_storage(tensor: np.ndarray) -> bool:
    """Whether the tensor lies inside the storage it views. torchfile reads a storage with
    np.fromfile, which stops short at the end of a cut-off file without an error, and then views
    the tensor over it with as_strided; such a tensor would read memory past the file's data."""
    storage = tensor
    while getattr(storage, "base", None) is not None:  # view -> as_strided's wrapper -> storage
        storage = storage.base
    if not isinstance(storage, np.ndarray) or tensor.size == 0:
        return False
    start = tensor.__array_interface__["data"][0] - storage.__array_interface__["data"][0]
    extent = sum((n - 1) * abs(s) for n, s in zip(tensor.shape, tensor.strides)) + tensor.itemsize
    return start >= 0 and start + extent <= storage.nbytes


def read_caption_embeddings(path, remedy: str = DEFAULT_REMEDY) -> tuple[list[str], np.ndarray]:
    """(captions, embeddings float32 (N, 1024)) from a {raw_txt, fea_txt} .t7 file; a damaged,
    cut-off or differently shaped file raises UserError naming the file and `remedy`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; {remedy}")
    try:
        with open(path, "rb") as f:
            table = _Reader(f, use_list_heuristic=False).read_obj()
    except Exception as err:  # noqa: BLE001 -- any parse failure (struct.error, EOFError, ...) means a bad file
        raise UserError(f"{path} cannot be read as a Torch7 file ({type(err).__name__}: {err}); it is cut off "
                        f"or not a .t7 file, {remedy}") from None
    fields = {_text(k): v for k, v in table.items()} if isinstance(table, dict) else {}
    missing = [name for name in ("raw_txt", "fea_txt") if name not in fields]
    if missing:
        raise UserError(f"{path} holds no {' or '.join(missing)} (expected the {{raw_txt, fea_txt}} table "
                        f"get_embedding.lua writes); {remedy}")
    captions = [_text(c) for c in _lua_array(fields["raw_txt"], path, "raw_txt", remedy)]
    tensors = _lua_array(fields["fea_txt"], path, "fea_txt", remedy)
    if not all(isinstance(c, str) for c in captions):
        raise UserError(f"{path}: raw_txt holds entries that are not strings; {remedy}")
    if len(captions) != len(tensors) or not captions:
        raise UserError(f"{path} holds {len(captions)} captions (raw_txt) and {len(tensors)} embeddings "
                        f"(fea_txt); they must be equal and non-zero, {remedy}")
    embeddings = np.empty((len(tensors), EMBEDDING_DIM), dtype=np.float32)
    for i, tensor in enumerate(tensors):
        if (not isinstance(tensor, np.ndarray) or tensor.dtype.kind != "f"
                or tensor.shape not in ((EMBEDDING_DIM,), (1, EMBEDDING_DIM))):
            shape = getattr(tensor, "shape", type(tensor).__name__)
            raise UserError(f"{path}: fea_txt[{i + 1}] is {shape}, not a 1x{EMBEDDING_DIM} float tensor; {remedy}")
        if not _inside_storage(tensor):
            raise UserError(f"{path} is cut off (fea_txt[{i + 1}] reaches past the end of the file); {remedy}")
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
            embeddings[i] = tensor.reshape(-1)
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        raise UserError(f"{path}: fea_txt[{int(np.flatnonzero(~finite)[0]) + 1}] holds NaN or infinite values "
                        f"(as float32); {remedy}")
    return captions, embeddings
