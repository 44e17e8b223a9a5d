"""SDD's ``select`` stage: score the SDS gradient at each timestep of a grid and apply the selection rule.

Like the reference search (which feeds one image at a time to the SDS loss), every image is scored on its own
gradient: the top-k sparsification keeps ``guidance.topk`` entries in EACH image (training keeps them over the
whole batch, as the reference's training does), and the VAE posterior sample and the noise ε of an image come from
a CPU generator seeded by (seed, image index, t). So an image's gradient, and the scores, do not depend on
``selection.batch_size`` nor on the device's RNG; the batch only sets how many images go through the models at once.

The scores are cached (in the run dir and ``method.selection.cache_dir``) keyed by everything that changes them —
prompt × teacher × generator × grid × N × codes/data × guidance (scale, weighting, top-k, noise, negative prompt)
× seed, plus a version of the scan's own procedure — so ``fit``, later runs and the jobs of a sweep reuse one scan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import torch

from diffedit_lab.methods.sdd import selection as sel
from diffedit_lab.methods.stage import StageContext
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_json_dump
from diffedit_lab.utils.schema import as_dict

log = logging.getLogger(__name__)


# Bumped whenever the scan's procedure changes its numbers, so caches written by an older scan are not reused.
# 2: top-k per image and per-image CPU noise (1, unversioned: top-k over the scan batch, per-batch device noise).
SCAN_VERSION = 2


def selection_key(cfg) -> str:
    """Everything that changes the scores. Not ``selection.batch_size``: the scan's numbers do not depend on it."""
    c = cfg
    key = {
        "scan_version": SCAN_VERSION,
        "prompt": c.prompt.text,
        "teacher": c.teacher,
        "generator": c.generator,
        "grid": list(c.selection.timesteps),
        "n": c.selection.num_codes,
        "guidance": as_dict(c.guidance),
        "codes": as_dict(c.codes),
        "scan_data": c.selection.scan_data,  # which codes are scanned (data config)
        "seed": c.selection.seed,
    }
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_files(module, ctx: StageContext) -> list[Path]:
    name = f"scores_{selection_key(module.cfg)}.json"
    files = [ctx.run_dir / "selection" / name]
    if module.cfg.selection.cache_dir:
        files.append(Path(module.cfg.selection.cache_dir) / name)
    return files


def load_cached_table(module, ctx: StageContext) -> sel.ScoreTable | None:
    if not module.cfg.selection.cache:
        return None
    for path in cache_files(module, ctx):
        if path.is_file():
            log.info("reusing timestep scores from %s", path)
            return sel.ScoreTable.from_dict(json.loads(path.read_text()))
    return None


def image_generators(seed: int, first_index: int, count: int, t: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded by (seed, the image's index in the scan, t): distinct for every image
    index < 1_000_003 and t < 1009, and independent of how the images are batched."""
    return [torch.Generator().manual_seed((seed * 1_000_003 + first_index + i) * 1009 + t) for i in range(count)]


@torch.no_grad()
def scan_timesteps(module, codes_iter, timesteps: list[int], num_codes: int, seed: int = 0) -> sel.ScoreTable:
    """Mean entropy / ℓ1 of the image-space SDS gradient at each t over ``num_codes`` generator images.

    Each image's gradient is its own (per-image top-k, per-image generators), as in the reference search, so the
    table does not depend on how ``codes_iter`` batches the codes."""
    sums = {t: {"entropy": 0.0, "l1": 0.0} for t in timesteps}
    seen = 0
    prompt, neg = module.cfg.prompt.text, module.cfg.guidance.negative_prompt
    for w in codes_iter:
        w = w[: num_codes - seen]
        images = module.synthesize(w)
        for t in timesteps:
            gens = image_generators(seed, seen, len(w), t)
            grad = module.sds.image_gradient(images, t, prompt, neg, generator=gens, per_sample_topk=True)
            sums[t]["entropy"] += float(sel.gradient_entropy(grad).sum())
            sums[t]["l1"] += float(sel.gradient_l1(grad).sum())
        seen += len(w)
        if seen >= num_codes:
            break
    if seen == 0:
        raise UserError("timestep selection saw no codes: the training split is empty")
    return sel.ScoreTable(
        timesteps=list(timesteps),
        entropy=[sums[t]["entropy"] / seen for t in timesteps],
        l1=[sums[t]["l1"] / seen for t in timesteps],
    )


def _scan_codes(module, ctx: StageContext):
    """Codes for the scan: seeds/codes of the train split (never the test images), batched."""
    dm = ctx.datamodule
    dm.setup("fit")
    loader = torch.utils.data.DataLoader(dm.dataset("train"), batch_size=module.cfg.selection.batch_size)
    for batch in loader:
        yield module.codes_from_batch(batch)


def run_select(module, ctx: StageContext) -> sel.Selection:
    c = module.cfg.selection
    module.to(ctx.device)
    num_t = module.teacher.num_train_timesteps
    for name, ts in (("method.selection.timesteps", c.timesteps), ("method.selection.random_range", c.random_range)):
        if max(ts) >= num_t:
            raise UserError(f"{name}={ts}: timesteps must lie in [0, {num_t - 1}] for this teacher")
    out_dir = ctx.run_dir / "selection"
    out_dir.mkdir(parents=True, exist_ok=True)
    table = None
    if sel.needs_scan(c.rule) or c.always_scan:
        table = load_cached_table(module, ctx)
        if table is None:
            t0 = time.perf_counter()
            table = scan_timesteps(module, _scan_codes(module, ctx), list(c.timesteps), c.num_codes, seed=c.seed or 0)
            log.info("timestep scan: %d t × %d codes in %.1fs", len(c.timesteps), c.num_codes, time.perf_counter() - t0)
            for path in cache_files(module, ctx):
                atomic_json_dump({"key": selection_key(module.cfg), **table.to_dict()}, path)
    selection = sel.select(c.rule, table, score=c.score, random_range=tuple(c.random_range))
    if max(selection.timesteps) >= num_t:
        raise UserError(
            f"selection rule '{c.rule}' picks t={max(selection.timesteps)} but the teacher has "
            f"{num_t} timesteps (0..{num_t - 1})"
        )
    atomic_json_dump(
        {"rule": c.rule, "score": c.score, "prompt": module.cfg.prompt.text, **selection.to_dict()}
        | ({"random_range": list(c.random_range)} if c.rule == "random" else {}),
        out_dir / "selected.json",
    )
    metrics: dict[str, float] = {}
    if table is not None:
        table.write_csv(out_dir / "scores.csv")
        table.plot(
            out_dir / "scores.png",
            selected=selection.timesteps if selection.random_range is None else None,
            title=f"{module.cfg.prompt.text}: {c.score}, rule {c.rule}",
        )
        ctx.log_image("select/scores", out_dir / "scores.png", f"{c.score} per timestep, rule {c.rule}")
        chosen = set(selection.timesteps)
        rows = [{"t": t, "entropy": e, "l1": g, "hqs": h, "selected": t in chosen}
                for t, e, g, h in zip(table.timesteps, table.entropy, table.l1, table.hqs)]  # fmt: skip
        ctx.log_table("select/scores_table", rows, line=("t", ("entropy", "l1", "hqs")))
        best = max(range(len(table.timesteps)), key=lambda i: table.hqs[i])
        metrics["select/best_hqs_t"] = float(table.timesteps[best])
    metrics["select/num_selected"] = float(len(selection.timesteps))
    log.info("selected timesteps (%s on %s): %s", c.rule, c.score, selection.random_range or selection.timesteps)
    ctx.write_metrics(metrics)
    return selection
