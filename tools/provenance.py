"""Where did each published number come from? One provenance line per run, read from the run's own files.

    python tools/provenance.py runs/published                                   # one line per run
    python tools/provenance.py runs/published/Walker2d-v4__sac__default__3      # one run
    python tools/provenance.py runs/published --markdown docs/provenance.md     # and the docs page

For every run directory given, or found one level under a folder given (a run directory holds
summary.json), it prints a line such as

    Walker2d-v4__sac__default__3: 3 sessions (started at step 0; resumed at 28,994 and 186,174),
    8,477 s wall-clock, threads 2 (last session), CPU not recorded

Sources, best first:
- summary.json's "sessions" (written by newer runs): per session its exact start step, wall clock,
  CPU model, torch's thread count and device.
- Otherwise the TensorBoard event files, one per session (a resume opens a new one), ordered by the
  timestamp in their names. A resumed session's file starts with TensorBoard's session-start record
  at the writer's purge_step, which the training scripts set to the checkpoint's step + 1: that
  gives the exact step it resumed from. A file without that record (not written by these scripts)
  only has its smallest logged scalar step, a little after the checkpoint: "resumed near N".
  Threads then come from final_model.pt's settings, which are the last session's; the CPU was not
  recorded.
The wall clock is summary.json's wall_clock_s: each resumed session continues the clock saved in its
checkpoint, so the time a killed session spent after its last checkpoint is not in it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actor_critic import run_directory
from actor_critic.run_directory import EVENTS_PREFIX, FINAL_MODEL, SUMMARY


class ProvenanceError(Exception):
    """Bad input: reported as one "error:" line and exit status 1."""


@dataclass
class Session:
    start_step: int | None  # None: not known (a resumed session that logged no scalar)
    exact: bool  # start_step is the checkpoint's step, not the first step logged after it
    resumed: bool  # continued a checkpoint (False: a fresh start)
    cpu: str | None = None
    threads: int | None = None
    device: str | None = None


@dataclass
class Provenance:
    run: str
    sessions: list[Session]
    wall_clock_s: float | None
    threads: str  # e.g. "2 (last session)", "1, 2 and 2 (by session)", "not recorded"
    cpu: str  # e.g. "AMD EPYC 7B13, device cpu", "not recorded"

    def resumes(self) -> list[str]:
        """The resumed sessions' start steps as words: "at 28,994", "near 29,000", "at an unknown step"."""
        words = []
        for session in self.sessions[1:]:
            if session.start_step is None:
                words.append("at an unknown step")
            else:
                words.append(f"{'at' if session.exact else 'near'} {session.start_step:,}")
        return words

    def line(self) -> str:
        first = self.sessions[0]
        if first.resumed:  # the event files of the sessions before it are gone
            parts = [f"the first session on record resumed at {first.start_step or 0:,}"]
        else:
            parts = [f"started at step {first.start_step:,}"]
        if len(self.sessions) > 1:
            # "at 1 and at 2" -> "at 1 and 2"; a word changes only where the source does.
            words, previous = [], None
            for word in self.resumes():
                kind, _, number = word.partition(" ")
                words.append(number if kind == previous else word)
                previous = kind
            parts.append(f"resumed {join(words)}")
        count = f"{len(self.sessions)} session{'s' if len(self.sessions) != 1 else ''}"
        return (
            f"{self.run}: {count} ({'; '.join(parts)}), {wall_clock(self.wall_clock_s)} wall-clock, "
            f"threads {self.threads}, CPU {self.cpu}"
        )

    def row(self) -> str:
        resumed = "; ".join(w.removeprefix("at ") for w in self.resumes()) or "–"
        cells = [
            f"`{self.run}`",
            str(len(self.sessions)),
            resumed,
            wall_clock(self.wall_clock_s),
            self.threads,
            self.cpu,
        ]
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def wall_clock(seconds: float | None) -> str:
    return "not recorded" if seconds is None else f"{round(seconds):,} s"


