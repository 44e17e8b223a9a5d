"""SDD's timestep selection: score each diffusion timestep by the image-space SDS gradient it produces.

Scores of a gradient g (B, 3, H, W), one per image (each image's gradient is its own: see ``scan.py``), averaged
over the images:

* ``entropy`` — a = mean_c |g| per pixel, p = softmax(a) over the H·W pixels, H = −Σ p log p (nats; lower = the
  gradient is concentrated on fewer pixels = more focused). As in the released search, whose image gradient is
  already |g| (``get_image_gradient`` returns ``abs(grad)``) before its channel mean and softmax.
* ``l1`` — mean |g| (the gradient's strength; the released search's ``mean`` of that |g|).
* ``hqs`` — the Hybrid Quality Score. The paper combines entropy and ℓ1 without a formula in the released code;
  we use, over the scanned grid T,

      HQS(t) = ½ · [ (ℓ1(t) − min_T ℓ1) / (max_T ℓ1 − min_T ℓ1)  +  (max_T H − H(t)) / (max_T H − min_T H) ]

  i.e. the mean of min–max-normalised strength and focus, in [0, 1]; 1 = the strongest and most focused guidance.
  Min–max normalisation removes the units (ℓ1 scales with the guidance weight, H with log(H·W)) so neither term
  dominates; equal weights because the paper motivates both as necessary. ``max`` over HQS is the paper's
  "largest HQS" strategy, ``above_X`` its threshold strategies.

Rules turn a table into a selection: ``min``/``max`` (one t), ``below_X``/``above_X`` (all t past a threshold),
``random`` (uniform t in a range every step — the ablation baseline), ``fixed_T`` (exactly T).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffedit_lab.utils.errors import UserError

SCORES = ("entropy", "l1", "hqs")


def gradient_entropy(grad: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy (B,) of softmax over pixels of the channel-averaged |g|."""
    a = grad.abs().mean(dim=1).flatten(1).double()
    logp = torch.log_softmax(a, dim=1)
    return -(logp.exp() * logp).sum(dim=1).float()


def gradient_l1(grad: torch.Tensor) -> torch.Tensor:
    """Per-sample mean |g| (B,)."""
    return grad.abs().flatten(1).mean(dim=1)


def _minmax(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return [0.5] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def hybrid_quality_score(entropy: list[float], l1: list[float]) -> list[float]:
    """HQS over a grid (see module docstring): ½ (norm ℓ1 + 1 − norm H)."""
    return [0.5 * (s + 1.0 - h) for s, h in zip(_minmax(l1), _minmax(entropy), strict=True)]


@dataclass
class ScoreTable:
    """Mean scores per scanned timestep."""

    timesteps: list[int]
    entropy: list[float]
    l1: list[float]
    hqs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.hqs:
            self.hqs = hybrid_quality_score(self.entropy, self.l1)

    def column(self, score: str) -> list[float]:
        if score not in SCORES:
            raise UserError(f"unknown selection score '{score}'; use one of {list(SCORES)}")
        return getattr(self, score)

    def to_dict(self) -> dict:
        return {"timesteps": self.timesteps, "entropy": self.entropy, "l1": self.l1, "hqs": self.hqs}

    @classmethod
    def from_dict(cls, d: dict) -> ScoreTable:
        return cls(
            timesteps=[int(t) for t in d["timesteps"]],
            entropy=list(d["entropy"]),
            l1=list(d["l1"]),
            hqs=list(d.get("hqs") or []),
        )

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["t", "entropy", "l1", "hqs"])
            for row in zip(self.timesteps, self.entropy, self.l1, self.hqs, strict=True):
                writer.writerow([row[0], *(f"{v:.8g}" for v in row[1:])])

    def plot(self, path: str | Path, selected: list[int] | None = None, title: str = "") -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        for ax, name in zip(axes, SCORES, strict=True):
            ax.plot(self.timesteps, self.column(name), marker="o", ms=3)
            for t in selected or []:
                ax.axvline(t, color="tab:red", alpha=0.4)
            ax.set_title(name)
            ax.set_xlabel("t")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


