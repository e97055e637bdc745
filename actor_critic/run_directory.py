"""A run directory: its file names, how runs are found, locked and read."""

from __future__ import annotations

import json
import os
from typing import Any

CHECKPOINT = "checkpoint.pt"  # the run's full state: what --resume reads
FINAL_MODEL = "final_model.pt"  # the final policy alone
SUMMARY = "summary.json"
RUN_LOCK = "run.lock"  # held by the process training the run, while it runs
PROGRESS = "progress.json"


def write_json_atomically(record: Any, path: str, indent: int | None = None) -> None:
    """JSON through a temporary file and a rename: a reader never sees half a file."""
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "w") as f:
        json.dump(record, f, indent=indent)
    os.replace(tmp_path, path)



def read_progress(run_dir: str) -> dict | None:
    """The last progress record of a run, or None if it has none (or it cannot be read)."""
    try:
        with open(os.path.join(run_dir, PROGRESS)) as f:
            record = json.load(f)
        return record if isinstance(record, dict) and {"step", "total_timesteps"} <= record.keys() else None
    except (OSError, ValueError):
        return None

