"""SGAN (Huang et al., CVPR 2017) networks: encoder E, generators G1/G0, discriminators D1/D0.

Two stacks: h0 = image, h1 = fc3 (256-d, post-ReLU), h2 = class label. E0 maps image -> fc3,
E1 maps fc3 -> class logits; G1 maps (y, z1) -> fc3-hat, G0 maps (fc3, z0) -> image.
Architectures follow the authors' Theano/Lasagne code (spec sgan-reference.md §1).

Image space is the reference's, not the [-1, 1] of the StackGAN families: CIFAR-like data is
x/255 minus the per-pixel training mean (G0 ends in a sigmoid, then subtracts that mean);
MNIST is raw [0, 1] pixels.

Discriminators return (adv_logits, q): adv_logits is (B, K) on CIFAR-like data (Improved-GAN
K-class head) and (B, 1) pre-sigmoid on MNIST; q is the Q head's estimate of the z that made
the input (linear on CIFAR, sigmoid on MNIST).
"""

import torch
from torch import nn
import torch.nn.functional as F

from stackgan.errors import UserError

FC3_DIM = 256
Z1_DIM = 50
LRELU_SLOPE = 0.2
# The reference's own BN puts eps=1e-6 inside the sqrt; momentum 0.1 matches its running update.
BN_EPS = 1e-6
BN_MOMENTUM = 0.1

# "synthetic" is the project's embedded dataset (32x32 RGB): it reuses the CIFAR architecture,
# as does SVHN, whose code the authors never released.
_CIFAR_LIKE = ("cifar", "svhn", "synthetic")
DATASETS = _CIFAR_LIKE + ("mnist",)
_FIXED_CLASS_COUNT = {"cifar": 10, "svhn": 10, "mnist": 10}


def _check_dataset(dataset):
    if dataset not in DATASETS:
        raise UserError(f"unknown SGAN dataset {dataset!r}; use one of {', '.join(DATASETS)}")


def z0_dim(dataset):
    _check_dataset(dataset)
    return 50 if dataset == "mnist" else 16


class GaussianNoise(nn.Module):
    """Additive N(0, sigma^2) noise, a regulariser on D's input: active in train mode only."""

    def __init__(self, sigma):
        super().__init__()
        self.sigma = sigma

    def forward(self, x):
        if not self.training:
            return x
        return x + self.sigma * torch.randn_like(x)

    def extra_repr(self):
        return f"sigma={self.sigma}"


def _lrelu():
    return nn.LeakyReLU(LRELU_SLOPE)


def _dense_bn(n_in, n_out, act):
    # BN's beta replaces the wrapped layer's bias, as in the reference.
    return [nn.Linear(n_in, n_out, bias=False),
            nn.BatchNorm1d(n_out, eps=BN_EPS, momentum=BN_MOMENTUM), act]


def _conv_bn(c_in, c_out, stride, padding, act):
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM), act]


def _deconv(c_in, c_out, stride, bn=True):
    # stride 2 "half" doubles the size; stride 1 "valid" adds 4 (kernel 5).
    if stride == 2:
        layer = nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1,
                                   bias=not bn)
    else:
        layer = nn.ConvTranspose2d(c_in, c_out, 5, stride=1, padding=0, bias=not bn)
    if not bn:
        return [layer]
    return [layer, nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU()]