@dataclass
class Selection:
    """What ``fit`` samples t from: an explicit set (with optional weights) or a uniform range."""

    timesteps: list[int]
    weights: list[float] | None = None
    random_range: tuple[int, int] | None = None

    def sample(self, batch: int, generator: torch.Generator | None = None, weighted: bool = False) -> torch.Tensor:
        """One t per step, shared by the batch (as in the reference), returned as a (batch,) tensor."""
        if self.random_range is not None:
            lo, hi = self.random_range
            t = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        elif len(self.timesteps) == 1:
            t = self.timesteps[0]
        else:
            if weighted and self.weights is not None and sum(self.weights) > 0:
                probs = torch.tensor(self.weights, dtype=torch.float)
            else:
                probs = torch.ones(len(self.timesteps))
            t = self.timesteps[int(torch.multinomial(probs, 1, generator=generator))]
        return torch.full((batch,), t, dtype=torch.long)

    @classmethod
    def from_dict(cls, d: dict) -> Selection:
        rr = d.get("random_range")
        return cls(timesteps=list(d["timesteps"]), weights=d.get("weights"), random_range=tuple(rr) if rr else None)

    def to_dict(self) -> dict:
        return {
            "timesteps": self.timesteps,
            "weights": self.weights,
            "random_range": list(self.random_range) if self.random_range else None,
        }


def _goodness(score: str, values: list[float], i: int) -> float:
    """Sampling weight for ``fit.t_sampling=weighted``: higher = better (entropy is better when LOWER)."""
    if score == "entropy":
        return max(values) - values[i] + 1e-12
    return values[i]


def needs_scan(rule: str) -> bool:
    return not (rule == "random" or rule.startswith("fixed_"))


def _threshold(rule: str) -> float:
    try:
        return float(rule.split("_", 1)[1])
    except (IndexError, ValueError):
        raise UserError(f"selection rule '{rule}': expected a number after '_', e.g. above_0.7") from None


def select(
    rule: str, table: ScoreTable | None = None, score: str = "hqs", random_range: tuple[int, int] = (20, 980)
) -> Selection:
    """Apply a selection rule to a score table."""
    if rule == "random":
        lo, hi = (int(v) for v in random_range)
        if not 0 <= lo <= hi:
            raise UserError(f"selection.random_range must be [a, b], 0 <= a <= b; got {list(random_range)}")
        return Selection(timesteps=list(range(lo, hi + 1)), random_range=(lo, hi))
    if rule.startswith("fixed_"):
        try:
            t = int(rule.split("_", 1)[1])
        except ValueError:
            raise UserError(f"selection rule '{rule}': expected an integer timestep, e.g. fixed_800") from None
        if t < 0:  # a negative index would silently wrap to the end of the ᾱ table (fixed_-5 → t = T − 5)
            raise UserError(f"selection rule '{rule}': the timestep must be >= 0")
        return Selection(timesteps=[t])
    if table is None:
        raise UserError(f"selection rule '{rule}' needs a timestep scan: run stage=select first")
    values = table.column(score)
    if any(math.isnan(v) for v in values):
        raise UserError(f"the '{score}' scores contain NaN; check the teacher/generator outputs")
    ts = table.timesteps
    if rule in ("min", "max"):
        pick = min if rule == "min" else max
        best = pick(range(len(ts)), key=lambda i: values[i])
        return Selection(timesteps=[ts[best]], weights=[values[best]])
    if rule.startswith(("below_", "above_")):
        x = _threshold(rule)
        keep = [i for i, v in enumerate(values) if (v < x if rule.startswith("below_") else v > x)]
        if not keep:
            raise UserError(
                f"selection rule '{rule}' keeps no timestep: {score} ranges over [{min(values):.4g}, {max(values):.4g}]"
            )
        return Selection(timesteps=[ts[i] for i in keep], weights=[_goodness(score, values, i) for i in keep])
    raise UserError(f"unknown selection rule '{rule}'; use min, max, below_X, above_X, random or fixed_T")


def check_rule(rule: str, key: str = "method.selection.rule") -> None:
    """The rule's syntax, without a score table (start-up validation)."""
    from diffedit_lab.utils.schema import ConfigError

    allowed = "min | max | random | fixed_<t> (t >= 0) | below_<x> | above_<x>"
    if rule in ("min", "max", "random"):
        return
    head, _, tail = rule.partition("_")
    try:
        if head == "fixed" and int(tail) >= 0:
            return
        if head in ("below", "above"):
            float(tail)
            return
    except ValueError:
        pass
    raise ConfigError(key, rule, f"expected {allowed}")
