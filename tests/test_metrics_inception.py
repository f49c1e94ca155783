"""The full torch-fidelity Inception path, offline: the true architecture with random weights."""

import pytest
import torch
import torch_fidelity

from inception_fixture import write_random_inception
from stackgan.hashing import sha256_file
from stackgan.metrics.compute import compute
from stackgan.metrics.images import TensorImages
from stackgan.metrics.protocols import Protocol, get_protocol

N = 6  # images per set; the Inception runs at 299 px on one CPU thread (~0.15 s per image)
# The paper protocols' 10 IS splits would leave single-image splits (IS = 1) at this count.
IS_2_SPLITS = Protocol(f"is{N}_imagenet_2splits", "is", N, 2, None, "inception-v3-compat", "logits_unbiased",
                       "imagenet", None)
# FID at 2048-d spends ~15 s of CPU in one 2048x2048 eigendecomposition per call; the fast test
# reads the same network's 768-d layer (same torch-fidelity path), the slow one the protocol's.
FID_768 = Protocol(f"fid{N}_test_768", "fid", N, None, None, "inception-v3-compat", "768", "imagenet", "test")
FT_2_SPLITS = Protocol(f"is{N}_cub-ft_2splits", "is", N, 2, None, "inception-v3-ft", "logits", "cub-ft", None)


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


def compare_with_direct(inception_weights, fid_protocol):
    samples, reference = blobs(N, 0), blobs(N, 1)
    ours = compute([IS_2_SPLITS, fid_protocol], samples, reference=reference,
                   weights={"imagenet": inception_weights}, batch_size=N, device="cpu")
    direct = torch_fidelity.calculate_metrics(
        input1=TensorImages(samples), input2=TensorImages(reference), isc=True, fid=True,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_weights),
        feature_layer_fid=fid_protocol.feature_layer,
        isc_splits=2, batch_size=N, cuda=False, cache=False, save_cpu_ram=True, verbose=False,
    )
    is_ours, fid_ours = ours["metrics"][IS_2_SPLITS.name], ours["metrics"][fid_protocol.name]
    assert is_ours["value"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_ISC_MEAN], rel=1e-6)
    assert is_ours["std"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_ISC_STD], rel=1e-5)
    assert fid_ours["value"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_FID], rel=1e-5)
    assert is_ours["value"] > 1.05 and fid_ours["value"] > 0  # random weights still discriminate
    details = ours["protocols"][fid_protocol.name]
    assert details["weights_sha256"] == sha256_file(inception_weights)
    assert details["extractor"] == "inception-v3-compat" and details["feature_layer"] == fid_protocol.feature_layer
    assert details["num_samples"] == N and details["reference"]["num_images"] == N


def test_compute_equals_direct_calculate_metrics(inception_weights):
    compare_with_direct(inception_weights, FID_768)


@pytest.mark.slow
def test_compute_equals_direct_calculate_metrics_2048(inception_weights):
    compare_with_direct(inception_weights, get_protocol(f"fid{N}_test"))


def test_finetuned_extractor_reads_class_count_and_ignores_batch_size(finetuned_weights):
    samples = blobs(N, 2)
    runs = [compute([FT_2_SPLITS], samples, weights={"cub-ft": finetuned_weights}, batch_size=bs,
                    device="cpu")["metrics"][FT_2_SPLITS.name] for bs in (2, N)]
    assert runs[0]["value"] == pytest.approx(runs[1]["value"], rel=1e-5)
    assert 1.0 < runs[0]["value"] <= 5.0  # IS is bounded by the number of classes
