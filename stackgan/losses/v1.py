"""StackGAN-v1 losses with the reference PyTorch code's semantics (StackGAN-Pytorch miscc/utils.py).

Both losses condition D on mu.detach(): in v1 no generator gradient reaches the CA net through
D (unlike v2). D outputs sigmoid probabilities and the losses are BCE with hard labels.

Wrong (mismatched) pairs come from one of two sources:
  * wrong_imgs=None (reference PyTorch code): real images [0:B-1] with conditions [1:B], a shift
    by one inside the batch, reusing the real images' D features (no class check);
  * wrong_imgs given (v1 TensorFlow code): images the dataset drew from another class, paired
    with this batch's conditions.

Unconditional v1 (no reference code) takes the plain GAN losses the v2 code uses for its
unconditional runs: D = BCE(real, 1) + BCE(fake, 0), G = BCE(fake, 1); no KL, no wrong pairs.
"""


from stackgan.losses.common import bce, kl_loss  # noqa: F401  (kl_loss re-exported)

from stackgan.errors import UserError


def discriminator_loss(netD, real, fake, mu, wrong_imgs=None):
    """Stage-I D (cond head only): real + (wrong + fake)/2.
    Stage-II D (cond + uncond heads): (real + uncond_real)/2 + (fake + wrong + uncond_fake)/3.
    Returns (total, {"real", "wrong", "fake", ["uncond_real", "uncond_fake"]} as floats)."""
    cond = mu.detach()
    if wrong_imgs is None and real.size(0) < 2:
        raise UserError("the in-batch wrong-pair shift needs a batch of at least 2; raise the batch size")
    real_features = netD.encode(real)
    real_probs = netD.heads(real_features, cond)
    fake_probs = netD(fake.detach(), cond)
    if wrong_imgs is None:
        wrong_prob = netD.heads(real_features[:-1], cond[1:])[0]
    else:
        wrong_prob = netD(wrong_imgs, cond)[0]
    parts = {"real": bce(real_probs[0], 1), "wrong": bce(wrong_prob, 0), "fake": bce(fake_probs[0], 0)}
    if len(real_probs) > 1:
        parts["uncond_real"] = bce(real_probs[1], 1)
        parts["uncond_fake"] = bce(fake_probs[1], 0)
        total = (parts["real"] + parts["uncond_real"]) / 2 + (
            parts["fake"] + parts["wrong"] + parts["uncond_fake"]
        ) / 3
    else:
        total = parts["real"] + 0.5 * (parts["wrong"] + parts["fake"])
    return total, {k: v.detach() for k, v in parts.items()}


def generator_loss(netD, fake, mu, logvar, kl_coef=2.0):
    """BCE(cond_fake, 1) [+ BCE(uncond_fake, 1)] + kl_coef * KL; no KL term when logvar is None
    (a G without a trainable CA: "no CA", or Stage-II reading the text once).
    Returns (total, {"adv", ["uncond"], ["kl"]} as floats)."""
    probs = netD(fake, mu.detach())
    parts = {"adv": bce(probs[0], 1)}
    if len(probs) > 1:
        parts["uncond"] = bce(probs[1], 1)
    total = sum(parts.values())
    if logvar is not None:
        parts["kl"] = kl_loss(mu, logvar)
        total = total + kl_coef * parts["kl"]
    return total, {k: v.detach() for k, v in parts.items()}


def unconditional_discriminator_loss(netD, real, fake):
    """BCE(D(real), 1) + BCE(D(fake), 0) on the uncond head.
    Returns (total, {"real", "fake"} as floats)."""
    (real_prob,) = netD(real)
    (fake_prob,) = netD(fake.detach())
    parts = {"real": bce(real_prob, 1), "fake": bce(fake_prob, 0)}
    return parts["real"] + parts["fake"], {k: v.detach() for k, v in parts.items()}


def unconditional_generator_loss(netD, fake):
    """BCE(D(fake), 1). Returns (total, {"adv"} as a float)."""
    (prob,) = netD(fake)
    adv = bce(prob, 1)
    return adv, {"adv": adv.detach()}
