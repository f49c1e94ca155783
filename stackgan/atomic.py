"""Atomic file writes: a reader never sees a half-written file, a killed writer leaves none."""

import contextlib
import json
import os
import tempfile
import threading
from pathlib import Path


_UMASK_LOCK = threading.Lock()


def umask():
    """The process umask. os.umask can only read it by setting it, so it is set to the most
    private value for that instant and restored. The lock keeps two writers here from restoring
    each other's placeholder; a file that another thread creates in that instant by other means
    comes out too private at worst, never too open."""
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def fresh_dir(parent, prefix: str, suffix: str) -> Path:
    """A new folder in `parent` (mkdtemp: a name no one else holds) with the mode mkdir would give,
    since it is renamed into place as an output and mkdtemp makes it private to its owner."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(folder, 0o777 & ~umask())
    return folder


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it is renamed over `path` with the mode
    a plain open() would have given it (mkstemp makes the file private to its owner)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:
            # a failed write() names no file; the error a user sees should name the output
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def write_bytes(path, data: bytes):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(obj, path):
    """torch.save, atomically and byte-reproducibly: given a file *name*, torch.save names the
    archive's records after it (here the random temporary name), so equal objects would give
    different bytes and DVC would see a changed output; a file object gets a fixed record name."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
