"""Where every dataset's raw files and every scoring network's weights come from, and how each
unpacks into data/raw/<dataset>/ or data/weights/<weights name>/.

Official locations: ../shared/spec/stackgan-reference.md §5 and sgan-reference.md §5. Pinned
checksums and sizes live in stackgan/checksums.json (keyed "<dataset or weights name>/<file name>"),
so that a checksum recorded on a first download (data/raw/.checksums.json or
data/weights/.checksums.json, same format) can be promoted into the package by copying its entry.
The unpacked result is the layout `stackgan prepare` (or stackgan/metrics/weights.py) reads.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch into the dataset's raw folder.

    unpack: None keeps the file as downloaded; "tar" / "zip" extract it; "auto" extracts when the
    content is a tar or zip and keeps it otherwise (Drive files whose format is undocumented).
    strip: the archive's top folder whose contents go to the raw folder's root (a zip that makes
    `birds/train/...` gives `<raw>/train/...`); ignored when the archive has no such folder.
    keep: after strip, only members under these prefixes are extracted (empty: all).
    expect: paths that must exist in the raw folder afterwards (catches an unexpected archive).
    optional: fetched only when the dataset's params set `fetch_optional: true`.
    min_size: bytes below which a first download with no pinned checksum is refused (an error
    page or a stub, not the file); set well under the real size, which is not published.
    sha256_prefix: the start of the file's sha256 where only that is published (torch.hub names
    its files `<name>-<first 8 hex digits of the sha256>.pth`); the full sha256 and size are then
    recorded on the first verified download, as for a file with no pin at all.
    """

    name: str
    url: str | None = None
    drive_id: str | None = None
    resourcekey: str | None = None
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    unpack: str | None = None
    strip: str | None = None
    keep: tuple = ()
    expect: tuple = ()
    optional: bool = False
    min_size: int | None = None
    note: str = field(default="", compare=False)

    def location(self) -> str:
        return self.url or drive_url(self.drive_id, self.resourcekey)


def drive_direct_url(drive_id: str, resourcekey: str) -> str:
    """Drive's direct download endpoint for a file that needs its resourcekey; confirm=t skips the
    "can't scan for viruses" page of large files."""
    return (f"https://drive.usercontent.google.com/download?id={drive_id}&export=download&confirm=t"
            f"&resourcekey={resourcekey}")


def drive_url(drive_id: str, resourcekey: str | None = None) -> str:
    # Old "0B..." Drive ids now need their resourcekey (spec §5, INC issue #11) where one is known.
    url = f"https://drive.google.com/uc?id={drive_id}&export=download"
    return url + (f"&resourcekey={resourcekey}" if resourcekey else "")


def pinned_checksums() -> dict:
    text = resources.files("stackgan").joinpath("checksums.json").read_text()
    return json.loads(text)["files"]


def _files(name: str, *entries: RemoteFile) -> list[RemoteFile]:
    """The entries of a dataset or weights name with their pinned size and checksum filled in
    from checksums.json."""
    pins = pinned_checksums()
    return [dataclasses.replace(e, **{k: v for k, v in pins.get(f"{name}/{e.name}", {}).items()
                                      if k in ("size", "md5", "sha256")}) for e in entries]


CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
OXFORD_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
COCO_URL = "http://images.cocodataset.org/"
LSUN_URL = "http://dl.yf.io/lsun/scenes/"
MB = 1 << 20
# The train embeddings alone are (N, 10, 1024) float32, N = 8855 birds / 7034 flowers: > 250 MB,
# which deflate hardly shrinks.
EMBEDDING_ZIP_MIN = 50 * MB
EMBEDDING_FILES = ("train/filenames.pickle", "train/char-CNN-RNN-embeddings.pickle",
                   "test/filenames.pickle", "test/char-CNN-RNN-embeddings.pickle")


def _lsun(dataset: str, category: str) -> list[RemoteFile]:
    return _files(dataset, RemoteFile(f"{category}_train_lmdb.zip", url=f"{LSUN_URL}{category}_train_lmdb.zip",
                                      unpack="zip", expect=(f"{category}_train_lmdb/data.mdb",),
                                      min_size=100 * MB))  # the exports are GBs of JPEGs


