"""``make mini``: each paper's headline claim reproduced in miniature on real digits, with the project's own code.

Steps (each cached in ``<root>/``; a rerun after kill -9 continues where it stopped, see :mod:`.runs`):

1. ``evaluator.safetensors``: the digit classifier every number below is measured with (:mod:`.evaluator`);
2. ``prior/``: the small pixel prior, SDFT's scratch path on digits 0–8 (``experiment=mini_prior``);
3. ``rectifier/seed<s>/``: the Rectifier trained on digits 0–8, then held-out test digits reconstructed with and
   without it (``experiment=mini_rectifier``) — PSNR, SSIM, MSE;
4. ``sdft/<variant>/seed<s>/``: the prior adapted to 10 images of digit 9 by SDFT, naive fine-tuning and from
   scratch, the same steps (``experiment=mini_sdft`` + ``method/sdft/variant``) — FID/KID to the held-out 9s,
   the samples' target accuracy, diversity;
5. ``translate/<sdedit|egsde>/seed<s>/``: held-out digits 0–8 translated to 9s by the SDFT model of the same seed,
   at the same strength, SDEdit vs EGSDE (with the domain classifier ``train_classifier`` trained) — target
   accuracy (realism), SSIM and MSE to the source (faithfulness).

SDD and Asyrp steer with CLIP and Stable Diffusion, which cannot be had offline: they have no claim here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffedit_lab.mini import measures
from diffedit_lab.mini.claims import make_claim
from diffedit_lab.mini.evaluator import load_or_train
from diffedit_lab.mini.runs import run_steps, wall_seconds

log = logging.getLogger(__name__)

SOURCE_CLASSES = tuple(range(9))
TARGET_CLASS = 9
VARIANTS = ("sdft", "finetune", "scratch")  # conf/method/sdft/variant/*.yaml
TRANSLATIONS = ("sdedit", "egsde")


@dataclass
class MiniSettings:
    """What ``make mini`` runs. The methods' settings live in ``conf/experiment/mini_*.yaml`` (their scaling is
    written there); ``overrides`` (per experiment) shrink them further for the tests (:meth:`quick`)."""

    root: Path = Path("outputs/mini")
    seeds: tuple[int, ...] = (0, 1, 2)
    evaluator_steps: int = 1500
    evaluator_seed: int = 0
    overrides: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def quick(cls, root: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> MiniSettings:
        """Every step at a few iterations and images: the whole pipeline in minutes (tests; numbers meaningless)."""
        return cls(
            root=Path(root),
            seeds=seeds,
            evaluator_steps=60,
            overrides={
                "mini_prior": [
                    "method.fit.steps=6",
                    "method.fit.checkpoint_every=3",
                    "method.sample.num_images=8",
                    "method.sample.steps=4",
                ],
                "mini_rectifier": [
                    "method.fit.steps=3",
                    "method.fit.checkpoint_every=3",
                    "method.reconstruct.max_images=4",
                    "method.reconstruct.steps=4",
                ],
                "mini_sdft": [
                    "method.fit.steps=3",
                    "method.fit.checkpoint_every=3",
                    "method.sample.num_images=8",
                    "method.sample.steps=4",
                    "method.translate.max_images=4",
                    "method.translate.steps=8",
                    "method.train_classifier.steps=2",
                    "method.train_classifier.checkpoint_every=2",
                ],
            },  # fmt: skip
        )

    def experiment(self, name: str, *extra: str) -> list[str]:
        return [f"experiment={name}", "logger=csv", *self.overrides.get(name, []), *extra]


def digits_split(split: str, classes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (N, 3, 32, 32) and labels of one split of the digits (``classes``: None = all)."""
    from diffedit_lab.data.packaged import PackagedDataModule

    dm = PackagedDataModule(name="digits", classes=classes)
    ds = dm.dataset(split)
    return ds.images, torch.tensor(ds.labels)


