"""torch-fidelity extractor `inception-v3-ft`: the TF-exact Inception-v3 trunk with the class
layer of a fine-tuned model (CUB: 50 test classes, Oxford-102: 20), the stand-in for the
authors' fine-tuned TF Inception whose IS is a softmax over its full logits.

Weights: a state dict of torch-fidelity's FeatureExtractorInceptionV3 with `fc.weight`
(num_classes, 2048) and `fc.bias` (num_classes,); the class count is read from the file.
There is no background class (the authors' num_classes+1 output sliced off index 0).
"""

import torch.nn as nn
from torch_fidelity import register_feature_extractor
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from stackgan.errors import UserError
from stackgan.metrics import weights as weights_lookup

EXTRACTOR_NAME = "inception-v3-ft"
REMEDY = "re-run the `classifier` stage for the dataset (it writes <dataset>-ft.pth)"


class FineTunedInception(FeatureExtractorInceptionV3):
    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        # The parent would download ImageNet weights when given no path: never what we mean.
        if feature_extractor_weights_path is None:
            raise UserError("the inception-v3-ft extractor needs its weights file; pass the classifier "
                            "stage's <dataset>-ft.pth as feature_extractor_weights_path")
        path = feature_extractor_weights_path
        state = weights_lookup.load_weights(path, REMEDY)
        weight = state.get("fc.weight")
        if weight is None or weight.dim() != 2 or weight.shape[1] != 2048:
            raise UserError(f"{path} has no fc.weight of shape (num_classes, 2048), so it is not a fine-tuned "
                            f"Inception; {REMEDY}")
        try:
            # The parent torch.loads its weights with weights_only=False: it gets what was read safely above.
            super().__init__(name, features_list, feature_extractor_weights_path=weights_lookup.as_torch_file(state),
                             **kwargs)
        except RuntimeError as err:
            raise UserError(f"{path} does not fit the Inception-v3 network ({str(err).splitlines()[0][:160]}); "
                            f"{REMEDY}") from None

    def load_state_dict(self, state_dict, strict=True, assign=False):
        self.fc = nn.Linear(2048, state_dict["fc.weight"].shape[0])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(EXTRACTOR_NAME, FineTunedInception)
