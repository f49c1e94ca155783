"""`stackgan hr serve` through Flask's test client: answers are appended (and survive a
restart), a duplicate is ignored, a malformed post is a 400 that changes nothing, only the page
and the study's images are served (no path traversal, never the manifest), and a study whose
files changed after the build is refused."""

import json
from importlib.resources import files as package_files

import numpy as np
import pytest
from PIL import Image

from stackgan.errors import UserError
from stackgan.hashing import sha256_file, sha256_json
from stackgan.hr.server import create_app
from stackgan.hr.study import FORMAT, MANIFEST, PAGE_FILES

EXPERIMENTS = ["exp-alpha", "exp-beta", "exp-gamma"]


def fake_study(root, experiments=EXPERIMENTS, n_captions=4, images_per_caption=2, profile="ci"):
    """A study folder as `stackgan hr build` writes one, with solid-colour images: model j's
    images have red channel 40 * (j + 1), so a test can tell the models apart by pixels."""
    (root / "images").mkdir(parents=True)
    for name in PAGE_FILES:
        (root / name).write_bytes(package_files("stackgan.hr").joinpath(name).read_bytes())
    captions = []
    for c in range(n_captions):
        per_model = []
        for j, _ in enumerate(experiments):
            names = [f"images/{c}{j}{k}.png" for k in range(images_per_caption)]
            for k, name in enumerate(names):
                Image.fromarray(np.full((16, 16, 3), (40 * (j + 1), 20 * c, 30 * k), np.uint8)).save(root / name)
            per_model.append(names)
        captions.append({"id": f"c{c:04d}", "text": f"a small bird number {c}", "class_id": c % 2,
                         "image_key": f"img{c}", "image_index": c, "caption_index": 0, "images": per_model})
    manifest = {"format": FORMAT, "study": root.name, "profile": profile, "dataset": "synthetic", "seed": 0,
                "protocol": {"captions_per_class": 2, "captions": n_captions, "classes": 2,
                             "images_per_caption": images_per_caption},
                "models": [{"experiment": e, "family": "v2", "step": 2, "model_sha256": "0" * 64} for e in experiments],
                "captions": captions}
    manifest["files"] = {f: sha256_file(root / f) for f in
                         sorted([*PAGE_FILES, *(f for c in captions for m in c["images"] for f in m)])}
    manifest["sha256"] = sha256_json(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest))
    return manifest


@pytest.fixture
def study(tmp_path):
    fake_study(tmp_path / "study")
    return tmp_path / "study"


def answer(client, rater, order=None):
    """Rank the rater's next caption (slots best to worst, default as shown); the response."""
    nxt = client.get(f"/api/next?rater={rater}").get_json()
    body = {"rater": rater, "caption": nxt["caption"], "presentation": nxt["presentation"],
            "order": order if order is not None else list(range(len(nxt["slots"])))}
    return nxt, client.post("/api/answer", json=body)


def model_of(manifest):
    """{image URL: experiment} of a study."""
    return {f"/{f}": m["experiment"] for c in manifest["captions"] for m, files in zip(manifest["models"], c["images"])
            for f in files}


def lines(study):
    path = study / "answers.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_answers_are_appended_mapped_to_models_and_survive_a_restart(study):
    client = create_app(study).test_client()
    assert b"rank.js" in client.get("/").data
    nxt, res = answer(client, "ann", order=[2, 0, 1])
    assert res.status_code == 200 and res.get_json()["status"] == "recorded"
    assert not any(e in json.dumps(nxt) for e in EXPERIMENTS)  # the page learns slots, not models
    [line] = lines(study)
    manifest = json.loads((study / MANIFEST).read_text())
    shown = [model_of(manifest)[slot[0]] for slot in nxt["slots"]]
    assert line["shown"] == shown
    assert line["ranks"] == {shown[2]: 1, shown[0]: 2, shown[1]: 3}
    assert res.get_json()["ranked"] == 1 and res.get_json()["caption"] != nxt["caption"]

    again = create_app(study).test_client()  # a restart reads the answers back
    assert again.get("/api/next?rater=ann").get_json()["ranked"] == 1
    assert again.get("/api/next?rater=bob").get_json()["ranked"] == 0
    for _ in range(3):
        answer(again, "ann")
    assert again.get("/api/next?rater=ann").get_json() == {"done": True, "ranked": 4, "total": 4}
    assert len(lines(study)) == 4 and len({a["caption"] for a in lines(study)}) == 4


