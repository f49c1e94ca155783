"""SGAN losses as the authors' code computes them (spec sgan-reference.md §2, §3.1).

Generator i: L_Gi = adv_weight * adv + cond_weight * cond + ent_weight * ent (1, 1, 10).
Discriminator i: class_weight * CE(real logits, labels) [K-class only] + adv + ent_weight * ent;
the entropy term trains the Q head and the D trunk it shares.

Every loss returns (total tensor, parts): parts holds the *unweighted* terms and the weighted
total as detached 0-d tensors for logging (read on log steps only, so a step does not wait for
the device); a term switched off is absent from both.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stackgan.errors import UserError

KINDS = ("kclass", "binary")


@dataclass(frozen=True)
class SGANLossConfig:
    """kind: "kclass" (Improved-GAN K-class D: CIFAR, SVHN, synthetic) or "binary" (MNIST); the
    rest as params.yaml's models.sgan.loss, which holds the reference's values.

    paper_g_adv: use the paper's non-saturating -log D(G) for the K-class G loss instead of the
    code's saturating log(1 - D(G)); the binary form is -log D(G) either way.
    use_cond / use_ent: ablation switches that drop the term from G (and, for ent, from D).
    """

    kind: str
    adv_weight: float
    cond_weight: float
    ent_weight: float
    class_weight: float
    use_cond: bool
    use_ent: bool
    paper_g_adv: bool
    joint_g0_weight: float

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"unknown SGAN loss kind {self.kind!r}; use one of {', '.join(KINDS)}")


def loss_config(arch, **settings):
    """The loss for an architecture: binary D on MNIST, K-class elsewhere; the weights and
    switches are params.yaml's models.sgan.loss (the reference's values)."""
    return SGANLossConfig(kind="binary" if arch == "mnist" else "kclass", **settings)


def _lse(logits):
    return torch.logsumexp(logits, dim=1)


def kclass_d_adv(real_logits, fake_logits):
    """0.5 * -log D(real) + 0.5 * -log(1 - D(fake)), with D = Z / (Z + 1), Z = sum exp(logits)."""
    real_lse = _lse(real_logits)
    real = -real_lse.mean() + F.softplus(real_lse).mean()
    fake = F.softplus(_lse(fake_logits)).mean()
    return 0.5 * real + 0.5 * fake


def kclass_g_adv(fake_logits, paper_form=False):
    fake_lse = _lse(fake_logits)
    if paper_form:
        return F.softplus(-fake_lse).mean()  # -log D(G)
    return -F.softplus(fake_lse).mean()  # log(1 - D(G)), saturating, as improved-gan does


def binary_d_adv(real_logit, fake_logit):
    real = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
    fake = F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
    return 0.5 * real + 0.5 * fake


def binary_g_adv(fake_logit):
    return F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))


def entropy_loss(q_pred, z):
    """Fixed-variance Gaussian posterior: the variational entropy bound reduces to MSE on z."""
    return torch.mean((q_pred - z) ** 2)


def label_cond_loss(class_logits, labels):
    """G1's conditional loss: CE between E1(fc3-hat) and the conditioning label."""
    return F.cross_entropy(class_logits, labels)


def feature_cond_loss(fc3_of_fake, fc3_cond):
    """G0's conditional loss: MSE between E0(x-hat) and the conditioning fc3."""
    return torch.mean((fc3_of_fake - fc3_cond) ** 2)


def _combine(weighted_terms):
    total = sum(w * t for w, t in weighted_terms.values())
    parts = {name: t.detach() for name, (_, t) in weighted_terms.items()}
    parts["total"] = total.detach()
    return total, parts


def discriminator_loss(cfg, real_adv, fake_adv, fake_q=None, z=None, labels=None):
    """D_i's loss on separately evaluated real and fake batches.

    real_adv/fake_adv: D's adv outputs; fake_q: Q's estimate on the fake batch; z: the z_i that
    made it; labels: real class ids (K-class form only).
    """
    terms = {}
    if cfg.kind == "kclass":
        if labels is None:
            raise ValueError("the K-class discriminator loss needs the real batch's labels")
        terms["adv"] = (1.0, kclass_d_adv(real_adv, fake_adv))
        if cfg.class_weight:
            terms["class"] = (cfg.class_weight, F.cross_entropy(real_adv, labels))
    else:
        terms["adv"] = (1.0, binary_d_adv(real_adv, fake_adv))
    if cfg.use_ent:
        terms["ent"] = (cfg.ent_weight, entropy_loss(fake_q, z))
    return _combine(terms)


def _generator_loss(cfg, fake_adv, fake_q, z, cond_fn, cond_args):
    if cfg.kind == "kclass":
        adv = kclass_g_adv(fake_adv, paper_form=cfg.paper_g_adv)
    else:
        adv = binary_g_adv(fake_adv)
    terms = {"adv": (cfg.adv_weight, adv)}
    if cfg.use_cond:
        if any(a is None for a in cond_args):
            raise ValueError("the conditional loss is on: pass the encoder output and its target")
        terms["cond"] = (cfg.cond_weight, cond_fn(*cond_args))
    if cfg.use_ent:
        terms["ent"] = (cfg.ent_weight, entropy_loss(fake_q, z))
    return _combine(terms)


def g1_loss(cfg, fake_adv, fake_q, z1, class_logits=None, labels=None):
    """L_G1: fake_adv/fake_q = D1(fc3-hat); class_logits = E1(fc3-hat); labels = conditioning y."""
    return _generator_loss(cfg, fake_adv, fake_q, z1, label_cond_loss, (class_logits, labels))


def g0_loss(cfg, fake_adv, fake_q, z0, fc3_of_fake=None, fc3_cond=None):
    """L_G0: fake_adv/fake_q = D0(x-hat); fc3_of_fake = E0(x-hat); fc3_cond = G0's input fc3.

    In joint training fc3_cond is G1's output and must not be detached: the reference lets
    gradient reach G1 through it.
    """
    return _generator_loss(cfg, fake_adv, fake_q, z0, feature_cond_loss, (fc3_of_fake, fc3_cond))


def joint_g1_objective(cfg, loss_g1, loss_g0):
    """CIFAR joint training updates G1 with L_G1 + 0.01 * L_G0 (end-to-end through x-hat)."""
    total = loss_g1 + cfg.joint_g0_weight * loss_g0
    return total, {"g1": loss_g1.detach(), "g0": loss_g0.detach(), "total": total.detach()}


def adaptive_g_steps(d_adv_loss):
    """G steps after one D step on CIFAR, from D's (unweighted) adversarial loss (§3.1), a Python
    float (a float32 tensor would compare against float32-rounded thresholds)."""
    if d_adv_loss > 0.65:
        return 1
    if d_adv_loss > 0.5:
        return 3
    if d_adv_loss > 0.3:
        return 5
    return 7