def same_or_by_session(values: list[Any], show=str) -> str:
    """One value if every session had it, else each session's in order."""
    if all(value is None for value in values):
        return "not recorded"
    texts = ["not recorded" if value is None else show(value) for value in values]
    return texts[0] if len(set(texts)) == 1 else f"{join(texts)} (by session)"


def show_threads(threads: int) -> str:
    return "0 (torch's default)" if threads == 0 else str(threads)


# --- reading the run's files ---------------------------------------------------------------------


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProvenanceError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ProvenanceError(f"{path} does not hold a JSON object")
    return data


def saved_threads(run_dir: Path) -> int | None:
    """args["threads"] of final_model.pt (the settings of the session that finished the run)."""
    path = run_dir / FINAL_MODEL
    if not path.exists():
        return None
    import torch  # here, not at the top: only this reads a torch file

    try:
        model = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable or unsafe file: one line, no traceback
        raise ProvenanceError(f"cannot read {path}: {str(e).splitlines()[0][:200]}") from None
    args = model.get("args") if isinstance(model, dict) else None
    threads = args.get("threads") if isinstance(args, dict) else None
    return threads if isinstance(threads, int) else None


def event_files(run_dir: Path) -> list[Path]:
    """The run's event files, oldest session first (by the timestamp in the name)."""

    def created(path: Path) -> tuple[int, str]:
        stamp = path.name[len(EVENTS_PREFIX) :].split(".", 1)[0]
        return (int(stamp) if stamp.isdigit() else 0, path.name)

    files = (run_dir / name for name in run_directory.event_files(str(run_dir)))
    return sorted((path for path in files if path.is_file()), key=created)


def is_scalar(value: Any) -> bool:
    return value.metadata.plugin_data.plugin_name == "scalars"


