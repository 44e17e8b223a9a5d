"""Random streams under DDP: every rank draws its own numbers, and a checkpoint keeps every rank's stream.

Lightning writes checkpoints from rank 0 only, so a generator state saved by a module's ``on_save_checkpoint`` is
rank 0's; resumed as is, every rank would draw rank 0's numbers (a global batch of duplicated noise). Instead each
rank's state is gathered into the checkpoint (``on_save_checkpoint`` runs on every rank) and each rank restores its
own row. A checkpoint from another world size falls back to a fresh, distinct stream per rank
(:func:`rank_seed` of the step), which is reproducible but not the uninterrupted run's. :func:`seeded` builds
seeded networks without moving the global stream.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

import torch


def rank_seed(seed: int, rank: int, name: str = "", step: int = 0) -> int:
    """A seed for ``name``'s stream on ``rank`` (rank 0 at step 0: ``seed`` itself, so single-process runs keep
    their numbers)."""
    if rank == 0 and step == 0 and not name:
        return int(seed)
    return (int(seed) + 1_000_003 * int(rank) + 7919 * int(step) + zlib.crc32(name.encode())) % 2**63


def world(module) -> tuple[int, int]:
    """(global rank, world size) of the module's trainer, (0, 1) without one."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


def gather_states(module, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every rank's generator states, stacked (world, n) per key; {} in a single process. All ranks must call it."""
    _, size = world(module)
    if size == 1 or not states:
        return {}
    return {k: module.all_gather(states[k].to(module.device)).cpu() for k in sorted(states)}


def own_state(stacked: dict[str, torch.Tensor] | None, key: str, module) -> torch.Tensor | None:
    """This rank's row of a gathered state, if the checkpoint has one for this world size."""
    rank, size = world(module)
    rows = (stacked or {}).get(key)
    if rows is None or rows.ndim != 2 or rows.shape[0] != size:
        return None
    return rows[rank].to(torch.uint8).cpu()


def seed_stream(module, gen: torch.Generator, seed: int, key: str) -> None:
    """At the start of a fresh training run: ranks > 0 move to their own stream (rank 0 keeps ``seed``'s)."""
    rank, _ = world(module)
    if rank > 0 and module.global_step == 0:
        gen.manual_seed(rank_seed(seed, rank, key))


def save_stream(module, checkpoint: dict, key: str, gen: torch.Generator) -> None:
    """``checkpoint[key]`` = this rank's state; ``checkpoint[key + "_ranks"]`` = every rank's (under DDP)."""
    checkpoint[key] = gen.get_state()
    ranks = gather_states(module, {key: checkpoint[key]})
    if ranks:
        checkpoint[f"{key}_ranks"] = ranks[key]


def load_stream(module, checkpoint: dict, key: str, gen: torch.Generator, seed: int) -> None:
    """Restore this rank's stream saved by :func:`save_stream` (another world size: a distinct fresh stream)."""
    if key not in checkpoint:
        return
    own = own_state({key: checkpoint[f"{key}_ranks"]} if f"{key}_ranks" in checkpoint else None, key, module)
    rank, _ = world(module)
    if own is not None:
        gen.set_state(own)
    elif rank == 0:
        gen.set_state(checkpoint[key])
    else:
        gen.manual_seed(rank_seed(seed, rank, key, module.global_step))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with ``torch.manual_seed(seed)`` and restore the global CPU RNG (and that of a CUDA
    ``device``) afterwards, so building a seeded model (a fresh network, a random-weights prior) never shifts the
    random numbers drawn after it. With a ``device``, tensors created in the block without an explicit device are
    created there (fast random init of large models directly on the GPU)."""
    dev = torch.device(device) if device is not None else None
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev and dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(seed))
        with dev if dev is not None else contextlib.nullcontext():
            yield
