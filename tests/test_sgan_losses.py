"""SGAN losses against hand-computed values (spec sgan-reference.md §2) and gradient routing."""

import math

import pytest
import torch

from configs import PARAMS_FILE
from stackgan.config import load_params
from stackgan.errors import UserError
from stackgan.losses.sgan import (SGANLossConfig, adaptive_g_steps, binary_d_adv, binary_g_adv,
                                  discriminator_loss, entropy_loss, feature_cond_loss, g0_loss,
                                  g1_loss, joint_g1_objective, kclass_d_adv, kclass_g_adv,
                                  label_cond_loss, loss_config)
from stackgan.models.sgan import build_sgan
from test_sgan_models import sample_z0, sample_z1

# The reference's weights and switches: params.yaml models.sgan.loss.
REFERENCE = load_params(PARAMS_FILE)["models"]["sgan"]["loss"]


def reference_loss(kind="kclass", **over):
    return SGANLossConfig(kind=kind, **{**REFERENCE, **over})

LN = math.log

# K = 2 logits chosen so Z = sum(exp(l)) is a round number; D = Z / (Z + 1).
REAL_Z2 = torch.tensor([[LN(1.0), LN(1.0)]])  # Z = 2, D = 2/3
FAKE_Z1 = torch.tensor([[LN(0.5), LN(0.5)]])  # Z = 1, D = 1/2
FAKE_Z3 = torch.tensor([[LN(1.0), LN(2.0)]])  # Z = 3, D = 3/4


def close(a, b):
    return abs(float(torch.as_tensor(a).detach()) - b) < 1e-5


def test_kclass_d_adv_by_hand():
    # 0.5 * -log(2/3) + 0.5 * -log(1 - 1/2) = 0.5 * (log 1.5 + log 2) = 0.5 * log 3
    assert close(kclass_d_adv(REAL_Z2, FAKE_Z1), 0.5 * LN(3))


def test_kclass_g_adv_saturating_default_and_paper_switch():
    # reference: log(1 - D) = -log(1 + Z); paper: -log D = log((Z + 1) / Z)
    assert close(kclass_g_adv(FAKE_Z3), -LN(4))
    assert close(kclass_g_adv(FAKE_Z3, paper_form=True), LN(4 / 3))
    cfg = reference_loss(use_cond=False, use_ent=False)
    assert close(g1_loss(cfg, FAKE_Z3, None, None)[0], -LN(4))
    paper = reference_loss(use_cond=False, use_ent=False, paper_g_adv=True)
    assert close(g1_loss(paper, FAKE_Z3, None, None)[0], LN(4 / 3))


def test_binary_adv_by_hand():
    real, fake = torch.tensor([[LN(3)]]), torch.tensor([[LN(1 / 3)]])  # p = 0.75, 0.25
    assert close(binary_d_adv(real, fake), 0.5 * LN(4 / 3) + 0.5 * LN(4 / 3))
    assert close(binary_g_adv(fake), LN(4))  # -log 0.25
    paper = reference_loss(kind="binary", use_cond=False, use_ent=False, paper_g_adv=True)
    assert close(g1_loss(paper, fake, None, None)[0], LN(4))  # binary is -log D(G) either way


def test_entropy_and_cond_terms_by_hand():
    q, z = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    assert close(entropy_loss(q, z), 2.5)  # (1 + 4) / 2
    assert close(label_cond_loss(torch.tensor([[LN(1), LN(3)]]), torch.tensor([1])), -LN(0.75))
    assert close(feature_cond_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])), 2.5)


def test_kclass_discriminator_total():
    q, z = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    total, parts = discriminator_loss(reference_loss(), REAL_Z2, FAKE_Z1, q, z, torch.tensor([0]))
    # class CE on equal logits = log 2; L_D = 1 * class + adv + 10 * ent
    want = LN(2) + 0.5 * LN(3) + 10 * 2.5
    assert close(total, want) and close(parts["total"], want)
    assert close(parts["class"], LN(2)) and close(parts["adv"], 0.5 * LN(3))
    assert close(parts["ent"], 2.5)
    # logged values stay on the device until a log step reads them
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in parts.values())
    no_ent_total, no_ent = discriminator_loss(reference_loss(use_ent=False), REAL_Z2, FAKE_Z1,
                                              labels=torch.tensor([0]))
    assert "ent" not in no_ent and close(no_ent_total, LN(2) + 0.5 * LN(3))


def test_binary_discriminator_total_has_no_class_term():
    real, fake = torch.tensor([[LN(3)]]), torch.tensor([[LN(1 / 3)]])
    q, z = torch.tensor([[0.5]]), torch.tensor([[0.0]])
    total, parts = discriminator_loss(loss_config("mnist", **REFERENCE), real, fake, q, z)
    assert set(parts) == {"adv", "ent", "total"}
    assert close(total, LN(4 / 3) + 10 * 0.25)


def test_generator_totals_and_ablations_by_hand():
    q, z = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
    logits, labels = torch.tensor([[LN(1), LN(3)]]), torch.tensor([1])
    full, parts = g1_loss(reference_loss(), FAKE_Z3, q, z, logits, labels)
    assert close(full, -LN(4) - LN(0.75) + 10 * 2.5)
    assert set(parts) == {"adv", "cond", "ent", "total"}
    no_cond, parts = g1_loss(reference_loss(use_cond=False), FAKE_Z3, q, z)
    assert close(no_cond, -LN(4) + 10 * 2.5) and "cond" not in parts
    no_ent, parts = g1_loss(reference_loss(use_ent=False), FAKE_Z3, None, None, logits, labels)
    assert close(no_ent, -LN(4) - LN(0.75)) and "ent" not in parts
    fc3_fake, fc3_cond = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    g0, _ = g0_loss(reference_loss(), FAKE_Z3, q, z, fc3_fake, fc3_cond)
    assert close(g0, -LN(4) + 2.5 + 10 * 2.5)
    with pytest.raises(ValueError):
        g0_loss(reference_loss(), FAKE_Z3, q, z)


