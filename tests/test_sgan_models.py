"""SGAN networks: shapes and parameter counts derived by hand from spec sgan-reference.md §1."""

import numpy as np
import pytest
import torch
from torch import nn

from configs import resolved
from stackgan.errors import UserError
from stackgan.methods.sgan import SGANConfig
from stackgan.models.sgan import Z1_DIM, GaussianNoise, build_sgan, z0_dim
from stackgan.models.sgan_variants import SGANSampler, build_networks



def sample_z1(batch_size, generator=None):
    """z1 ~ U[0,1)^50, as the reference draws it."""
    return torch.rand(batch_size, Z1_DIM, generator=generator)


def sample_z0(dataset, batch_size, generator=None):
    """z0 ~ U[0,1)^16 (CIFAR-like) or U[0,1)^50 (MNIST)."""
    return torch.rand(batch_size, z0_dim(dataset), generator=generator)

def n_params(module):
    return sum(p.numel() for p in module.parameters())


def dense(n_in, n_out):  # Dense with bias
    return n_in * n_out + n_out


def dense_bn(n_in, n_out):  # bias removed, BN gamma + beta
    return n_in * n_out + 2 * n_out


def conv(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def conv_bn(c_in, c_out, k):
    return c_in * c_out * k * k + 2 * c_out


def expected_counts(dataset, k):
    if dataset == "mnist":
        return {
            # conv 32 5x5, conv 32 5x5, fc3 512->256, fc4 256->K: ~160k for K=10
            "E": conv(1, 32, 5) + conv(32, 32, 5) + dense(32 * 4 * 4, 256) + dense(256, k),
            # [z1 50, y K] -> 512 BN -> 512 BN -> 256
            "G1": dense_bn(50 + k, 512) + dense_bn(512, 512) + dense(512, 256),
            # z0 50 -> 128 BN; [fc3, z] 384 -> 2048 BN; deconvs 128->128->64->64->1
            "G0": (dense_bn(50, 128) + dense_bn(384, 2048) + conv_bn(128, 128, 5)
                   + conv_bn(128, 64, 5) + conv_bn(64, 64, 5) + conv(64, 1, 5)),
            "D1": dense(256, 256) + dense(256, 256) + dense(256, 50) + dense(256, 1),
            "D0": (conv(1, 32, 5) + conv(32, 64, 5) + conv(64, 128, 5) + dense(2048, 256)
                   + dense(256, 50) + dense(256, 1)),
        }
    return {
        # 64*3*25+64 + 128*64*25+128 + 3200*256+256 + 256*K+K: ~1.03M for K=10
        "E": conv(3, 64, 5) + conv(64, 128, 5) + dense(3200, 256) + dense(256, k),
        # z 50->256 BN, y K->512 BN, 768->512 BN, 512->512 BN, 512->256
        "G1": (dense_bn(50, 256) + dense_bn(k, 512) + dense_bn(768, 512) + dense_bn(512, 512)
               + dense(512, 256)),
        # z 16->128->128 BN; 384->6400 BN; deconvs 256->256->128->128->3
        "G0": (dense_bn(16, 128) + dense_bn(128, 128) + dense_bn(384, 6400)
               + conv_bn(256, 256, 5) + conv_bn(256, 128, 5) + conv_bn(128, 128, 5)
               + conv(128, 3, 5)),
        # 256->512, 512->512 BN; Q1 512->50, adv 512->K
        "D1": dense(256, 512) + dense_bn(512, 512) + dense(512, 50) + dense(512, k),
        # conv 96 (bias), 96 s2 BN, 192 BN, 192 s2 BN, 192 BN, NIN 192; Q0 6912->16; adv 192->K
        "D0": (conv(3, 96, 3) + conv_bn(96, 96, 3) + conv_bn(96, 192, 3) + conv_bn(192, 192, 3)
               + conv_bn(192, 192, 3) + conv(192, 192, 1) + dense(192 * 6 * 6, 16)
               + dense(192, k)),
    }


@pytest.mark.parametrize("dataset,k", [("cifar", 10), ("svhn", 10), ("mnist", 10),
                                       ("synthetic", 20)])
def test_parameter_counts(dataset, k):
    nets = build_sgan(dataset, num_classes=k)
    assert {name: n_params(m) for name, m in nets.items()} == expected_counts(dataset, k)


def test_headline_counts_match_spec():
    counts = expected_counts("cifar", 10)
    assert counts["E"] == 1_031_818  # "about 1.03M"
    assert expected_counts("mnist", 10)["E"] == 160_362  # "about 160k"


@pytest.mark.parametrize("dataset,k,img", [("cifar", 10, (3, 32, 32)), ("mnist", 10, (1, 28, 28)),
                                           ("synthetic", 20, (3, 32, 32))])
def test_shapes(dataset, k, img):
    nets = build_sgan(dataset, num_classes=k)
    b = 3
    y = torch.randint(0, k, (b,))
    z1, z0 = sample_z1(b), sample_z0(dataset, b)
    fc3 = nets["G1"](y, z1)
    assert fc3.shape == (b, 256) and (fc3 >= 0).all()
    x = nets["G0"](fc3, z0)
    assert x.shape == (b, *img)
    feat, logits = nets["E"](x)
    assert feat.shape == (b, 256) and (feat >= 0).all() and logits.shape == (b, k)
    adv_k = 1 if dataset == "mnist" else k
    adv1, q1 = nets["D1"](fc3)
    assert adv1.shape == (b, adv_k) and q1.shape == (b, 50)
    adv0, q0 = nets["D0"](x)
    assert adv0.shape == (b, adv_k) and q0.shape == (b, z0_dim(dataset))
    if dataset == "mnist":  # sigmoid Q heads
        assert ((q1 >= 0) & (q1 <= 1)).all() and ((q0 >= 0) & (q0 <= 1)).all()


@pytest.mark.parametrize("dataset,sizes", [("cifar", [10, 14, 28, 32]), ("mnist", [8, 12, 24, 28])])
def test_deconv_ladder_mirrors_encoder(dataset, sizes):
    g0 = build_sgan(dataset)["G0"]
    seen = []
    for m in g0.modules():
        if isinstance(m, nn.ConvTranspose2d):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-1]))
    g0(torch.rand(2, 256), sample_z0(dataset, 2))
    assert seen == sizes


