"""Loss pieces both StackGAN versions share: BCE on D's probabilities, and the CA's KL term."""

import torch
import torch.nn.functional as F


def bce(prob, target):
    """BCE against a hard label on a sigmoid *probability*, as the reference (nn.BCELoss).

    Computed in fp32 with autocast off: BCE on probabilities is unsafe in reduced precision,
    and autocast refuses it; the faithful loss keeps the reference's sigmoid-then-BCE form.
    """
    with torch.autocast(device_type=prob.device.type, enabled=False):
        prob = prob.float()
        return F.binary_cross_entropy(prob, torch.full_like(prob, float(target)))


def kl_loss(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)), the reference's *mean* over batch and dimensions."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
