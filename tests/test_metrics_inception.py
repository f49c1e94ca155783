"""The full torch-fidelity Inception path, offline: the true architecture with random weights."""

import pytest
import torch
import torch_fidelity

from stackgan.metrics.compute import compute
from stackgan.metrics.images import TensorImages
from stackgan.metrics.weights import sha256_file, write_random_inception

N = 12  # images per set; the Inception runs at 299 px on one CPU thread (~0.15 s per image)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    return write_random_inception(tmp_path_factory.mktemp("inception") / "random-inception.pth", seed=0)


@pytest.fixture(scope="module")
def finetuned_weights(tmp_path_factory):
    return write_random_inception(tmp_path_factory.mktemp("ft") / "cub-ft.pth", seed=1, num_classes=5)


def blobs(n, seed):
    """Coloured, smoothly shaded 64 px images: varied enough that random-weight features differ."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 200
    ramp = torch.linspace(0, 1, 64)
    shade = torch.rand(n, 3, 1, 1, generator=g) * 55 * (ramp[None, None, :, None] + ramp[None, None, None, :]) / 2
    return (base + shade).round().clamp(0, 255).to(torch.uint8)


def test_compute_equals_direct_calculate_metrics(inception_weights):
    samples, reference = blobs(N, 0), blobs(N, 1)
    ours = compute([f"is{N}_imagenet", f"fid{N}_test"], samples, reference=reference,
                   weights={"imagenet": inception_weights}, batch_size=N, device="cpu")
    direct = torch_fidelity.calculate_metrics(
        input1=TensorImages(samples), input2=TensorImages(reference), isc=True, fid=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_weights),
        isc_splits=10, batch_size=N, cuda=False, cache=False, save_cpu_ram=True, verbose=False,
    )
    is_ours, fid_ours = ours["metrics"][f"is{N}_imagenet"], ours["metrics"][f"fid{N}_test"]
    assert is_ours["value"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_ISC_MEAN], rel=1e-6)
    assert is_ours["std"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_ISC_STD], rel=1e-5)
    assert fid_ours["value"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_FID], rel=1e-5)
    assert is_ours["value"] > 1.001 and fid_ours["value"] > 0  # random weights still discriminate
    details = ours["protocols"][f"fid{N}_test"]
    assert details["weights_sha256"] == sha256_file(inception_weights)
    assert details["extractor"] == "inception-v3-compat" and details["feature_layer"] == "2048"
    assert details["num_samples"] == N and details["reference"]["num_images"] == N


def test_finetuned_extractor_reads_class_count_and_ignores_batch_size(finetuned_weights):
    samples = blobs(N, 2)
    runs = [compute([f"is{N}_cub-ft"], samples, weights={"cub-ft": finetuned_weights}, batch_size=bs,
                    device="cpu")["metrics"][f"is{N}_cub-ft"] for bs in (4, N)]
    assert runs[0]["value"] == pytest.approx(runs[1]["value"], rel=1e-5)
    assert 1.0 < runs[0]["value"] <= 5.0  # IS is bounded by the number of classes
