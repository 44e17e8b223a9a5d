"""Text-guided editing baselines on a frozen Stable Diffusion, built on the shared core (no diffusion code of
their own): ``method=sdedit`` (image-to-image, Meng et al. 2022) and ``method=ddib`` (DDIM-invert with the source
text, regenerate with the target text; Su et al. 2023). Same ``edit``/``eval`` stages and metrics as the methods."""

from diffedit_lab.methods.baselines.ddib import DDIBMethod
from diffedit_lab.methods.baselines.sdedit import SDEditMethod

__all__ = ["DDIBMethod", "SDEditMethod"]
