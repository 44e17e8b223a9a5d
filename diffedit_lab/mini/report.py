"""``make mini``'s outputs: ``bench/results-mini.json`` (env, claims, measurements, timing), the claims table as
Markdown and the figures the README shows (prior samples, few-shot results, reconstructions, translations)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from diffedit_lab.mini import measures
from diffedit_lab.utils.io import atomic_json_dump, atomic_write


def env() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "diffedit_lab"], capture_output=True,
                                    text=True, check=True).stdout.strip())  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "commit": commit,
        "code_modified_since_commit": dirty,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, CPU",
    }


def _fmt(mean: float, sd: float) -> str:
    digits = 4 if abs(mean) < 0.1 else 3 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def claims_markdown(claims: list[dict]) -> str:
    lines = [
        "| paper | claim | metric | ours | baseline | better on seeds | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        arrow = "↑" if c["higher_is_better"] else "↓"
        ours, base = _fmt(c["ours"], c["ours_sd"]), _fmt(c["baseline"], c["baseline_sd"])
        lines.append(
            f"| {c['paper']} | {c['claim']} | {c['metric']} {arrow} | {c['ours_name']}: {ours} "
            f"| {c['baseline_name']}: {base} "
            f"| {c['better_on_seeds']}/{len(c['seeds'])} | {'yes' if c['holds'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def write_results(result: dict, out: Path) -> None:
    atomic_json_dump({"env": env(), **result}, out)
    table = Path(out).with_suffix(".md")
    atomic_write(table, lambda tmp: Path(tmp).write_text(claims_markdown(result["claims"])))


def _rows(rows: list[torch.Tensor], columns: int) -> torch.Tensor:
    """Equal-length rows of (N, 3, H, W) images in [-1, 1] stacked into one grid, row after row."""
    n = min(columns, *(len(r) for r in rows))
    return make_grid(torch.cat([r[:n] for r in rows]), nrow=n, padding=1, pad_value=1.0, normalize=True,
                     value_range=(-1, 1))  # fmt: skip


def _save(grid: torch.Tensor, path: Path) -> None:
    atomic_write(path, lambda tmp: save_image(grid, tmp, format="png"))


def write_figures(study, folder: Path, seed: int, columns: int = 10) -> dict[str, str]:
    """The four README figures for ``seed`` (rows described in each file's entry of the returned dict)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = study.root
    figures: dict[str, str] = {}

    samples, _ = measures.read_images(root / "prior" / "sample")
    _save(make_grid(samples[:64], nrow=8, padding=1, pad_value=1.0, normalize=True, value_range=(-1, 1)),
          folder / "prior_samples.png")  # fmt: skip
    figures["prior_samples.png"] = "64 samples of the prior trained here on digits 0–8 (DDIM η = 1, 40 steps)"
    _save(make_grid(study.eta0_samples[:64], nrow=8, padding=1, pad_value=1.0, normalize=True, value_range=(-1, 1)),
          folder / "prior_samples_eta0.png")  # fmt: skip
    figures["prior_samples_eta0.png"] = "the same noise through DDIM η = 0, 40 steps (the paper's sampler)"

    from diffedit_lab.mini.study import VARIANTS, few_shot_target

    few, _ = few_shot_target()
    rows = [few] + [measures.read_images(study.sdft_dir(v, seed) / "sample")[0] for v in VARIANTS]
    _save(_rows(rows, columns), folder / "fewshot.png")
    figures["fewshot.png"] = f"the 10 target 9s, then samples of {', '.join(VARIANTS)} (seed {seed}), a row each"

    rec = root / "rectifier" / f"seed{seed}" / "reconstruct"
    x, names = measures.read_images(rec / "input")
    rows = [x, measures.read_images(rec / "base", names)[0], measures.read_images(rec / "rectified", names)[0]]
    _save(_rows(rows, columns), folder / "reconstruct.png")
    figures["reconstruct.png"] = f"held-out digits; plain reconstruction; rectified reconstruction (seed {seed})"

    tr = root / "translate"
    y, names = measures.read_images(tr / "sdedit" / f"seed{seed}" / "translate" / "source")
    rows = [y] + [measures.read_images(tr / m / f"seed{seed}" / "translate" / "translated", names)[0]
                  for m in ("sdedit", "egsde")]  # fmt: skip
    _save(_rows(rows, columns), folder / "translate.png")
    figures["translate.png"] = f"held-out digits 0–8; SDEdit to 9; EGSDE to 9 (seed {seed}, the same strength)"
    return figures