def test_g0_subtracts_mean_image_after_sigmoid():
    mean = torch.rand(3, 32, 32)
    g0 = build_sgan("cifar", image_mean=mean)["G0"].eval()
    fc3, z0 = torch.rand(2, 256), sample_z0("cifar", 2)
    pix = g0.pixels(fc3, z0)
    assert ((pix > 0) & (pix < 1)).all()
    assert torch.allclose(g0(fc3, z0), pix - mean)
    assert "image_mean" in g0.state_dict()
    assert build_sgan("mnist")["G0"].image_mean is None


def test_g1_accepts_labels_or_one_hot():
    g1 = build_sgan("cifar")["G1"].eval()
    y = torch.tensor([3, 7])
    z1 = sample_z1(2)
    assert torch.allclose(g1(y, z1), g1(nn.functional.one_hot(y, 10).float(), z1))


def test_samplers_are_uniform_unit_cube():
    z1 = sample_z1(500, generator=torch.Generator().manual_seed(0))
    assert z1.shape == (500, 50) and z1.min() >= 0 and z1.max() < 1
    assert abs(z1.mean().item() - 0.5) < 0.02
    assert sample_z0("cifar", 2).shape == (2, 16)
    assert sample_z0("svhn", 2).shape == (2, 16)
    assert sample_z0("mnist", 2).shape == (2, 50)


def test_noise_layer_only_in_train_mode():
    noise = GaussianNoise(0.2)
    x = torch.zeros(2000)
    assert abs(noise.train()(x).std().item() - 0.2) < 0.02
    assert torch.equal(noise.eval()(x), x)


def test_discriminators_deterministic_in_eval_random_in_train():
    torch.manual_seed(0)
    nets = build_sgan("cifar")
    fc3, x = torch.rand(4, 256), torch.rand(4, 3, 32, 32)
    for d, inp in ((nets["D1"], fc3), (nets["D0"], x)):
        d.eval()
        assert torch.equal(d(inp)[0], d(inp)[0])
        d.train()
        assert not torch.equal(d(inp)[0], d(inp)[0])
    d1_mnist = build_sgan("mnist")["D1"].train()  # no noise, no BN, no dropout
    assert torch.equal(d1_mnist(fc3)[0], d1_mnist(fc3)[0])


