"""The FID rulers of later papers (AttnGAN, DM-GAN, DF-GAN tables), as torch-fidelity extractors.

`inception-v3-torchvision` (ruler `ptfid-legacy`): the network and forward of pytorch-fid as
DM-GAN's README pins it (mseitzer/pytorch-fid@802da39, 2018-02-10, inception.py; DM-GAN's
eval/FID/inception.py is that file with `align_corners=True` written out). torchvision's
Inception-v3 with its ImageNet weights, run block by block (Conv2d_1a_3x3 .. Mixed_7c, adaptive
average pool), so torchvision's own `transform_input` never runs. Its forward:
- the image as float32 in [0, 1] (x / 255: pytorch-fid's imread / 255, DM-GAN's ToTensor);
- bilinear resize to 299x299 with align_corners=True: 802da39 calls `F.upsample(mode='bilinear')`,
  which meant align_corners=True until PyTorch 0.3.1 (torch's own interpolate/upsample
  docstring); DM-GAN, on PyTorch 0.4.1, passes it explicitly. At 299x299 it is the identity
  (DM-GAN resizes with PIL to 299 before the network);
- per channel x * (std / 0.5) + (mean - 0.5) / 0.5 with ImageNet mean/std: torchvision's
  transform_input formula, meant for an ImageNet-normalised input, applied to the [0, 1] image.
  pytorch-fid replaced it by 2x - 1 only in Feb 2019 (4e366b2); this ruler keeps the 2018 rule.
Features: "2048" (pool3), "logits_unbiased" and "logits" (torchvision's 1000-class fc).
Weights: torchvision's state dict `inception_v3_google-0cc3c7bd.pth`, AuxLogits included (the
older file torchvision 0.2.1 downloaded, without BatchNorm's num_batches_tracked, loads too).

`clean_resize` + `inception-v3-compat-float` (ruler `cleanfid`): clean-fid's "clean" mode
(GaParmar/clean-fid, cleanfid/resize.py make_resizer("PIL", False, "bicubic", (299, 299))):
each channel as a float32 PIL 'F' image, BICUBIC to 299x299, clipped to [0, 255], never
quantised; then its extractor scales (x - 128) / 128 (cleanfid/inception_torchscript.py) and
runs the TF 2015 Inception. clean-fid runs NVIDIA's TorchScript port of that graph; we never
load TorchScript (a serialized program), so the trunk here is torch-fidelity's port of the same
graph and weights (the 2015-12-05 file), fed the float image as is.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch_fidelity import register_feature_extractor
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torchvision.models import inception_v3

from stackgan.errors import UserError
from stackgan.metrics.fidelity import Extractor
from stackgan.metrics import weights as weights_lookup

TORCHVISION_EXTRACTOR = "inception-v3-torchvision"
COMPAT_FLOAT_EXTRACTOR = "inception-v3-compat-float"
TORCHVISION_WEIGHTS = "torchvision-inception-v3"
COMPAT_WEIGHTS = "inception-2015-12-05"
SIZE = 299

# pytorch-fid 802da39 inception.py: torchvision's ImageNet statistics in its normalize_input.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
# pytorch-fid's blocks 0-3 over torchvision's modules (its MaxPool2d(3, 2) are maxpool1/2).
_TORCHVISION_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                      "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                      "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")
# torch-fidelity's FeatureExtractorInceptionV3.forward from its (x - 128) / 128 to the pool.
_COMPAT_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")


def _read_weights(extractor, path, weights_key):
    if path is None:
        # torch-fidelity's habit is to download when given no path: never what we mean.
        raise UserError(f"the {extractor} extractor needs its weights file; pass the path of the "
                        f"{weights_key} weights as feature_extractor_weights_path (see `stackgan fetch {weights_key}`)")
    remedy = weights_lookup.remedy(weights_key)
    return weights_lookup.load_weights(path, remedy), remedy


class TorchvisionInceptionV3(Extractor):
    """pytorch-fid's 2018 InceptionV3 (see the module docstring); input uint8 (N, 3, H, W)."""

    FEATURES = ("2048", "logits_unbiased", "logits")
    METRIC_FEATURES = {"isc": "logits_unbiased", "fid": "2048", "kid": "2048", "prc": "2048"}
    INPUT = (torch.uint8, SIZE)

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        path = feature_extractor_weights_path
        state, remedy = _read_weights(TORCHVISION_EXTRACTOR, path, TORCHVISION_WEIGHTS)
        # Building the modules draws initial weights from the global RNG; keep the caller's stream.
        with torch.random.fork_rng(devices=[]):
            net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise UserError(f"{path} does not fit torchvision's Inception-v3 "
                            f"({str(err).splitlines()[0][:160]}); {remedy}") from None
        net.AuxLogits = None  # training-only branch, never on the path to pool3
        self.net = net.requires_grad_(False).eval()

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
            raise ValueError(f"{self.name} expects uint8 images (N, 3, H, W), got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        x = x.float() / 255
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
        x = torch.cat([x[:, c:c + 1] * (_STD[c] / 0.5) + (_MEAN[c] - 0.5) / 0.5 for c in range(3)], dim=1)
        for block in _TORCHVISION_TRUNK:
            x = getattr(self.net, block)(x)
        pool = torch.flatten(x, 1)
        out = {"2048": pool}
        if "logits_unbiased" in self.features_list:
            out["logits_unbiased"] = pool.mm(self.net.fc.weight.T)
        if "logits" in self.features_list:
            out["logits"] = self.net.fc(pool)
        return tuple(out[f].float() for f in self.features_list)


def clean_resize(img: torch.Tensor) -> torch.Tensor:
    """clean-fid's "clean" resize of one uint8 (3, H, W) image: float32 (3, 299, 299) in [0, 255]."""
    if not (torch.is_tensor(img) and img.dtype == torch.uint8 and img.dim() == 3 and img.shape[0] == 3):
        raise ValueError(f"clean_resize expects a uint8 image (3, H, W), got "
                         f"{getattr(img, 'dtype', type(img).__name__)} {tuple(getattr(img, 'shape', ()))}")
    channels = img.cpu().numpy().astype(np.float32)
    # A float32 2-d array is a PIL 'F' image, the mode clean-fid asks for.
    resized = [np.asarray(Image.fromarray(c).resize((SIZE, SIZE), resample=Image.BICUBIC)).clip(0, 255)
               for c in channels]
    return torch.from_numpy(np.stack(resized).astype(np.float32))


class CompatFloatInceptionV3(Extractor, FeatureExtractorInceptionV3):
    """torch-fidelity's TF 2015 Inception fed clean_resize's float32 (N, 3, 299, 299) images."""

    FEATURES = ("2048",)
    METRIC_FEATURES = {"fid": "2048", "kid": "2048", "prc": "2048"}
    INPUT = (torch.float32, SIZE)

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        path = feature_extractor_weights_path
        state, remedy = _read_weights(COMPAT_FLOAT_EXTRACTOR, path, COMPAT_WEIGHTS)
        try:
            # The parent torch.loads its weights with weights_only=False: it gets what was read safely above.
            super().__init__(name, features_list, feature_extractor_weights_path=weights_lookup.as_torch_file(state),
                             **kwargs)
        except RuntimeError as err:
            raise UserError(f"{path} does not fit the TF-exact Inception-v3 "
                            f"({str(err).splitlines()[0][:160]}); {remedy}") from None

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.float32 and x.dim() == 4
                and tuple(x.shape[1:]) == (3, SIZE, SIZE)):
            raise ValueError(f"{self.name} expects float32 images (N, 3, {SIZE}, {SIZE}) in [0, 255] "
                             f"(clean_resize's output), got {getattr(x, 'dtype', type(x).__name__)} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        # clean-fid's InceptionV3W.forward: x - 128, then / 128, on the unquantised image.
        x = (x.to(self.feature_extractor_internal_dtype) - 128) / 128
        for block in _COMPAT_TRUNK:
            x = getattr(self, block)(x)
        return (torch.flatten(x, 1).to(torch.float32),)


for _name, _cls in ((TORCHVISION_EXTRACTOR, TorchvisionInceptionV3), (COMPAT_FLOAT_EXTRACTOR, CompatFloatInceptionV3)):
    if _name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(_name, _cls)
