"""`prepare` for SVHN (cropped digits) from `train_32x32.mat` and `test_32x32.mat` (spec §5).

Each MATLAB file holds X (32, 32, 3, N) uint8 and y (N, 1) in 1..10, where 10 stands for the
digit 0; we store label = y mod 10. `extra_32x32.mat` is not used (improved-gan's svhn_data.py,
which the SGAN authors built on, reads train and test only). View `native32`.
"""

from pathlib import Path

import numpy as np

from stackgan.data.labelled import check_count, select, write_prepared
from stackgan.errors import UserError

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
URL = "http://ufldl.stanford.edu/housenumbers/"


def read_mat(path: Path):
    """-> (uint8 (N, 32, 32, 3), int64 (N,) digits 0..9)."""
    import scipy.io

    if not path.is_file():
        raise UserError(f"{path} not found; download {path.name} from {URL} into {path.parent}/")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises several types for damaged files
        raise UserError(f"{path} cannot be read as a MATLAB file ({type(err).__name__}); it is corrupt "
                        f"or truncated, re-download it from {URL}") from None
    if "X" not in mat or "y" not in mat:
        raise UserError(f"{path} has no X/y arrays; it is not an SVHN cropped-digits file, re-download it from {URL}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise UserError(f"{path}: X is {x.dtype} {x.shape} for {len(y)} labels, expected 32x32x3xN uint8; "
                        f"re-download it from {URL}")
    # a float label must be whole: NaN would pass the range test and cast to garbage
    if y.dtype.kind not in "iuf" or not np.isin(y, np.arange(1, 11)).all():
        raise UserError(f"{path}: labels must be the integers 1..10 (10 = digit 0); re-download it from {URL}")
    return x.transpose(3, 0, 1, 2).copy(), (y.astype(np.int64) % 10)


def prepare(raw_dir, out_dir, limit=None, expected_counts=None) -> dict:
    raw = Path(raw_dir)
    splits, sources = {}, []
    for split, name in FILES.items():
        images, labels = read_mat(raw / name)
        check_count(split, len(labels), expected_counts, limit, raw / name)
        splits[split] = select(images, labels, limit)
        sources.append(raw / name)
    return write_prepared(out_dir, "svhn", splits, sources, limit)
