"""FID reference statistics: written once under a content-derived name, read back by compute
without touching the reference images, and equal to torch-fidelity computing FID directly."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from torch.utils.data import Dataset

from inception_fixture import write_random_inception
from stackgan.data import cub, synthetic
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.metrics.compute import compute, reference_cache_name, reference_stats_file, scored_view
from stackgan.metrics.images import ScoredView, TensorImages
from stackgan.metrics.protocols import Protocol, get_protocol
from stackgan.metrics.reference import reference_set
from stackgan.metrics.refstats import compute_refstats

VIEW, RES, N = "short40", 32, 6
# The 192-d layer of the same network: same torch-fidelity path, a fraction of the CPU (the
# 2048-d eigendecomposition alone costs ~15 s per FID).
FID = Protocol(f"fid{N}_test_192", "fid", N, None, None, "inception-v3-compat", "192", "imagenet", "test")
FID64 = Protocol(f"fid{N}64_test_192", "fid", N, None, 64, "inception-v3-compat", "192", "imagenet", "test")
IS = Protocol(f"is{N}_imagenet_2splits", "is", N, 2, None, "inception-v3-compat", "logits_unbiased", "imagenet", None)


class Untouchable(Dataset):
    """The reference set's length without its images: any read fails the test."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        raise AssertionError("the reference images were read although their statistics are stored")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("refstats")
    raw = synthetic.generate(root / "raw", num_images=60)
    cub.prepare(raw, root / "prepared", {VIEW: {"mode": "short", "size": 40, "resample": "bilinear"}})
    return {"name": "cub", "prepared_dir": str(root / "prepared")}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return [write_random_inception(folder / f"inception-{s}.pth", seed=s) for s in (0, 1)]


@pytest.fixture(scope="module")
def stored(dataset, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("stats")
    entries = compute_refstats(dataset, [IS, FID, FID64], out, VIEW, RES, device="cpu", weights=weights[0])
    return out, entries


def samples():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(N, 3, RES, RES, generator=g) * 255).to(torch.uint8)


def test_one_file_per_fid_protocol_named_by_everything_it_depends_on(dataset, weights, stored, tmp_path):
    out, entries = stored
    assert set(entries) == {FID.name, FID64.name}  # IS needs no reference statistics
    assert entries[FID.name]["size"] == [RES, RES] and entries[FID64.name]["size"] == [64, 64]
    assert entries[FID.name]["num_images"] == 15  # the whole prepared test split
    files = {e["file"] for e in entries.values()}
    assert len(files) == 2 and all((out / f).is_file() for f in files)
    stats = np.load(out / entries[FID.name]["file"], allow_pickle=False)
    assert stats["mu"].shape == (192,) and stats["sigma"].shape == (192, 192)

    again = compute_refstats(dataset, [FID], out, VIEW, RES, device="cpu", weights=weights[0])
    assert again[FID.name]["reused"] and again[FID.name]["file"] == entries[FID.name]["file"]
    other = compute_refstats(dataset, [FID], tmp_path, VIEW, RES, device="cpu", weights=weights[1])
    assert other[FID.name]["file"] != entries[FID.name]["file"]  # new weights never meet stale statistics
    assert other[FID.name]["weights_sha256"] == sha256_file(weights[1])


def test_reference_key_names_split_view_crop_resolution_and_file_hashes(dataset):
    # Part of every statistics file's name and metrics file: a new rule must be on purpose.
    _, key = reference_set(dataset["prepared_dir"], "test", VIEW, RES)
    files = json.loads((Path(dataset["prepared_dir"]) / "manifest.json").read_text())["files"]
    digest = hashlib.sha256(json.dumps(files, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert key == f"prepared/test/{VIEW}/centre square of the view, PIL bilinear to the resolution/{RES}/{digest}"


def test_fid_from_stored_statistics_equals_direct_torch_fidelity(dataset, weights, stored):
    out, _ = stored
    ref_ds, key = reference_set(dataset["prepared_dir"], "test", VIEW, RES)
    ours = compute([FID], samples(), reference=Untouchable(len(ref_ds)), reference_key=key,
                   reference_stats_dir=out, weights={"imagenet": weights[0]}, device="cpu")
    direct = torch_fidelity.calculate_metrics(
        input1=TensorImages(samples()), input2=ScoredView(ref_ds, None, RES), fid=True, feature_layer_fid="192",
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights[0]),
        batch_size=64, cuda=False, cache=False, save_cpu_ram=True, verbose=False,
    )
    value = ours["metrics"][FID.name]["value"]
    assert value == pytest.approx(direct[torch_fidelity.KEY_METRIC_FID], rel=1e-5)
    assert value > 0


def test_missing_statistics_are_a_user_error(dataset, weights, stored):
    out, _ = stored
    ref_ds, key = reference_set(dataset["prepared_dir"], "test", VIEW, RES)
    with pytest.raises(UserError, match="run `stackgan refstats`"):
        compute([FID], samples(), reference=Untouchable(len(ref_ds)), reference_key=key,
                reference_stats_dir=out, weights={"imagenet": weights[1]}, device="cpu")


def test_a_ruler_that_preprocesses_in_the_view_is_stored_where_evaluate_looks(dataset, weights, tmp_path):
    # clean-fid's resize happens in the scored view, before the network: refstats must apply it
    # and name the file by it, or evaluate (compute with reference_stats_dir) would not find it.
    protocol = get_protocol(f"fid{N}_cleanfid_test")
    entries = compute_refstats(dataset, [protocol], tmp_path, VIEW, RES, device="cpu", weights=weights[0])
    ref_ds, key = reference_set(dataset["prepared_dir"], "test", VIEW, RES)
    view = scored_view(protocol, ref_ds, None, (RES, RES))  # the size evaluate and refstats give it
    assert view.preprocessing is not None and view[0].dtype == torch.float32  # clean-fid: not quantised
    wanted = reference_stats_file(reference_cache_name(protocol, view, key, sha256_file(weights[0])), protocol)
    assert entries[protocol.name]["file"] == wanted and (tmp_path / wanted).is_file()
    plain = reference_cache_name(get_protocol(f"fid{N}_test"), ScoredView(ref_ds, None, (RES, RES)), key,
                                 sha256_file(weights[0]))
    assert not wanted.startswith(plain)  # the preprocessing is part of the name
