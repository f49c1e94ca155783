import math

import pytest
import torch

from stackgan.losses import v2 as L


class ConstD(torch.nn.Module):
    """Stand-in discriminator: fixed probabilities per input tensor identity."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x, c=None):
        return [torch.full((x.shape[0],), p) for p in self.table[x.sum().item()]]


def imgs(v):
    return torch.full((2, 3, 4, 4), float(v))


def test_conditional_d_loss_matches_reference_formula():
    # real: cond .9, uncond .8; wrong: cond .3, uncond .6; fake: cond .2, uncond .1
    d = ConstD({imgs(1).sum().item(): (0.9, 0.8), imgs(2).sum().item(): (0.3, 0.6), imgs(3).sum().item(): (0.2, 0.1)})
    total, parts = L.d_loss_conditional(d, imgs(1), imgs(2), imgs(3), torch.zeros(2, 4), uncond_weight=1.0)
    expected = (-math.log(0.9) - math.log(0.8)) + (-math.log(0.7) - math.log(0.6)) + (-math.log(0.8) - math.log(0.9))
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert parts["wrong_uncond"] == pytest.approx(-math.log(0.6), rel=1e-5)  # wrong is *real* for the uncond head
    total0, _ = L.d_loss_conditional(d, imgs(1), imgs(2), imgs(3), torch.zeros(2, 4), uncond_weight=0.0)
    assert total0.item() == pytest.approx(-math.log(0.9) + 0.5 * (-math.log(0.7) - math.log(0.8)), rel=1e-5)


def test_generator_adv_loss_and_weight():
    d = ConstD({imgs(3).sum().item(): (0.25, 0.5)})
    loss = L.g_adv_loss(d, imgs(3), torch.zeros(2, 4), uncond_weight=2.0)
    assert loss.item() == pytest.approx(-math.log(0.25) - 2 * math.log(0.5), rel=1e-5)


def test_kl_is_a_mean_over_elements():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    # element KLs: 0.5*mu^2 = 0.5 ; 0.5*(2 - 1 - log 2) = 0.1534
    expected = (0.5 + 0.5 * (2 - 1 - math.log(2))) / 2
    assert L.kl_loss(mu, logvar).item() == pytest.approx(expected, rel=1e-6)


def test_color_consistency_by_hand_and_detaches_low_resolution():
    lo = torch.zeros(1, 3, 2, 2, requires_grad=True)
    hi = torch.zeros(1, 3, 2, 2)
    hi.data[0, 0] = torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # channel-0 mean 0, variance 1
    hi.data[0, 1] = 0.5  # channel-1 mean 0.5, variance 0
    hi.requires_grad_(True)
    loss = L.color_consistency([lo, hi], weight=50.0)
    # means differ by 0.5 in one of 3 channels: MSE = 0.25/3; covariance differs by 1 in one of 9 entries: 1/9
    assert loss.item() == pytest.approx(50 * 0.25 / 3 + 250 * 1 / 9, rel=1e-6)
    loss.backward()
    assert lo.grad is None and hi.grad.abs().sum() > 0


def test_mean_covariance_shapes():
    mu, cov = L.mean_covariance(torch.randn(4, 3, 8, 8))
    assert mu.shape == (4, 3, 1, 1) and cov.shape == (4, 3, 3)
    assert torch.allclose(cov, cov.transpose(1, 2))
