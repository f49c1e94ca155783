"""StackGAN-v2 losses as the reference trainer computes them (code/trainer.py).

BCE on the discriminators' sigmoid probabilities with hard labels (real 1, fake 0); wrong
images count as *real* for the unconditional head; the KL term is a mean over batch x dims.
"""

import torch
import torch.nn.functional as F

from stackgan.losses.common import bce, kl_loss  # noqa: F401  (kl_loss re-exported)


def d_loss_conditional(d, real, wrong, fake, c, uncond_weight):
    """One discriminator's loss on (real, wrong, fake) images under condition c (G's CA mean)."""
    c = c.detach()
    r, w, f = d(real, c), d(wrong, c), d(fake.detach(), c)
    parts = {"real": bce(r[0], 1), "wrong": bce(w[0], 0), "fake": bce(f[0], 0)}
    if uncond_weight > 0:
        parts["real_uncond"] = uncond_weight * bce(r[1], 1)
        parts["wrong_uncond"] = uncond_weight * bce(w[1], 1)
        parts["fake_uncond"] = uncond_weight * bce(f[1], 0)
        total = sum(parts.values())
    else:
        # The reference halves wrong+fake only when there is no unconditional term.
        total = parts["real"] + 0.5 * (parts["wrong"] + parts["fake"])
    return total, {k: v.detach() for k, v in parts.items()}


def d_loss_unconditional(d, real, fake):
    r, f = d(real), d(fake.detach())
    parts = {"real": bce(r[0], 1), "fake": bce(f[0], 0)}
    return parts["real"] + parts["fake"], {k: v.detach() for k, v in parts.items()}


def g_adv_loss(d, fake, c, uncond_weight):
    """Generator's adversarial loss against one D; c is *not* detached (gradients reach CA)."""
    out = d(fake, c) if c is not None else d(fake)
    loss = bce(out[0], 1)
    if c is not None and uncond_weight > 0:
        loss = loss + uncond_weight * bce(out[1], 1)
    return loss


def mean_covariance(x):
    """Per-image channel mean (B,C,1,1) and channel covariance over pixels (B,C,C)."""
    b, c, h, w = x.shape
    mu = x.mean(dim=(2, 3), keepdim=True)
    centred = (x - mu).reshape(b, c, h * w)
    return mu, torch.bmm(centred, centred.transpose(1, 2)) / (h * w)


def color_consistency(images, weight):
    """Color-consistency regularizer between each pair of adjacent branches.

    lambda1 = weight on the means, lambda2 = 5 * weight on the covariances (the reference's
    COLOR_LOSS and COLOR_LOSS*5); the lower-resolution image is detached, so only the
    higher-resolution branch is pulled toward the lower one.
    """
    total = images[0].new_zeros(())
    for lo, hi in zip(images, images[1:]):
        mu_hi, cov_hi = mean_covariance(hi)
        mu_lo, cov_lo = mean_covariance(lo.detach())
        total = total + weight * F.mse_loss(mu_hi, mu_lo) + 5 * weight * F.mse_loss(cov_hi, cov_lo)
    return total
