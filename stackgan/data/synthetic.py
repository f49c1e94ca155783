"""The embedded synthetic captioned dataset, written in StackGAN's on-disk layout for CUB.

Each image is a grey cluttered canvas holding one coloured *scene panel* (the panel is the
bounding box, so the 1.5x bbox crop shows some clutter around it, as CUB crops show scenery
around the bird). The panel has a background colour and one object. Five attributes, all
stated by every caption, determine the picture:

    shape       circle, square, triangle, diamond      (class = shape x colour, 20 classes)
    colour      red, green, blue, yellow, purple
    size        small, large
    position    top, middle, bottom   (vertical only: training flips images horizontally,
                                       which would make left/right unlearnable)
    background  white, black, pink, brown

Classes follow CUB naming ("001.Red_Circle"); 15 classes train, 5 test (class-disjoint, every
shape and colour among the train classes), mirroring CUB's 150/50. Per-image jitter (canvas
and panel size, panel place, object place and size, colour) makes images differ.

Files (``generate(out_dir)``), the layout of StackGAN's data/birds plus CUB_200_2011:
    CUB_200_2011/images/<classdir>/<name>.jpg, images.txt, bounding_boxes.txt, classes.txt,
    image_class_labels.txt; {train,test}/filenames.pickle, class_info.pickle,
    char-CNN-RNN-embeddings.pickle (N, 10, 1024; see text_encoder); text/<key>.txt (10
    captions); synthetic_attributes.txt (ground truth: "# <name>: 0=<value> 1=..." header lines,
    then "<key> <shape> <colour> <size> <position> <background>" integer ids).
Pickles are written the way Python 2's cPickle wrote StackGAN's (protocol 2, byte strings,
numpy arrays by numpy.core.multiarray._reconstruct), so they load only with encoding="latin1",
exactly like the authors' files.
"""

import colorsys
import io
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stackgan import seeding
from stackgan.data import staging, text_encoder
from stackgan.errors import UserError

ATTRIBUTES = {
    "shape": ["circle", "square", "triangle", "diamond"],
    "colour": ["red", "green", "blue", "yellow", "purple"],
    "size": ["small", "large"],
    "position": ["top", "middle", "bottom"],
    "background": ["white", "black", "pink", "brown"],
}
ATTRIBUTE_FILE = "synthetic_attributes.txt"
CAPTIONS_PER_IMAGE = 10

OBJECT_RGB = [(215, 35, 35), (35, 165, 60), (40, 75, 215), (235, 210, 40), (135, 55, 175)]
BACKGROUND_RGB = [(240, 240, 235), (25, 25, 30), (245, 175, 195), (115, 75, 40)]
# Fractions of the panel: object centre height per position, object half-extent per size.
POSITION_Y = [0.29, 0.5, 0.71]
SIZE_RADIUS = [0.14, 0.24]


def _class_list():
    """(class_id, shape, colour) in class-id order: shape-major, colour-minor, ids from 1."""
    out = []
    for shape in range(len(ATTRIBUTES["shape"])):
        for colour in range(len(ATTRIBUTES["colour"])):
            out.append((len(out) + 1, shape, colour))
    return out


CLASSES = _class_list()
# A diagonal of the shape x colour grid (Red_Circle, Green_Square, Blue_Triangle,
# Yellow_Diamond, Purple_Circle): every shape and every colour keeps 3+ train classes.
TEST_CLASSES = {1 + (k % len(ATTRIBUTES["shape"])) * len(ATTRIBUTES["colour"]) + k
                for k in range(len(ATTRIBUTES["colour"]))}


def class_name(shape: int, colour: int) -> str:
    return f"{ATTRIBUTES['colour'][colour].title()}_{ATTRIBUTES['shape'][shape].title()}"


