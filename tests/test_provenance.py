"""tools/provenance.py: sessions, resume steps, threads and CPU of a run, read from its own files."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "provenance.py"
PUBLISHED = REPO / "runs" / "published"

_spec = importlib.util.spec_from_file_location("provenance", SCRIPT)
provenance = importlib.util.module_from_spec(_spec)
sys.modules["provenance"] = provenance  # dataclasses look their module up there
_spec.loader.exec_module(provenance)


def write_session(run_dir: Path, stamp: int, steps: list[int], purge_step: int | None = None) -> None:
    """One session's event file, named as if created at `stamp`, with scalars at `steps` (in that order).

    purge_step is what the training scripts pass on resume: the checkpoint's step + 1."""
    scratch = run_dir / f"scratch-{stamp}"
    writer = SummaryWriter(str(scratch), purge_step=purge_step)
    if purge_step is None:
        writer.add_text("hyperparameters", "|param|value|")
    for step in steps:
        writer.add_scalar("charts/episodic_return", float(step), step)
        writer.add_scalar("losses/qf1_loss", 1.0, step)
    writer.close()
    (made,) = scratch.glob("events.out.tfevents.*")
    made.rename(run_dir / f"events.out.tfevents.{stamp}.host.{stamp % 1000}.0")
    scratch.rmdir()


def make_run(
    root: Path,
    name: str,
    sessions: list[tuple[int, list[int], int | None]],
    threads: int = 1,
    summary_extra: dict | None = None,
) -> Path:
    """A run directory as training leaves it: one event file per (stamp, steps, purge_step) session,
    summary.json, benchmark.json and final_model.pt."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    for stamp, steps, purge_step in sessions:
        write_session(run_dir, stamp, steps, purge_step)
    last_step = max(sessions[-1][1])
    summary = {"run_name": name, "global_step": last_step, "wall_clock_s": 1234.6, **(summary_extra or {})}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "benchmark.json").write_text(json.dumps({"algo": "sac", "seed": 1}))
    torch.save({"args": {"threads": threads}, "global_step": last_step}, run_dir / "final_model.pt")
    return run_dir


def lines_for(*paths: Path) -> list[str]:
    """The script's output lines, run in this process."""
    runs = [provenance.provenance(run_dir) for run_dir in provenance.run_dirs([str(p) for p in paths])]
    return [run.line() for run in runs]


def test_resumed_run_names_each_session_and_its_exact_checkpoint_step(tmp_path):
    # The second session's file is named earlier than the third's only as a number (9 vs 10
    # digits): ordering by name as text would swap them.
    run_dir = make_run(
        tmp_path,
        "Walker2d-v4__sac__default__3",
        [
            (900000000, [100, 200, 300], None),
            (999999999, [1100, 1200], 1001),  # resumed from the checkpoint at 1,000
            (1000000001, [2600, 3000], 2501),  # resumed from the checkpoint at 2,500
        ],
        threads=2,
    )
    assert lines_for(run_dir) == [
        "Walker2d-v4__sac__default__3: 3 sessions (started at step 0; resumed at 1,000 and 2,500), "
        "1,235 s wall-clock, threads 2 (last session), CPU not recorded"
    ]


def test_one_session(tmp_path):
    run_dir = make_run(tmp_path, "run__ppo__default__1", [(1700000000, [2048, 4096], None)], threads=0)
    assert lines_for(run_dir) == [
        "run__ppo__default__1: 1 session (started at step 0), 1,235 s wall-clock, "
        "threads 0 (torch's default; last session), CPU not recorded"
    ]


def test_a_run_whose_first_event_files_are_gone_says_so(tmp_path):
    run_dir = make_run(tmp_path, "run__sac__default__1", [(1700000000, [600, 900], 501)])
    (line,) = lines_for(run_dir)
    assert line.startswith("run__sac__default__1: 1 session (the first session on record resumed at 500), ")


def test_without_a_session_start_record_it_says_near_the_smallest_logged_step(tmp_path):
    # A resumed file without TensorBoard's session-start record (not written with purge_step): only
    # the logged steps remain, and the smallest is not the first logged.
    run_dir = make_run(
        tmp_path,
        "run__sac__default__1",
        [(1700000000, [10, 500], None), (1700000100, [1500, 1200, 1800], None), (1700000200, [3100], 3001)],
    )
    (line,) = lines_for(run_dir)
    assert "3 sessions (started at step 0; resumed near 1,200 and at 3,000)" in line


def test_sessions_in_summary_are_used_instead_of_the_event_files(tmp_path):
    sessions = [
        {"start_step": 0, "end_step": 1000, "wall_clock_s": 5.0, "cpu": "Test CPU 9000", "threads": 1},
        {"start_step": 1000, "end_step": 2500, "wall_clock_s": 4.0, "cpu": "Test CPU 9000", "threads": 2},
        {"start_step": 2500, "end_step": 3000, "wall_clock_s": 3.4, "cpu": "Other CPU", "threads": 2},
    ]
    for session in sessions:
        session["device"] = "cpu"
    # The event files (one session, no resume) and final_model.pt (threads 7) say otherwise.
    run_dir = make_run(
        tmp_path,
        "run__ppo__default__2",
        [(1700000000, [100, 3000], None)],
        threads=7,
        summary_extra={"sessions": sessions, "wall_clock_s": None},
    )
    assert lines_for(run_dir) == [
        "run__ppo__default__2: 3 sessions (started at step 0; resumed at 1,000 and 2,500), 12 s wall-clock, "
        "threads 1, 2 and 2 (by session), CPU Test CPU 9000, Test CPU 9000 and Other CPU (by session), "
        "device cpu"
    ]


