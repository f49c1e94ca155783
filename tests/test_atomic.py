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
