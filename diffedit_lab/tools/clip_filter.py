"""Command line: list the images of a folder by CLIP zero-shot score, as a ``data.exclude_list``/``include_list``.

SDFT's data recipes (paper 002, §4 and App. B) filter the target sets with CLIP:

* **MetFaces without glasses** — drop the faces CLIP classifies as wearing glasses::

      python -m diffedit_lab.tools.clip_filter exclude --root data/metfaces \\
          --positive "a painting of a person wearing glasses" --negative "a painting of a person" \\
          --threshold 0.5 --out data/metfaces_glasses.txt
      python -m diffedit_lab method=sdft data=metfaces data.exclude_list=data/metfaces_glasses.txt

* **limited AAHQ** — keep the anime faces most similar to a prompt::

      python -m diffedit_lab.tools.clip_filter include --root data/aahq --positive "a face in anime style" \\
          --top-k 1000 --out data/aahq_limited.txt          # or --threshold <cosine>
      python -m diffedit_lab method=sdft data=aahq data.include_list=data/aahq_limited.txt

Scores: ``exclude`` uses the zero-shot probability of ``--positive`` against ``--negative``,
``p = softmax(s·[cos(I, T₊), cos(I, T₋)])₀ = σ(s·(cos₊ − cos₋))`` with CLIP's learned logit scale ``s`` (100 for
the OpenAI models); images with ``p ≥ threshold`` are listed. ``include`` ranks by ``cos(I, T₊)`` and lists the
``--top-k`` best or every image with ``cos ≥ threshold``. The list holds paths relative to ``--root`` (one per line,
the format the datamodules read); ``<out>.csv`` beside it has every image's score, for choosing a threshold.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from diffedit_lab.utils.errors import UserError


def build_guide(model: str, pretrained: str, device: str):
    if model == "tiny":  # the random test model (offline)
        from diffedit_lab.testing.clip import tiny_clip

        return tiny_clip(device=device)
    from diffedit_lab.guidance.clip import CLIPGuide

    return CLIPGuide(model_name=model, pretrained=pretrained, device=device)


def score_folder(guide, root: Path, texts: Sequence[str], batch_size: int, resolution: int = 224):
    """(relative paths, (N, len(texts)) cosines) for every readable image under ``root``."""
    from tqdm.auto import tqdm

    from diffedit_lab.data.images import list_image_files, load_image

    files = list_image_files(root)
    if not files:
        raise UserError(f"--root '{root}' has no images")
    text_emb = guide.encode_text(list(texts))
    names, scores = [], []
    for start in tqdm(range(0, len(files), batch_size), desc="clip", unit="batch"):
        batch, kept = [], []
        for rel in files[start : start + batch_size]:
            img = load_image(root / rel, (resolution, resolution), "center_crop")
            if img is not None:
                batch.append(img)
                kept.append(rel)
        if batch:
            with torch.no_grad():
                emb = guide.encode_image(torch.stack(batch).to(text_emb.device))
            scores.append(emb @ text_emb.T)
            names += kept
    return names, torch.cat(scores).cpu()


def select(mode: str, scores: torch.Tensor, threshold: float | None, top_k: int | None, logit_scale: float):
    """(per-image score, selected mask) for ``exclude`` (zero-shot probability) or ``include`` (cosine)."""
    if mode == "exclude":
        prob = torch.sigmoid(logit_scale * (scores[:, 0] - scores[:, 1]))  # = the 2-way softmax's first entry
        return prob, prob >= (0.5 if threshold is None else threshold)
    cos = scores[:, 0]
    if top_k is not None:
        mask = torch.zeros_like(cos, dtype=torch.bool)
        mask[cos.argsort(descending=True)[:top_k]] = True
        return cos, mask
    return cos, cos >= threshold


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diffedit_lab.tools.clip_filter", description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["exclude", "include"], help="exclude: zero-shot classify; include: rank")
    p.add_argument("--root", required=True, help="folder of images (searched recursively)")
    p.add_argument("--positive", required=True, help="text of the images to list")
    p.add_argument("--negative", default=None, help="exclude mode: the alternative text (required)")
    p.add_argument("--threshold", type=float, default=None, help="exclude: probability (0.5); include: cosine")
    p.add_argument("--top-k", type=int, default=None, help="include: list the k most similar images")
    p.add_argument("--out", required=True, help="list file to write (one relative path per line)")
    p.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name, or 'tiny' (random, tests)")
    p.add_argument("--clip-pretrained", default="openai", help="open_clip tag, weights file or local-dir:<dir>")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def check(args: argparse.Namespace) -> None:
    if args.mode == "exclude" and not args.negative:
        raise UserError("exclude mode compares two texts: give --negative (e.g. 'a painting of a person')")
    if args.mode == "exclude" and args.top_k is not None:
        raise UserError("--top-k is for include mode; exclude lists images with P(positive) >= --threshold")
    if args.mode == "exclude" and args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold={args.threshold}: a probability in (0, 1) for exclude mode")
    if args.mode == "include" and (args.threshold is None) == (args.top_k is None):
        raise UserError("include mode needs exactly one of --top-k N or --threshold <cosine>")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k={args.top_k}: expected >= 1")
    if args.batch_size < 1:
        raise UserError(f"--batch-size={args.batch_size}: expected >= 1")
    if not Path(args.root).expanduser().is_dir():
        raise UserError(f"--root '{args.root}' is not a folder")


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the list (and its ``.csv`` of scores); returns 0, or 2 after a one-line ``error:`` message."""
    args = parser().parse_args(argv)
    try:
        check(args)
        root = Path(args.root).expanduser()
        guide = build_guide(args.clip_model, args.clip_pretrained, args.device)
        texts = [args.positive] + ([args.negative] if args.mode == "exclude" else [])
        names, cosines = score_folder(guide, root, texts, args.batch_size)
        scale = float(guide.model.logit_scale.exp()) if hasattr(guide.model, "logit_scale") else 100.0
        score, mask = select(args.mode, cosines, args.threshold, args.top_k, scale)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    chosen = [n for n, keep in zip(names, mask.tolist(), strict=True) if keep]
    out.write_text("".join(f"{n}\n" for n in chosen))
    with open(out.with_suffix(out.suffix + ".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "probability" if args.mode == "exclude" else "cosine", "listed"])
        for n, s, keep in zip(names, score.tolist(), mask.tolist(), strict=True):
            w.writerow([n, f"{s:.6f}", int(keep)])
    use = "exclude_list" if args.mode == "exclude" else "include_list"
    print(f"listed {len(chosen)} of {len(names)} images in {out} (use data.{use}={out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