def test_duplicate_is_ignored_and_ties_share_positions(study):
    client = create_app(study).test_client()
    nxt = client.get("/api/next?rater=ann").get_json()
    body = {"rater": "ann", "caption": nxt["caption"], "presentation": nxt["presentation"], "order": [[0, 1], 2]}
    assert client.post("/api/answer", json=body).get_json()["status"] == "recorded"
    assert client.post("/api/answer", json={**body, "order": [2, 1, 0]}).get_json()["status"] == "duplicate"
    assert create_app(study).test_client().post("/api/answer", json=body).get_json()["status"] == "duplicate"
    [line] = lines(study)
    shown = line["shown"]
    assert line["ranks"] == {shown[0]: 1.5, shown[1]: 1.5, shown[2]: 3}


def test_malformed_posts_are_400_and_change_nothing(study):
    client = create_app(study).test_client()
    answer(client, "ann")
    before = (study / "answers.jsonl").read_bytes()
    nxt = client.get("/api/next?rater=ann").get_json()
    good = {"rater": "ann", "caption": nxt["caption"], "presentation": nxt["presentation"], "order": [0, 1, 2]}
    bad = [{**good, "order": [0, 1]}, {**good, "order": [0, 1, 1]}, {**good, "order": [0, 1, True]},
           {**good, "order": "012"}, {**good, "order": [[], 0, 1, 2]}, {**good, "caption": "c9999"},
           {**good, "presentation": "0" * 16}, {**good, "rater": "../x"}, {**good, "extra": 1},
           {k: v for k, v in good.items() if k != "order"}, [good], None]
    for body in bad:
        assert client.post("/api/answer", json=body).status_code == 400, body
    assert client.post("/api/answer", data="{not json", content_type="application/json").status_code == 400
    assert client.post("/api/answer", data=b"x" * 100_000, content_type="application/json").status_code == 413
    assert client.get("/api/next?rater=").status_code == 400
    assert client.get("/api/next?rater=a%20b").status_code == 400
    assert (study / "answers.jsonl").read_bytes() == before


def test_only_the_page_and_listed_images_are_served(study, tmp_path):
    (tmp_path / "secret.txt").write_text("outside the study")
    client = create_app(study).test_client()
    manifest = json.loads((study / MANIFEST).read_text())
    image = next(f for f in manifest["files"] if f.startswith("images/"))
    assert client.get(f"/{image}").status_code == 200
    assert client.get("/rank.js").status_code == 200
    for path in ["/manifest.json", "/answers.jsonl", "/images/../manifest.json", "/images/%2e%2e/manifest.json",
                 "/images/..%2fmanifest.json", "/images/../../secret.txt", "/images/%2e%2e/%2e%2e/secret.txt",
                 "/..%2fsecret.txt", "/images//etc/passwd", "/images/"]:
        res = client.get(path, follow_redirects=True)  # werkzeug redirects // to /
        assert res.status_code == 404 and b"outside" not in res.data and b"exp-" not in res.data, path


def test_a_study_changed_after_the_build_is_refused(study):
    manifest = json.loads((study / MANIFEST).read_text())
    image = next(f for f in manifest["files"] if f.startswith("images/"))
    original = (study / image).read_bytes()
    (study / image).write_bytes(original[:-1] + b"\0")
    with pytest.raises(UserError, match="differs from the manifest"):
        create_app(study)
    (study / image).write_bytes(original)
    manifest["captions"][0]["text"] = "a different caption"
    (study / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="does not match its sha256"):
        create_app(study)
    manifest["files"]["../outside.png"] = manifest["files"][image]
    manifest["captions"][0]["text"] = "a small bird number 0"
    manifest.pop("sha256")
    manifest["sha256"] = sha256_json(manifest)
    (study / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="missing or differs"):
        create_app(study)
    manifest["models"] = "exp-alpha"  # a hand-made manifest, its hash recomputed: still one line, no traceback
    manifest.pop("sha256")
    manifest["sha256"] = sha256_json(manifest)
    (study / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="lacks the models"):
        create_app(study)
