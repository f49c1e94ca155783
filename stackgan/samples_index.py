"""samples.json, the index `stackgan sample` writes beside its numbered PNGs (the step, seed
and resolution sampled, and per image its caption, class and attributes): one reader for every
stage that scores samples."""

import json
from pathlib import Path

from stackgan.errors import UserError

SAMPLES_FILE = "samples.json"


def read_samples(samples_dir, required=True):
    """The index of a samples folder. Without one: an error, or None when not `required` (a
    folder of images to score need not come from `stackgan sample`)."""
    path = Path(samples_dir) / SAMPLES_FILE
    if not path.is_file():
        if required:
            raise UserError(f"{path} not found; run `stackgan sample` for this experiment first")
        return None
    try:
        index = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); re-run `stackgan sample` for this experiment") from None
    items = index.get("items") if isinstance(index, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) and "file" in item for item in items) \
            or (required and not all(k in index for k in ("step", "resolution"))):
        raise UserError(f"{path} is not a samples index written by `stackgan sample`; re-run `stackgan sample`")
    return index
