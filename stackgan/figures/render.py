"""Drawing a figure: tiles laid out by torchvision's make_grid, title and labels by matplotlib
(the Agg canvas, no display and no global pyplot state), written atomically as a PNG whose bytes
depend on the pixels only (no software or date stamp)."""

import textwrap

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from stackgan.atomic import atomic_path

PAD = 2  # white pixels between tiles
DPI = 100
MIN_CELL = 64  # smaller images are enlarged (nearest neighbour) to stay visible


def cell(side):
    """The tile side a figure of side x side images is drawn at."""
    return max(side, MIN_CELL)


def tiles(images, side):
    """uint8 NHWC images (an array or a list of HWC arrays) as float NCHW in [0, 1] at side x side:
    nearest-neighbour when enlarging (a small Stage-I image stays visibly coarse), area when shrinking."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).permute(0, 3, 1, 2).float() / 255
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="nearest" if x.shape[-1] < side else "area")


def grid(rows, side):
    """A (3, H, W) float image of rows of tiles: rows is a list of equally long lists (or arrays) of
    uint8 HWC images, None for an empty (white) cell."""
    ncol = len(rows[0])
    cells = [tiles([img if img is not None else np.full((side, side, 3), 255, np.uint8)], side)
             for row in rows for img in row]
    return make_grid(torch.cat(cells), nrow=ncol, padding=PAD, pad_value=1.0)


def _centres(n, side):
    return [PAD + k * (side + PAD) + side / 2 - 0.5 for k in range(n)]  # pixel k spans k +- 0.5


def save(path, image, side, title, row_labels=None, col_labels=None):
    """Write `image` (grid()'s output, cells of `side` px) at one screen pixel per image pixel,
    the title above, row labels (captions: wrapped) at the left, short column labels above."""
    pixels = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    h, w = pixels.shape[:2]
    wrap = 36
    left = 2.3 if row_labels else 0.1
    top = 0.45 + (0.12 * max(len(textwrap.wrap(t, max(10, side // 4))) for t in col_labels) if col_labels else 0)
    width = max(w / DPI + left + 0.2, 0.075 * len(title) + 0.4)  # the title fits
    fig = Figure(figsize=(width, h / DPI + top + 0.2), dpi=DPI)
    FigureCanvasAgg(fig)
    width, height = fig.get_size_inches()
    if not row_labels:
        left = (width - w / DPI) / 2  # centred under a wider title
    ax = fig.add_axes([left / width, 0.2 / height, (w / DPI) / width, (h / DPI) / height])
    ax.imshow(pixels, interpolation="nearest")
    ax.set_xticks(_centres(len(col_labels), side) if col_labels else [])
    ax.set_yticks(_centres(len(row_labels), side) if row_labels else [])
    if col_labels:
        ax.set_xticklabels(["\n".join(textwrap.wrap(t, max(10, side // 4))) for t in col_labels], fontsize=6)
        ax.xaxis.tick_top()
    if row_labels:
        ax.set_yticklabels(["\n".join(textwrap.wrap(t, wrap)[:max(1, side // 11)]) for t in row_labels], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(title, fontsize=9, y=1 - 0.08 / height, va="top")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
