"""`stackgan prepare DATASET`: raw files -> prepared shards, by the dataset's on-disk layout."""

import importlib
from pathlib import Path

from stackgan.data import staging
from stackgan.data.encoded_shards import STORAGES
from stackgan.errors import UserError

ENCODED_LAYOUTS = ("lsun",)  # readers that can keep the source bytes (storage: encoded)


def prepare(ds, raw: Path, out: Path, limit=None):
    storage, layout = ds.get("storage", "pixels"), ds.get("layout")
    if storage not in STORAGES:
        raise UserError(f"datasets.{ds['name']}.storage in params.yaml is {storage!r}; use one of {', '.join(STORAGES)}")
    if storage != "pixels" and layout not in ENCODED_LAYOUTS:
        raise UserError(f"datasets.{ds['name']}.storage in params.yaml is '{storage}', but layout '{layout}' "
                        f"supports only pixels storage (encoded: {', '.join(ENCODED_LAYOUTS)}); remove the setting")
    if not raw.exists():
        raise UserError(f"raw folder {raw}/ does not exist; run `stackgan fetch {ds['name']}` first")
    # Before any reading, and with one message whatever the layout: a folder in the way that
    # prepare did not write is refused (staging.commit checks too, for readers called directly).
    staging.claim_output(out, staging.written_by_prepare, staging.PREPARE)
    if ds["layout"] == "cub":
        from stackgan.data import cub

        expected = ds.get("expected_counts") if limit is None else None
        cub.prepare(raw, out, views=ds["views"], limit=limit, expected_counts=expected, text_dim=ds.get("text_dim"))
        return out
    if ds["layout"] in ("oxford102", "coco", "lsun", "imagenet"):
        reader = importlib.import_module(f"stackgan.data.{ds['layout']}")
        expected = ds.get("expected_counts") if limit is None else None
        extra = {k: ds[k] for k in ("category", "subset") if k in ds}
        if ds["layout"] in ENCODED_LAYOUTS:
            extra["storage"] = storage
        if ds["layout"] in ("oxford102", "coco"):
            extra["text_dim"] = ds.get("text_dim")
        reader.prepare(raw, out, views=ds["views"], limit=limit, expected_counts=expected, **extra)
        return out
    if ds["layout"] in ("cifar10", "mnist", "svhn"):
        reader = importlib.import_module(f"stackgan.data.{ds['layout']}")
        expected = ds.get("expected_counts") if limit is None else None
        reader.prepare(raw, out, limit=limit, expected_counts=expected)
        return out
    raise UserError(f"dataset '{ds['name']}' has layout '{ds['layout']}', which no reader handles; fix "
                    f"datasets.{ds['name']}.layout in params.yaml")
