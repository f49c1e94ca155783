"""Pillow's uint8 bilinear resize and the loader's normalisation, bit for bit, on any device.

The CPU input path resizes crops with `Image.resize((s, s), Image.BILINEAR)`; the device path
must give the same pixels. Pillow (src/libImaging/Resample.c) computes, per axis, triangle
filter weights in double, normalises them, rounds them to fixed point with 22 fractional bits,
and sums integer products: horizontal pass first, stored as uint8, then the vertical pass.
Here the fixed-point weights form a dense (out x in) matrix in float64: every product and
partial sum is an integer below 2^53, so the matmul is exact in any summation order (CPU,
cuBLAS), and the rounding shift is an exact floor of a power-of-two division.
"""

import functools

import numpy as np
import torch

PRECISION_BITS = 22  # Resample.c: 32 - 8 bits of the pixel - 2 bits of headroom


@functools.lru_cache(maxsize=None)
def _coefficients_np(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) fixed-point weights of Pillow's bilinear filter, as integers in float64."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the triangle filter's support is 1
    ss = 1.0 / filterscale  # Pillow multiplies by the reciprocal; dividing can differ in the last bit
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        row = np.array([max(1.0 - abs((x - center + 0.5) * ss), 0.0) for x in range(xmin, xmax)])
        total = 0.0
        for w in row:  # Pillow's left-to-right sum; np.sum's pairwise order could round differently
            total += w
        if total != 0.0:
            row = row / total
        # C's (int) truncates: +-0.5 then truncation is round-half-away-from-zero.
        weights[xx, xmin:xmax] = np.trunc(np.where(row < 0, -0.5, 0.5) + row * (1 << PRECISION_BITS))
    return weights


@functools.lru_cache(maxsize=None)
def _coefficients(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(_coefficients_np(in_size, out_size)).to(device)


def _fixed_point_round(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8((2^21 + acc) >> 22): floor, then clamp to 0..255 (acc holds exact integers)."""
    shifted = torch.floor((acc + (1 << (PRECISION_BITS - 1))) * (2.0 ** -PRECISION_BITS))
    return shifted.clamp_(0, 255)


def resize_bilinear(images: torch.Tensor, size) -> torch.Tensor:
    """uint8 (..., H, W) -> uint8 (..., h, w), size = s or (h, w): per image exactly Pillow's
    `Image.resize((w, h), Image.BILINEAR)`, on the images' device."""
    h, w = (size, size) if isinstance(size, int) else size
    if images.dtype != torch.uint8:
        raise TypeError(f"resize_bilinear takes uint8 images, got {images.dtype}")
    in_h, in_w = images.shape[-2:]
    x = images.to(torch.float64)
    if w != in_w:  # Pillow skips a pass whose size does not change
        x = _fixed_point_round(x @ _coefficients(in_w, w, images.device).T)
    if h != in_h:
        x = _fixed_point_round(_coefficients(in_h, h, images.device) @ x)
    return x.to(torch.uint8)


@functools.lru_cache(maxsize=None)
def _table(signed: bool, device: torch.device) -> torch.Tensor:
    # Built on the CPU with the CPU path's exact ops: on CUDA, dividing by a Python number is a
    # multiplication by its reciprocal, which can differ from x / 255 in the last bit.
    x = torch.arange(256, dtype=torch.uint8).float().div(255)
    return (x.sub(0.5).div(0.5) if signed else x).to(device)


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 x / 255, bit-identical to `images.float().div(255)` on the CPU."""
    return _table(False, images.device)[images.long()]


def signed_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1], bit-identical to loader.to_tensor's arithmetic on the CPU."""
    return _table(True, images.device)[images.long()]