def session_from_events(path: Path, first: bool) -> Session:
    """A session's start: the session-start record (purge_step = checkpoint step + 1) if the file has
    one, else step 0 for the run's first file, else the smallest scalar step logged."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    try:
        events = EventFileLoader(str(path)).Load()
        # The writer puts its session-start record before anything logged: only the head is read
        # (the file-reading code checks every byte in Python, so whole files would take seconds).
        first_scalar = None
        for event in events:
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                return Session(start_step=event.step - 1, exact=True, resumed=True)
            if event.HasField("summary") and any(is_scalar(v) for v in event.summary.value):
                first_scalar = event.step
                break
        if first:
            return Session(start_step=0, exact=True, resumed=False)
        if first_scalar is None:
            return Session(start_step=None, exact=False, resumed=True)
        # Steps need not be logged in order: the smallest over the whole file.
        smallest = first_scalar
        for event in events:
            if event.HasField("summary") and any(is_scalar(v) for v in event.summary.value):
                smallest = min(smallest, event.step)
        return Session(start_step=smallest, exact=False, resumed=True)
    except Exception as e:
        raise ProvenanceError(f"cannot read {path}: {str(e).splitlines()[0][:200]}") from None


def sessions_from_summary(raw: Any, path: Path) -> list[Session]:
    if not isinstance(raw, list) or not raw:
        raise ProvenanceError(f'{path}: "sessions" must be a non-empty list')
    sessions = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("start_step"), int):
            raise ProvenanceError(f'{path}: "sessions"[{i}] has no integer "start_step"')
        threads = entry.get("threads")
        sessions.append(
            Session(
                start_step=entry["start_step"],
                exact=True,
                resumed=i > 0,
                cpu=str(entry["cpu"]) if entry.get("cpu") else None,
                threads=threads if isinstance(threads, int) else None,
                device=str(entry["device"]) if entry.get("device") else None,
            )
        )
    return sessions


def provenance(run_dir: Path) -> Provenance:
    summary_path = run_dir / SUMMARY
    summary = read_json(summary_path)
    wall = summary.get("wall_clock_s")
    wall = float(wall) if isinstance(wall, int | float) else None
    if "sessions" in summary:
        sessions = sessions_from_summary(summary["sessions"], summary_path)
        if wall is None and all(isinstance(s.get("wall_clock_s"), int | float) for s in summary["sessions"]):
            wall = float(sum(s["wall_clock_s"] for s in summary["sessions"]))
        threads = same_or_by_session([s.threads for s in sessions], show_threads)
        cpu = same_or_by_session([s.cpu for s in sessions])
        devices = same_or_by_session([s.device for s in sessions])
        if devices != "not recorded":
            cpu += f", device {devices}"
        return Provenance(run_dir.name, sessions, wall, threads, cpu)
    files = event_files(run_dir)
    if not files:
        raise ProvenanceError(f'{run_dir} has no TensorBoard event files and no "sessions" in summary.json')
    sessions = [session_from_events(path, first=i == 0) for i, path in enumerate(files)]
    last = saved_threads(run_dir)
    if last is None:
        threads = "not recorded"
    else:
        threads = "0 (torch's default; last session)" if last == 0 else f"{last} (last session)"
    return Provenance(run_dir.name, sessions, wall, threads, "not recorded")


def run_dirs(paths: list[str]) -> list[Path]:
    """The finished runs of each path, a run directory or a folder of them (as plot.py finds runs),
    in the order given; bad input raises ProvenanceError."""
    found = []
    for name in paths:
        path = Path(name)
        if not path.exists():
            raise ProvenanceError(f"{name} does not exist")
        if not path.is_dir():
            raise ProvenanceError(f"{name} is not a directory (give a run directory or a folder of runs)")
        runs = run_directory.find_runs([name], finished=True)  # only a finished run has a provenance
        if not runs:
            raise ProvenanceError(f"{name} holds no finished runs (a finished run directory holds {SUMMARY})")
        found.extend(Path(run) for run in runs)
    return found


def markdown(runs: list[Provenance], command: str) -> str:
    lines = [
        "# Provenance of the published runs",
        "",
        f"This page is generated from the runs' own files by `{command}`; do not edit it by hand.",
        "",
        "A run stopped and resumed from its checkpoint is one run in several sessions.",
        "",
        "- *Resumed from*: the step of the checkpoint each later session continued, exact where the run "
        "recorded it (TensorBoard's session-start record, or summary.json's `sessions`); *near N* is only "
        "the first step logged after the resume. A session killed between checkpoints repeats the steps "
        "after its last one; a step listed twice means a session stopped before writing a checkpoint.",
        "- *Wall-clock*: summary.json's `wall_clock_s`, each session's time up to the checkpoint the next "
        "one continued, plus the last session.",
        "- *Threads*: torch's CPU threads of each session where the run recorded them; otherwise the "
        "last session's `--threads` flag from final_model.pt (0: torch's default).",
        "- *CPU*: recorded only by runs whose summary.json lists its `sessions`.",
        "",
        "| run | sessions | resumed from | wall-clock | threads | CPU |",
        "|-|-|-|-|-|-|",
    ]
    lines += [run.row() for run in runs]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("paths", nargs="+", help="run directories, or folders holding them")
    parser.add_argument("--markdown", metavar="FILE", help="also write a Markdown page with a table")
    options = parser.parse_args(argv)
    try:
        runs = [provenance(run_dir) for run_dir in run_dirs(options.paths)]
        for run in runs:
            print(run.line())
        if options.markdown:
            arguments = [*options.paths, "--markdown", options.markdown]
            command = shlex.join(["python", "tools/provenance.py", *arguments])
            try:
                page = Path(options.markdown)
                page.parent.mkdir(parents=True, exist_ok=True)
                page.write_text(markdown(runs, command))
            except OSError as e:
                raise ProvenanceError(f"cannot write {options.markdown}: {e.strerror or e}") from None
    except ProvenanceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
