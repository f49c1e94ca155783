"""`stackgan fetch DATASET`: put a dataset's raw files in data/raw/<dataset>/.

The embedded `synthetic` dataset is generated here; the public datasets' official sources are
listed so that a missing one fails with what to download and where to put it.
"""

from pathlib import Path

from stackgan.errors import UserError

# Official sources (../shared/spec/stackgan-reference.md §5, sgan-reference.md §5).
SOURCES = {
    "cub": "CUB-200-2011 images (https://www.vision.caltech.edu/datasets/cub_200_2011/) unpacked as "
           "CUB_200_2011/, plus StackGAN's birds metadata (Google Drive 0B3y_msrWZaXLT1BZdVdycDY5TEE: "
           "train/ test/ text/)",
    "oxford102": "Oxford-102 (https://www.robots.ox.ac.uk/~vgg/data/flowers/102/) plus StackGAN's flowers "
                 "metadata (Google Drive 0B3y_msrWZaXLaUc0UXpmcnhaVmM)",
    "coco": "COCO 2014 train/val images (https://cocodataset.org/#download) plus StackGAN's COCO "
            "embeddings (Google Drive 0B3y_msrWZaXLQXVzOENCY2E3TlU, 0B3y_msrWZaXLeEs5MTg0RC1fa0U)",
    "lsun-bedroom": "LSUN bedroom_train_lmdb (https://github.com/fyu/lsun)",
    "lsun-church": "LSUN church_outdoor_train_lmdb (https://github.com/fyu/lsun)",
    "imagenet-dog": "ILSVRC-2012 train/<wnid>/ folders (https://image-net.org/download, needs an account)",
    "imagenet-cat": "ILSVRC-2012 train/<wnid>/ folders (https://image-net.org/download, needs an account)",
    "cifar10": "cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)",
    "mnist": "the four MNIST IDX .gz files (https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "svhn": "train_32x32.mat and test_32x32.mat (http://ufldl.stanford.edu/housenumbers/)",
}


def fetch(ds, out: Path):
    if ds["source"] == "generated":
        from stackgan.data import synthetic

        synthetic.generate(out, num_images=ds["num_images"], seed=ds["seed"])
        return out
    if out.exists() and any(out.iterdir()):
        return out
    raise UserError(f"dataset '{ds['name']}' is not in {out}/: automatic download is not available yet; "
                    f"download {SOURCES[ds['name']]} and place it in {out}/")
