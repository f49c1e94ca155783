import os
import stat

import pytest
import torch

from stackgan.atomic import atomic_path, torch_save, write_json


def test_torch_save_is_byte_reproducible(tmp_path):
    # DVC decides by content whether downstream stages re-run: equal objects, equal bytes.
    obj = {"w": torch.arange(6.0).reshape(2, 3), "step": 3}
    torch_save(obj, tmp_path / "a.pt")
    torch_save(obj, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt")["w"], obj["w"])


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    write_json(tmp_path / "m.json", {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "m.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "m.json").read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.fixture
def umask():
    """Set the process umask for one test; the original comes back afterwards."""
    original = os.umask(0o022)
    os.umask(original)
    yield lambda mask: os.umask(mask)
    os.umask(original)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask, mask):
    # mkstemp creates 0600 files; outputs must be as readable as any other file the user writes.
    umask(mask)
    with open(tmp_path / "plain", "w"):
        pass
    write_json(tmp_path / "m.json", {"v": 1})
    torch_save({"w": torch.zeros(2)}, tmp_path / "t.pt")
    with atomic_path(tmp_path / "grid.png") as tmp:
        tmp.write_bytes(b"png")
    expected = 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == expected
    for name in ("m.json", "t.pt", "grid.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert os.umask(mask) == mask  # reading the umask left it as it was
