"""Loss pieces both StackGAN versions share: BCE on D's probabilities, and the CA's KL term."""

import contextlib

import torch
import torch.nn.functional as F


def no_autocast(device):
    """autocast off on `device`; a device with no autocast (meta, where stackgan/cost.py counts
    FLOPs) has nothing to turn off."""
    if not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def bce(prob, target):
    """BCE against a hard label on a sigmoid *probability*, as the reference (nn.BCELoss).

    Computed in fp32 with autocast off: BCE on probabilities is unsafe in reduced precision,
    and autocast refuses it; the faithful loss keeps the reference's sigmoid-then-BCE form.
    """
    with no_autocast(prob.device):
        prob = prob.float()
        return F.binary_cross_entropy(prob, torch.full_like(prob, float(target)))


def kl_loss(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)), the reference's *mean* over batch and dimensions."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
