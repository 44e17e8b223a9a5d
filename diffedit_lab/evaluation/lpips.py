"""LPIPS: torchmetrics' public ``LearnedPerceptualImagePatchSimilarity`` with its backbone from a known file.

torchmetrics ships LPIPS's linear-layer weights inside the package (``lpips_models/{alex,vgg,squeeze}.pth``) but
has torchvision fetch the ImageNet backbone (AlexNet / VGG16 / SqueezeNet1.1) into the torch hub cache on first
use. Here the backbone file is resolved first — ``backbone_weights_path``, else the torch hub cache, else a
download only when online — checked with the safe loader, and handed to torchvision through a temporary hub
cache holding just that file, so building the metric never downloads and a miss is one line naming the file.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.weights import load_weights, resolve_hub_file, torch_hub_checkpoints

# net_type → torchvision architecture whose ImageNet weights (``<arch>_Weights.DEFAULT``) torchmetrics loads.
BACKBONES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


def backbone_url(net_type: str) -> str:
    """The download URL (and so the torch hub file name) of the backbone torchmetrics' LPIPS loads."""
    import torchvision

    if net_type not in BACKBONES:
        raise UserError(f"lpips.net_type must be one of {sorted(BACKBONES)}, got '{net_type}'")
    return torchvision.models.get_model_weights(BACKBONES[net_type]).DEFAULT.url


class LPIPS(LearnedPerceptualImagePatchSimilarity):
    """Mean LPIPS distance over all image pairs; inputs in [-1, 1] (the project convention), clamped.

    ``backbone_weights_path``: a local copy of torchvision's backbone checkpoint (the file named in the error
    when it is missing); without it the torch hub cache is used. Extra kwargs go to torchmetrics' ``Metric``.
    """

    def __init__(self, net_type: str = "alex", backbone_weights_path: str | None = None, **kwargs) -> None:
        url = backbone_url(net_type)
        arch, filename = BACKBONES[net_type], url.rsplit("/", 1)[-1]
        what = f"LPIPS {arch} backbone"
        path = resolve_hub_file(what, filename, url, backbone_weights_path, "lpips.backbone_path")
        load_weights(path, what, expected=f"torchvision's {arch} ImageNet state dict ({filename})")  # refuse code
        try:
            with torch_hub_checkpoints({filename: path}):
                super().__init__(net_type=net_type, reduction="mean", normalize=False, **kwargs)
        except RuntimeError as exc:  # load_state_dict: missing/unexpected keys or wrong shapes
            raise UserError(f"{what}: '{path}' is not a torchvision {arch} checkpoint (expected {filename})") from exc

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds.float().clamp(-1, 1), target.float().clamp(-1, 1))
