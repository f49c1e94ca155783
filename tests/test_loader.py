import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stackgan.data import cub, synthetic
from stackgan.data.loader import TextImageDataset, to_tensor
from stackgan.methods.text_to_image import eval_pairs
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError

VIEW = "short20"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("loader")
    raw = synthetic.generate(base / "raw", num_images=40, seed=0)
    cub.prepare(raw, base / "prepared", {VIEW: {"mode": "short", "size": 20, "resample": "bilinear"}})
    return base / "prepared"


@pytest.fixture
def split(root):
    return PreparedSplit(root, "train")


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return np.round((t.permute(1, 2, 0).numpy() * 0.5 + 0.5) * 255).astype(np.uint8)


def find_window(image: np.ndarray, crop: np.ndarray):
    """(top, left, flipped) of every place where crop sits in image."""
    size = crop.shape[0]
    hits = []
    for top, left in itertools.product(range(image.shape[0] - size + 1), range(image.shape[1] - size + 1)):
        window = image[top:top + size, left:left + size]
        for flipped, candidate in ((False, window), (True, window[:, ::-1])):
            if np.array_equal(candidate, crop):
                hits.append((top, left, flipped))
    return hits


def test_item_shapes_values_and_embedding(split):
    data = TextImageDataset(split, VIEW, [8, 16], seed=1)
    item = data[3]
    assert [tuple(t.shape) for t in item["imgs"]] == [(3, 8, 8), (3, 16, 16)]
    assert [tuple(t.shape) for t in item["wrong_imgs"]] == [(3, 8, 8), (3, 16, 16)]
    for t in item["imgs"] + item["wrong_imgs"]:
        assert t.dtype == torch.float32 and t.min() >= -1 and t.max() <= 1
    assert item["emb"].dtype == torch.float32 and item["emb"].shape == (1024,)
    assert item["index"] == 3 and item["class_id"] == int(split.class_ids[3])
    assert 0 <= item["caption_index"] < 10
    np.testing.assert_array_equal(item["emb"].numpy(), split.embeddings[3, item["caption_index"]])
    assert 0 <= item["wrong_index"] < len(split)


def test_normalisation_is_totensor_then_normalize():
    from torchvision.transforms import functional as tvf

    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = tvf.normalize(tvf.to_tensor(Image.fromarray(pixels)), [0.5] * 3, [0.5] * 3)
    torch.testing.assert_close(to_tensor(pixels), expected, rtol=0, atol=0)


def test_crop_from_view_and_small_branch_is_bilinear_of_same_crop(split):
    data = TextImageDataset(split, VIEW, [8, 16], seed=2)
    flips = set()
    for i in range(6):
        item = data[i]
        for imgs, source in ((item["imgs"], i), (item["wrong_imgs"], item["wrong_index"])):
            big = to_uint8(imgs[1])
            hits = find_window(split.image(VIEW, source), big)
            assert hits, "the 16 px image is not a (flipped) window of the stored view"
            flips.add(hits[0][2])
            expected = to_tensor(np.asarray(Image.fromarray(big).resize((8, 8), Image.BILINEAR)))
            torch.testing.assert_close(imgs[0], expected, rtol=0, atol=0)
    assert flips == {False, True}
    no_flip = TextImageDataset(split, VIEW, [16], flip=False, seed=2)
    for i in range(6):
        assert any(not f for *_, f in find_window(split.image(VIEW, i), to_uint8(no_flip[i]["imgs"][0])))


def _same(a, b):
    return (all(torch.equal(x, y) for x, y in zip(a["imgs"] + a["wrong_imgs"], b["imgs"] + b["wrong_imgs"]))
            and torch.equal(a["emb"], b["emb"]) and a["caption_index"] == b["caption_index"]
            and a["wrong_index"] == b["wrong_index"])


def test_item_is_a_pure_function_of_seed_epoch_index(split):
    first = TextImageDataset(split, VIEW, [8, 16], seed=5)
    first.set_epoch(3)
    forward = [first[i] for i in range(len(first))]
    second = TextImageDataset(PreparedSplit(split.root, "train"), VIEW, [8, 16], seed=5)
    second.set_epoch(3)
    for i in reversed(range(len(second))):  # another instance, another order
        assert _same(second[i], forward[i])
    second.set_epoch(4)
    assert not all(_same(second[i], forward[i]) for i in range(len(second)))
    other_seed = TextImageDataset(split, VIEW, [8, 16], seed=6)
    other_seed.set_epoch(3)
    assert not all(_same(other_seed[i], forward[i]) for i in range(len(other_seed)))


