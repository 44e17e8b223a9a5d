"""LPIPS as a DDP-friendly torchmetrics ``Metric`` whose ImageNet backbone is loaded from a known file.

torchmetrics ships LPIPS's linear-layer weights inside the package (``lpips_models/{alex,vgg,squeeze}.pth``)
but fetches the torchvision backbone (AlexNet / VGG16 / SqueezeNet1.1) from download.pytorch.org on first
use. Here the backbone comes from ``backbone_weights_path`` or the torch hub cache, or fails with the file
name to provide; nothing is downloaded when HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from diffedit_lab.evaluation.hub_weights import resolve_hub_file
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import load_weights

# net_type → (torchvision constructor, checkpoint file name); URLs are torchvision's own.
BACKBONES = {
    "alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16", "vgg16-397923af.pth"),
    "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
}


def _slices(net: nn.Module) -> list[nn.Module]:
    """torchmetrics' LPIPS backbones are Sequential slices whose children are named by torchvision index."""
    out: list[nn.Module] = []
    for child in net.children():
        out.extend(child if isinstance(child, nn.ModuleList) else [child])
    return out


def build_lpips_net(net_type: str = "alex", backbone_weights_path: str | None = None) -> nn.Module:
    """torchmetrics' LPIPS network (bundled linear layers) with the backbone loaded from a local file."""
    import torchvision
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    if net_type not in BACKBONES:
        raise UserError(f"lpips.net_type must be one of {sorted(BACKBONES)}, got '{net_type}'")
    arch, filename = BACKBONES[net_type]
    url = f"https://download.pytorch.org/models/{filename}"
    path = resolve_hub_file(f"LPIPS {arch} backbone", filename, url, backbone_weights_path, "lpips.backbone_path")
    tv = getattr(torchvision.models, arch)(weights=None)
    try:
        tv.load_state_dict(load_weights(path, f"LPIPS {arch} backbone"))
    except RuntimeError as exc:
        raise UserError(f"LPIPS backbone '{path}' is not a torchvision {arch} checkpoint ({filename})") from exc
    lpips = _NoTrainLpips(net=net_type, pnet_rand=True)  # random backbone now, real weights copied below
    for piece in _slices(lpips.net):
        for index, module in piece.named_children():
            module.load_state_dict(tv.features[int(index)].state_dict())
    return lpips.eval().requires_grad_(False)


class LPIPS(Metric):
    """Mean LPIPS distance over all image pairs; inputs in [-1, 1] (the project convention)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, net_type: str = "alex", backbone_weights_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = build_lpips_net(net_type, backbone_weights_path)
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        scores = self.net(preds.float().clamp(-1, 1), target.float().clamp(-1, 1)).flatten()
        self.score_sum += scores.double().sum()
        self.total += scores.numel()

    def compute(self) -> Tensor:
        return (self.score_sum / self.total).float()