# ---------------------------------------------------------------- captions
PHRASES = {
    "shape": [["circle", "disc", "round shape"], ["square", "box", "square block"],
              ["triangle", "triangular shape"], ["diamond", "rhombus", "diamond shape"]],
    "colour": [["red", "crimson"], ["green", "emerald"], ["blue", "azure"],
               ["yellow", "golden"], ["purple", "violet"]],
    "size": [["small", "little", "tiny"], ["large", "big", "huge"]],
    "position": [["at the top", "near the top", "in the upper part"],
                 ["in the middle", "in the centre", "at the center"],
                 ["at the bottom", "near the bottom", "in the lower part"]],
    "background": [["white", "snow white"], ["black", "jet black"], ["pink", "light pink"],
                   ["brown", "dark brown"]],
}
TEMPLATES = [
    "a {size} {colour} {shape} {position} on a {background} background",
    "{position} there is a {size} {colour} {shape}, and the background is {background}",
    "a {colour} {shape} that is {size}, placed {position}, against a {background} backdrop",
    "this picture shows a {size} {shape} coloured {colour} {position} of a {background} panel",
    "{background} background with a {size} {colour} {shape} {position}",
    "the {shape} is {colour} and {size}; it sits {position} on {background}",
    "a {size} {shape} in {colour}, located {position}, {background} background",
    "on a {background} background, a {colour} {shape} of {size} size appears {position}",
    "{size} {colour} {shape}, {position}, {background} backdrop",
    "the image has a {background} background and a {size} {colour} {shape} {position}",
]
_ARTICLE = re.compile(r"\ba (?=[aeiou])")


def make_captions(rng: np.random.Generator, attrs) -> list[str]:
    """CAPTIONS_PER_IMAGE captions, each naming all five attribute values of `attrs`."""
    captions = []
    for _ in range(CAPTIONS_PER_IMAGE):
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        words = {}
        for name, value in zip(ATTRIBUTES, attrs):
            choices = PHRASES[name][value]
            words[name] = choices[rng.integers(len(choices))]
        captions.append(_ARTICLE.sub("an ", template.format(**words)))
    return captions


# ---------------------------------------------------------------- images
def _jitter_colour(rng, rgb, hue=0.02):
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = (h + rng.uniform(-hue, hue)) % 1.0
    v = min(1.0, v * rng.uniform(0.9, 1.06))
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h, s, v))


