"""`make smoke-real`: every paper preset at its REAL shapes (random weights, ``debug=real_shapes``) through the CLI,
each stage of each preset as its own process on one run dir, with caps so a preset takes minutes on two cores.

    python -m experiments.smoke.run                                   # all presets → bench/results-smoke-real.json
    python -m experiments.smoke.run --only sdedit_512,ddib_512 --out /tmp/smoke.json
    python -m experiments.smoke.run --check                           # compose + start-up checks only (seconds)
    python -m experiments.smoke.run --table bench/results-smoke-real.json   # the README table of a results file

Per preset and stage it records the wall time and peak RSS of that process (``os.wait4``), what the process
measured inside (per-stage wall time, sampled peak RSS, peak CUDA memory, trainable/frozen parameters) and, after
each training stage, the GPU-memory estimate of one training step at the preset's own batch and precision against
a 24 GiB card (:mod:`.estimate`). A failing stage is recorded (the last line of its error) and the runner goes on
with the next preset. The JSON is written atomically after every stage. ``--device cuda`` (`make gpu-check`) runs
the presets without the CPU batch caps, one process per preset, within ``--budget-s``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments.smoke.presets import PRESETS, Preset

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m experiments.smoke.run", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help=f"comma-separated presets (default all): {', '.join(PRESETS)}")
    ap.add_argument("--out", default="bench/results-smoke-real.json", help="results JSON (written atomically)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--runs-dir", default="outputs/smoke_real", help="run dirs: <runs-dir>/<time>/<preset>/")
    ap.add_argument("--stages", default="", help="comma-separated subset of each preset's stages (default: all)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra override for every run (repeatable), e.g. paths.cache_dir=/tmp/cache",
    )
    ap.add_argument("--per-preset", action="store_true", help="one process per preset (default with --device cuda)")
    ap.add_argument("--budget-s", type=float, default=None, help="skip presets that would start after this")
    ap.add_argument("--timeout-s", type=float, default=3600.0, help="per process")
    ap.add_argument(
        "--wait-free-gb",
        type=float,
        default=0.0,
        help="before each process, wait (≤ 1 h) until this much memory is available: a shared machine",
    )
    ap.add_argument("--wait-for-memory", action="store_true", help="--wait-free-gb at each preset's usual peak")
    ap.add_argument("--merge", action="store_true", help="update the presets run now in an existing --out file")
    ap.add_argument("--keep", action="store_true", help="keep checkpoints/ (GBs at real size; removed by default)")
    ap.add_argument("--no-estimate", action="store_true", help="skip the GPU-memory estimates")
    ap.add_argument("--check", action="store_true", help="compose every preset and run its start-up checks only")
    ap.add_argument("--table", metavar="JSON", help="print the markdown table of a results file and exit")
    return ap.parse_args(argv)


def selected(only: str) -> list[Preset]:
    names = [n.strip() for n in only.split(",") if n.strip()] or list(PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise SystemExit(f"error: --only: unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    return [PRESETS[n] for n in names]


# --- start-up checks only ------------------------------------------------------------------------------------------
def check_preset(
    preset: Preset, device: str = "cpu", out_dir: str | Path = "/tmp/diffedit_smoke_check", extra: list[str] = ()
) -> list[str]:
    """Compose the preset's whole stage sequence as the CLI would and run every start-up check (``prepare``:
    method schema, trainer/data keys, weight files or their real shapes, the data, each stage's checks) — nothing
    built, nothing written. Returns the stages; raises what the CLI would print."""
    from diffedit_lab.run import prepare
    from diffedit_lab.utils.config import compose_config

    cfg = compose_config([*preset.command(None, device, extra), f"paths.output_dir={Path(out_dir) / preset.name}"])
    plan = prepare(cfg, check_data=True)
    return [s.name for s in plan.stages]


# --- running -------------------------------------------------------------------------------------------------------
def environment(device: str) -> dict[str, Any]:
    import torch

    env = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                           timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def run_process(cmd: list[str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``cmd`` (its own process group), output to ``log_path``; wall time and the kernel's peak RSS of that
    process (``os.wait4``), the exit status, and the last line of its output when it failed."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        status, usage, timed_out = None, None, False
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
                break
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
    out = {
        "process_wall_s": time.perf_counter() - t0,
        "process_peak_rss_mb": usage.ru_maxrss / 1024 if usage else None,
        "returncode": proc.returncode,
    }
    if timed_out:
        out["error"] = f"timed out after {timeout_s:.0f} s (killed)"
    elif proc.returncode < 0:  # a signal: SIGKILL from outside is usually the kernel's OOM killer
        name = signal.Signals(-proc.returncode).name
        hint = " (out of memory? the kernel's OOM killer sends it)" if name == "SIGKILL" else ""
        out["error"] = f"killed by {name}{hint}; last output: {last_error_line(log_path)}"
    elif proc.returncode != 0:
        out["error"] = last_error_line(log_path) or f"exit status {proc.returncode}"
    return out


def available_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def wait_for_memory(gb: float, limit_s: float = 3600.0) -> None:
    """On a machine shared with other jobs: start a real-size process only once ``gb`` are available (so that a
    neighbour's job is not the one the kernel's OOM killer picks), waiting at most ``limit_s``."""
    t0, told = time.time(), False
    while gb > 0 and (available_gb() or gb) < gb and time.time() - t0 < limit_s:
        if not told:
            print(f"  waiting for {gb:.0f} GB of free memory ({available_gb():.1f} GB now) …", flush=True)
            told = True
        time.sleep(15)


def last_error_line(log_path: Path) -> str | None:
    """The CLI's ``error: …`` line when there is one, else the last non-empty line of the output."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    return lines[-1] if lines else None


