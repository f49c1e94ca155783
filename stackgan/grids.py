"""Image grids: rows of tiles (one column per branch or sample, upscaled to one cell size), an
optional caption at the right of each row."""

import textwrap

import torch
from PIL import Image, ImageDraw, ImageFont


CAPTION_WIDTH = 360


def to_uint8(images):
    """[-1, 1] float NCHW -> uint8 NHWC numpy."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def compose(branches, captions, cell=None):
    """branches: list (per branch) of uint8 NHWC arrays with the same N. Returns a PIL image."""
    n = branches[0].shape[0]
    cell = cell or max(b.shape[1] for b in branches)
    font = ImageFont.load_default()
    pad = 2
    width = len(branches) * (cell + pad) + (CAPTION_WIDTH if captions else 0)
    canvas = Image.new("RGB", (width, n * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r in range(n):
        y = r * (cell + pad)
        for c, imgs in enumerate(branches):
            tile = Image.fromarray(imgs[r]).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (c * (cell + pad), y))
        if captions:
            text = "\n".join(textwrap.wrap(captions[r], 56)[: max(1, cell // 12)])
            draw.text((len(branches) * (cell + pad) + 4, y + 2), text, fill="black", font=font)
    return canvas
