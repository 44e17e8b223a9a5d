"""The comparison's outputs: one row per entry (``comparison.csv``/``.md``), the figure (rows = source images,
columns = methods), ``report.md``, and a W&B table with one row per image and method."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffedit_lab.utils.errors import UserError

METRICS = ("clip_dir", "identity", "lpips", "fid", "kid", "psnr", "ssim")
COLUMNS = ("entry", "method", *METRICS, "latency_ms_per_image", "train_s", "num_images", "inputs_sha256")
_NOT_TRAINING = {"edit", "eval", "compare"}


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def image_size(folder: Path) -> int:
    files = _pngs(folder)
    if not files:
        raise UserError(f"compare: no PNG images in '{folder}'")
    with Image.open(files[0]) as im:
        return int(im.size[0])


def inputs_hash(folder: Path) -> str:
    """sha256 over the sorted names and decoded RGB pixels of the images an entry edited (PNG bytes may differ
    between encoders for the same pixels; the pixels may not)."""
    h = hashlib.sha256()
    for path in _pngs(folder):
        with Image.open(path) as im:
            h.update(path.stem.encode())
            h.update(np.asarray(im.convert("RGB")).tobytes())
    return h.hexdigest()


INPUT_DIRS = ("input", "original", "source")  # edit/<dir>: baselines, SDD (rendered codes), Rectifier


def input_dir(run_dir: Path) -> Path:
    """The images an entry edited: ``edit/input/`` (baselines), ``edit/original/`` (SDD renders its codes) or
    ``edit/source/`` (Rectifier)."""
    for sub in INPUT_DIRS:
        if (run_dir / "edit" / sub).is_dir():
            return run_dir / "edit" / sub
    names = ", ".join(f"edit/{d}" for d in INPUT_DIRS)
    raise UserError(f"compare: '{run_dir}' has none of {names} (did its edit stage run?)")


def train_seconds(metrics: dict[str, float], train_stages: list[str] | None = None) -> float:
    """The sum of ``time/<stage>_s`` over ``train_stages`` (null: every stage but edit, eval and compare)."""
    times = {k[5:-2]: v for k, v in metrics.items() if k.startswith("time/") and k.endswith("_s")}
    if train_stages is None:
        return float(sum(v for k, v in times.items() if k not in _NOT_TRAINING))
    return float(sum(v for k, v in times.items() if k in train_stages))


def row(
    entry: str, method: str, metrics: dict[str, float], run_dir: Path, train_stages: list[str] | None = None
) -> dict:
    inputs = input_dir(run_dir)
    out: dict = {"entry": entry, "method": method}
    for m in METRICS:
        out[m] = metrics.get(f"eval/{m}", float("nan"))
    out["latency_ms_per_image"] = metrics.get("edit/latency_ms_per_image", float("nan"))
    out["train_s"] = train_seconds(metrics, train_stages)
    out["num_images"] = float(metrics.get("eval/num_images", metrics.get("edit/num_images", float("nan"))))
    out["inputs_sha256"] = inputs_hash(inputs)[:16]
    out["input_dir"], out["edited_dir"] = str(inputs), str(run_dir / "edit" / "edited")
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "–" if v != v else f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], run_dir: Path) -> str:
    with open(run_dir / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    table = markdown(rows)
    (run_dir / "comparison.md").write_text(table)
    return table


def _load(path: Path, size: int) -> torch.Tensor:
    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1


def write_figure(rows: list[dict], run_dir: Path, n_images: int) -> Path:
    """Rows = the first ``n_images`` sources; columns = the source, then each entry's edit of it."""
    from torchvision.utils import make_grid

    from diffedit_lab.utils.io import save_images

    sources = _pngs(Path(rows[0]["input_dir"]))[:n_images]
    size = image_size(Path(rows[0]["input_dir"]))
    tiles = []
    for src in sources:
        tiles.append(_load(src, size))
        for r in rows:
            edited = Path(r["edited_dir"]) / src.name
            tiles.append(_load(edited, size) if edited.is_file() else torch.full((3, size, size), -1.0))
    grid = make_grid(torch.stack(tiles), nrow=1 + len(rows), padding=2, pad_value=1.0)
    path = run_dir / "comparison.png"
    save_images(grid[None], [path])
    return path


def write_report(rows: list[dict], run_dir: Path, figure: Path, prompt: str) -> Path:
    text = (
        f"# Editing comparison: “{prompt}”\n\n"
        "Every method edited the same source images (`inputs_sha256`: hash of the decoded pixels each one read).\n"
        "Metrics: directional CLIP (source text → prompt), identity cosine (ArcFace), LPIPS to the source, FID/KID\n"
        "of the edits against the sources; latency per image of the edit alone; `train_s` = the entry's training\n"
        "stages in this run (0 when trained weights were reused, unless the edit itself trains: the Rectifier\n"
        "fine-tunes an editor from its rectifier, and that stage's time, its edits included, counts).\n\n"
        f"{markdown(rows)}\n![comparison]({figure.name})\n\n"
        "Columns of the figure: source, then " + ", ".join(f"`{r['entry']}`" for r in rows) + ".\n"
    )
    path = run_dir / "report.md"
    path.write_text(text)
    return path


def image_rows(rows: list[dict]) -> list[dict]:
    """One row per (source image, entry): both pictures (as files) and the edit's own scores against its source
    (L1, PSNR) — sortable by image, unlike the per-entry averages (:func:`entry_rows`)."""
    from diffedit_lab.callbacks.metrics import per_image_scores

    out = []
    sources = _pngs(Path(rows[0]["input_dir"]))
    size = image_size(Path(rows[0]["input_dir"])) if sources else 0
    for src in sources:
        for r in rows:
            edited = Path(r["edited_dir"]) / src.name
            if edited.is_file():
                scores = per_image_scores(_load(edited, size)[None], _load(src, size)[None])
                out.append({"image": src.stem, "entry": r["entry"], "method": r["method"], "source": src,
                            "edited": edited, **{k: v[0] for k, v in scores.items()}})  # fmt: skip
    return out


def entry_rows(rows: list[dict]) -> list[dict]:
    """The comparison table (one row per entry, its averages; metrics it could not compute stay empty)."""
    return [{c: r[c] for c in COLUMNS} for r in rows]
