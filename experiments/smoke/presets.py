"""The paper presets `make smoke-real` runs at their real shapes (random weights, ``debug=real_shapes``).

Each :class:`Preset` is the command line a user would type for the paper's setting (``overrides``), the stages the
paper's tables use (each run as its own process on one run dir), and two sets of caps on top:

* ``caps``: on every machine — fewer scanned timesteps, images, sampler steps; FID/KID/LPIPS dropped (no Inception
  or AlexNet weights offline); the preset's datasets replaced by the bundled sample photos at the preset's
  resolution (``data=samples``) — the datasets the presets name are absent here and on a lent GPU;
* ``cpu_caps``: only on the CPU — the training batch (``data.batch_size``, no accumulation), so a stage takes
  minutes on two cores; the GPU run (`make gpu-check`) keeps the preset's batch and precision.

``debug=real_shapes`` caps every training stage at 2 optimiser steps (``trainer.max_steps=2``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

REAL_SHAPES = ["debug=real_shapes", "logger=csv"]

# SDD: a couple of timesteps × one code for `select`; one code edited/scored; FID/KID dropped
_SDD_CAPS = [
    "method.selection.timesteps=[300,700]",
    "method.selection.num_codes=1",
    "method.selection.batch_size=1",
    "method.selection.cache_dir=null",  # the run dir only: a later smoke run scans again (its time is measured)
    "method.fit.preview_codes=1",
    "method.edit.max_images=1",
    "method.eval.max_images=1",
    "method.eval.batch_size=1",
    "method.eval.metrics=[clip_dir,identity,latent_l2]",
]

# SDD on the CPU: batch 1 (its fp32 backward through the VAE encoder at 512 px takes ~4 GB per code)
_SDD_CPU = ["data.batch_size=1"]

# Asyrp inside SDFT's edit stage (and alone): one image, a 4-point grid (2 trained timesteps ≥ t_edit), 4 steps
_ASYRP_CAPS = [
    "method.fit.num_images=1",
    "method.fit.epochs=1",
    "method.fit.train_steps=4",
    "method.fit.preview_images=1",
    "method.invert.steps=4",
    "method.invert.batch_size=1",
    "method.invert.cache_dir=null",
    "method.edit.steps=4",
    "method.edit.max_images=1",
    "method.edit.batch_size=1",
    "method.eval.max_images=1",
    "method.eval.batch_size=1",
    "method.eval.metrics=[clip_dir,identity]",
]


def _sdft_caps() -> list[str]:
    nested = ",".join(f"'{o}'" for o in _ASYRP_CAPS)
    return [
        "data=samples",
        "data.resolution=256",
        "data@method.translate.source=samples",  # FFHQ faces → the sample photos (the preset's ratio split kept)
        "method.fit.fid_every=0",  # FID during training needs Inception weights
        "method.fit.preview_images=1",
        "method.sample.steps=4",
        "method.sample.num_images=1",
        "method.sample.batch_size=1",
        "method.eval.generation_images=0",  # FID/KID only
        "method.eval.pair_images=0",  # LPIPS only
        "method.eval.translation_images=1",
        "method.eval.translation_metrics=[psnr,ssim]",
        "method.translate.method=egsde",
        "method.translate.steps=4",  # strength 0.5: 2 EGSDE steps
        "method.translate.max_images=1",
        "method.translate.batch_size=1",
        "method.edit.prompts=[smiling]",
        f"method.edit.overrides=[{nested}]",
    ]


_RECTIFIER_CAPS = [
    "data=samples",
    "data.resolution=256",
    "method.fit.preview_images=1",
    "method.reconstruct.steps=4",
    "method.reconstruct.max_images=1",
    "method.reconstruct.batch_size=1",
    "method.reconstruct.metrics=[l1,l2,ssim,psnr,eps_mse]",
    "method.edit.train_images=2",
    "method.edit.preview_images=1",
    "method.edit.sample.steps=4",
    "method.edit.sample.max_images=1",
    "method.edit.sample.batch_size=1",
    "method.edit.sample.metrics=[clip_dir,identity]",
    "method.eval.folder.metrics=[clip_dir,identity]",
]

_BASELINE_CAPS = [
    "data=samples",
    "data.resolution=512",  # SD v1's own size: the photos are read at 512 and edited there
    "method.edit.max_images=1",
    "method.edit.batch_size=1",
    "method.eval.max_images=1",
    "method.eval.batch_size=1",
    "method.eval.metrics=[clip_dir,identity]",
]


def _entry(name: str, overrides: list[str]) -> str:
    return f"method.entries.{name}.overrides=[{','.join(repr(o) for o in overrides)}]"


# debug=real_shapes's trainer.max_steps=2 does not reach the nested entries (only `common` does): given here
_COMPARE_SDD = [*(o for o in _SDD_CAPS if "max_images" not in o), "trainer.max_steps=2"]


def _compare_caps() -> list[str]:
    entry = _entry

    sd_steps = ["method.num_steps=4", "method.eval.metrics=[clip_dir,identity]"]
    return [
        "method.num_images=1",
        "method.figure_images=1",
        entry("sdd", _COMPARE_SDD),
        *(entry(f"sdedit_{a}", [f"method.strength=0.{a // 10}", *sd_steps]) for a in (30, 50, 70)),
        entry("ddib", ["method.num_steps=2", "method.eval.metrics=[clip_dir,identity]"]),
        entry(
            "rectifier",
            [
                "method.eval.folder.metrics=[clip_dir,identity]",
                "method.fit.preview_images=1",
                "method.edit.train_images=1",
                "method.edit.preview_images=1",
                "method.edit.sample.steps=4",
                "method.edit.sample.batch_size=1",
                "method.edit.sample.metrics=[clip_dir,identity]",
                "data.batch_size=1",
                "trainer.max_steps=2",
            ],
        ),
    ]


ESTIMATE_STAGES = {"sdd": ("fit",), "sdft": ("fit",), "rectifier": ("fit", "edit"), "asyrp": ("fit",)}
MEMORY_KNOBS = {
    "sdft": {"gradient checkpointing of the student": "+prior.gradient_checkpointing=true"},
    "rectifier": {"gradient checkpointing of the base U-Net": "+prior.gradient_checkpointing=true",
                  "fewer modulated layers": "method.net.layers=[mid_block.*,up_blocks.3.*]"},
    "asyrp": {"gradient checkpointing of the prior": "+prior.gradient_checkpointing=true"},
    "sdd": {"attention slicing of the teacher": "prior.attention_slicing=true"},
}  # fmt: skip


def batch_maker(family: str, method, cfg, stage: str):
    """``b -> batch`` of ``b`` training items as the stage's loader yields them (contents do not matter: the
    weights are random; shapes and dtypes do), on the method's device."""
    import torch

    device = method.device
    gen = torch.Generator().manual_seed(0)
    index = lambda b: torch.arange(b)  # noqa: E731
    if family == "sdd":
        return lambda b: {"seed": torch.arange(b), "index": index(b)}
    if family == "asyrp":
        size = int(method.prior.image_size)
        return lambda b: {
            "x0": (torch.rand(b, 3, size, size, generator=gen) * 2 - 1).to(device),
            "x_T": torch.randn(b, 3, size, size, generator=gen).to(device),
            "index": index(b),
        }
    res = cfg.data.resolution
    h, w = (res, res) if isinstance(res, int) else tuple(res)
    return lambda b: {"image": (torch.rand(b, 3, h, w, generator=gen) * 2 - 1).to(device), "index": index(b)}


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # sdd | sdft | rectifier | asyrp | baselines | compare
    overrides: list[str]  # the paper's command line
    stages: list[str]  # each its own process, in this order, on one run dir
    caps: list[str] = field(default_factory=list)  # every machine
    cpu_caps: list[str] = field(default_factory=list)  # CPU only (the training batch)
    note: str = ""
    peak_gb: float = 8.0  # about the peak RSS of its largest CPU stage (for --wait-for-memory on a shared machine)
    # the batches the activation bytes are measured at on the CPU: (1, 2) → affine in the batch; (1,) → proportional
    # (for the heavy fp32 CPU forwards of SDD and the Rectifier, whose saved tensors are all per sample)
    probe_batches: tuple[int, ...] = (1, 2)

    def stage_peak_gb(self, stages: str) -> float:
        """About the peak RSS of a process running ``stages`` (comma list): ``peak_gb`` for a training stage or a
        Stable Diffusion one, 5 GB for the other inference stages (a U-Net or generator, CLIP, ArcFace)."""
        names = set(stages.split(","))
        heavy = self.family in ("baselines", "compare") or names & set(self.estimate) or "select" in names
        return self.peak_gb if heavy else min(self.peak_gb, 5.0)

    @property
    def estimate(self) -> tuple[str, ...]:
        """The training stages whose one step gets a GPU-memory estimate (:mod:`.estimate`)."""
        return ESTIMATE_STAGES.get(self.family, ())

    @property
    def memory_knobs(self) -> dict[str, str]:
        """What lowers the memory of this family's training step when even batch 1 does not fit."""
        return MEMORY_KNOBS.get(self.family, {})

    @property
    def batch_key(self) -> str:
        return "method.fit.batch_size" if self.family == "asyrp" else "data.batch_size"

    def train_batch(self, cfg, stage: str) -> tuple[int, int]:
        """(batch size, gradient accumulation) of ``stage``'s training step in the composed config."""
        if self.family == "asyrp":
            return int(cfg.method.fit.batch_size), 1
        return int(cfg.data.batch_size), int(cfg.trainer.get("accumulate_grad_batches") or 1)

    def command(self, stage: str | list[str] | None = None, device: str = "cpu", extra: list[str] = ()) -> list[str]:
        """The overrides of a run of ``stage`` (a name or a list; None: the preset's whole sequence); ``extra``
        overrides go last."""
        stages = list(self.stages) if stage is None else [stage] if isinstance(stage, str) else list(stage)
        out = [*self.overrides, *REAL_SHAPES, *self.caps, *(self.cpu_caps if device == "cpu" else [])]
        return [*out, f"stage=[{','.join(stages)}]", *extra]