def run_preset(preset: Preset, args: argparse.Namespace, run_dir: Path, save, slot: dict) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {"family": preset.family, "note": preset.note, "run_dir": str(run_dir),
                           "stages_planned": preset.stages, "stages": {}, "status": "running"}  # fmt: skip
    slot[preset.name] = rec  # saved with every stage, not only at the end
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    stages = [s for s in preset.stages if not wanted or s in wanted]
    rec["stages_planned"] = stages
    groups = [",".join(stages)] if (args.per_preset or args.device == "cuda") else stages
    deadline = args._deadline
    for stage in groups:
        label = stage if "," not in stage else "all"
        result_path = run_dir / f"smoke_{label}.json"
        cmd = [sys.executable, "-m", "experiments.smoke.child", "--preset", preset.name, "--run-dir", str(run_dir),
               "--result", str(result_path), "--device", args.device]  # fmt: skip
        cmd += ["--stage", stage, *(f"--set={o}" for o in args.set)]
        if args.no_estimate:
            cmd.append("--no-estimate")
        timeout = args.timeout_s if deadline is None else max(30.0, min(args.timeout_s, deadline - time.time()))
        wait_for_memory(preset.stage_peak_gb(stage) if args.wait_for_memory else args.wait_free_gb)
        print(f"[{preset.name}] {label} …", flush=True)
        proc = run_process(cmd, run_dir / f"smoke_{label}.log", timeout)
        child = json.loads(result_path.read_text()) if result_path.is_file() else {}
        entry = {**proc, "command": child.get("command")}
        for key in ("wall_s", "peak_rss_mb", "peak_cuda_mb", "params", "metrics"):
            if key in child:
                entry[key] = child[key]
        entry["measured"] = child.get("stages", {})
        if "error" not in entry and child.get("error"):
            entry["error"] = child["error"]
        rec["stages"][label] = entry
        ok = proc["returncode"] == 0 and "error" not in entry
        print(
            f"[{preset.name}] {label}: {'ok' if ok else 'FAILED: ' + str(entry.get('error'))} "
            f"({proc['process_wall_s']:.0f} s, peak RSS {proc['process_peak_rss_mb'] or 0:.0f} MB)",
            flush=True,
        )
        save()
        if not ok:
            rec["status"] = "failed"
            rec["error"] = f"{label}: {entry.get('error')}"
            break
    else:
        rec["status"] = "ok"
    rec |= summarize(rec)
    if not args.keep:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return rec


