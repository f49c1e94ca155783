import json

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image

from stackgan import hashing, metric_names
from stackgan.errors import UserError
from stackgan.metrics import legacy_fid, rulers, weights
from stackgan.metrics.compute import compute, evaluate_samples, reference_cache_name, score_folder, scored_view
from stackgan.metrics.images import RESIZE_RULE, ScoredView, TensorImages, resize_uint8
from stackgan.metrics.protocols import PAPER_PROTOCOLS, PROTOCOLS, get_protocol
from stackgan.metrics.synthetic_classifier import INPUT_SIZE, SyntheticClassifier, save_classifier


def test_paper_protocols():
    assert set(PROTOCOLS) == set(PAPER_PROTOCOLS)
    cub = get_protocol("is30k_cub-ft")
    assert (cub.metric, cub.num_samples, cub.splits, cub.resize) == ("is", 30000, 10, None)
    assert (cub.extractor, cub.feature_layer, cub.model) == ("inception-v3-ft", "logits", "cub-ft")
    star = get_protocol("is30k64_oxford102-ft")
    assert (star.resize, star.model, star.num_samples) == (64, "oxford102-ft", 30000)
    fid = get_protocol("fid30k64_test")
    assert (fid.metric, fid.resize, fid.reference, fid.splits) == ("fid", 64, "test", None)
    assert (fid.extractor, fid.feature_layer) == ("inception-v3-compat", "2048")
    sgan = get_protocol("is50k_imagenet")
    assert (sgan.num_samples, sgan.splits, sgan.feature_layer) == (50000, 10, "logits_unbiased")


def test_rulers_build_the_protocols():
    rows = [("is30k_cub-inc", "inception-v3-slim", "logits", "cub-inc"),
            ("is30k_oxford102-inc", "inception-v3-slim", "logits", "oxford102-inc"),
            ("fid30k_ptfid-legacy_test", "inception-v3-torchvision", "2048", "ptfid-legacy"),
            ("fid30k_cleanfid_test", "inception-v3-compat-float", "2048", "cleanfid")]
    for name, extractor, layer, model in rows:
        p = PROTOCOLS[name]
        assert (p.extractor, p.feature_layer, p.model, p.splits if p.metric == "is" else p.reference) == \
            (extractor, layer, model, 10 if p.metric == "is" else "test")
    assert get_protocol("is200_cub-inc").num_samples == 200 and get_protocol("is64_cub-inc").num_samples == 64
    assert get_protocol("fid1k_cub-inc_train").feature_layer == "2048"
    with pytest.raises(UserError, match="FID only; use e.g. fid30k_cleanfid_test"):
        get_protocol("is30k_cleanfid")
    with pytest.raises(UserError, match="whole batches of 64"):
        get_protocol("is63_cub-inc")
    details = get_protocol("is30k_cub-ft").describe()
    assert details["ruler"] == rulers.RULERS["cub-ft"].label
    assert details["preprocessing"] == "torch-fidelity internal TF1-bilinear resize to 299, (x-128)/128"
    assert get_protocol("is30k_cub-inc").describe()["ruler"].startswith("authors' fine-tuned Inception")
    assert get_protocol("msssim100_class").describe()["ruler"] is None
    assert f" {INPUT_SIZE} " in rulers.SYNTHETIC.words
    assert all("_" not in key for key in rulers.RULERS)  # "_" separates an FID ruler from its split


def test_view_preprocessing_keys_the_reference_cache_and_old_names_stay():
    images = TensorImages(torch.randint(0, 256, (3, 3, 20, 20), generator=torch.Generator().manual_seed(0),
                                        dtype=torch.uint8))
    clean = get_protocol("fid2k_cleanfid_test")
    view = scored_view(clean, images, None, 16)
    assert torch.equal(view[1], legacy_fid.clean_resize(resize_uint8(images[1], 16)))
    plain = ScoredView(images, None, 16)
    assert reference_cache_name(clean, view, "k", "w") != reference_cache_name(clean, plain, "k", "w")
    # a ruler whose network preprocesses (every protocol before the rulers) keeps its cache names
    fid = get_protocol("fid2k_test")
    assert scored_view(fid, images, None, 16).preprocessing is None
    old_parts = {"reference": "k", "num_images": 3, "size": 16, "resize_rule": RESIZE_RULE,
                 "extractor": "inception-v3-compat", "layer": "2048", "weights_sha256": "w",
                 "torch_fidelity": torch_fidelity.__version__}
    assert reference_cache_name(fid, plain, "k", "w") == "ref-" + hashing.sha256_json(old_parts, 40, default=list)


def test_parametric_protocols():
    p = get_protocol("is2k_synthetic-clf")
    assert (p.num_samples, p.resize, p.extractor, p.feature_layer) == (2000, None, "synthetic-clf", "logits_unbiased")
    assert get_protocol("is200_synthetic-clf").num_samples == 200
    f = get_protocol("fid2k_synthetic-clf_test")
    assert (f.num_samples, f.feature_layer, f.reference) == (2000, "feat", "test")
    short = get_protocol("fid2k_synthetic-clf")  # the reference split defaults to test
    assert (short.extractor, short.feature_layer, short.reference) == ("synthetic-clf", "feat", "test")
    assert get_protocol("fid1k32_train").resize == 32 and get_protocol("fid1k32_train").reference == "train"
    assert get_protocol("capacc_synthetic").metric == "capacc"


