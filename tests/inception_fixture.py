"""A randomly initialised Inception of torch-fidelity's true architecture, saved as a weights
file: lets the whole IS/FID path run offline in tests. Its scores are meaningless."""

from pathlib import Path

import torch
from torch import nn

from stackgan import seeding
from stackgan.atomic import torch_save
from stackgan.metrics.weights import as_torch_file


def write_random_inception(path, seed=0, num_classes=1008, logit_gain=20.0):
    """Init keeps activations O(1) through the depth (He-normal convs, identity BatchNorm) so
    features still vary from image to image; the pool features come out small (norm ~2-15), so
    `logit_gain` scales the class layer until logits spread by O(1) across images and IS is
    visibly above 1."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        # Its constructor always loads a state dict; skipping that leaves the fresh modules.
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    gen = seeding.torch_generator(seed)
    # Building the modules draws from the global RNG; keep the caller's stream untouched.
    with torch.random.fork_rng(devices=[]):
        net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=as_torch_file({}))
        net.fc = nn.Linear(2048, num_classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * logit_gain / m.in_features**0.5)
                m.bias.zero_()
    state = {k: v.float().contiguous() for k, v in net.state_dict().items()}
    torch_save(state, path)
    return Path(path)
