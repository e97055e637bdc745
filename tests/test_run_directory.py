"""actor_critic/run_directory.py: what a run directory is, how runs are found (one level down, not
deeper), the lock every locker takes, and the names that must stay one folder inside --runs-dir."""

import errno
import fcntl
import subprocess
import sys
import threading
import time

import pytest

from actor_critic import run_directory
from actor_critic.run_directory import (
    CHECKPOINT,
    FINAL_MODEL,
    SUMMARY,
    SWEEP_CONFIG,
    FileLock,
    check_name,
    find_runs,
    is_locked,
    is_run,
)

EVENTS = f"{run_directory.EVENTS_PREFIX}1700000000.host.1.0"


def make_run(folder, name, *files):
    """A directory holding empty files of these names: what is_run looks at (names, not contents)."""
    path = folder / name
    path.mkdir(parents=True)
    for file in files:
        (path / file).write_text("")
    return path


# ---------------------------------------------------------------------------------------------
# is_run and find_runs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("own_file", [EVENTS, CHECKPOINT, FINAL_MODEL, SUMMARY])
def test_any_of_a_runs_own_files_makes_a_run(tmp_path, own_file):
    assert is_run(str(make_run(tmp_path, "run", own_file)))


def test_what_is_not_a_run(tmp_path):
    assert not is_run(str(make_run(tmp_path, "empty")))
    # A sweep writes its benchmark.json (and log, lock) before the training script starts.
    assert not is_run(str(make_run(tmp_path, "planned", SWEEP_CONFIG, "benchmark.log", "benchmark.lock")))
    assert not is_run(str(make_run(tmp_path, "other", "notes.txt", "models")))
    (tmp_path / "a_file").write_text("x")
    assert not is_run(str(tmp_path / "a_file"))
    assert not is_run(str(tmp_path / "missing"))


def test_find_runs_looks_one_level_down_and_not_deeper(tmp_path):
    runs = tmp_path / "runs"
    in_progress = make_run(runs, "b__ppo__default__1", EVENTS)  # TensorBoard files alone, so far
    finished = make_run(runs, "a__sac__default__1", EVENTS, CHECKPOINT, FINAL_MODEL, SUMMARY)
    make_run(runs, "not_started", SWEEP_CONFIG)
    # A folder of runs of its own inside runs/: its runs are not seeds beside runs/<run>.
    published = [make_run(runs / "published", f"a__sac__default__{seed}", SUMMARY) for seed in (2, 1)]
    make_run(runs, "report", SUMMARY)  # plot.py's output folder: never a run, whatever it holds

    assert find_runs([str(runs)]) == [str(finished), str(in_progress)]
    assert find_runs([str(runs / "published")]) == sorted(str(path) for path in published)
    # A run directory given is that run alone; given twice (or also through its folder), once.
    assert find_runs([str(in_progress)]) == [str(in_progress)]
    assert find_runs([str(runs), str(in_progress) + "/", str(finished)]) == [str(finished), str(in_progress)]
    # A folder that holds no run one level down holds none: the runs two levels down stay unseen.
    assert find_runs([str(tmp_path)]) == []


def test_find_runs_finished_keeps_the_runs_with_a_summary(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "in_progress", EVENTS, CHECKPOINT)
    finished = make_run(runs, "finished", EVENTS, SUMMARY)
    make_run(runs, "summary_is_a_folder", EVENTS)
    (runs / "summary_is_a_folder" / SUMMARY).mkdir()
    assert find_runs([str(runs)], finished=True) == [str(finished)]
    assert find_runs([str(runs / "in_progress")], finished=True) == []
    assert len(find_runs([str(runs)])) == 3


def test_find_runs_refuses_a_path_that_is_not_a_folder(tmp_path):
    (tmp_path / "a_file").write_text("x")
    for path in (tmp_path / "a_file", tmp_path / "missing"):
        with pytest.raises(NotADirectoryError, match=f"{path} is not a directory"):
            find_runs([str(path)])