def test_sessions_in_summary_with_one_cpu_and_no_event_files(tmp_path):
    run_dir = tmp_path / "run__sac__default__1"
    run_dir.mkdir()
    session = {"start_step": 0, "end_step": 50, "wall_clock_s": 1.0, "cpu": "Test CPU", "threads": 2}
    summary = {"wall_clock_s": 99.0, "sessions": [session, {**session, "start_step": 40}]}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert lines_for(run_dir) == [
        "run__sac__default__1: 2 sessions (started at step 0; resumed at 40), 99 s wall-clock, threads 2, "
        "CPU Test CPU"
    ]


def test_a_folder_of_runs_skips_gifs_and_report_and_writes_the_markdown_page(tmp_path, capsys):
    runs = tmp_path / "published"
    make_run(runs, "b__sac__default__1", [(1700000000, [5], None), (1700000050, [20], 11)])
    make_run(runs, "a__ppo__default__1", [(1700000000, [5], None)])
    (runs / "gifs").mkdir()
    (runs / "report").mkdir()
    (runs / "report" / "summary.json").write_text("{}")  # not a run, whatever it holds
    page = tmp_path / "docs" / "provenance.md"
    assert provenance.main([str(runs), "--markdown", str(page)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["a__ppo__default__1", "b__sac__default__1"]
    text = page.read_text()
    assert text.startswith("# Provenance of the published runs\n")
    assert f"`python tools/provenance.py {runs} --markdown {page}`" in text
    assert "| run | sessions | resumed from | wall-clock | threads | CPU |" in text
    assert "| `a__ppo__default__1` | 1 | – | 1,235 s | 1 (last session) | not recorded |" in text
    assert "| `b__sac__default__1` | 2 | 10 | 1,235 s | 1 (last session) | not recorded |" in text


def bad_input_cases(tmp_path: Path) -> dict[str, list[str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    not_runs = tmp_path / "not_runs"
    (not_runs / "gifs").mkdir(parents=True)
    (not_runs / "some_dir").mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    broken_json = tmp_path / "broken_json"
    broken_json.mkdir()
    (broken_json / "summary.json").write_text("{not json")
    no_events = tmp_path / "no_events"
    no_events.mkdir()
    (no_events / "summary.json").write_text("{}")
    # A final_model.pt that needs code to load (a pickled function): weights_only refuses it.
    unsafe = make_run(tmp_path, "unsafe", [(1700000000, [5], None)])
    torch.save({"args": {"threads": 1}, "hook": print}, unsafe / "final_model.pt")
    good = make_run(tmp_path, "good", [(1700000000, [5], None)])
    bad_sessions = tmp_path / "bad_sessions"
    bad_sessions.mkdir()
    (bad_sessions / "summary.json").write_text(json.dumps({"sessions": [{"end_step": 3}]}))
    return {
        "missing": [str(tmp_path / "does_not_exist")],
        "empty": [str(empty)],
        "no_runs": [str(not_runs)],
        "file": [str(a_file)],
        "broken_json": [str(broken_json)],
        "no_events": [str(no_events)],
        "unsafe_model": [str(unsafe)],
        "bad_sessions": [str(bad_sessions)],
        "good_then_missing": [str(good), str(tmp_path / "nope")],
    }


BAD_CASES = [
    "missing",
    "empty",
    "no_runs",
    "file",
    "broken_json",
    "no_events",
    "unsafe_model",
    "bad_sessions",
]


@pytest.mark.parametrize("case", [*BAD_CASES, "good_then_missing"])
def test_bad_input_is_one_error_line_and_exit_status_1(tmp_path, capsys, case):
    args = bad_input_cases(tmp_path)[case]
    assert provenance.main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("error: ")


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    cases = bad_input_cases(tmp_path)
    for args in (cases["missing"], cases["unsafe_model"]):
        done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
        assert done.returncode == 1
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="no runs/published in this checkout")
def test_every_published_run_gets_one_line_within_seconds(capsys):
    runs = sorted(p.name for p in PUBLISHED.iterdir() if (p / "summary.json").is_file())
    assert len(runs) >= 30
    start = time.perf_counter()
    assert provenance.main([str(PUBLISHED)]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == runs
    assert all(" session" in line and "wall-clock" in line for line in out)
    assert elapsed < 5, f"{elapsed:.1f} s for {len(runs)} runs"
    # A run whose three sessions are known: resumed from its checkpoints at 28,994 and 186,174.
    if "Walker2d-v4__sac__default__3" in runs:
        assert (
            "Walker2d-v4__sac__default__3: 3 sessions (started at step 0; resumed at 28,994 and 186,174), "
            "8,477 s wall-clock, threads 2 (last session), CPU not recorded"
        ) in out