def test_metric_keys_have_one_grammar():
    star = metric_names.parse("is30k64_cub-ft")
    assert (star.family, star.count, star.in_thousands, star.resize, star.suffix) == ("is", 30000, True, 64, "cub-ft")
    assert star.count_text() == "30,000" and star.msssim_scope() is None
    plain = metric_names.parse("fid2004_synthetic-clf_test")  # a resize side only follows a `k` count
    assert (plain.count, plain.resize, plain.suffix, plain.count_text()) == (2004, None, "synthetic-clf_test", "2004")
    assert metric_names.parse("msssim100_class").msssim_scope() == "class"
    assert metric_names.parse("msssim1k_all").msssim_scope() is None
    assert [metric_names.parse(k) for k in ("capacc_synthetic", "hr", "is30k", "IS30k_cub-ft")] == [None] * 4
    assert [metric_names.family(k) for k in ("is30k64_cub-ft", "capacc_synthetic", "fooled-rate", "hr", "msssim")] \
        == ["is", "capacc", "fooled-rate", "hr", "msssim"]


@pytest.mark.parametrize("bad", ["is30k_cub", "kid30k_test", "fid30k_val", "is0_imagenet", "is30k4_imagenet",
                                 "fid2k_nomodel_test", "is30k", "is30k_cleanfid", "is2k_ptfid-legacy", "is63_cub-inc"])
def test_bad_names_are_user_errors(bad):
    with pytest.raises(UserError, match="protocol"):
        get_protocol(bad)


def test_missing_weights_name_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(UserError) as err:
        weights.locate("inception-2015-12-05")
    msg = str(err.value)
    assert weights.INCEPTION_FILE in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg
    assert weights.INCEPTION_URL in msg and "stackgan fetch inception-2015-12-05" in msg
    with pytest.raises(UserError, match=r"cub-ft\.pth.*classifier"):
        weights.locate("cub-ft", classifier_dir=tmp_path)
    # protocols whose weights are absent fail before any scoring
    with pytest.raises(UserError, match="oxford102-ft.pth"):
        compute(["is10_oxford102-ft"], torch.zeros(10, 3, 8, 8, dtype=torch.uint8), classifier_dir=tmp_path,
                device="cpu")


def test_corrupt_inception_file_is_caught(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS_DIR", tmp_path / "weights")
    target = tmp_path / "hub" / "checkpoints" / weights.INCEPTION_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"partial download")
    with pytest.raises(UserError, match="sha256"):
        weights.locate("inception-2015-12-05")


def test_sha256_file_tracks_content(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert hashing.sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    f.write_bytes(b"abcd")
    assert hashing.sha256_file(f) == "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"


def write_sample_run(folder, n, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    items = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
        items.append({"file": f"{i:06d}.png", "key": f"k{i}", "caption_index": 0, "class_id": i % 3,
                      "attributes": [int(i % 2), int(i % 3)]})
    (folder / "samples.json").write_text(json.dumps({"experiment": "x", "step": 1, "seed": 100,
                                                     "resolution": 16, "items": items}))


def test_evaluate_samples_and_score_folder(tmp_path):
    torch.manual_seed(0)
    clf = tmp_path / "synthetic-clf.pt"
    save_classifier(SyntheticClassifier(3, [2, 3], width=4, feat_dim=8).eval(), clf)
    write_sample_run(tmp_path / "samples", 12, seed=0)
    write_sample_run(tmp_path / "ref", 10, seed=1)
    names = ["is12_synthetic-clf", "fid12_synthetic-clf_test", "capacc_synthetic"]
    out = evaluate_samples(tmp_path / "samples", names, reference_images=tmp_path / "ref",
                           weights={"synthetic-clf": clf}, device="cpu")
    assert set(out["metrics"]) == set(names) and set(out["protocols"]) == set(names)
    assert all(p["seed"] == 100 for p in out["protocols"].values())
    assert {p["ruler"] for p in out["protocols"].values()} == {rulers.RULERS["synthetic-clf"].label}
    assert out["protocols"]["fid12_synthetic-clf_test"]["reference"]["num_images"] == 10
    json.dumps(out)  # the metrics file must serialise

    single = score_folder(tmp_path / "samples", "is12_synthetic-clf", extractor_weights=clf, device="cpu")
    assert single["value"] == out["metrics"]["is12_synthetic-clf"]["value"]
    assert single["details"]["num_samples"] == 12

    with pytest.raises(UserError, match="reference"):
        score_folder(tmp_path / "samples", "fid12_synthetic-clf", extractor_weights=clf, device="cpu")
    with pytest.raises(UserError, match="at least 10"):
        compute(["is12_synthetic-clf"], torch.zeros(5, 3, 8, 8, dtype=torch.uint8), weights=clf, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .png"):
        score_folder(tmp_path / "empty", "is12_synthetic-clf", extractor_weights=clf, device="cpu")