def test_snapshots_sort_by_step(tmp_path):
    paths = [run_directory.snapshot_path(str(tmp_path), step) for step in (100_000_000, 5, 99_999_999)]
    assert paths[1] == str(tmp_path / "models" / "step_00000005.pt")
    (tmp_path / "models").mkdir()
    for path in paths:
        open(path, "w").close()
    (tmp_path / "models" / "notes.pt").write_text("")  # not a snapshot
    assert run_directory.snapshots(str(tmp_path)) == [paths[1], paths[2], paths[0]]
    assert run_directory.snapshots(str(tmp_path / "missing")) == []


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------


def test_a_second_holder_is_refused_while_the_first_holds_the_lock(tmp_path):
    path = str(tmp_path / "run.lock")
    assert not is_locked(path)  # no file yet: nobody holds it (and none is made)
    first = FileLock(path)
    assert first.held and is_locked(path)
    second = FileLock(path)  # another open file, as another process would have
    assert not second.held
    # Another process is refused too, while this one holds it.
    code = f"from actor_critic.run_directory import FileLock; print(FileLock({path!r}).held)"

    def held_by_another_process() -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()

    assert held_by_another_process() == "False"
    first.release()
    assert not is_locked(path)
    with FileLock(path) as third:
        assert third.held and is_locked(path)
    assert not is_locked(path)
    assert held_by_another_process() == "True"


def test_a_waiting_lock_is_had_once_the_holder_releases_it(tmp_path):
    path = str(tmp_path / "study.lock")
    first = FileLock(path)
    had = []
    waiter = threading.Thread(target=lambda: had.append(FileLock(path, wait=True)))
    waiter.start()
    time.sleep(0.3)
    assert not had  # still waiting
    first.release()
    waiter.join(timeout=10)
    assert had and had[0].held
    had[0].release()


def test_a_file_system_without_locks_counts_as_held(tmp_path, monkeypatch):
    # Some cluster mounts refuse flock (ENOSYS): runs go on without a lock rather than fail.
    def no_locks(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    path = str(tmp_path / "run.lock")
    open(path, "w").close()
    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = FileLock(path)
    assert lock.held and not is_locked(path)
    lock.release()


def test_a_child_process_given_the_lock_holds_it(tmp_path):
    # The sweep passes its lock to the training process: should the sweep die, the run stays held.
    path = str(tmp_path / "benchmark.lock")
    lock = FileLock(path)
    child = subprocess.Popen(["sleep", "30"], pass_fds=(lock.fileno(),))
    try:
        lock.release()
        assert is_locked(path)
    finally:
        child.kill()
        child.wait()
    assert not is_locked(path)


# ---------------------------------------------------------------------------------------------
# Names that become part of a path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "it is empty"),
        (".", "'.' names a folder that already is one"),
        ("..", "'..' names a folder that already is one"),
        ("../elsewhere", "it holds a '/'"),
        ("a/b", "it holds a '/'"),
        ("/abs", "it holds a '/'"),
        ("a\0b", "it holds a control character"),
        ("two\nlines", "it holds a control character"),
        ("-x", "it starts with '-' (it would read as a flag)"),
        ("x" * 256, "it is longer than 255 bytes"),
    ],
)
def test_a_name_that_would_leave_the_runs_dir_is_one_error_line(name, why):
    with pytest.raises(SystemExit) as error:
        check_name("--run-name", name)
    message = str(error.value)
    assert message.startswith(f"error: --run-name {name!r} must be one name") and message.endswith(why)
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(
    "name",
    [
        "HalfCheetah-v4__ppo__shaped,gamma=0.995__1",
        "Walker2d-v4__sac__default__3",
        "InvertedDoublePendulum-v4__ppo__trial-12__1",
        "HalfCheetah-v4+Walker2d-v4__ppo__default__tune",
        "hidden-sizes=512x256,activation=elu",
        "a name with spaces",
        "...x",
        "x" * 255,
    ],
)
def test_a_name_of_one_folder_passes(name):
    assert check_name("--run-name", name) is None
