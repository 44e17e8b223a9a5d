"""One smoke process: ``python -m diffedit_lab <preset overrides> stage=<s> hydra.run.dir=<dir>`` through the real
CLI entry point (Hydra, one-line user errors, exit status 2), instrumented from the inside:

* every stage ``run_stage`` runs (nested runs too: a comparison's entries) records its wall time, its peak RSS
  (sampled) and peak CUDA memory, and the parameters the method holds afterwards (trainable / frozen);
* after a training stage named in the preset's ``estimate`` table, the GPU-memory estimate of one training step
  (:mod:`.estimate`) at the preset's configured batch and precision, on the networks the stage built.

    python -m experiments.smoke.child --preset sdd_faces --stage fit --run-dir <dir> --result <json> [--device cpu]

The result JSON is written atomically, also when the run fails (``error``: the last line of the failure).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--stage", default=None, help="a stage or a comma list; default: the preset's whole sequence")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an extra override (repeatable)")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--no-estimate", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from diffedit_lab.utils.io import atomic_json_dump
    from experiments.smoke.presets import PRESETS
    from experiments.smoke.probes import RSSSampler, count_parameters, cuda_peak_mb, ru_maxrss_mb

    preset = PRESETS[args.preset]
    run_dir = Path(args.run_dir).resolve()
    stages = args.stage.split(",") if args.stage else None
    overrides = preset.command(stages, args.device, args.set)
    if args.device == "cpu":
        overrides.append("trainer.accelerator=cpu")
    argv_cli = ["diffedit_lab", *overrides, f"hydra.run.dir={run_dir}"]
    record: dict[str, Any] = {"preset": preset.name, "stage": args.stage, "command": argv_cli[1:], "stages": {}}
    sampler = RSSSampler()
    captured: dict[str, Any] = {}
    undo = _instrument(record, sampler, run_dir, preset, args, captured)
    t0 = time.perf_counter()
    status = 0
    try:
        import diffedit_lab.__main__ as cli

        sys.argv = argv_cli
        try:
            cli.cli()
        except SystemExit as exc:  # a user error: one line on stderr, exit 2
            status = int(exc.code or 0) if not isinstance(exc.code, str) else 1
            if status:
                record["error"] = captured.get("user_error") or f"exit status {status}"
    except BaseException as exc:  # noqa: BLE001 - recorded, then the process fails
        status = 1
        record["error"] = _last_line(exc)
        traceback.print_exc()
    finally:
        undo()
    record["wall_s"] = time.perf_counter() - t0
    record["peak_rss_mb"] = ru_maxrss_mb()
    record["peak_cuda_mb"] = cuda_peak_mb()
    result = captured.get("result")
    if result is not None:
        record["metrics"] = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
        params = count_parameters(result.objects.get("method"))
        if params is not None:
            record["params"] = params
    record["status"] = "ok" if status == 0 else "failed"
    record["torch_threads"] = torch.get_num_threads()
    sampler.stop()
    atomic_json_dump(record, Path(args.result))
    return status


def _last_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _instrument(record, sampler, run_dir: Path, preset, args, captured) -> Any:
    """Wrap the runner's ``run`` (to keep its result), the stages (per-stage measurements) and the component
    factory (to know each frozen component's CUDA dtype); returns the undo."""
    import logging

    import diffedit_lab.run as runner
    from diffedit_lab.methods.base import EditingMethod
    from experiments.smoke.estimate import record_component_nodes
    from experiments.smoke.probes import count_parameters, cuda_peak_mb

    original_run, original_stage = runner.run, EditingMethod.run_stage
    undo_nodes = record_component_nodes()

    def run(cfg):
        result = original_run(cfg)
        if Path(cfg.paths.output_dir).resolve() == run_dir:  # the top-level run (not a nested entry)
            captured["result"] = result
        return result

    def run_stage(self, stage, ctx):
        where = os.path.relpath(Path(ctx.run_dir).resolve(), run_dir)
        key = stage.name if where == "." else f"{where}:{stage.name}"
        sampler.reset()
        cuda_peak_mb(reset=True)
        t0 = time.perf_counter()
        try:
            return original_stage(self, stage, ctx)
        finally:
            entry = {"wall_s": time.perf_counter() - t0, "peak_rss_mb": sampler.peak_mb(),
                     "peak_cuda_mb": cuda_peak_mb(), "train": stage.train}  # fmt: skip
            params = count_parameters(self)
            if params is not None:
                entry["params"] = params
            record["stages"][key] = entry
            if where == "." and not args.no_estimate and stage.name in preset.estimate:
                entry["gpu_estimate"] = _estimate(self, stage, preset, args)
            elif where == "." and not preset.estimate:  # inference only: the weights at their CUDA dtypes
                entry["gpu_weights"] = _weights(self)

    class _UserErrors(logging.Handler):  # the one line the CLI prints for a UserError
        def emit(self, rec):
            if rec.levelno >= logging.ERROR and rec.name == "diffedit_lab":
                captured["user_error"] = rec.getMessage().splitlines()[0]

    handler = _UserErrors()
    logging.getLogger("diffedit_lab").addHandler(handler)
    runner.run, EditingMethod.run_stage = run, run_stage

    def undo():
        runner.run, EditingMethod.run_stage = original_run, original_stage
        logging.getLogger("diffedit_lab").removeHandler(handler)
        undo_nodes()

    return undo


def _weights(method) -> dict[str, Any] | None:
    from torch import nn

    from experiments.smoke.estimate import GIB, static_bytes

    if not isinstance(method, nn.Module):
        return None
    static = static_bytes(method)
    return {"params_gib": static["params_bytes"] / GIB, "frozen_params": static["frozen_params"]}


def _estimate(method, stage, preset, args) -> dict[str, Any]:
    """The GPU-memory estimate of one training step of ``stage`` at the preset's GPU batch and precision."""
    from diffedit_lab.utils.config import compose_config
    from experiments.smoke.estimate import estimate
    from experiments.smoke.presets import batch_maker

    t0 = time.perf_counter()
    try:
        cfg = compose_config([*preset.command(stage.name, "cuda", args.set), "paths.output_dir=/tmp/diffedit_smoke"])
        batch_size, accumulate = preset.train_batch(cfg, stage.name)
        out = estimate(
            method,
            batch_maker(preset.family, method, cfg, stage.name),
            batch_size,
            accumulate,
            cfg.trainer.precision,
            knobs=preset.memory_knobs,
            batch_key=preset.batch_key,
            probe_batches=preset.probe_batches,
        )
    except Exception as exc:  # noqa: BLE001 - the stage itself succeeded: record why the estimate did not
        traceback.print_exc()
        return {"error": _last_line(exc)}
    out["estimate_s"] = time.perf_counter() - t0
    return out


if __name__ == "__main__":
    sys.exit(main())
