"""Run in a fresh process by tests/test_reproducibility.py: a few training steps of the networks
the ci profile trains first (the synthetic classifier, a StackGAN-v2 generator and its 64 px
discriminator), printed as the sha256 of the weights they end with and the contract in force.

`python tests/kernel_probe.py native|im2col|onednn`: unpinned, or pinned with that convolution
path. The pins must be set before torch loads, exactly as the CLI sets them, so this file imports
torch only after `reproducibility.pin`.
"""

import hashlib
import json
import sys

from stackgan import reproducibility

if sys.argv[1] != "native":
    reproducibility.pin(2, sys.argv[1])

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from stackgan.metrics.synthetic_classifier import SyntheticClassifier  # noqa: E402
from stackgan.models.v2 import Discriminator, Generator, init_weights  # noqa: E402


def main():
    torch.manual_seed(0)  # init and inputs through torch's own (capability-dispatched) kernels
    clf = SyntheticClassifier(15, [4, 5, 2, 3, 4])
    g = Generator(gf_dim=4, z_dim=16, ef_dim=8, text_dim=32, branch_sizes=(16, 32))
    d = Discriminator(32, df_dim=8, ef_dim=8)
    init_weights(g)
    init_weights(d)
    nets = {"clf": clf, "g": g, "d": d}
    opt = torch.optim.Adam([p for n in nets.values() for p in n.parameters()], lr=2e-4, betas=(0.5, 0.999))
    images = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)
    labels = torch.randint(0, 15, (16,))
    for _ in range(3):
        _, logits, attrs = clf(images)
        loss = F.cross_entropy(logits, labels) + sum(a.logsumexp(1).mean() for a in attrs)
        fakes, mu, logvar = g(torch.randn(16, 16), torch.randn(16, 32))
        cond, uncond = d(fakes[-1], mu)
        loss = loss + F.binary_cross_entropy(cond, torch.ones_like(cond)) + uncond.mean() + logvar.exp().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    h = hashlib.sha256()
    for name, net in nets.items():
        for key, t in net.state_dict().items():
            h.update(f"{name}.{key}".encode() + t.detach().contiguous().numpy().tobytes())
    print(json.dumps({"weights_sha256": h.hexdigest(), "contract": reproducibility.contract()}))


if __name__ == "__main__":
    main()
