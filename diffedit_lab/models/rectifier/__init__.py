"""The Rectifier hypernetwork (paper 003): per-sample offsets Δ for the conv kernels of a frozen diffusion U-Net.

* :mod:`.layers` — which U-Net convolutions are modulated (name patterns) and their kernel shapes;
* :mod:`.encoder` — the global encoder (torchvision's ResNet-34 on the 6-channel concat(x₀, P_t));
* :mod:`.network` — :class:`RectifierNet`: encoder → one subnet per layer (time embedding injected) → the two
  slim heads whose outer product is Δ, and θ̂ = θ·(1 + Δ);
* :mod:`.apply` — running the shared frozen U-Net with per-sample kernels (grouped convolutions or
  ``vmap(functional_call)``), without copying it.
"""

from diffedit_lab.models.rectifier.apply import STRATEGIES, modulated_eps
from diffedit_lab.models.rectifier.layers import LayerSpec, select_layers
from diffedit_lab.models.rectifier.network import RectifierNet, modulate

__all__ = ["STRATEGIES", "LayerSpec", "RectifierNet", "modulate", "modulated_eps", "select_layers"]