def test_draw_order_is_the_documented_format(split):
    data = TextImageDataset(split, VIEW, [16], seed=7)
    data.set_epoch(2)
    rng = np.random.default_rng([7, 2, 4])
    caption = int(rng.integers(10))
    wrong = int(rng.integers(len(split)))
    if split.class_ids[wrong] == split.class_ids[4]:
        wrong = int(rng.integers(len(split)))
    item = data[4]
    assert (item["caption_index"], item["wrong_index"]) == (caption, wrong)


def test_num_embeddings_averages_distinct_captions(split):
    data = TextImageDataset(split, VIEW, [16], num_embeddings=4, seed=0)
    for i in range(5):
        item = data[i]
        assert item["caption_index"] == -1
        matches = [c for c in itertools.combinations(range(10), 4)
                   if np.allclose(item["emb"].numpy(), split.embeddings[i, list(c)].mean(axis=0), atol=1e-7)]
        assert len(matches) == 1
    with pytest.raises(UserError, match="num_embeddings"):
        TextImageDataset(split, VIEW, [16], num_embeddings=11)


def _replica_draws(epoch, index, n, second_high, second_low=0):
    """The first two draws after the caption, per the documented draw order."""
    rng = np.random.default_rng([0, epoch, index])
    rng.integers(10)
    return int(rng.integers(n)), int(rng.integers(second_low, second_high))


def test_wrong_rules(split):
    n = len(split)
    split.class_ids = np.zeros(n, dtype=np.int64)  # every pair collides: the rules decide
    v2 = TextImageDataset(split, VIEW, [16], wrong_rule="v2", seed=0)
    v1tf = TextImageDataset(split, VIEW, [16], wrong_rule="v1tf", seed=0)
    for epoch, index in itertools.product(range(3), range(n)):
        v2.set_epoch(epoch)
        v1tf.set_epoch(epoch)
        _, redraw = _replica_draws(epoch, index, n, n)
        assert v2[index]["wrong_index"] == redraw  # one redraw, kept although it collides again
        first, shift = _replica_draws(epoch, index, n, 200, 100)
        assert 100 <= shift < 200 and v1tf[index]["wrong_index"] == (first + shift) % n
    split.class_ids = np.arange(n)  # collides only with itself: the first draw stands
    v2.set_epoch(0)
    v1tf.set_epoch(0)
    for index in range(n):
        first, _ = _replica_draws(0, index, n, n)
        if first != index:
            assert v2[index]["wrong_index"] == v1tf[index]["wrong_index"] == first
    with pytest.raises(UserError, match="wrong_rule"):
        TextImageDataset(split, VIEW, [16], wrong_rule="v3")


def test_dataloader_batches(split):
    batch = next(iter(DataLoader(TextImageDataset(split, VIEW, [8, 16]), batch_size=4)))
    assert batch["imgs"][1].shape == (4, 3, 16, 16) and batch["emb"].shape == (4, 1024)


def test_view_smaller_than_crop_is_refused(split):
    with pytest.raises(UserError, match="smaller than the crop size 32"):
        TextImageDataset(split, VIEW, [16, 32])


def test_eval_pairs_enumerate_every_caption_in_file_order(root):
    test = PreparedSplit(root, "test")
    pairs = eval_pairs(test, None)
    assert len(pairs) == 10 * len(test)
    assert pairs[:12] == [(0, c) for c in range(10)] + [(1, 0), (1, 1)]
    assert eval_pairs(test, 13) == pairs[:13]  # eval.num_samples caps the list, in the same order


def test_split_pickles_without_copying_embeddings(split):
    import pickle

    data = pickle.dumps(split)
    assert len(data) < split.embeddings.nbytes / 10
    back = pickle.loads(data)
    np.testing.assert_array_equal(back.embeddings, split.embeddings)
    np.testing.assert_array_equal(back.image(VIEW, 2), split.image(VIEW, 2))