def init_normal(module, std=0.02):
    """Reference init: every Dense/conv weight ~ N(0, std), biases 0 (BN keeps gamma=1, beta=0)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _init_glorot(module):
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    """Pre-trained classifier E: conv-pool-conv-pool-fc3(ReLU)-fc4. E0 = features, E1 = classify."""

    def __init__(self, in_channels, conv_widths, flat_dim, num_classes):
        super().__init__()
        c1, c2 = conv_widths
        self.e0 = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat_dim, FC3_DIM), nn.ReLU())
        self.fc4 = nn.Linear(FC3_DIM, num_classes)

    def features(self, x):
        return self.e0(x)

    def classify(self, fc3):
        return self.fc4(fc3)

    def forward(self, x):
        fc3 = self.features(x)
        return fc3, self.classify(fc3)


class FeatureGenerator(nn.Module):
    """G1: (y, z1) -> fc3-hat. CIFAR embeds z and y in separate BN branches; MNIST concatenates."""

    def __init__(self, num_classes, separate_branches):
        super().__init__()
        self.num_classes = num_classes
        self.z_dim = Z1_DIM
        if separate_branches:
            self.z_branch = nn.Sequential(*_dense_bn(Z1_DIM, 256, nn.ReLU()))
            self.y_branch = nn.Sequential(*_dense_bn(num_classes, 512, nn.ReLU()))
            joint_dim = 256 + 512
        else:
            self.z_branch = nn.Identity()
            self.y_branch = nn.Identity()
            joint_dim = Z1_DIM + num_classes
        # Final layer has no BN: its ReLU output is non-negative like the real fc3.
        self.body = nn.Sequential(*_dense_bn(joint_dim, 512, nn.ReLU()),
                                  *_dense_bn(512, 512, nn.ReLU()),
                                  nn.Linear(512, FC3_DIM), nn.ReLU())

    def forward(self, y, z1):
        """y: int labels (B,) or one-hot/probabilities (B, K); z1: (B, 50)."""
        if y.dim() == 1:
            y = F.one_hot(y.long(), self.num_classes).to(z1.dtype)
        return self.body(torch.cat([self.z_branch(z1), self.y_branch(y)], dim=1))


class ImageGenerator(nn.Module):
    """G0: (fc3, z0) -> image. A dense layer to a small map, then four 5x5 deconvs and a sigmoid."""

    def __init__(self, z_dim, z_embed_layers, base_shape, deconv_widths, image_mean=None):
        super().__init__()
        self.z_dim = z_dim
        embed = _dense_bn(z_dim, 128, nn.ReLU())
        for _ in range(z_embed_layers - 1):
            embed += _dense_bn(128, 128, nn.ReLU())
        self.z_embed = nn.Sequential(*embed)
        self.base_shape = base_shape
        c, h, w = base_shape
        self.project = nn.Sequential(*_dense_bn(FC3_DIM + 128, c * h * w, nn.ReLU()))
        w1, w2, w3, w_out = deconv_widths
        self.deconvs = nn.Sequential(*_deconv(c, w1, 2), *_deconv(w1, w2, 1),
                                     *_deconv(w2, w3, 2), *_deconv(w3, w_out, 1, bn=False),
                                     nn.Sigmoid())
        # Persistent so checkpoints carry the mean the model was trained with.
        self.register_buffer(
            "image_mean", None if image_mean is None else image_mean.detach().clone().float())

    def pixels(self, fc3, z0):
        """The sigmoid output in [0, 1], before mean subtraction (what the IS protocol scores)."""
        h = self.project(torch.cat([fc3, self.z_embed(z0)], dim=1))
        return self.deconvs(h.view(-1, *self.base_shape))

    def forward(self, fc3, z0):
        x = self.pixels(fc3, z0)
        return x if self.image_mean is None else x - self.image_mean


class FeatureDiscriminatorCifar(nn.Module):
    """D1/Q1 on fc3 (CIFAR-like): noise, Dense 512 LReLU, Dense 512 BN LReLU; K-class + linear Q."""

    def __init__(self, num_classes, joint=False):
        super().__init__()
        layers = [GaussianNoise(0.2), nn.Linear(FC3_DIM, 512), _lrelu()]
        if joint:
            layers.append(GaussianNoise(0.2))
        layers += _dense_bn(512, 512, _lrelu())
        if joint:
            layers.append(GaussianNoise(0.2))
        self.trunk = nn.Sequential(*layers)
        self.q_head = nn.Linear(512, Z1_DIM)
        self.adv_head = nn.Linear(512, num_classes)

    def forward(self, fc3):
        h = self.trunk(fc3)
        return self.adv_head(h), self.q_head(h)


class FeatureDiscriminatorMnist(nn.Module):
    """D1/Q1 on fc3 (MNIST): two Dense 256 layers, no BN or noise; binary head, sigmoid Q."""

    def __init__(self, joint=False):
        super().__init__()
        act = nn.ReLU if joint else _lrelu
        self.trunk = nn.Sequential(nn.Linear(FC3_DIM, 256), act(), nn.Linear(256, 256), act())
        self.q_head = nn.Sequential(nn.Linear(256, Z1_DIM), nn.Sigmoid())
        self.adv_head = nn.Linear(256, 1)

    def forward(self, fc3):
        h = self.trunk(fc3)
        return self.adv_head(h), self.q_head(h)


class ImageDiscriminatorCifar(nn.Module):
    """D0/Q0 on 3x32x32 images: 3x3 conv stack to 192x6x6; Q0 on the flat map, adv on its mean."""

    def __init__(self, num_classes, joint=False):
        super().__init__()
        drop = 0.3 if joint else 0.1
        self.trunk = nn.Sequential(
            GaussianNoise(0.05),
            nn.Conv2d(3, 96, 3, padding=1), _lrelu(),
            *_conv_bn(96, 96, 2, 1, _lrelu()),
            nn.Dropout(drop),
            *_conv_bn(96, 192, 1, 1, _lrelu()),
            *_conv_bn(192, 192, 2, 1, _lrelu()),
            nn.Dropout(drop),
            *_conv_bn(192, 192, 1, 0, _lrelu()),
            nn.Conv2d(192, 192, 1), _lrelu())
        self.q_head = nn.Sequential(nn.Flatten(), nn.Linear(192 * 6 * 6, 16))
        self.adv_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(192, num_classes))

    def forward(self, x):
        h = self.trunk(x)
        return self.adv_head(h), self.q_head(h)


class ImageDiscriminatorMnist(nn.Module):
    """D0/Q0 on 1x28x28 images: three 5x5 stride-2 convs, Dense 256; binary head, sigmoid Q."""

    def __init__(self, joint=False):
        super().__init__()
        fc_act = nn.ReLU() if joint else _lrelu()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2), _lrelu(),
            nn.Conv2d(32, 64, 5, stride=2, padding=2), _lrelu(),
            nn.Conv2d(64, 128, 5, stride=2, padding=2), _lrelu(),
            nn.Flatten(), nn.Linear(128 * 4 * 4, 256), fc_act)
        self.q_head = nn.Sequential(nn.Linear(256, 50), nn.Sigmoid())
        self.adv_head = nn.Linear(256, 1)

    def forward(self, x):
        h = self.trunk(x)
        return self.adv_head(h), self.q_head(h)


def _check_image_mean(dataset, image_mean):
    if image_mean is None:
        return torch.zeros(3, 32, 32) if dataset in _CIFAR_LIKE else None
    if dataset == "mnist":
        raise UserError("the SGAN MNIST model uses raw [0,1] pixels; drop image_mean")
    mean = torch.as_tensor(image_mean, dtype=torch.float32)
    if mean.shape == (1, 3, 32, 32):
        mean = mean[0]
    if mean.shape != (3, 32, 32):
        raise UserError(f"SGAN image_mean must be a (3, 32, 32) per-pixel mean of the training "
                        f"images in [0,1], got shape {tuple(mean.shape)}; recompute it")
    return mean


def build_sgan(dataset, num_classes=10, joint=False, image_mean=None):
    """Return {"E", "G1", "G0", "D1", "D0"} for one dataset, reference-initialised.

    image_mean: the per-pixel (3, 32, 32) mean of the training images in [0, 1] that G0
    subtracts (CIFAR-like only); None gives a zero buffer to be filled from a checkpoint.
    joint: the train_joint.py variants of D1/D0. E is returned frozen (requires_grad False):
    the reference never updates it, though gradients still flow through it to its input.
    """
    _check_dataset(dataset)
    fixed = _FIXED_CLASS_COUNT.get(dataset)
    if fixed is not None and num_classes != fixed:
        raise UserError(f"{dataset} has {fixed} classes, got num_classes={num_classes}; "
                        f"drop num_classes or use dataset 'synthetic'")
    if num_classes < 2:
        raise UserError(f"SGAN needs at least 2 classes, got num_classes={num_classes}")
    mean = _check_image_mean(dataset, image_mean)
    if dataset == "mnist":
        nets = {
            "E": Encoder(1, (32, 32), 32 * 4 * 4, num_classes),
            "G1": FeatureGenerator(num_classes, separate_branches=False),
            "G0": ImageGenerator(50, 1, (128, 4, 4), (128, 64, 64, 1)),
            "D1": FeatureDiscriminatorMnist(joint),
            "D0": ImageDiscriminatorMnist(joint),
        }
    else:
        nets = {
            "E": Encoder(3, (64, 128), 128 * 5 * 5, num_classes),
            "G1": FeatureGenerator(num_classes, separate_branches=True),
            "G0": ImageGenerator(16, 2, (256, 5, 5), (256, 128, 128, 3), image_mean=mean),
            "D1": FeatureDiscriminatorCifar(num_classes, joint),
            "D0": ImageDiscriminatorCifar(num_classes, joint),
        }
    for net in nets.values():
        init_normal(net)
    if dataset == "mnist" and joint:
        # mnist/train_joint.py: Glorot-uniform D1, N(0, 0.01) convs in D0.
        _init_glorot(nets["D1"])
        for m in nets["D0"].modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
    nets["E"].requires_grad_(False)
    return nets
