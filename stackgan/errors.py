"""The errors the CLI turns into a one-line message instead of a traceback."""

import errno
import os


class UserError(Exception):
    """Bad input the user can fix: the message says what is wrong and what to do."""


# Operating-system errors a user causes or can fix (where the harness was asked to read or write).
_OS_REMEDIES = {
    errno.ENOSPC: "the disk is full; free space there and run the command again",
    errno.EDQUOT: "the disk quota is used up; free space there and run the command again",
    errno.EROFS: "that file system is read-only; run from a writable checkout or point the output elsewhere",
    errno.EACCES: "permission denied; make the folder writable for this user or point the output elsewhere",
    errno.EPERM: "the operation is not permitted there; make the folder writable or point the output elsewhere",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENOTDIR: "a part of that path is a file, not a folder; check the path",
    errno.EISDIR: "it is a folder where a file is expected; check the path",
    errno.EMFILE: "too many open files; raise `ulimit -n` or lower train.workers",
}


def os_error_message(err: OSError) -> str | None:
    """One line for an OS error the user can fix, or None for one that is a bug of ours."""
    code = err.errno
    if code is None and "requested and" in str(err) and "written" in str(err):
        code = errno.ENOSPC  # numpy's tofile reports a short write (a full disk) without an errno
    remedy = _OS_REMEDIES.get(code)
    if remedy is None:
        return None
    where = err.filename if err.filename is not None else "a file the command writes"
    # Outputs are written beside their final name and renamed: a failed write leaves nothing half-written.
    reason = err.strerror or (os.strerror(code) if code == err.errno else f"{err}: {os.strerror(code)}")
    return f"cannot use {where} ({reason}): {remedy}"