SOURCES = {
    # StackGAN-v2 data/birds: CUB_200_2011/ from the Caltech archive, train/ test/ [text/] from
    # the authors' birds metadata zip (which unpacks to birds/).
    "cub": _files(
        "cub",
        RemoteFile("CUB_200_2011.tgz", url=CUB_URL, unpack="tar",
                   expect=("CUB_200_2011/images.txt", "CUB_200_2011/bounding_boxes.txt")),
        RemoteFile("birds.zip", drive_id="0B3y_msrWZaXLT1BZdVdycDY5TEE", unpack="zip", strip="birds",
                   expect=EMBEDDING_FILES, min_size=EMBEDDING_ZIP_MIN,
                   note="StackGAN birds metadata: filenames, char-CNN-RNN embeddings"),
        RemoteFile("cvpr2016_cub.tar.gz", drive_id="0B0ywwgffWnLLZW9uVHNjb2JmNlE", unpack="tar",
                   strip="cvpr2016_cub", keep=("text_c10/",), optional=True, min_size=MB,
                   note="Reed et al. captions (text_c10/<class>/<image>.txt), 10 per image"),
    ),
    # StackGAN-v1 TF Data/flowers: jpg/ from 102flowers.tgz, labels and split .mat files, the
    # authors' flowers metadata zip (train/ test/ text_c10/).
    "oxford102": _files(
        "oxford102",
        RemoteFile("102flowers.tgz", url=f"{OXFORD_URL}102flowers.tgz", unpack="tar", expect=("jpg",)),
        RemoteFile("imagelabels.mat", url=f"{OXFORD_URL}imagelabels.mat"),
        RemoteFile("setid.mat", url=f"{OXFORD_URL}setid.mat"),
        RemoteFile("flowers.zip", drive_id="0B3y_msrWZaXLaUc0UXpmcnhaVmM", unpack="zip", strip="flowers",
                   expect=EMBEDDING_FILES, min_size=EMBEDDING_ZIP_MIN,
                   note="StackGAN flowers metadata: filenames, char-CNN-RNN embeddings"),
        RemoteFile("cvpr2016_flowers.tar.gz", drive_id="0B0ywwgffWnLLcms2WWJQRFNSWXM", unpack="tar",
                   strip="cvpr2016_flowers", keep=("text_c10/",), optional=True, min_size=MB,
                   note="Reed et al. captions (text_c10/class_xxxxx/image_xxxxx.txt)"),
    ),
    # StackGAN-Pytorch data/coco: train2014/ val2014/ images, annotations/ (captions), and the
    # authors' COCO embeddings (train; eval captions). The Drive files' format is undocumented.
    "coco": _files(
        "coco",
        RemoteFile("train2014.zip", url=f"{COCO_URL}zips/train2014.zip", unpack="zip", expect=("train2014",)),
        RemoteFile("val2014.zip", url=f"{COCO_URL}zips/val2014.zip", unpack="zip", expect=("val2014",)),
        RemoteFile("annotations_trainval2014.zip", url=f"{COCO_URL}annotations/annotations_trainval2014.zip",
                   unpack="zip", expect=("annotations/captions_train2014.json",)),
        RemoteFile("stackgan-coco-train", drive_id="0B3y_msrWZaXLQXVzOENCY2E3TlU", unpack="auto", strip="coco",
                   min_size=50 * MB, note="StackGAN COCO train embeddings"),
        RemoteFile("stackgan-coco-eval", drive_id="0B3y_msrWZaXLeEs5MTg0RC1fa0U", unpack="auto", strip="coco",
                   min_size=MB // 4, note="StackGAN COCO evaluation captions"),  # 64 float32 1024-d embeddings
    ),
    "lsun-bedroom": _lsun("lsun-bedroom", "bedroom"),
    "lsun-church": _lsun("lsun-church", "church_outdoor"),
    # The SGAN readers take these files as they are (cifar10.py reads the archive directly).
    "cifar10": _files("cifar10", RemoteFile("cifar-10-python.tar.gz",
                                            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")),
    "mnist": _files("mnist", *(RemoteFile(f"{n}.gz", url=f"https://ossci-datasets.s3.amazonaws.com/mnist/{n}.gz")
                               for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))),
    "svhn": _files("svhn", *(RemoteFile(n, url=f"http://ufldl.stanford.edu/housenumbers/{n}")
                             for n in ("train_32x32.mat", "test_32x32.mat"))),
}

# Scoring networks' weights, fetched into data/weights/<name>/ (stackgan/metrics/weights.py reads them).
TORCH_FIDELITY_INCEPTION = "weights-inception-2015-12-05-6726825d.pth"
TORCHVISION_INCEPTION = "inception_v3_google-0cc3c7bd.pth"
# The authors' zip (StackGAN-inception-model README) is reported to hold
# inception_finetuned_models/{birds,flowers}_valid299/ checkpoints; its layout is not published, so
# nothing inside is expected. Each Inception-v3 checkpoint is > 80 MB of float32 that deflate hardly
# shrinks.
STACKGAN_INCEPTION_ZIP = "inception_finetuned_models.zip"
WEIGHTS_DIR = "data/weights"  # `stackgan fetch <weights name>` writes <WEIGHTS_DIR>/<weights name>/
WEIGHTS = {
    # torch-fidelity's port of the TF-exact 2015 Inception (improved-gan / TTUR); torch-fidelity
    # v0.4.0 feature_extractor_inceptionv3.py URL_INCEPTION_V3.
    "inception-2015-12-05": _files("inception-2015-12-05", RemoteFile(
        TORCH_FIDELITY_INCEPTION, sha256_prefix="6726825d", min_size=50 * MB,
        url=f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TORCH_FIDELITY_INCEPTION}")),
    # torchvision's ImageNet Inception-v3 (the legacy pytorch-fid ruler, stackgan/metrics/legacy_fid.py).
    "torchvision-inception-v3": _files("torchvision-inception-v3", RemoteFile(
        TORCHVISION_INCEPTION, url=f"https://download.pytorch.org/models/{TORCHVISION_INCEPTION}",
        sha256_prefix="0cc3c7bd", min_size=50 * MB)),
    # The authors' fine-tuned birds (50 + 1 logits) and flowers (20 + 1) TF checkpoints.
    "stackgan-inception": _files("stackgan-inception", RemoteFile(
        STACKGAN_INCEPTION_ZIP, drive_id="0B3y_msrWZaXLMzNMNWhWdW0zVWs", resourcekey="0-gBxxw4fU6ikmNtkfFSQALw",
        unpack="zip", min_size=50 * MB, note="StackGAN-inception-model: inception model for birds and flowers")),
}

# ImageNet (needs an account, never downloaded): StackGAN-v2 code/miscc/classes.py class lists.
IMAGENET_ARCHIVE = "ILSVRC2012_img_train.tar"
IMAGENET_URL = "https://image-net.org/download-images.php"
DOG_WNIDS = ("n02085620", "n02085782", "n02085936", "n02086079", "n02086240", "n02086646", "n02086910", "n02087046",
             "n02087394", "n02088094", "n02088238", "n02088364", "n02088466", "n02088632", "n02089078", "n02089867",
             "n02089973", "n02090379", "n02090622", "n02090721", "n02091032", "n02091134", "n02091244", "n02091467",
             "n02091635", "n02091831", "n02092002", "n02092339", "n02093256", "n02093428", "n02093647", "n02093754",
             "n02093859", "n02093991", "n02094114", "n02094258", "n02094433", "n02095314", "n02095570", "n02095889",
             "n02096051", "n02096177", "n02096294", "n02096437", "n02096585", "n02097047", "n02097130", "n02097209",
             "n02097298", "n02097474", "n02097658", "n02098105", "n02098286", "n02098413", "n02099267", "n02099429",
             "n02099601", "n02099712", "n02099849", "n02100236", "n02100583", "n02100735", "n02100877", "n02101006",
             "n02101388", "n02101556", "n02102040", "n02102177", "n02102318", "n02102480", "n02102973", "n02104029",
             "n02104365", "n02105056", "n02105162", "n02105251", "n02105412", "n02105505", "n02105641", "n02105855",
             "n02106030", "n02106166", "n02106382", "n02106550", "n02106662", "n02107142", "n02107312", "n02107574",
             "n02107683", "n02107908", "n02108000", "n02108089", "n02108422", "n02108551", "n02108915", "n02109047",
             "n02109525", "n02109961", "n02110063", "n02110185", "n02110341", "n02110627", "n02110806", "n02110958",
             "n02111129", "n02111277", "n02111500", "n02111889", "n02112018", "n02112137", "n02112350", "n02112706",
             "n02113023", "n02113186", "n02113624", "n02113712", "n02113799", "n02113978")
CAT_WNIDS = ("n02121808", "n02124075", "n02123394", "n02122298", "n02123159", "n02123478", "n02122725", "n02123597",
             "n02124484", "n02124157", "n02122878", "n02123917", "n02122510", "n02124313", "n02123045", "n02123242",
             "n02122430")
# Only these 5 of the 17 cat wnids are ILSVRC-2012 classes ("17 classes -> 5 classes with 6500 images").
CAT_WNIDS_IN_ILSVRC = ("n02123045", "n02123159", "n02123394", "n02123597", "n02124075")
IMAGENET = {"imagenet-dog": {"listed": DOG_WNIDS, "required": DOG_WNIDS},
            "imagenet-cat": {"listed": CAT_WNIDS, "required": CAT_WNIDS_IN_ILSVRC}}
