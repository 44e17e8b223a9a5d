"""GPU-memory estimate of one training step of a preset, from a CPU run (``make smoke-real``).

    total = parameters (trainable fp32; each frozen component at the dtype it takes on CUDA — ``dtype: auto`` =
            fp16, CLIP's ``precision``, fp32 otherwise)
          + gradients (fp32, trainable) + optimiser state (Adam/AdamW: 2 × fp32 per trained parameter)
          + activations: the bytes autograd saves for backward during ONE training step (each storage once,
            parameters excluded), recorded with ``torch.autograd.graph.saved_tensors_hooks`` while the method's own
            ``training_step`` runs on a batch of the preset's configured size under the preset's autocast dtype
            (bf16 on the CPU for ``bf16-mixed`` and ``16-mixed`` — the same bytes). Tensors saved in fp32 inside a
            component that runs in half precision on CUDA (its ``dtype: auto``) count half. Batches above 2 are
            extrapolated linearly from batches 1 and 2 (the saved bytes are affine in the batch size); presets too heavy
            for a second fp32 CPU forward (SDD, Rectifier) scale batch 1 in proportion (their saved tensors are all
            per sample).
          + 1 GiB for the CUDA context and allocator slack (not in ``max_memory_allocated``).

Backward-pass transients (activation gradients alive at once) are not included: a total close to the budget is
"tight", not "fits". Compared with a 24 GiB card; a preset that does not fit gets the largest batch that does
(with the accumulation that keeps its global batch) or, when even batch 1 does not, what to change.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

GIB = 2**30
BUDGET_GIB = 24.0
CUDA_RESERVE_GIB = 1.0
TIGHT = 0.9  # above this share of the budget the verdict is "tight"
_HALF_NAMES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
               "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}  # fmt: skip


class _StepDone(Exception):
    """Raised by the stand-in ``manual_backward`` of a manually optimised method: the graph of one optimiser
    step is complete (Asyrp steps once per timestep inside ``training_step``)."""


# --- which dtype a frozen component takes on CUDA -----------------------------------------------------------------
def record_component_nodes() -> Callable[[], None]:
    """Make ``EditingMethod.component`` remember each component's config node (``_smoke_nodes``), so the dtype the
    component would take on CUDA can be read after the stage; returns the undo."""
    from diffedit_lab.methods.base import EditingMethod

    original = EditingMethod.component

    def component(self, name, cfg):
        nodes = self.__dict__.setdefault("_smoke_nodes", {})
        if name not in nodes and cfg is not None:
            nodes[name] = dict(cfg) if not hasattr(cfg, "items") else {k: cfg.get(k) for k in cfg}
        return original(self, name, cfg)

    EditingMethod.component = component
    return lambda: setattr(EditingMethod, "component", original)


def cuda_dtype(node: dict | None, actual: torch.dtype) -> torch.dtype:
    """The dtype a component built from ``node`` takes on a CUDA device."""
    if not node:
        return actual
    if node.get("dtype") is not None:
        from diffedit_lab.diffusion.priors.base import resolve_dtype

        return resolve_dtype(node["dtype"], "cuda")
    if node.get("precision") is not None:
        return _HALF_NAMES.get(str(node["precision"]), actual)
    return actual


def autocast_dtype(precision: Any) -> torch.dtype | None:
    p = str(precision)
    if p.startswith("bf16"):
        return torch.bfloat16
    if p.startswith("16"):
        return torch.float16
    return None


# --- the pieces -----------------------------------------------------------------------------------------------------
def _bytes(t: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    return t.numel() * (dtype or t.dtype).itemsize


def static_bytes(method: nn.Module) -> dict[str, Any]:
    """Parameters (and buffers) at their CUDA dtypes, gradients, optimiser state; the half-precision components."""
    nodes = method.__dict__.get("_smoke_nodes", {})
    seen: set[int] = set()
    trainable = frozen = 0
    n_trainable = n_frozen = 0
    half_modules: list[nn.Module] = []
    frozen_items = sorted((method._frozen or {}).items(), key=lambda kv: kv[0] not in nodes)  # built from a node first
    for name, comp in [(None, method), *frozen_items]:
        if not isinstance(comp, nn.Module):
            continue
        first = next(comp.parameters(), None)
        target = cuda_dtype(nodes.get(name), first.dtype if first is not None else torch.float32)
        if name is not None and target in (torch.float16, torch.bfloat16):
            half_modules.append(comp)
        for t in [*comp.parameters(), *comp.buffers()]:
            if id(t) in seen:
                continue
            seen.add(id(t))
            is_param = isinstance(t, nn.Parameter)
            if is_param and t.requires_grad:
                trainable += _bytes(t, torch.float32)
                n_trainable += t.numel()
            else:
                dtype = target if (name is not None and t.is_floating_point()) else t.dtype
                frozen += _bytes(t, dtype)
                n_frozen += t.numel() if is_param else 0
    optimizer_bytes, optimizer = 0, ""
    opt = _optimizer(method)
    if opt is not None:
        optimizer = type(opt).__name__
        per = {"Adam": 8, "AdamW": 8}.get(optimizer)
        if per is None and optimizer == "SGD":
            per = 4 if any(g.get("momentum", 0) for g in opt.param_groups) else 0
        params = [p for g in opt.param_groups for p in g["params"]]
        optimizer_bytes = (per if per is not None else 8) * sum(p.numel() for p in params)
    return {
        "trainable_params": n_trainable,
        "frozen_params": n_frozen,
        "params_bytes": trainable + frozen,
        "trainable_bytes": trainable,
        "frozen_bytes": frozen,
        "grad_bytes": trainable,
        "optimizer": optimizer,
        "optimizer_bytes": optimizer_bytes,
        "half_modules": half_modules,
    }


def _optimizer(method: nn.Module):
    try:
        out = method.configure_optimizers()
    except Exception:  # noqa: BLE001 - a method that cannot build its optimiser outside a stage: no state counted
        return None
    if isinstance(out, dict):
        out = out.get("optimizer")
    if isinstance(out, list | tuple):
        out = out[0] if out else None
        if isinstance(out, list | tuple):
            out = out[0] if out else None
    return out if isinstance(out, torch.optim.Optimizer) else None


def saved_bytes(
    method: nn.Module,
    batch: dict,
    half_modules: list[nn.Module],
    amp: torch.dtype | None,
) -> int:
    """Bytes autograd saves during one ``training_step`` on ``batch`` (each storage once, no parameters)."""
    device = method.device
    exclude = {t.untyped_storage().data_ptr() for m in [method, *half_modules] for t in m.parameters()}
    exclude |= {t.untyped_storage().data_ptr() for c in (method._frozen or {}).values()
                if isinstance(c, nn.Module) for t in c.parameters()}  # fmt: skip
    depth = [0]
    seen: dict[int, float] = {}
    keep: list[torch.Tensor] = []

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr and ptr not in exclude and ptr not in seen:
            scale = 0.5 if depth[0] > 0 and t.dtype == torch.float32 else 1.0
            seen[ptr] = storage.nbytes() * scale
            keep.append(t)  # alive until counted: no address is reused by another storage meanwhile
        return t

    def enter(*_):
        depth[0] += 1

    def leave(*_):
        depth[0] -= 1

    handles = []
    for comp in half_modules:
        for sub in comp.modules():
            handles.append(sub.register_forward_pre_hook(enter))
            handles.append(sub.register_forward_hook(leave))
    manual = not getattr(method, "automatic_optimization", True)
    trainer = getattr(method, "_trainer", None)
    method._trainer = None  # the finished stage's Trainer: `self.log` outside its loop would raise; without, a no-op
    patched = {}
    if manual:  # one optimiser step: stop at the first backward
        patched = {"optimizers": lambda *a, **k: _NullOptimizer(), "manual_backward": _stop}
        for k, v in patched.items():
            object.__setattr__(method, k, v)
    amp_ctx = torch.autocast(device.type, dtype=_cpu_amp(amp, device)) if amp else contextlib.nullcontext()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp_ctx, torch.enable_grad():
            try:
                out = method.training_step(batch, 0)
            except _StepDone:
                out = None
        del out
    finally:
        for h in handles:
            h.remove()
        for k in patched:
            object.__delattr__(method, k)
        method._trainer = trainer
    total = int(sum(seen.values()))
    keep.clear()
    return total


def _cpu_amp(amp: torch.dtype, device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cpu" else amp  # CPU: bf16 stands in for fp16 (the same bytes)


def _stop(*_a, **_k):
    raise _StepDone


class _NullOptimizer:
    param_groups = [{"lr": 0.0}]

    def zero_grad(self, *a, **k):
        pass

    def step(self, *a, **k):
        pass


# --- the estimate -------------------------------------------------------------------------------------------------
def estimate(
    method: nn.Module,
    make_batch: Callable[[int], dict],
    batch_size: int,
    accumulate: int,
    precision: Any,
    budget_gib: float = BUDGET_GIB,
    knobs: dict[str, str] | None = None,
    batch_key: str = "data.batch_size",
    probe_batches: tuple[int, ...] = (1, 2),
) -> dict[str, Any]:
    """Everything above for one training stage of ``method`` (already built and trained by the stage)."""
    static = static_bytes(method)
    amp = autocast_dtype(precision)
    measured: dict[int, int] = {}
    proportional = tuple(probe_batches) == (1,)
    sizes = [1] if proportional else [batch_size] if batch_size <= 2 else [1, 2]
    for b in sizes:
        measured[b] = saved_bytes(method, make_batch(b), static["half_modules"], amp)
    if proportional or batch_size <= 2:
        per_sample = measured[sizes[0]] / sizes[0]
        act = per_sample * batch_size
        intercept = 0.0
    else:
        per_sample = max(measured[2] - measured[1], 0)
        intercept = measured[1] - per_sample
        act = intercept + per_sample * batch_size
    fixed = static["params_bytes"] + static["grad_bytes"] + static["optimizer_bytes"] + CUDA_RESERVE_GIB * GIB
    total = fixed + act
    budget = budget_gib * GIB
    out = {
        "batch_size": batch_size,
        "accumulate_grad_batches": accumulate,
        "precision": str(precision),
        "autocast": str(amp).replace("torch.", "") if amp else None,
        "trainable_params": static["trainable_params"],
        "frozen_params": static["frozen_params"],
        "optimizer": static["optimizer"],
        "params_gib": static["params_bytes"] / GIB,
        "grads_gib": static["grad_bytes"] / GIB,
        "optimizer_gib": static["optimizer_bytes"] / GIB,
        "activations_gib": act / GIB,
        "activations_measured_gib": {str(b): v / GIB for b, v in measured.items()},
        "activations_per_sample_gib": per_sample / GIB,
        "reserve_gib": CUDA_RESERVE_GIB,
        "total_gib": total / GIB,
        "budget_gib": budget_gib,
    }
    out |= verdict(total, fixed + intercept, per_sample, budget, batch_size, accumulate, knobs or {}, batch_key)
    return out


def verdict(total, fixed, per_sample, budget, batch_size, accumulate, knobs, batch_key="data.batch_size"):
    """fits / tight / does not fit, and the settings that fit."""
    largest = int((budget - fixed) // per_sample) if per_sample > 0 else batch_size
    if total <= TIGHT * budget:
        word = "fits"
    elif total <= budget:
        word = "tight"
    else:
        word = "does not fit"
    global_batch = batch_size * accumulate
    settings: list[str] = []
    if word == "fits":
        note = f"fits as configured (up to {batch_key}={largest})" if largest > batch_size else "fits as configured"
    elif largest >= 1:
        safe = int((TIGHT * budget - fixed) // per_sample) if per_sample > 0 else batch_size
        b = min(batch_size, safe if safe >= 1 else largest)  # under 90 % of the card when possible
        acc = math.ceil(global_batch / b)
        settings = [f"{batch_key}={b}", f"trainer.accumulate_grad_batches={acc}"]
        note = f"needs {total / GIB:.1f} GiB; batch {b} × {acc} accumulated (global {b * acc}) fits"
    else:
        settings = list(knobs.values()) or ["trainer.precision=bf16-mixed"]
        note = (f"needs {total / GIB:.1f} GiB and {fixed / GIB:.1f} GiB before any activation: batch 1 does not fit; "
                f"try {', '.join(knobs) or 'lower precision'}")  # fmt: skip
    return {"verdict": word, "largest_batch": max(largest, 0), "fit_settings": settings, "note": note}
