"""A run directory: the names of its files, how runs are found, locked and read.

A run lives in <runs-dir>/<run name>/:

    events.out.tfevents.*      TensorBoard, one file per session (a resume opens a new one)
    checkpoint.pt              the run's full state: what --resume reads
    final_model.pt             the final policy alone, written at the end
    models/step_00012345.pt    a snapshot of the policy at each checkpoint
    videos/eval_step_*.mp4     with --capture-video, an evaluation episode
    progress.json              the last progress line, for a sweep's --status
    summary.json               the final evaluation, speed and provenance: the run has finished
    run.lock                   held by the process training the run, while it trains
    benchmark.json, .log, .lock  a sweep's: the configuration that made the run, its log, its lock

Every reader of runs takes the names, the rule for finding runs and the lock from here.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
from typing import Any

CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "final_model.pt"
SUMMARY = "summary.json"
PROGRESS = "progress.json"
RUN_LOCK = "run.lock"
MODELS = "models"
VIDEOS = "videos"
EVENTS_PREFIX = "events.out.tfevents."  # TensorBoard's: <prefix><time>.<host>.<pid>.<n>

# What benchmark.sh's sweep (actor_critic/sweep.py) adds to the runs it starts.
SWEEP_CONFIG = "benchmark.json"  # the configuration that made the run: plot.py reads its setting
SWEEP_LOG = "benchmark.log"
SWEEP_LOCK = "benchmark.lock"

# Folders that plot.py (report/) and the published runs (gifs/) keep beside runs: never runs,
# whatever they hold.
NOT_RUNS = frozenset({"report", "gifs"})


def snapshot_path(run_dir: str, step: int) -> str:
    """models/step_00012345.pt: zero-padded, so that names sort as steps do."""
    return os.path.join(run_dir, MODELS, f"step_{step:08d}.pt")


def snapshots(run_dir: str) -> list[str]:
    """The run's policy snapshots, oldest first (by step: past 99,999,999 the names no longer sort)."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), MODELS, "step_*.pt")):
        step = re.fullmatch(r"step_(\d+)\.pt", os.path.basename(path))
        if step:
            found.append((int(step.group(1)), path))
    return [path for _, path in sorted(found)]


def video_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, VIDEOS, f"eval_step_{step:08d}.mp4")


def event_files(run_dir: str) -> list[str]:
    """The names of the run's TensorBoard files, sorted (not opened: that costs more)."""
    try:
        return sorted(name for name in os.listdir(run_dir) if name.startswith(EVENTS_PREFIX))
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# Finding runs: one rule for every reader
# ---------------------------------------------------------------------------------------------


def is_run(path: str) -> bool:
    """A run directory holds one of a run's own files: TensorBoard events (a run in progress has
    only these at first), checkpoint.pt, final_model.pt or summary.json. A sweep's benchmark.json
    alone is not a run: the sweep writes it before the run starts."""
    try:
        names = os.listdir(path)
    except OSError:  # not a directory, or one we may not read
        return False
    own_files = {CHECKPOINT, FINAL_MODEL, SUMMARY}
    return any(name in own_files or name.startswith(EVENTS_PREFIX) for name in names)


def find_runs(paths: list[str], finished: bool = False) -> list[str]:
    """The runs in `paths`, sorted, each once. A path is a run directory, or a folder of them one
    level down, as --runs-dir lays them out. Not deeper: runs/published/ and runs/sac_study/ are
    folders of runs of their own, and `plot.py runs/` must not count them as seeds beside yours.
    `finished`: only runs that wrote summary.json. NotADirectoryError for a path that is not a folder.
    """
    found = set()
    for path in paths:
        if not os.path.isdir(path):
            raise NotADirectoryError(f"{path} is not a directory")
        if is_run(path):
            candidates = [path]
        else:
            candidates = [
                entry.path for entry in os.scandir(path) if entry.name not in NOT_RUNS and is_run(entry.path)
            ]
        found.update(os.path.normpath(run) for run in candidates)
    if finished:
        found = {run for run in found if os.path.isfile(os.path.join(run, SUMMARY))}
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# Names that become part of a path
# ---------------------------------------------------------------------------------------------

NAME_MAX = 255  # bytes in one file name, on Linux's file systems


def check_name(flag: str, value: str) -> None:
    """A name that becomes one folder of a path (a run name, a sweep's --label, a study) must stay
    one folder inside --runs-dir: '..' or a '/' would put the run somewhere else, and a leading '-'
    would read as a flag where the name is passed on to a training script. Else one error line."""
    problems = [
        (value == "", "it is empty"),
        (value in (".", ".."), f"'{value}' names a folder that already is one"),
        (any(sep and sep in value for sep in (os.sep, os.altsep, "/")), "it holds a '/'"),
        (any(ord(char) < 32 or ord(char) == 127 for char in value), "it holds a control character"),
        (value.startswith("-"), "it starts with '-' (it would read as a flag)"),
        (len(value.encode(errors="surrogateescape")) > NAME_MAX, f"it is longer than {NAME_MAX} bytes"),
    ]
    for bad, why in problems:
        if bad:
            from actor_critic.cli import fail  # here: cli imports this module's names

            fail(f"{flag} {value!r} must be one name, a folder inside --runs-dir: {why}")


# ---------------------------------------------------------------------------------------------
# Locks: one process trains a run, one sweep runs it, one worker takes a trial
# ---------------------------------------------------------------------------------------------


class FileLock:
    """An exclusive lock (flock) on a file, held until release() (or the end of a `with` block, or
    this process). `held` says whether it was had: not when another process holds it and `wait` is
    False; with `wait`, this waits for it. On a file system without locks (ENOSYS on some cluster
    mounts) it counts as held: the training scripts, the sweep and the tuner go on without one.

    The lock belongs to the open file, so a child process started with pass_fds=(lock.fileno(),)
    holds it too, until the last of them closes it."""

    def __init__(self, path: str, wait: bool = False):
        self.path = path
        self.file = open(path, "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            self.held = True
        except BlockingIOError:
            self.held = False
            self.file.close()
        except OSError:
            self.held = True

    def fileno(self) -> int:
        return self.file.fileno()

    def release(self) -> None:
        self.file.close()  # closing the file releases the lock; a second call does nothing

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def is_locked(path: str) -> bool:
    """Whether some process (this one included, through another open file) holds the lock on
    `path` now. A file system without locks shows none held."""
    if not os.path.exists(path):
        return False
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


# ---------------------------------------------------------------------------------------------
# Reading and writing a run's JSON files
# ---------------------------------------------------------------------------------------------


def write_json_atomically(record: Any, path: str, indent: int | None = None) -> None:
    """JSON through a temporary file and a rename: a reader never sees half a file."""
    tmp_path = f"{path}.tmp"
    try:
        with open(tmp_path, "w") as f:
            json.dump(record, f, indent=indent)
        os.replace(tmp_path, path)
    except OSError:  # a full disk: no half-written file is left behind
        try:
            os.remove(tmp_path)
        except OSError:
            pass
        raise


def read_progress(run_dir: str) -> dict | None:
    """The last progress record of a run, or None if it has none (or it cannot be read)."""
    try:
        with open(os.path.join(run_dir, PROGRESS)) as f:
            record = json.load(f)
        return record if isinstance(record, dict) and {"step", "total_timesteps"} <= record.keys() else None
    except (OSError, ValueError):
        return None