_SDD_STAGES = ["select", "fit", "edit", "eval"]
_SDFT_STAGES = ["fit", "sample", "eval", "train_classifier", "translate", "edit"]
_SDFT_CPU = ["data.batch_size=2", "trainer.accumulate_grad_batches=1"]
_RECTIFIER_STAGES = ["fit", "reconstruct", "edit", "eval"]
_PROPORTIONAL = (1,)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("sdd_faces", "sdd", ["method=sdd", "prompt=angry"], _SDD_STAGES, _SDD_CAPS, _SDD_CPU,
               note="StyleGAN2 FFHQ 1024 + SD v1.4 teacher + ArcFace; codes from the mapping network",
               peak_gb=12, probe_batches=_PROPORTIONAL),
        Preset("sdd_cat", "sdd", ["method=sdd", "prompt=tabby_cat", "generator=afhq_cat"], _SDD_STAGES, _SDD_CAPS,
               _SDD_CPU, note="StyleGAN2 AFHQ-cat 512", peak_gb=12, probe_batches=_PROPORTIONAL),
        Preset("sdd_car", "sdd", ["method=sdd", "prompt=red_car", "generator=lsun_car"], _SDD_STAGES, _SDD_CAPS,
               _SDD_CPU, note="StyleGAN2 LSUN-car 512×384", peak_gb=12, probe_batches=_PROPORTIONAL),
        Preset("sdft_metfaces", "sdft", ["experiment=sdft_metfaces"], _SDFT_STAGES, _sdft_caps(), _SDFT_CPU,
               note="ADM FFHQ-256 student + fp16 teacher, bf16-mixed", peak_gb=12),
        Preset("sdft_aahq", "sdft", ["experiment=sdft_aahq"], _SDFT_STAGES,
               [*_sdft_caps(), "data@method.eval.target=samples"], _SDFT_CPU, peak_gb=12),
        Preset("rectifier_celebahq", "rectifier", ["experiment=rectifier_celebahq"], _RECTIFIER_STAGES,
               _RECTIFIER_CAPS, ["data.batch_size=1"], note="ddpm-ema-celebahq-256 (fp32) + 292.8M hypernetwork",
               peak_gb=14, probe_batches=_PROPORTIONAL),
        Preset("rectifier_church", "rectifier", ["experiment=rectifier_church"], _RECTIFIER_STAGES,
               _RECTIFIER_CAPS, ["data.batch_size=1"],
               note="ddpm-ema-church-256; the preset's own sequence is fit → reconstruct",
               peak_gb=14, probe_batches=_PROPORTIONAL),
        Preset("asyrp_celebahq", "asyrp", ["method=asyrp", "prior=ddpm_celebahq"], ["fit", "edit", "eval"],
               ["data=samples", "data.resolution=256", *_ASYRP_CAPS], peak_gb=5),
        Preset("sdedit_512", "baselines", ["method=sdedit"], ["edit", "eval"],
               [*_BASELINE_CAPS, "method.num_steps=4"], note="SD v1.4 at 512, strength 0.5: 2 DDIM steps", peak_gb=8),
        Preset("ddib_512", "baselines", ["method=ddib"], ["edit", "eval"], [*_BASELINE_CAPS, "method.num_steps=2"],
               note="SD v1.4 at 512: 2 inversion + 2 sampling steps", peak_gb=8),
        Preset("compare_edit", "compare", ["experiment=compare_edit"], ["compare"], _compare_caps(),
               [_entry("sdd", [*_COMPARE_SDD, *_SDD_CPU])],
               note="SDD, SDEdit ×3, DDIB, Rectifier as nested runs on one image", peak_gb=15),
    )
}  # fmt: skip