class MiniStudy:
    def __init__(self, settings: MiniSettings) -> None:
        self.s = settings
        self.root = Path(settings.root).resolve()
        self.timing: dict[str, float] = {}
        self.measured: dict[str, dict] = {}

    # --- 1. the instrument ------------------------------------------------------------------------------------
    def evaluator(self):
        start = time.perf_counter()
        model, record = load_or_train(
            self.root / "evaluator.safetensors",
            digits_split("train"),
            digits_split("test"),
            self.s.evaluator_steps,
            self.s.evaluator_seed,
        )
        self.timing["evaluator_s"] = record["train_seconds"]  # when it was trained (cached: the earlier run's)
        self.timing["evaluator_load_s"] = time.perf_counter() - start
        self.measured["evaluator"] = record
        self.model = model
        return model

    # --- 2. the prior -----------------------------------------------------------------------------------------
    @property
    def prior_dir(self) -> Path:
        return self.root / "prior"

    def prior(self) -> dict:
        run_steps(self.prior_dir, self.s.experiment("mini_prior"), ["fit", "sample"])
        self.timing["prior_s"] = wall_seconds(self.prior_dir, ["fit", "sample"])
        samples, _ = measures.read_images(self.prior_dir / "sample")
        real, _ = digits_split("test", SOURCE_CLASSES)
        train, _ = digits_split("train", SOURCE_CLASSES)
        fid, kid = measures.fid_kid(self.model, samples, real)
        fid_data, kid_data = measures.fid_kid(self.model, train[: len(samples)], real)
        counts = torch.bincount(self.model(samples).argmax(1), minlength=10).tolist()
        self.eta0_samples = self.deterministic_samples(len(samples))
        fid0, kid0 = measures.fid_kid(self.model, self.eta0_samples, real)
        self.measured["prior"] = {
            "samples": len(samples),
            "fid_vs_test": fid,
            "kid_vs_test": kid,
            "fid_train_images_vs_test": fid_data,  # the floor: real images of the same number
            "kid_train_images_vs_test": kid_data,
            "class_counts": counts,
            "fraction_source_classes": sum(counts[c] for c in SOURCE_CLASSES) / max(1, len(samples)),
            "sampler": "DDIM eta=1, 40 steps (the sample stage)",
            "eta0_fid_vs_test": fid0,  # the same noise, DDIM η = 0 (the paper's sampler): why the mini uses η = 1
            "eta0_kid_vs_test": kid0,
        }
        return self.measured["prior"]

    @torch.no_grad()
    def deterministic_samples(self, n: int) -> torch.Tensor:
        """The prior's samples from the sample stage's noise (seeds 0…n−1) by DDIM with η = 0, 40 steps."""
        from diffedit_lab.diffusion import samplers
        from diffedit_lab.diffusion.priors import UnconditionalPrior
        from diffedit_lab.methods.sdft.inference import seeded_noise

        prior = UnconditionalPrior.from_pretrained(str(self.prior_dir / "ema_unet"), dtype="fp32")
        x_T = seeded_noise(range(n), (prior.in_channels, prior.image_size, prior.image_size), "cpu")
        return samplers.ddim_sample(prior, x_T, num_steps=40, eta=0.0).clamp(-1, 1)

    def with_prior(self, name: str, seed: int, *extra: str) -> list[str]:
        return self.s.experiment(name, f"seed={seed}", f"prior.source={self.prior_dir / 'ema_unet'}", *extra)

    # --- 3. rectifier -----------------------------------------------------------------------------------------
    def rectifier(self) -> list[dict]:
        rows = {"psnr": ([], []), "ssim": ([], []), "l2": ([], [])}
        total = 0.0
        for s in self.s.seeds:
            run_dir = self.root / "rectifier" / f"seed{s}"
            m = run_steps(run_dir, self.with_prior("mini_rectifier", s), ["fit", "reconstruct"])
            total += wall_seconds(run_dir, ["fit", "reconstruct"])
            for key, (ours, base) in rows.items():
                ours.append(m[f"reconstruct/rectified/{key}"])
                base.append(m[f"reconstruct/base/{key}"])
        self.timing["rectifier_s"] = total
        claim = "reconstruction of held-out images (DDIM inversion + sampling) is more faithful with the rectifier"
        names = {"psnr": ("PSNR", True), "ssim": ("SSIM", True), "l2": ("MSE", False)}
        return [
            make_claim("rectifier", claim, names[k][0], names[k][1], self.s.seeds, ours, base, "rectified", "plain")
            for k, (ours, base) in rows.items()
        ]

    # --- 4. SDFT few-shot -------------------------------------------------------------------------------------
    def sdft_dir(self, variant: str, seed: int) -> Path:
        return self.root / "sdft" / variant / f"seed{seed}"

    def sdft(self) -> list[dict]:
        real, _ = digits_split("test", [TARGET_CLASS])
        per: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
        total = 0.0
        for variant in VARIANTS:
            for s in self.s.seeds:
                run_dir = self.sdft_dir(variant, s)
                stages = ["fit", "sample", "train_classifier"] if variant == "sdft" else ["fit", "sample"]
                extra = (f"+method/sdft/variant@method={variant}", f"method.init_seed={s}",
                         f"method.sample.seed={1000 * s}", f"method.train_classifier.seed={s}")  # fmt: skip
                run_steps(run_dir, self.with_prior("mini_sdft", s, *extra), stages)
                total += wall_seconds(run_dir, stages)
                samples, _ = measures.read_images(run_dir / "sample")
                fid, kid = measures.fid_kid(self.model, samples, real)
                values = {
                    "fid": fid,
                    "kid": kid,
                    "target_accuracy": measures.class_rate(self.model, samples, TARGET_CLASS),
                    "diversity": measures.diversity(self.model, samples),
                }
                for k, v in values.items():
                    per[variant].setdefault(k, []).append(v)
        self.timing["sdft_s"] = total
        few, _ = few_shot_target()
        self.measured["sdft"] = {
            "per_variant": per,
            "target_train_images": len(few),
            "target_test_images": len(real),
            "reference_diversity_test_9s": measures.diversity(self.model, real),
            "reference_fid_train_9s_vs_test_9s": measures.fid_kid(self.model, few, real)[0],
        }
        claim = "few-shot adaptation (10 target images): SDFT beats naive fine-tuning"
        out = []
        for metric, name, higher in (("fid", "FID", False), ("kid", "KID", False), ("diversity", "diversity", True),
                                     ("target_accuracy", "target accuracy", True)):  # fmt: skip
            for base in ("finetune", "scratch"):
                text = claim if base == "finetune" else "few-shot adaptation (10 target images): SDFT beats scratch"
                out.append(make_claim("sdft", text, name, higher, self.s.seeds, per["sdft"][metric],
                                      per[base][metric], "sdft", base))  # fmt: skip
        return out

    # --- 5. translation ---------------------------------------------------------------------------------------
    def translation(self) -> list[dict]:
        per: dict[str, dict[str, list[float]]] = {m: {} for m in TRANSLATIONS}
        total = 0.0
        for m in TRANSLATIONS:
            for s in self.s.seeds:
                trained = self.sdft_dir("sdft", s)
                run_dir = self.root / "translate" / m / f"seed{s}"
                extra = (f"method.weights={trained / 'sdft.safetensors'}",
                         f"method.egsde.classifier_weights={trained / 'domain_classifier.safetensors'}",
                         f"method.translate.method={m}", f"method.translate.seed={s}")  # fmt: skip
                run_steps(run_dir, self.with_prior("mini_sdft", s, *extra), ["translate"])
                total += wall_seconds(run_dir, ["translate"])
                out, names = measures.read_images(run_dir / "translate" / "translated")
                src, _ = measures.read_images(run_dir / "translate" / "source", names)
                values = {"target_accuracy": measures.class_rate(self.model, out, TARGET_CLASS)}
                values |= measures.paired(out, src)
                for k, v in values.items():
                    per[m].setdefault(k, []).append(v)
        self.timing["translate_s"] = total
        self.measured["translation"] = {"per_method": per}
        claim = "at equal strength, EGSDE translates more realistically and/or more faithfully than SDEdit"
        return [
            make_claim("egsde", claim, name, higher, self.s.seeds, per["egsde"][k], per["sdedit"][k], "egsde", "sdedit")
            for k, name, higher in (
                ("target_accuracy", "target accuracy (realism)", True),
                ("ssim", "SSIM to source (faithfulness)", True),
                ("mse", "MSE to source (faithfulness)", False),
            )  # fmt: skip
        ]

    def run(self) -> dict:
        """Every step (cached ones reused). ``timing_s``: each step's own wall time, from its marks — so a resumed
        run still reports what the steps cost — and ``total_s``, their sum."""
        self.evaluator()
        self.prior()
        claims = [*self.rectifier(), *self.sdft(), *self.translation()]
        parts = ("evaluator_s", "prior_s", "rectifier_s", "sdft_s", "translate_s")
        self.timing["total_s"] = sum(self.timing[k] for k in parts)
        return {"claims": claims, "measured": self.measured, "timing_s": self.timing}


def few_shot_target() -> tuple[torch.Tensor, torch.Tensor]:
    from diffedit_lab.data.packaged import PackagedDataModule

    ds = PackagedDataModule(name="digits", classes=[TARGET_CLASS], train_per_class=10).dataset("train")
    return ds.images, torch.tensor(ds.labels)