def _clutter(rng, width, height) -> Image.Image:
    """Neutral grey blotches plus fine grain: the scenery outside the panel."""
    coarse = rng.integers(70, 186, size=(height // 10 + 2, width // 10 + 2), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    grain = rng.integers(-12, 13, size=(height, width))
    grey = np.clip(base.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))


def _object_outline(shape, cx, cy, r):
    if shape == 0:
        return "ellipse", [cx - r, cy - r, cx + r, cy + r]
    if shape == 1:
        h = 0.85 * r
        return "rectangle", [cx - h, cy - h, cx + h, cy + h]
    if shape == 2:  # upright, so it stays a valid triangle under a horizontal flip
        return "polygon", [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    return "polygon", [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)]


def draw_image(rng: np.random.Generator, attrs):
    """Render one image; returns (PIL RGB image, bbox (x, y, w, h) of the panel)."""
    shape, colour, size, position, background = attrs
    width, height = (int(v) for v in rng.integers(120, 171, size=2))
    pw = int(min(width, height) * rng.uniform(0.55, 0.65))
    ph = min(int(pw * rng.uniform(0.88, 1.12)), height - 4)
    px = int(rng.integers(0, width - pw + 1))
    py = int(rng.integers(0, height - ph + 1))
    img = _clutter(rng, width, height)
    draw = ImageDraw.Draw(img)
    draw.rectangle([px, py, px + pw - 1, py + ph - 1],
                   fill=_jitter_colour(rng, BACKGROUND_RGB[background], hue=0.01))
    cx = px + pw * (0.5 + rng.uniform(-0.1, 0.1))
    cy = py + ph * (POSITION_Y[position] + rng.uniform(-0.015, 0.015))
    r = min(pw, ph) * SIZE_RADIUS[size] * rng.uniform(0.94, 1.06)
    kind, outline = _object_outline(shape, cx, cy, r)
    getattr(draw, kind)(outline, fill=_jitter_colour(rng, OBJECT_RGB[colour]))
    return img, (px, py, pw, ph)


# ---------------------------------------------------------------- Python-2 style pickles
class _Py2Pickler:
    """Emit protocol-2 pickles as Python 2.7 cPickle did: str as byte strings (U/T opcodes),
    memo puts from 1, lists via MARK...APPENDS in batches of 1000, numpy arrays through
    numpy.core.multiarray._reconstruct with the raw data as a byte string."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = 1

    def put(self):
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)
        self.memo += 1

    def save(self, obj, memoize=True):
        if obj is None:
            self.out += b"N"
        elif isinstance(obj, bool):
            self.out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, (int, np.integer)):
            self.save_int(int(obj))
        elif isinstance(obj, (str, bytes)):
            data = obj.encode("latin1") if isinstance(obj, str) else obj
            self.out += (b"U" + bytes([len(data)]) if len(data) < 256
                         else b"T" + struct.pack("<I", len(data))) + data
            if memoize:
                self.put()
        elif isinstance(obj, list):
            self.save_list(obj)
        elif isinstance(obj, tuple):
            self.save_tuple(obj)
        elif isinstance(obj, np.ndarray):
            self.save_array(obj)
        else:
            raise TypeError(f"cannot write {type(obj).__name__} as a Python-2 pickle")

    def save_int(self, value):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        elif -(2**31) <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            raise ValueError(f"integer {value} does not fit a Python-2 int pickle opcode")

    def save_list(self, items):
        self.out += b"]"
        self.put()
        if len(items) == 1:
            self.save(items[0])
            self.out += b"a"
            return
        for start in range(0, len(items), 1000):
            self.out += b"("
            for item in items[start:start + 1000]:
                self.save(item)
            self.out += b"e"

    def save_tuple(self, items):
        if not items:
            self.out += b")"
        elif len(items) <= 3:
            for item in items:
                self.save(item, memoize=False)
            self.out += b"\x85\x86\x87"[len(items) - 1:len(items)]
        else:
            self.out += b"("
            for item in items:
                self.save(item, memoize=False)
            self.out += b"t"

    def save_global(self, module, name):
        self.out += b"c" + f"{module}\n{name}\n".encode("ascii")
        self.put()

    def save_array(self, arr):
        arr = np.asarray(arr, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        if arr.dtype.byteorder == ">" or arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot write dtype {arr.dtype} as a Python-2 numpy pickle")
        self.save_global("numpy.core.multiarray", "_reconstruct")
        self.save_global("numpy", "ndarray")
        self.save_tuple((0,))
        self.save("b", memoize=False)
        self.out += b"\x87R"
        self.put()
        self.out += b"("
        self.save_int(1)
        self.save_tuple(tuple(arr.shape))
        self.save_global("numpy", "dtype")
        self.save_tuple((arr.dtype.str[1:], 0, 1))
        self.out += b"R"
        self.put()
        order = "|" if arr.dtype.itemsize == 1 else "<"
        self.save_tuple((3, order, None, None, None, -1, -1, 0))
        self.out += b"b\x89"
        self.save(arr.tobytes(), memoize=False)
        self.out += b"tb"


def py2_pickle_bytes(obj) -> bytes:
    """Protocol-2 pickle of str / int / list / tuple / numpy arrays, as Python 2 wrote it."""
    pickler = _Py2Pickler()
    pickler.save(obj)
    return bytes(pickler.out + b".")


# ---------------------------------------------------------------- writing the dataset
def _attribute_header() -> str:
    lines = ["# StackGAN-repro synthetic ground truth: <key> " + " ".join(f"<{n}>" for n in ATTRIBUTES)]
    for name, values in ATTRIBUTES.items():
        lines.append(f"# {name}: " + " ".join(f"{i}={v}" for i, v in enumerate(values)))
    return "\n".join(lines) + "\n"


def _write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _plan(num_images: int, seed: int):
    """(key, class_id, attrs, rng) per image in images.txt order (by class, then index).
    Each image has its own generator, so an image does not depend on num_images."""
    per_class, extra = divmod(num_images, len(CLASSES))
    plan = []
    for position, (class_id, shape, colour) in enumerate(CLASSES):
        name = class_name(shape, colour)
        for k in range(per_class + (position < extra)):
            rng = seeding.numpy_rng(seed, class_id, k)
            attrs = (shape, colour, *(int(rng.integers(len(ATTRIBUTES[n])))
                                      for n in ("size", "position", "background")))
            plan.append((f"{class_id:03d}.{name}/{name}_{k + 1:04d}", class_id, attrs, rng))
    return plan


def _write_dataset(root: Path, num_images: int, seed: int):
    cub = root / "CUB_200_2011"
    images_txt, bbox_txt, labels_txt, attr_lines = [], [], [], [_attribute_header()]
    splits = {"train": ([], [], []), "test": ([], [], [])}
    for image_id, (key, class_id, attrs, rng) in enumerate(_plan(num_images, seed), start=1):
        img, (x, y, w, h) = draw_image(rng, attrs)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        _write(cub / "images" / f"{key}.jpg", buf.getvalue())
        captions = make_captions(rng, attrs)
        _write(root / "text" / f"{key}.txt", ("\n".join(captions) + "\n").encode("utf-8"))
        images_txt.append(f"{image_id} {key}.jpg\n")
        bbox_txt.append(f"{image_id} {x:.1f} {y:.1f} {w:.1f} {h:.1f}\n")
        labels_txt.append(f"{image_id} {class_id}\n")
        attr_lines.append(f"{key} " + " ".join(str(a) for a in attrs) + "\n")
        keys, class_ids, split_captions = splits["test" if class_id in TEST_CLASSES else "train"]
        keys.append(key)
        class_ids.append(class_id)
        split_captions.extend(captions)
    _write(cub / "images.txt", "".join(images_txt).encode())
    _write(cub / "bounding_boxes.txt", "".join(bbox_txt).encode())
    _write(cub / "image_class_labels.txt", "".join(labels_txt).encode())
    _write(cub / "classes.txt", "".join(f"{c} {c:03d}.{class_name(s, k)}\n" for c, s, k in CLASSES).encode())
    _write(root / ATTRIBUTE_FILE, "".join(attr_lines).encode())
    for split, (keys, class_ids, captions) in splits.items():
        embeddings = text_encoder.encode(captions).reshape(len(keys), CAPTIONS_PER_IMAGE, -1)
        _write(root / split / "filenames.pickle", py2_pickle_bytes(keys))
        _write(root / split / "class_info.pickle", py2_pickle_bytes(class_ids))
        _write(root / split / "char-CNN-RNN-embeddings.pickle", py2_pickle_bytes(embeddings))


# Signs a generated folder, so that generate replaces only folders it wrote itself.
MARKER = ".stackgan-synthetic"
WRITER = "stackgan fetch synthetic"
LAYOUT = {"CUB_200_2011", "text", "train", "test", ATTRIBUTE_FILE}  # the top level _write_dataset makes


def _generated(folder: Path) -> bool:
    """Marked by generate, or (written before markers existed) holding only the layout's top-level
    names with the ground-truth file starting with its header."""
    if staging.marked(folder, MARKER, WRITER):
        return True
    truth = folder / ATTRIBUTE_FILE
    if not truth.is_file() or not {p.name for p in folder.iterdir()} <= LAYOUT:
        return False
    with open(truth, "rb") as f:
        return f.readline() == _attribute_header().encode().splitlines(keepends=True)[0]


def generate(out_dir, num_images: int = 3000, seed: int = 0) -> Path:
    """Write the dataset to `out_dir` (same bytes for the same arguments); returns the path.

    Written into a staging folder beside out_dir and renamed (staging.staged), so an interrupted
    run leaves no partial dataset. An earlier synthetic dataset at out_dir is replaced; any other
    non-empty folder is refused.
    """
    out_dir = Path(out_dir)
    if num_images < len(CLASSES):
        raise UserError(f"synthetic: num_images={num_images} leaves classes empty; use at least {len(CLASSES)}")
    with staging.staged(out_dir, _generated, WRITER) as tmp:
        _write_dataset(tmp, num_images, seed)
        staging.mark(tmp, MARKER, WRITER, num_images=num_images, seed=seed)
    return out_dir