def summarize(rec: dict[str, Any]) -> dict[str, Any]:
    """Per preset: total wall time, the largest peak RSS, the parameters of its training stage (else the last
    stage), and the largest GPU-memory estimate over its training stages."""
    stages = rec["stages"].values()
    measured = {k: v for s in stages for k, v in (s.get("measured") or {}).items()}
    trained = [m["params"] for k, m in measured.items() if m.get("params") and m.get("train") and ":" not in k]
    anyp = [m["params"] for m in measured.values() if m.get("params")]
    # the parameters of its largest training stage, else (inference only) of its last stage
    params = max(trained, key=lambda p: (p["trainable"], p["frozen"]), default=anyp[-1] if anyp else None)
    estimates = {k: m["gpu_estimate"] for k, m in measured.items() if "gpu_estimate" in m}
    worst = max((e for e in estimates.values() if "total_gib" in e), key=lambda e: e["total_gib"], default=None)
    weights = [m["gpu_weights"] for m in measured.values() if m.get("gpu_weights")]
    rss = [s.get("process_peak_rss_mb") or 0 for s in stages]
    stage_rss = [m["peak_rss_mb"] for m in measured.values() if m.get("peak_rss_mb")]  # the stages alone
    cuda = [s.get("peak_cuda_mb") for s in stages if s.get("peak_cuda_mb") is not None]
    return {
        "wall_s": sum(s.get("process_wall_s") or 0 for s in stages),
        "peak_rss_mb": max(stage_rss, default=None) or max(rss, default=None),
        "process_peak_rss_mb": max(rss, default=None),  # + the estimate's own forward passes
        "peak_cuda_mb": max(cuda, default=None),
        "params": params,
        "gpu_estimate": worst,
        "gpu_estimates": estimates,
        "gpu_weights": max(weights, key=lambda w: w["params_gib"], default=None),  # inference-only presets
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return 0
    presets = selected(args.only)
    if args.check:
        bad = 0
        for p in presets:
            try:
                print(f"{p.name}: ok ({' → '.join(check_preset(p, args.device, extra=args.set))})")
            except Exception as exc:  # noqa: BLE001 - one line per preset, like the CLI
                bad += 1
                print(f"{p.name}: error: {(str(exc).splitlines() or [type(exc).__name__])[0]}")
        return 1 if bad else 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda: no CUDA device visible (torch.cuda.is_available() is False)", file=sys.stderr)
            return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    t_start = time.time()
    args._deadline = t_start + args.budget_s if args.budget_s else None
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    runs = (ROOT / args.runs_dir / stamp) if not Path(args.runs_dir).is_absolute() else Path(args.runs_dir) / stamp
    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    results: dict[str, Any] = {
        "env": environment(args.device),
        "settings": {"device": args.device, "presets": [p.name for p in presets], "runs_dir": str(runs),
                     "budget_gib": 24.0, "per_preset": bool(args.per_preset or args.device == "cuda")},
        "presets": {},
    }  # fmt: skip
    earlier: dict[str, Any] = {}
    if args.merge and out.is_file():  # earlier presets kept; the ones run now replace theirs (--stages: those stages)
        earlier = json.loads(out.read_text())
        results["presets"] = {
            k: v for k, v in earlier.get("presets", {}).items() if k not in results["settings"]["presets"]
        }
        results["earlier_runs"] = [
            *earlier.get("earlier_runs", []),
            {"env": earlier.get("env"), "presets": list(results["presets"])},
        ]

    def save() -> None:
        from diffedit_lab.utils.io import atomic_json_dump

        results["elapsed_s"] = time.time() - t_start
        atomic_json_dump(results, out)

    for preset in presets:
        if args._deadline is not None and time.time() > args._deadline - 30:
            results["presets"][preset.name] = {"family": preset.family, "status": "skipped",
                                               "error": f"time budget of {args.budget_s:.0f} s spent"}  # fmt: skip
            save()
            continue
        results["presets"][preset.name] = {"status": "running"}
        try:
            rec = run_preset(preset, args, runs / preset.name, save, results["presets"])
            before = earlier.get("presets", {}).get(preset.name)
            if args.stages and before and before.get("stages"):
                rec["stages"] = {**before["stages"], **rec["stages"]}
                rec["stages_planned"] = [s for s in preset.stages if s in rec["stages"]]
                failed = [k for k, v in rec["stages"].items() if v.get("error") or v.get("returncode")]
                rec["status"] = "failed" if failed else "ok"
                rec |= summarize(rec)
            results["presets"][preset.name] = rec
        except KeyboardInterrupt:
            results["presets"][preset.name] = {"status": "interrupted"}
            save()
            raise
        save()
    print(markdown_table(results))
    print(f"→ {out}")
    return 0 if all(r.get("status") == "ok" for r in results["presets"].values()) else 1


# --- the README table ----------------------------------------------------------------------------------------------
def _m(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.1f}M"


def markdown_table(results: dict[str, Any]) -> str:
    rows = ["| preset | stages | wall time | peak RSS | trainable / frozen params | GPU-memory estimate | 24 GB | "
            "settings that fit |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    presets = results.get("presets", {})
    order = [n for n in PRESETS if n in presets] + [n for n in presets if n not in PRESETS]
    for name in order:
        r = presets[name]
        stages = r.get("stages", {})
        if stages:
            r = {**r, **summarize(r)}
        done = []
        planned = r.get("stages_planned") or []
        for label in sorted(stages, key=lambda k: planned.index(k) if k in planned else len(planned)):
            s = stages[label]
            if label == "all":
                done += [k for k in (s.get("measured") or {}) if ":" not in k]
            else:
                done.append(label if "error" not in s else f"**{label} failed**")
        if r.get("status") == "skipped":
            done = [f"skipped ({r.get('error')})"]
        wall = f"{r['wall_s'] / 60:.1f} min" if r.get("wall_s") else "—"
        rss = f"{r['peak_rss_mb'] / 1024:.1f} GiB" if r.get("peak_rss_mb") else "—"
        if r.get("peak_cuda_mb"):
            rss += f" (CUDA {r['peak_cuda_mb'] / 1024:.1f} GiB)"
        p = r.get("params") or {}
        params = f"{_m(p.get('trainable'))} / {_m(p.get('frozen'))}" if p else "— (nested runs)"
        e = r.get("gpu_estimate")
        if e:
            est = (f"{e['total_gib']:.1f} GiB (params {e['params_gib']:.1f} + grads {e['grads_gib']:.1f} + "
                   f"{e['optimizer'] or 'optim'} {e['optimizer_gib']:.1f} + act {e['activations_gib']:.1f} @ batch "
                   f"{e['batch_size']}, {e['precision']} + 1)")  # fmt: skip
            fit = e["verdict"]
            settings = " ".join(f"`{s}`" for s in e.get("fit_settings") or []) or e.get("note", "")
        elif r.get("gpu_weights"):
            w = r["gpu_weights"]["params_gib"]
            est = (
                f"{w + 1:.1f} GiB + activations (weights {w:.1f} at CUDA dtypes + 1; inference only, no training step)"
            )
            fit, settings = ("fits" if w + 1 < 0.5 * 24 else "see estimate"), "as configured"
        else:
            est, fit, settings = "— (no training step)", "—", ""
        if r.get("status") == "failed":
            settings = f"{settings} — error: {r.get('error')}".strip(" —")
        rows.append(f"| {name} | {' → '.join(done) or '—'} | {wall} | {rss} | {params} | {est} | {fit} | {settings} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
