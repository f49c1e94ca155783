"""MS-SSIM between pairs of images (Wang, Simoncelli & Bovik 2003), the sample-variability score
StackGAN++ section 6.1 borrows from AC-GAN (Odena et al.): the mean MS-SSIM of random pairs of
images of one class; lower means more varied samples.

The constants are the published ones: an 11-tap Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, five scales weighted (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling
between scales. Filtering is 'valid' (no padding), as in pytorch-msssim, against which
tests/test_metrics_msssim.py checks parity, so the smaller side must exceed 10 * 2**4 = 160 px.
RGB images are scored per channel and the channels averaged.
"""

import numpy as np
import torch
import torch.nn.functional as F

from stackgan import seeding
from stackgan.errors import UserError

SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
DATA_RANGE = 255.0
MIN_SIDE = (WINDOW - 1) * 2 ** (len(SCALE_WEIGHTS) - 1) + 1
PAIR_SEED = 0  # the pairs are fixed by the protocol, not by the sampling seed


def _window(dtype, device) -> torch.Tensor:
    taps = torch.arange(WINDOW, dtype=dtype, device=device) - WINDOW // 2
    g = torch.exp(-(taps ** 2) / (2 * SIGMA ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, valid region only."""
    channels = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(channels, 1, 1, WINDOW), groups=channels)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(channels, 1, WINDOW, 1), groups=channels)


def _ssim_and_cs(x, y, g):
    """Per image and channel: mean SSIM and mean contrast-structure term, each (N, C)."""
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    var_x = _blur(x * x, g) - mu_x ** 2
    var_y = _blur(y * y, g) - mu_y ** 2
    cov = _blur(x * y, g) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    ssim = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1) * cs
    return ssim.mean(dim=(2, 3)), cs.mean(dim=(2, 3))


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of each pair (x[i], y[i]); x, y: (N, C, H, W) in [0, 255]. Returns (N,)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ms_ssim needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)} {tuple(y.shape)}")
    if min(x.shape[-2:]) < MIN_SIDE:
        raise UserError(f"MS-SSIM at 5 scales needs images of at least {MIN_SIDE}x{MIN_SIDE} px, got "
                        f"{x.shape[-2]}x{x.shape[-1]}; score it on the 256 px outputs")
    x, y = x.double(), y.double()  # variances of 255-range values lose digits in float32
    g = _window(x.dtype, x.device)
    terms = []
    for scale in range(len(SCALE_WEIGHTS)):
        ssim, cs = _ssim_and_cs(x, y, g)
        if scale == len(SCALE_WEIGHTS) - 1:
            terms.append(ssim.clamp_min(0))
        else:
            terms.append(cs.clamp_min(0))
            pad = [s % 2 for s in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    weights = torch.tensor(SCALE_WEIGHTS, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return torch.prod(torch.stack(terms) ** weights, dim=0).mean(dim=1)


def draw_pairs(class_ids, pairs: int, scope: str, seed: int = PAIR_SEED) -> list[np.ndarray]:
    """Index pairs, one (P, 2) array per group: `pairs` random pairs of two different images
    within each class that has two or more (scope "class"), or over the whole set ("all")."""
    rng = seeding.numpy_rng(seed)
    class_ids = np.asarray(class_ids)
    groups = [np.flatnonzero(class_ids == c) for c in np.unique(class_ids)] if scope == "class" \
        else [np.arange(len(class_ids))]
    out = []
    for members in groups:
        if len(members) < 2:
            continue
        first = rng.integers(0, len(members), pairs)
        second = (first + rng.integers(1, len(members), pairs)) % len(members)  # never the same image
        out.append(np.stack([members[first], members[second]], axis=1))
    if not out:
        raise UserError(f"MS-SSIM ({scope} pairs) needs a group with at least two images")
    return out


def mean_ms_ssim(images, class_ids, pairs: int, scope: str, batch_size: int = 64, device="cpu") -> dict:
    """images[i] -> uint8 (3, H, W). Returns value (mean over all pairs), std (over the groups'
    means; None for one group), and the numbers of groups and pairs."""
    groups = draw_pairs(class_ids, pairs, scope)
    group_means = []
    for index in groups:
        scores = []
        for start in range(0, len(index), batch_size):
            chunk = index[start:start + batch_size]
            a = torch.stack([torch.as_tensor(images[int(i)]) for i in chunk[:, 0]]).to(device)
            b = torch.stack([torch.as_tensor(images[int(i)]) for i in chunk[:, 1]]).to(device)
            scores.append(ms_ssim(a, b).cpu())
        group_means.append(torch.cat(scores).mean().item())
    all_pairs = sum(len(g) for g in groups)
    value = sum(m * len(g) for m, g in zip(group_means, groups)) / all_pairs
    std = float(np.std(group_means)) if len(groups) > 1 else None
    return {"value": value, "std": std, "groups": len(groups), "pairs": all_pairs, "pair_seed": PAIR_SEED}
