"""StackGAN-v1 losses against hand-computed values, with stand-in discriminators whose
probabilities are read straight off the inputs: cond_prob = image value * condition value,
uncond_prob = image value. Images are (B, 1, 1, 1), conditions (B, 1)."""

import math

import pytest
import torch
import torch.nn as nn

from stackgan.errors import UserError
from stackgan.losses.v1 import discriminator_loss, generator_loss, kl_loss
from stackgan.models.v1 import Stage1D


class ProductD(nn.Module):
    def __init__(self, uncond):
        super().__init__()
        self.uncond = uncond

    def encode(self, x):
        return x.view(-1)

    def heads(self, features, c):
        probs = [features * c[:, 0]]
        return probs + [features] if self.uncond else probs

    def forward(self, x, c):
        return self.heads(self.encode(x), c)


def imgs(values, requires_grad=False):
    return torch.tensor(values).view(-1, 1, 1, 1).requires_grad_(requires_grad)


def bce_mean(probs, label):
    return -sum(math.log(p if label else 1 - p) for p in probs) / len(probs)


REAL, FAKE, MU = [0.8, 0.5, 0.6], [0.3, 0.2, 0.1], [1.0, 0.5, 0.9]
# cond probs: real*mu = .8 .25 .54; shifted wrong real[:2]*mu[1:] = .4 .45; fake*mu = .3 .1 .09
HAND = {
    "real": bce_mean([0.8, 0.25, 0.54], 1),
    "wrong": bce_mean([0.4, 0.45], 0),
    "fake": bce_mean([0.3, 0.1, 0.09], 0),
    "uncond_real": bce_mean(REAL, 1),
    "uncond_fake": bce_mean(FAKE, 0),
}


def test_stage1_d_loss_shift_mode():
    mu = torch.tensor(MU).view(-1, 1)
    total, parts = discriminator_loss(ProductD(False), imgs(REAL), imgs(FAKE), mu)
    assert set(parts) == {"real", "wrong", "fake"}
    for k in parts:
        assert parts[k] == pytest.approx(HAND[k], abs=1e-6)
    assert total.item() == pytest.approx(HAND["real"] + 0.5 * (HAND["wrong"] + HAND["fake"]), abs=1e-6)


def test_stage2_d_loss_shift_mode():
    mu = torch.tensor(MU).view(-1, 1)
    total, parts = discriminator_loss(ProductD(True), imgs(REAL), imgs(FAKE), mu)
    assert set(parts) == set(HAND)
    for k in parts:
        assert parts[k] == pytest.approx(HAND[k], abs=1e-6)
    expected = (HAND["real"] + HAND["uncond_real"]) / 2 + (HAND["fake"] + HAND["wrong"] + HAND["uncond_fake"]) / 3
    assert total.item() == pytest.approx(expected, abs=1e-6)


def test_d_loss_dataset_wrong_images():
    mu = torch.tensor(MU).view(-1, 1)
    wrong = imgs([0.2, 0.6, 0.5])  # cond probs .2 .3 .45
    total, parts = discriminator_loss(ProductD(False), imgs(REAL), imgs(FAKE), mu, wrong_imgs=wrong)
    wrong_hand = bce_mean([0.2, 0.3, 0.45], 0)
    assert parts["wrong"] == pytest.approx(wrong_hand, abs=1e-6)
    assert total.item() == pytest.approx(HAND["real"] + 0.5 * (wrong_hand + HAND["fake"]), abs=1e-6)


def test_d_loss_detaches_fake_and_mu():
    mu = torch.tensor(MU).view(-1, 1).requires_grad_()
    fake = imgs(FAKE, requires_grad=True)
    total, _ = discriminator_loss(ProductD(True), imgs(REAL), fake, mu)
    assert not total.requires_grad  # nothing in D's loss reaches G or its CA


def test_shift_needs_two_images():
    with pytest.raises(UserError):
        discriminator_loss(ProductD(False), imgs([0.5]), imgs([0.5]), torch.ones(1, 1))


def test_kl_hand_value():
    mu = torch.tensor([[0.5, -1.0]])
    logvar = torch.tensor([[0.0, 1.0]])
    # elements 1+lv-mu^2-e^lv: -0.25 and 1-e; KL = -0.5 * mean = (e - 0.75) / 4
    assert kl_loss(mu, logvar).item() == pytest.approx((math.e - 0.75) / 4, abs=1e-6)
    assert kl_loss(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0


def test_generator_loss_stage2_with_kl_and_mu_detached_for_d():
    mu = torch.tensor([[0.5, -1.0], [0.8, 0.2]], requires_grad=True)
    logvar = torch.tensor([[0.0, 1.0], [0.3, -0.4]])
    fake = imgs([0.3, 0.6], requires_grad=True)
    total, parts = generator_loss(ProductD(True), fake, mu, logvar, kl_coef=2.0)
    adv = bce_mean([0.3 * 0.5, 0.6 * 0.8], 1)  # D sees the first condition column
    uncond = bce_mean([0.3, 0.6], 1)
    elements = [1 + lv - m * m - math.exp(lv) for m, lv in zip([0.5, -1.0, 0.8, 0.2], [0.0, 1.0, 0.3, -0.4])]
    kl = -0.5 * sum(elements) / 4
    assert parts == pytest.approx({"adv": adv, "uncond": uncond, "kl": kl}, abs=1e-6)
    assert total.item() == pytest.approx(adv + uncond + 2.0 * kl, abs=1e-6)
    total.backward()
    # mu's only gradient is the KL's, 2.0 * mu / numel: D received mu.detach()
    torch.testing.assert_close(mu.grad, 2.0 * mu.detach() / 4)
    assert fake.grad is not None and (fake.grad != 0).all()


def test_generator_loss_stage1_without_ca_has_no_kl():
    mu = torch.tensor([[0.5], [0.8]])
    total, parts = generator_loss(ProductD(False), imgs([0.3, 0.6]), mu, None)
    assert set(parts) == {"adv"}
    assert total.item() == pytest.approx(bce_mean([0.15, 0.48], 1), abs=1e-6)


def test_shift_reuses_real_features_with_a_real_discriminator():
    torch.manual_seed(0)
    d = Stage1D(2, c_dim=4)
    real, fake, mu = torch.rand(3, 3, 64, 64) * 2 - 1, torch.rand(3, 3, 64, 64) * 2 - 1, torch.randn(3, 4)
    total, parts = discriminator_loss(d, real, fake, mu)
    torch.manual_seed(0)
    d_again = Stage1D(2, c_dim=4)
    features = d_again.encode(real)  # one trunk pass over the whole real batch, as the reference
    wrong = d_again.heads(features[:-1], mu[1:])[0]
    expected = -torch.log(1 - wrong).mean().item()
    assert parts["wrong"] == pytest.approx(expected, abs=1e-6)
    assert math.isfinite(total.item())
