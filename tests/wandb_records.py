"""Read an offline W&B run back from its ``run-<id>.wandb`` file: wandb's own protobuf ``Record`` messages, framed
in the LevelDB log format wandb writes (32 KiB blocks; each chunk: crc32, length, type; a 7-byte file header)."""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32768
CHUNK_HEADER = 7  # crc32 (4), length (2), type (1): 1 full, 2 first, 3 middle, 4 last


def records(path: str | Path) -> list:
    """Every ``wandb_internal_pb2.Record`` of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pos, parts = [], 7, []
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:  # the block's trailer: zero padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0 and length == 0:  # padding to the block end
            pos += room
            continue
        parts.append(data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length])
        pos += CHUNK_HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            out.append(record)
            parts = []
    return out


@dataclass
class OfflineRun:
    """What the dashboard of one offline run shows: run fields, config, history rows, summary, metric definitions,
    saved files and logged artifacts."""

    folder: Path
    run: object = None
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # name -> MetricRecord
    files: list[str] = field(default_factory=list)
    artifacts: list = field(default_factory=list)

    def series(self, key: str) -> list:
        return [row[key] for row in self.history if key in row]

    def keys(self) -> set[str]:
        return {k for row in self.history for k in row}


def _value(text: str):
    return json.loads(text)


def read_run(folder: str | Path) -> OfflineRun:
    """``folder``: an ``offline-run-*`` directory."""
    folder = Path(folder)
    run = OfflineRun(folder)
    config: dict = defaultdict(dict)
    for r in records(next(folder.glob("run-*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.run = r.run
            for item in r.run.config.update:
                config[item.key] = _value(item.value_json)
        elif kind == "config":
            for item in r.config.update:
                config[item.key] = _value(item.value_json)
        elif kind == "history":
            run.history.append({i.key or "/".join(i.nested_key): _value(i.value_json) for i in r.history.item})
        elif kind == "summary":
            for item in r.summary.update:
                run.summary[item.key or "/".join(item.nested_key)] = _value(item.value_json)
        elif kind == "metric":
            run.metrics[r.metric.name or r.metric.glob_name] = r.metric
        elif kind == "files":
            run.files += [f.path for f in r.files.files]
        elif kind == "artifact":
            run.artifacts.append(r.artifact)
    run.config = {k: (v.get("value") if isinstance(v, dict) and "value" in v else v) for k, v in config.items()}
    return run


def offline_runs(run_dir: str | Path) -> list[Path]:
    return sorted(Path(run_dir).glob("wandb/offline-run-*"))