def test_joint_switch():
    def count(m, kind):
        return sum(isinstance(s, kind) for s in m.modules())

    ind, joint = build_sgan("cifar"), build_sgan("cifar", joint=True)
    assert count(ind["D1"], GaussianNoise) == 1 and count(joint["D1"], GaussianNoise) == 3
    assert {d.p for d in ind["D0"].modules() if isinstance(d, nn.Dropout)} == {0.1}
    assert {d.p for d in joint["D0"].modules() if isinstance(d, nn.Dropout)} == {0.3}
    assert n_params(ind["D1"]) == n_params(joint["D1"])
    mnist_joint = build_sgan("mnist", joint=True)
    assert count(mnist_joint["D1"], nn.ReLU) == 2 and count(mnist_joint["D1"], nn.LeakyReLU) == 0
    glorot_bound = (6 / (256 + 256)) ** 0.5
    w = mnist_joint["D1"].trunk[0].weight
    assert w.abs().max() <= glorot_bound and w.std() > 0.03  # U(-b, b) has std b/sqrt(3)
    assert abs(mnist_joint["D0"].trunk[4].weight.std().item() - 0.01) < 0.001
    assert isinstance(mnist_joint["D0"].trunk[-1], nn.ReLU)
    assert isinstance(build_sgan("mnist")["D0"].trunk[-1], nn.LeakyReLU)


def test_reference_init_and_batchnorm():
    nets = build_sgan("cifar")
    big = nets["G0"].project[0]
    assert big.bias is None  # BN's beta replaces it
    assert abs(big.weight.std().item() - 0.02) < 0.0005 and abs(big.weight.mean().item()) < 0.0005
    bns = [m for net in nets.values() for m in net.modules()
           if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert bns and all(m.eps == 1e-6 and m.momentum == 0.1 for m in bns)
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in bns)
    biases = [m.bias for net in nets.values() for m in net.modules()
              if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None]
    assert all((b == 0).all() for b in biases)


def test_encoder_frozen_but_passes_gradient():
    nets = build_sgan("cifar")
    assert not any(p.requires_grad for p in nets["E"].parameters())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    nets["E"](x)[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [dict(dataset="celeba"), dict(dataset="cifar", num_classes=20),
                                    dict(dataset="synthetic", num_classes=1),
                                    dict(dataset="mnist", image_mean=torch.zeros(1, 28, 28)),
                                    dict(dataset="cifar", image_mean=torch.zeros(3, 28, 28))])
def test_bad_configuration_is_user_error(kwargs):
    with pytest.raises(UserError):
        build_sgan(**kwargs)


def variant_cfg(variant, arch="synthetic", width=0.25, use_cond=True):
    return SGANConfig.of(resolved("synthetic-sgan", variant=variant, arch=arch, num_classes=4, width=width,
                                  dcgan_z_dim=50, loss={"use_cond": use_cond}))


@pytest.mark.parametrize("variant,gens,ds", [("sgan", ("G1", "G0"), ("D1", "D0")), ("dcgan", ("G",), ("D0",))])
def test_variant_networks_and_sampler_state_keys(variant, gens, ds):
    torch.manual_seed(0)
    nets = build_networks(variant_cfg(variant))
    assert set(nets) == {"E", *gens, *ds}
    adv, q = nets["D0"](torch.rand(2, 3, 32, 32))  # narrowed to width 0.25, heads keep their outputs
    assert adv.shape == (2, 4) and q.shape == (2, 16 if variant == "sgan" else 50)
    assert nets["D0"].trunk[1].out_channels == 24
    # model.pt stores this state_dict: its keys are the file format
    keys = SGANSampler(variant_cfg(variant), nets).state_dict()
    assert {k.split(".")[1] for k in keys} == set(gens) and all(k.startswith("gens.") for k in keys)
    assert ("gens.G.label_code.0.weight" in keys) == (variant == "dcgan")


def test_sampler_noise_scheme():
    """Sample i's z1 then z0 come from one generator seeded by SeedSequence([seed, i])."""
    sampler = SGANSampler(variant_cfg("sgan"), build_networks(variant_cfg("sgan")))
    noise = sampler.noise(3, seed=100, start=2)
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([100, 3]).generate_state(1)[0]))
    assert torch.equal(noise["z1"][1], torch.rand(50, generator=gen))
    assert torch.equal(noise["z0"][1], torch.rand(16, generator=gen))
    images = sampler.eval().sample_images([0, 1, 2], seed=100, start=2)
    assert images.shape == (3, 32, 32, 3) and np.array_equal(images[1:], sampler.sample_images([1, 2], 100, 3))


@pytest.mark.parametrize("kwargs,match", [(dict(variant="gan"), "variant must be"),
                                          (dict(variant="sgan", arch="mnist"), "width 1 only"),
                                          (dict(variant="dcgan", arch="mnist", width=1), "width 1 only")])
def test_bad_variant_is_user_error(kwargs, match):
    with pytest.raises(UserError, match=match):
        variant_cfg(**kwargs)