def test_loss_config():
    assert loss_config("mnist", **REFERENCE).kind == "binary"
    assert loss_config("cifar", **REFERENCE).kind == loss_config("synthetic", **REFERENCE).kind == "kclass"
    cfg = loss_config("cifar", **REFERENCE)
    assert (cfg.adv_weight, cfg.cond_weight, cfg.ent_weight, cfg.class_weight) == (1, 1, 10, 1)
    assert not cfg.paper_g_adv and cfg.joint_g0_weight == 0.01
    with pytest.raises(UserError):
        reference_loss(kind="hinge")


def _grad_norms(module, loss):
    module.zero_grad()
    loss.backward()
    return {name: (0.0 if p.grad is None else p.grad.abs().sum().item())
            for name, p in module.named_parameters()}


@pytest.mark.parametrize("which", ["D1", "D0"])
def test_entropy_term_trains_q_head_and_shared_trunk(which):
    torch.manual_seed(0)
    nets = build_sgan("cifar")
    d = nets[which]
    b = 4
    real = torch.rand(b, 256) if which == "D1" else torch.rand(b, 3, 32, 32)
    fake = torch.rand_like(real)
    z = sample_z1(b) if which == "D1" else sample_z0("cifar", b)
    labels = torch.randint(0, 10, (b,))

    def d_loss(cfg):
        real_adv, _ = d(real)
        fake_adv, fake_q = d(fake)
        return discriminator_loss(cfg, real_adv, fake_adv, fake_q, z, labels)[0]

    with_ent = _grad_norms(d, d_loss(reference_loss()))
    without = _grad_norms(d, d_loss(reference_loss(use_ent=False)))
    q_params = [n for n in with_ent if n.startswith("q_head")]
    trunk_params = [n for n in with_ent if n.startswith("trunk") and n.endswith("weight")]
    assert q_params and trunk_params
    assert all(with_ent[n] > 0 for n in q_params)
    assert all(without[n] == 0 for n in q_params)  # no ent: Q head untouched
    # The trunk's gradient changes when ent is added (it receives the Q head's signal);
    # dropout and noise are off so both passes see the same network.
    d.eval()
    ent_only = entropy_loss(d(fake)[1], z)
    ent_grads = _grad_norms(d, ent_only)
    assert all(ent_grads[n] > 0 for n in trunk_params)
    assert all(ent_grads[n] == 0 for n in with_ent if n.startswith("adv_head"))


def test_joint_g0_loss_reaches_g1():
    torch.manual_seed(0)
    nets = build_sgan("cifar", joint=True)
    g1, g0, e, d0, d1 = (nets[k] for k in ("G1", "G0", "E", "D0", "D1"))
    cfg = reference_loss()
    b = 4
    labels = torch.randint(0, 10, (b,))
    z1, z0 = sample_z1(b), sample_z0("cifar", b)
    fc3_hat = g1(labels, z1)
    adv1, q1 = d1(fc3_hat)
    l_g1, _ = g1_loss(cfg, adv1, q1, z1, e.classify(fc3_hat), labels)
    x_hat = g0(fc3_hat, z0)
    adv0, q0 = d0(x_hat)
    l_g0, _ = g0_loss(cfg, adv0, q0, z0, e.features(x_hat), fc3_hat)
    total, parts = joint_g1_objective(cfg, l_g1, l_g0)
    assert close(total, float(parts["g1"] + 0.01 * parts["g0"])) and not parts["total"].requires_grad
    g1_params = list(g1.parameters())
    from_g0 = torch.autograd.grad(l_g0, g1_params, retain_graph=True)
    assert all(g.abs().sum() > 0 for g in from_g0)
    joint_grads = torch.autograd.grad(total, g1_params, retain_graph=True)
    g1_grads = torch.autograd.grad(l_g1, g1_params)
    for j, a, c in zip(joint_grads, g1_grads, from_g0):
        assert torch.allclose(j, a + 0.01 * c, atol=1e-6, rtol=1e-4)


def test_cond_ablation_changes_generator_gradient():
    torch.manual_seed(0)
    nets = build_sgan("cifar")
    g1, e, d1 = nets["G1"], nets["E"], nets["D1"].eval()
    labels, z1 = torch.randint(0, 10, (4,)), sample_z1(4)

    def grads(cfg):
        fc3_hat = g1(labels, z1)
        adv, q = d1(fc3_hat)
        return _grad_norms(g1, g1_loss(cfg, adv, q, z1, e.classify(fc3_hat), labels)[0])

    full, no_cond = grads(reference_loss()), grads(reference_loss(use_cond=False))
    no_ent = grads(reference_loss(use_ent=False))
    assert any(abs(full[n] - no_cond[n]) > 1e-9 for n in full)
    assert any(abs(full[n] - no_ent[n]) > 1e-9 for n in full)


@pytest.mark.parametrize("adv,steps", [(0.9, 1), (0.651, 1), (0.65, 3), (0.51, 3), (0.5, 5),
                                       (0.31, 5), (0.3, 7), (0.0, 7)])
def test_adaptive_g_steps(adv, steps):
    assert adaptive_g_steps(adv) == steps
