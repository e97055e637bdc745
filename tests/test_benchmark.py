"""benchmark.sh and plot.py: dry runs, a tiny real sweep on two workers, skip and resume, the
report, a run directory of another configuration, bad input, and the Slurm array on a real
one-node cluster."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from actor_critic.run_directory import PROGRESS, SWEEP_LOCK

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(REPO, "benchmark.sh")
# Two envs whose untrained policies fall within tens of steps, so evaluation costs nothing.
ENVS = "InvertedPendulum-v4 InvertedDoublePendulum-v4"
TINY_PPO = "num-steps=64 num-minibatches=2 update-epochs=2 hidden-size=16 eval-episodes=2 eval-every=128"


def benchmark(*flags, check=True, popen=False):
    command = ["bash", BENCHMARK, *flags]
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def tiny_sweep(runs_dir, *flags, seeds="1 2", steps=256):
    return [
        "--algos",
        "ppo",
        "--envs",
        ENVS,
        "--seeds",
        seeds,
        "--steps",
        str(steps),
        "--runs-dir",
        str(runs_dir),
        "--set",
        TINY_PPO,
        *flags,
    ]


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def run_times(log_path):
    """(start, end) of each attempt in a run's benchmark.log."""
    text = open(log_path).read()
    starts = [float(t) for t in re.findall(r"^# started ([\d.]+)", text, re.M)]
    ends = [float(t) for t in re.findall(r"^# ended ([\d.]+)", text, re.M)]
    return list(zip(starts, ends, strict=True))


def test_dry_run_lists_one_command_per_combination_and_starts_nothing(tmp_path):
    result = benchmark(
        "--dry-run",
        "--algos",
        "sac ppo",
        "--envs",
        "Walker2d-v4 Humanoid-v5",
        "--seeds",
        "1 2 3",
        "--steps",
        "5000",
        "--grid",
        "gamma=0.99,0.995 hidden-size=64",
        "--runs-dir",
        str(tmp_path / "r"),
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 * 2 * 3 * 2  # algorithms x envs x seeds x gamma values
    first = lines[0].split()
    assert first[1].endswith("sac_continuous.py")
    assert first[first.index("--env-id") + 1] == "Walker2d-v4" and first[first.index("--seed") + 1] == "1"
    assert first[first.index("--run-name") + 1] == "Walker2d-v4__sac__gamma=0.99,hidden-size=64__1"
    assert "--total-timesteps 5000" in lines[0] and "--threads 1" in lines[0]
    assert "--gamma 0.99 --hidden-size 64" in lines[0]
    names = {line.split("--run-name ")[1].split()[0] for line in lines}
    assert len(names) == len(lines)  # every run has its own directory
    assert "Humanoid-v5__ppo__gamma=0.995,hidden-size=64__3" in names
    assert not os.path.exists(tmp_path / "r")


def test_an_env_can_have_its_own_length(tmp_path):
    result = benchmark(
        "--dry-run",
        "--algos",
        "sac",
        "--envs",
        "InvertedDoublePendulum-v4@200000 Hopper-v4",
        "--seeds",
        "1",
        "--steps",
        "3000",
        "--runs-dir",
        str(tmp_path),
    )
    first, second = result.stdout.strip().splitlines()
    assert (
        "--total-timesteps 200000" in first
        and "--run-name InvertedDoublePendulum-v4__sac__default__1" in first
    )
    assert "--total-timesteps 3000" in second


def test_a_run_that_another_sweep_holds_is_left_alone(tmp_path):
    import fcntl

    from actor_critic import sweep

    run = sweep.PlannedRun("ppo", "InvertedPendulum-v4", 1, 256, "default", [], str(tmp_path))
    os.makedirs(run.run_dir)
    with open(os.path.join(run.run_dir, SWEEP_LOCK), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert sweep.run_one(run, threads=1) == (1, "not run: another sweep is running it")
    assert os.listdir(run.run_dir) == [SWEEP_LOCK]  # nothing started, nothing written
    # A directory holding only the lock file (that, or a kill between taking the lock and writing
    # benchmark.json) is this sweep's own and not started, not a stranger's.
    options = sweep.parse_options(
        ["--algos", "ppo", "--envs", "InvertedPendulum-v4", "--seeds", "1", "--steps", "256"]
        + ["--runs-dir", str(tmp_path)]
    )
    assert [(planned.name, planned.status()) for planned in sweep.plan(options)] == [(run.name, "new")]


def test_status_says_where_each_run_stands(tmp_path, capsys):
    import fcntl

    from actor_critic import sweep

    finished, running, interrupted, new = (
        sweep.PlannedRun("sac", "Walker2d-v4", seed, 1000, "default", [], str(tmp_path))
        for seed in (1, 2, 3, 4)
    )
    for run in (finished, running, interrupted):
        os.makedirs(run.run_dir)
    json.dump({"final_eval_mean": 4321.04}, open(os.path.join(finished.run_dir, "summary.json"), "w"))
    # Killed hard after its checkpoint at 500: its last progress record says 600, it resumes from 500.
    torch.save(
        {"global_step": 500, "buffer": torch.zeros(10)}, os.path.join(interrupted.run_dir, "checkpoint.pt")
    )

    def progress(run, **record):  # what the training scripts write beside their progress line
        json.dump(
            {"total_timesteps": 1000, "eval": None, **record}, open(os.path.join(run.run_dir, PROGRESS), "w")
        )

    progress(interrupted, step=600, eval=101.5, time_left="10s")
    progress(running, step=250, time_left="15s")
    with open(os.path.join(running.run_dir, SWEEP_LOCK), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a sweep running it holds
        sweep.print_status([finished, running, interrupted, new])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == [finished.name, "finished", "final", "eval", "4321.0"]
    assert lines[1] == [running.name, "running", "step", "250/1,000", "(25%),", "15s", "left"]
    expected = [interrupted.name, "interrupted", "step", "600/1,000", "(60%),", "eval", "101.5,"]
    assert lines[2] == [*expected, "resumes", "from", "500"]
    assert lines[3] == [new.name, "not", "started"]
    assert lines[4] == ["1", "finished,", "1", "running,", "1", "interrupted,", "1", "not", "started"]
    assert sweep.is_running(running) is False  # the lock is free again: no longer running
    # A checkpoint that cannot be read is said so, not hidden (the resume would fail on it).
    open(os.path.join(interrupted.run_dir, "checkpoint.pt"), "w").close()
    sweep.print_status([interrupted])
    assert capsys.readouterr().out.splitlines()[0].split()[-2:] == ["checkpoint", "unreadable"]
    # Killed before its first progress line: no step logged, only the checkpoint's.
    os.remove(os.path.join(interrupted.run_dir, PROGRESS))
    torch.save({"global_step": 500}, os.path.join(interrupted.run_dir, "checkpoint.pt"))
    sweep.print_status([interrupted])
    line = capsys.readouterr().out.splitlines()[0].split()
    assert line == [interrupted.name, "interrupted", "resumes", "from", "500"]
    # Broken files are said so in the line, not a traceback that hides every other run's.
    open(os.path.join(finished.run_dir, "summary.json"), "w").write('{"final_eval_mean": "high"}')
    open(os.path.join(interrupted.run_dir, PROGRESS), "w").write('{"step": 5, "total_timesteps": 0}')
    sweep.print_status([finished, interrupted])
    lines = capsys.readouterr().out.splitlines()
    assert "summary.json or progress.json is unreadable (ValueError)" in lines[0]
    assert "summary.json or progress.json is unreadable (ZeroDivisionError)" in lines[1]


def test_dry_run_maps_switches_to_the_scripts_flags(tmp_path):
    result = benchmark(
        "--dry-run",
        "--algos",
        "ppo",
        "--envs",
        "Hopper-v4",
        "--seeds",
        "4",
        "--grid",
        "norm-obs=true,false target-kl=None,0.02",
        "--runs-dir",
        str(tmp_path),
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4
    assert "--norm-obs --target-kl None" in lines[0] and "--no-norm-obs --target-kl 0.02" in lines[3]


def test_a_label_names_the_set_flags_and_tuples_join_with_x(tmp_path):
    result = benchmark(
        "--dry-run", "--algos", "ppo", "--envs", "Hopper-v4", "--seeds", "1", "--runs-dir", str(tmp_path),
        "--set", "hidden-sizes=32x16x8 num-envs=4", "--label", "shaped", "--grid", "gamma=0.99,0.995",
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("--hidden-sizes 32 16 8 --num-envs 4" in line for line in lines)
    assert "--run-name Hopper-v4__ppo__shaped,gamma=0.99__1" in lines[0]
    assert "--run-name Hopper-v4__ppo__shaped,gamma=0.995__1" in lines[1]
    import plot

    assert plot.parse_setting("shaped,gamma=0.99") == {"label": "shaped", "gamma": "0.99"}
    families = plot.one_factor_families(["default", "shaped"], {})
    assert families == [("label", "default", [("default", "default"), ("shaped", "shaped")])]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grid", "hidden-sizes=64xbig", "--algos", "ppo"], "integers joined by x"),
        (["--label", "large-batch"], "give --set with it"),
        (["--label", "a,b", "--set", "gamma=0.9"], "must be one word"),
        # Names that become part of a run's directory must keep it inside --runs-dir.
        (["--label", "../up", "--set", "gamma=0.9"], "--label '../up' must be one name, a folder inside"),
        (["--label", "..", "--set", "gamma=0.9"], "--label '..' must be one name"),
        (["--envs", "phys2d/CartPole-v1"], "the run name 'phys2d/CartPole-v1__sac__default__1' must be one"),
        (["--algos", "dqn"], "unknown algorithm 'dqn'"),
        (["--envs", "HalfCheeta-v4"], "did you mean HalfCheetah-v4"),
        (["--seeds", "1 two"], "seeds and steps must be integers"),
        (["--steps", "-5"], "steps must be positive, got -5"),
        (["--envs", "Hopper-v4@many"], "seeds and steps must be integers"),
        (["--grid", "gamma"], "'gamma' is not NAME=VALUE"),
        (["--grid", "gamma=0.9,"], "'gamma=0.9,' is not NAME=VALUE"),
        (["--grid", "gamma=abc"], "gamma takes a number"),
        (["--grid", "activation=sigmoid", "--algos", "ppo"], "activation is one of tanh, relu, elu"),
        (["--seeds", "1 1"], "give each env and seed once"),
        (["--envs", "Hopper-v4@1000 Hopper-v4@2000"], "give each env and seed once"),
        (["--grid", "gae-lambda=0.9", "--algos", "sac"], "--gae-lambda is not a flag of sac_continuous.py"),
        (["--grid", "gama=0.9"], "did you mean gamma"),
        (["--grid", "seed=1,2"], "set by the sweep itself"),
        (["--grid", "batch-size=2000000", "--algos", "sac"], "larger than --buffer-size"),
        (["--set", "gamma=0.9,0.99"], "takes one value"),
        (["--threads", "0"], "--threads and --cpus-per-task must be at least 1"),
        (["--threads", "100000"], "--threads 100000: a run may use"),
        (["--slurm", "--threads", "2"], "with --slurm, --cpus-per-task sets each task's threads"),
        (["--slurm", "--job-name", "my job"], "--job-name may hold no spaces, quotes or '#'"),
        (["--slurm", "--time", "1:00 #x"], "--time may hold no spaces, quotes or '#'"),
        (["--slurm", "--sbatch-args=--comment='abc"], "No closing quotation"),
    ],
)
def test_bad_input_is_one_line_before_anything_starts(tmp_path, flags, message):
    result = benchmark("--runs-dir", str(tmp_path / "r"), *flags, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not os.path.exists(tmp_path / "r")


def test_a_sweep_runs_on_a_file_system_without_locks(tmp_path, monkeypatch):
    # Some cluster file systems refuse flock (ENOSYS); the training scripts go on without a lock,
    # and so must the sweep, instead of a traceback per run.
    import errno
    import fcntl

    from actor_critic import sweep

    def no_locks(*args):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    flags = [part for item in TINY_PPO.split() for part in (f"--{item.split('=')[0]}", item.split("=")[1])]
    run = sweep.PlannedRun("ppo", "InvertedPendulum-v4", 1, 128, "default", flags, str(tmp_path))
    assert sweep.is_running(run) is False
    code, outcome = sweep.run_one(run, threads=1)
    assert code == 0 and os.path.exists(os.path.join(run.run_dir, "summary.json")), outcome


def test_a_run_directory_another_configuration_made_meanwhile_is_left_alone(tmp_path):
    # Sweep A made the run (its marker, a checkpoint) after sweep B planned: B, with other --set
    # values and so the same run name, must neither resume nor re-mark A's run.
    from actor_critic import sweep

    a = sweep.PlannedRun(
        "ppo", "InvertedPendulum-v4", 1, 128, "default", ["--learning-rate", "1e-3"], str(tmp_path)
    )
    b = sweep.PlannedRun("ppo", "InvertedPendulum-v4", 1, 128, "default", [], str(tmp_path))
    sweep.prepare(a)
    torch.save({"global_step": 64}, os.path.join(a.run_dir, "checkpoint.pt"))
    code, outcome = sweep.run_one(b, threads=1)
    assert code == 1 and "another configuration made this run directory" in outcome
    assert json.load(open(os.path.join(a.run_dir, "benchmark.json"))) == a.config()


def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("mine")
    result = benchmark("--runs-dir", str(tmp_path / "a_file"), *tiny_sweep(tmp_path)[:6], check=False)
    assert result.returncode != 0 and "is a file, not a directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (tmp_path / "a_file").read_text() == "mine"


def test_a_bad_number_of_workers_in_the_environment_is_the_flags_error(tmp_path):
    command = ["bash", BENCHMARK, "--runs-dir", str(tmp_path / "r"), "--dry-run"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "WORKERS": "four"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("argument --workers: invalid int value: 'four'")


def test_tiny_sweep_runs_in_parallel_skips_on_rerun_and_reports(tmp_path):
    runs_dir = tmp_path / "runs"
    result = benchmark(*tiny_sweep(runs_dir, "--workers", "2"))
    names = [f"{env}__ppo__default__{seed}" for env in ENVS.split() for seed in (1, 2)]
    for name in names:
        summary = json.load(open(runs_dir / name / "summary.json"))
        assert summary["global_step"] == 256 and summary["final_eval_episodes"] == 2
        assert json.load(open(runs_dir / name / "benchmark.json"))["setting"] == "default"
    assert "4 of 4 runs finished" in result.stdout
    # Two workers: some runs overlapped in time; never more than two at once.
    spans = [span for name in names for span in run_times(runs_dir / name / "benchmark.log")]
    overlapping = [sum(start <= t < end for start, end in spans) for t, _ in spans]
    assert max(overlapping) == 2

    # The report: one plot per env, all envs in one figure, and the table with both seeds.
    report = runs_dir / "report"
    for png in ("InvertedPendulum-v4.png", "InvertedDoublePendulum-v4.png", "all_envs.png"):
        assert (report / png).read_bytes().startswith(b"\x89PNG")
    table = (report / "results.md").read_text()
    row = next(line for line in table.splitlines() if "| InvertedPendulum-v4 |" in line)
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[:5] == ["ppo", "InvertedPendulum-v4", "default", "256", "2"]
    returns = [
        json.load(open(runs_dir / f"InvertedPendulum-v4__ppo__default__{s}/summary.json"))["final_eval_mean"]
        for s in (1, 2)
    ]
    assert cells[5] == f"{np.mean(returns):.1f} ± {np.std(returns):.1f}"

    # The same command again does no work.
    mtimes = {name: os.path.getmtime(runs_dir / name / "summary.json") for name in names}
    again = benchmark(*tiny_sweep(runs_dir, "--workers", "2", "--no-report"))
    assert again.stdout.count("skipped (finished)") == 4
    assert mtimes == {name: os.path.getmtime(runs_dir / name / "summary.json") for name in names}
    assert all(len(run_times(runs_dir / name / "benchmark.log")) == 1 for name in names)

    # What publish.sh keeps of one env's runs: files, a GIF of three stages for seed 1, the report.
    published = tmp_path / "published"
    publish = [os.path.join(REPO, "tools", "publish.sh"), "--only", "InvertedPendulum-v4__*"]
    subprocess.run(["bash", *publish, str(runs_dir), str(published)], check=True, capture_output=True)
    assert sorted(path.name for path in published.glob("*__*")) == names[:2]
    gif = iio.imread(published / "gifs" / "InvertedPendulum-v4__ppo__default.gif")
    snapshots = len(list((runs_dir / names[0] / "models").glob("*.pt")))
    assert gif.shape[1:3] == (120, min(3, snapshots) * 160)  # frames x height x (panels x width)
    assert "| InvertedPendulum-v4 |" in (published / "report" / "results.md").read_text()

    # Another configuration under the same names is refused, and so is a directory not made here.
    other = benchmark(*tiny_sweep(runs_dir, "--workers", "2"), "--set", TINY_PPO + " gamma=0.9", check=False)
    assert other.returncode != 0 and "made by another configuration" in other.stderr
    os.remove(runs_dir / names[0] / "benchmark.json")
    foreign = benchmark(*tiny_sweep(runs_dir), check=False)
    assert foreign.returncode != 0 and "benchmark.sh did not make it" in foreign.stderr


def test_a_killed_run_resumes_from_its_checkpoint_and_the_others_go_on(tmp_path):
    runs_dir = tmp_path / "runs"
    flags = tiny_sweep(
        runs_dir,
        "--workers",
        "1",
        "--no-report",
        "--set",
        TINY_PPO + " checkpoint-every=64",
        seeds="1 2",
        steps=6400,
    )
    flags[flags.index("--envs") + 1] = "InvertedPendulum-v4"
    victim = runs_dir / "InvertedPendulum-v4__ppo__default__1"
    sweep = benchmark(*flags, popen=True)
    deadline = time.time() + 120
    while not (victim / "checkpoint.pt").exists():
        assert time.time() < deadline and sweep.poll() is None, "no checkpoint"
        time.sleep(0.2)
    training = subprocess.run(
        ["pgrep", "-f", "--", f"--run-name {victim.name}"], capture_output=True, text=True
    )
    os.kill(int(training.stdout.split()[0]), signal.SIGKILL)
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 1 and "FAILED (exit -9)" in output and "1 of 2 runs finished" in output
    assert not (victim / "summary.json").exists()
    assert (runs_dir / "InvertedPendulum-v4__ppo__default__2" / "summary.json").exists()
    status = benchmark(*flags, "--status").stdout.splitlines()
    assert status[0].split()[:2] == [victim.name, "interrupted"] and status[1].split()[1] == "finished"
    # --status reads the progress record the training script writes: the finished run's last one.
    record = json.load(open(runs_dir / "InvertedPendulum-v4__ppo__default__2" / PROGRESS))
    assert record["step"] == record["total_timesteps"] == 6400 and record["eval"] > 0

    # Resumed alone with two torch threads (--threads), as a run that must end soon would be.
    resumed = benchmark(*flags, "--threads", "2")
    assert "resumed, finished" in resumed.stdout and "skipped (finished)" in resumed.stdout
    first, command = [part.splitlines()[0] for part in open(victim / "benchmark.log").read().split("$ ")[1:]]
    assert "--threads 1" in first and "--resume" not in first
    assert "--resume" in command and "--checkpoint-every 64" in command and "--threads 2" in command
    saved = load_checkpoint(victim / "checkpoint.pt")["args"]
    assert saved["checkpoint_every"] == 64 and saved["threads"] == 2
    assert json.load(open(victim / "summary.json"))["global_step"] == 6400


def test_a_run_whose_sweep_was_killed_is_not_started_twice(tmp_path):
    # The training process holds the sweep's lock with it: killed alone, the sweep leaves a run
    # that still runs, which --status calls running and no other sweep starts a second time.
    runs_dir = tmp_path / "runs"
    flags = tiny_sweep(runs_dir, "--workers", "1", "--no-report", "--set", TINY_PPO, seeds="1", steps=640000)
    flags[flags.index("--envs") + 1] = "InvertedPendulum-v4"
    run = runs_dir / "InvertedPendulum-v4__ppo__default__1"
    first = benchmark(*flags, popen=True)
    deadline = time.time() + 120
    while not (run / PROGRESS).exists():
        assert time.time() < deadline and first.poll() is None, "no progress"
        time.sleep(0.2)
    found = subprocess.run(["pgrep", "-f", "--", f"--run-name {run.name}"], capture_output=True, text=True)
    training = int(found.stdout.split()[0])
    first.kill()
    first.wait()
    try:
        assert benchmark(*flags, "--status").stdout.split()[:2] == [run.name, "running"]
        second = benchmark(*flags, check=False)
        assert second.returncode == 1 and "another sweep is running it" in second.stdout
    finally:
        os.kill(training, signal.SIGKILL)


def test_a_slurm_task_passes_sigterm_on_to_its_run(tmp_path):
    # Slurm's warning before a time limit (--signal=B:TERM@...) reaches the task's own process,
    # the sweep: it must reach the training process too, which checkpoints and exits.
    from dataclasses import asdict

    from actor_critic import sweep

    flags = ["--num-steps", "64", "--num-minibatches", "2", "--hidden-size", "16", "--eval-episodes", "0"]
    run = sweep.PlannedRun("ppo", "InvertedPendulum-v4", 1, 640000, "default", flags, str(tmp_path))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"threads": 1, "runs": [asdict(run)]}))
    task = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actor_critic.sweep",
            "--run-task",
            "0",
            "--plan",
            str(plan),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(run.run_dir, PROGRESS)):
        assert time.time() < deadline and task.poll() is None, "no progress"
        time.sleep(0.2)
    task.send_signal(signal.SIGTERM)
    output, _ = task.communicate(timeout=120)
    assert task.returncode == 128 + signal.SIGTERM and f"FAILED (exit {128 + signal.SIGTERM})" in output
    assert "SIGTERM: checkpoint written" in open(os.path.join(run.run_dir, "benchmark.log")).read()
    assert load_checkpoint(os.path.join(run.run_dir, "checkpoint.pt"))["global_step"] > 0


def test_plot_averages_seeds_of_different_lengths_with_missing_points():
    import plot

    short = (np.array([0.0, 10.0]), np.array([0.0, 10.0]))
    long = (np.array([0.0, 20.0, 30.0]), np.array([2.0, 22.0, 32.0]))  # no point at 10
    empty = (np.zeros(0), np.zeros(0))  # a run that has not evaluated yet
    grid, mean, low, high = plot.aggregate([short, long, empty])
    assert list(grid) == [0.0, 10.0, 20.0, 30.0]
    # At 10 the long seed is interpolated (12); past the short seed's end only the long one counts.
    assert np.allclose(mean, [1.0, 11.0, 22.0, 32.0])
    assert low[0] <= 1.0 <= high[0] and low[0] < high[0]
    assert low[3] == high[3] == 32.0  # one seed: no band
    assert plot.aggregate([empty]) is None


def test_plot_finds_the_settings_that_differ_in_one_flag():
    import plot

    defaults = {"gamma": "0.99", "learning-rate": "0.0003", "norm-obs": "true"}
    settings = ["default", "gamma=0.995", "learning-rate=1e-3", "gamma=0.995,learning-rate=0.001",
                "norm-obs=false,gamma=0.9"]  # fmt: skip
    families = {(flag, shared): pairs for flag, shared, pairs in plot.one_factor_families(settings, defaults)}
    assert families == {
        ("gamma", "default"): [("0.99", "default"), ("0.995", "gamma=0.995")],
        # 1e-3 and 0.001 are the same learning rate, so these two are a family too
        ("gamma", "learning-rate=1e-3"): [
            ("0.99", "learning-rate=1e-3"),
            ("0.995", "gamma=0.995,learning-rate=0.001"),
        ],
        ("learning-rate", "default"): [("0.0003", "default"), ("1e-3", "learning-rate=1e-3")],
        ("learning-rate", "gamma=0.995"): [
            ("0.0003", "gamma=0.995"),
            ("0.001", "gamma=0.995,learning-rate=0.001"),
        ],
    }  # norm-obs=false,gamma=0.9 differs from every other setting in two flags: in no family


def test_plot_families_inside_a_label_compare_with_the_labels_own_values():
    import plot

    defaults = {"norm-value": "false", "kl-adaptive-lr": "0.0", "gamma": "0.99", "label": "default"}
    label_values = {"large-batch": {"norm-value": "true", "kl-adaptive-lr": "8e-3", "gamma": "0.995"}}
    settings = ["default", "large-batch", "large-batch,norm-value=false", "large-batch,kl-adaptive-lr=0",
                "norm-value=true"]  # fmt: skip
    found = plot.one_factor_families(settings, defaults, label_values)
    families = {(flag, shared): pairs for flag, shared, pairs in found}
    assert families == {
        # false is the script's default, but not the label's: an ablation of the label's true
        ("norm-value", "label=large-batch"): [
            ("false", "large-batch,norm-value=false"),
            ("true", "large-batch"),
        ],
        ("kl-adaptive-lr", "label=large-batch"): [
            ("0", "large-batch,kl-adaptive-lr=0"),
            ("8e-3", "large-batch"),
        ],
        ("norm-value", "default"): [("false", "default"), ("true", "norm-value=true")],
        # the label's own family: its name alone differs (not its ablations, nor norm-value=true)
        ("label", "default"): [("default", "default"), ("large-batch", "large-batch")],
    }


def test_plot_reads_the_setting_a_run_trained_with():
    import plot
    import ppo_continuous

    assert plot.setting_from_args("ppo", vars(ppo_continuous.Args())) == "default"
    changed = {
        **vars(ppo_continuous.Args()),
        "hidden_sizes": [512, 256],
        "learning_rate": 1e-3,
        "norm_value": True,
    }
    assert plot.setting_from_args("ppo", changed) == "learning-rate=1e-3,hidden-sizes=512x256,norm-value=true"
    flags = [
        "--hidden-sizes",
        "512",
        "256",
        "--no-anneal-lr",
        "--env-workers",
        "2",
    ]  # env-workers: how, not what
    assert plot.setting_from_flags("ppo", flags) == "anneal-lr=false,hidden-sizes=512x256"
    assert plot.setting_from_flags("ppo", ["--no-such-flag"]) is None


def test_plot_writes_the_ablation_of_a_labelled_recipe(tmp_path):
    recipe = ["--num-envs", "4", "--norm-value"]
    for seed in (1, 2):
        fake_run(tmp_path, "Pendulum-v1", "default", seed, 100.0)
        fake_run(tmp_path, "Pendulum-v1", "large-batch", seed, 300.0 + seed, flags=recipe)
        fake_run(tmp_path, "Pendulum-v1", "large-batch,norm-value=false", seed, 200.0 + seed,
                 flags=["--no-norm-value", "--num-envs", "4"])  # fmt: skip
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "plot.py"), str(tmp_path), "--out", str(tmp_path / "report")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "study" / "Pendulum-v1__ppo__norm-value__label=large-batch.png").exists()
    study = (tmp_path / "report" / "study.md").read_text()
    assert "### ppo Pendulum-v1: norm-value (all with label=large-batch)" in study
    assert "| true (large-batch) | 2 | 301.5 ± 0.5 | 1: 301, 2: 302 |" in study
    assert "| false | 2 | 201.5 ± 0.5 | 1: 201, 2: 202 |" in study
    assert "| large-batch | 2 | 301.5 ± 0.5 |" in study and study.count("| large-batch |") == 1


def test_plot_spells_the_defaults_as_a_user_types_them():
    import plot

    assert [plot.spell(v) for v in (3e-4, 1e-3, 5e-5, 0.99, 0.2, -1.0, 0.0, True, 256)] == [
        "3e-4", "1e-3", "5e-5", "0.99", "0.2", "-1.0", "0.0", "true", "256"
    ]  # fmt: skip
    defaults = plot.script_defaults("ppo")
    assert (defaults["learning-rate"], defaults["norm-obs"], defaults["gamma"]) == ("3e-4", "true", "0.99")


def fake_run(
    runs_dir, env_id: str, setting: str, seed: int, final: float | None, algo: str = "ppo", flags=()
):
    """A run directory as benchmark.sh leaves it: events, marker (with the flags it trained with),
    and (if finished) a summary."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = runs_dir / f"{env_id}__{algo}__{setting}__{seed}"
    run_dir.mkdir(parents=True)
    writer = SummaryWriter(str(run_dir))
    for step in (1000, 2000):
        writer.add_scalar("eval/episodic_return", (final or 0.0) * step / 2000, step)
    writer.close()
    marker = {"algo": algo, "env_id": env_id, "seed": seed, "setting": setting, "flags": list(flags)}
    (run_dir / "benchmark.json").write_text(json.dumps(marker))
    (run_dir / "final_model.pt").write_bytes(b"weights")
    if final is not None:
        (run_dir / "summary.json").write_text(json.dumps(
            {"seed": seed, "final_eval_mean": final, "final_eval_episodes": 10, "global_step": 2000,
             "wall_clock_s": 1.0, "sps": 2000.0}
        ))  # fmt: skip
    return run_dir


def test_an_env_plot_draws_its_default_runs_where_it_has_them():
    import plot

    groups = {("ppo", "A-v4", "default"): [1], ("ppo", "A-v4", "gamma=0.9"): [2],
              ("sac", "A-v4", "default"): [3],
              ("ppo", "B-v4", "gamma=0.9"): [4], ("ppo", "B-v4", "gamma=0.95"): [5]}  # fmt: skip
    assert plot.env_curves(groups, "A-v4") == [("ppo", [1]), ("sac", [3])]
    assert plot.env_curves(groups, "B-v4") == [("ppo gamma=0.9", [4]), ("ppo gamma=0.95", [5])]


def test_plot_writes_a_study_of_one_flag_with_its_table(tmp_path):
    finals = {
        ("default", 1): 100.0,
        ("default", 2): 120.0,
        ("gamma=0.995", 1): 300.0,
        ("gamma=0.995", 2): 340.0,
    }
    for (setting, seed), final in finals.items():
        fake_run(tmp_path, "Pendulum-v1", setting, seed, final)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "plot.py"), str(tmp_path), "--out", str(tmp_path / "report")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "study" / "Pendulum-v1__ppo__gamma.png").stat().st_size > 1000
    study = (tmp_path / "report" / "study.md").read_text()
    assert (
        f"| 0.99 (default) | 2 | {np.mean([100, 120]):.1f} ± {np.std([100, 120]):.1f} | 1: 100, 2: 120 |"
        in study
    )
    assert f"| 0.995 | 2 | {np.mean([300, 340]):.1f} ± {np.std([300, 340]):.1f} | 1: 300, 2: 340 |" in study


def test_publish_copies_the_chosen_finished_runs_and_reports(tmp_path):
    source, dest = tmp_path / "source", tmp_path / "published"
    fake_run(source, "Pendulum-v1", "gamma=0.995", 1, 300.0)
    fake_run(source, "Pendulum-v1", "gamma=0.995", 2, None)  # unfinished: left out
    fake_run(source, "Pendulum-v1", "default", 1, 100.0)  # not matched by --only
    command = [
        "bash",
        os.path.join(REPO, "tools", "publish.sh"),
        "--only",
        "*__gamma=0.995__*",
        "--no-gifs",
    ]
    result = subprocess.run([*command, str(source), str(dest)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in dest.iterdir()) == [
        "Pendulum-v1__ppo__gamma=0.995__1",
        "gifs",
        "report",
    ]
    copied = dest / "Pendulum-v1__ppo__gamma=0.995__1"
    assert {path.name for path in copied.iterdir()} >= {"summary.json", "benchmark.json", "final_model.pt"}
    assert list(copied.glob("events.out.tfevents.*")) and not list((dest / "gifs").iterdir())
    assert "300.0" in (dest / "report" / "results.md").read_text()
    bad = subprocess.run([*command, str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1


def test_publish_again_replaces_a_runs_copy_and_reads_paths_from_where_it_is_called(tmp_path):
    # A run redone and published again: its old event files must go, or plots merge both curves.
    source = tmp_path / "source"
    run = fake_run(source, "Pendulum-v1", "default", 1, 100.0)
    publish = ["bash", os.path.join(REPO, "tools", "publish.sh"), "--no-gifs", "source", "published"]
    first = subprocess.run(publish, cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    copy = tmp_path / "published" / run.name
    old_events = {path.name for path in copy.glob("events.out.tfevents.*")}
    for path in run.glob("events.out.tfevents.*"):
        path.unlink()
    time.sleep(1.1)  # a new event file name (its name holds the second it was opened)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run))
    writer.add_scalar("eval/episodic_return", 200.0, 2000)
    writer.close()
    again = subprocess.run(publish, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    new_events = {path.name for path in copy.glob("events.out.tfevents.*")}
    assert (
        new_events == {path.name for path in run.glob("events.out.tfevents.*")}
        and not new_events & old_events
    )


def test_plot_skips_a_crafted_file_without_running_it(tmp_path, capsys):
    import plot
    from tests.helpers import crafted_checkpoint

    run_dir = tmp_path / "by_hand"
    run_dir.mkdir()
    crafted, marker = crafted_checkpoint(tmp_path)
    os.rename(crafted, run_dir / "final_model.pt")
    assert plot.describe(str(run_dir)) is None and not marker.exists()
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"warning: skipping {run_dir}")


@pytest.mark.parametrize(
    "marker, summary, reason",
    [
        ('{"algo": "this.x", "env_id": "A-v4", "seed": 1, "setting": "default"}', None, "unknown algorithm"),
        ('{"algo": "ppo", "env_id": "../../x", "seed": 1, "setting": "default"}', None, "is not a name"),
        ('{"algo": "ppo", "env_id": "A-v4", "seed": 1}', None, "lacks algo, env_id, seed or setting"),
        ("[1, 2]", None, "lacks algo, env_id, seed or setting"),
        ("{not json", None, "unreadable JSON"),
        (None, '{"final_eval_mean": "high", "seed": 1, "global_step": 5}', "is not a number"),
        (None, '{"final_eval_mean": 1.0, "seed": 1, "global_step": "5"}', "is not a number"),
    ],
)
def test_plot_skips_a_run_whose_files_are_not_what_they_should_be(tmp_path, marker, summary, reason):
    # A crafted benchmark.json must not choose a module to import (the Zen of Python's `this`,
    # here) nor a path to write; a broken one is a warning, never a traceback.
    run_dir = fake_run(tmp_path, "A-v4", "default", 1, 100.0)
    if marker is not None:
        (run_dir / "benchmark.json").write_text(marker)
    if summary is not None:
        (run_dir / "summary.json").write_text(summary)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "plot.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert "Traceback" not in result.stderr and "Zen of Python" not in result.stdout
    assert f"warning: skipping {run_dir}: " in result.stderr and reason in result.stderr, result.stderr
    assert not (tmp_path.parent / "x.png").exists()


def test_plot_of_a_runs_folder_leaves_out_the_folders_of_runs_inside_it(tmp_path):
    # runs/ holds published/ (copies of finished runs): `plot.py runs/` reads runs/<run> only,
    # else every published seed would count again beside the user's own.
    mine = fake_run(tmp_path, "A-v4", "default", 1, 100.0)
    fake_run(tmp_path / "published", "A-v4", "default", 1, 100.0)
    fake_run(tmp_path / "published", "A-v4", "default", 2, 120.0)
    from actor_critic.run_directory import find_runs

    assert find_runs([str(tmp_path)]) == [str(mine)]
    assert len(find_runs([str(tmp_path / "published")])) == 2
    assert find_runs([str(mine)]) == [str(mine)]


def test_plot_refuses_a_folder_without_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "plot.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode != 0 and result.stderr.strip().startswith(
        "error: no runs (directories with TensorBoard events, checkpoint.pt, final_model.pt or "
        f"summary.json) in {tmp_path} "
    )


# --------------------------------------------------------------------------------------------
# Slurm: a real one-node cluster (Debian's slurm-wlm and munge; .ci/run installs them)
# --------------------------------------------------------------------------------------------


def test_slurm_array_runs_each_run_as_a_task_and_skips_finished_ones(tmp_path, slurm_cluster):
    runs_dir = tmp_path / "runs"
    flags = tiny_sweep(runs_dir, "--slurm", "--sbatch-args=--wait", "--partition", "debug", "--time", "10")
    result = subprocess.run(
        ["bash", BENCHMARK, *flags], capture_output=True, text=True, env=slurm_cluster, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitting 4 runs as one array job" in result.stdout
    task_logs = sorted(os.listdir(runs_dir / "slurm"))
    assert len([log for log in task_logs if log.endswith(".out")]) == 4
    for env in ENVS.split():
        for seed in (1, 2):
            assert (
                json.load(open(runs_dir / f"{env}__ppo__default__{seed}/summary.json"))["global_step"] == 256
            )
    assert (runs_dir / "report" / "results.md").exists()

    again = subprocess.run(["bash", BENCHMARK, *flags], capture_output=True, text=True, env=slurm_cluster)
    assert again.returncode == 0 and "all runs have finished; nothing to submit" in again.stdout


def fake_sac_logs(run_dir, loss_at, steps=range(1000, 300001, 1000), purge_step=None):
    """A SAC run's training scalars, one point every 1000 steps, the critics' loss given by loss_at."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir), purge_step=purge_step)
    for step in steps:
        writer.add_scalar("losses/qf_loss", loss_at(step), step)
        writer.add_scalar("losses/qf1_values", 100.0 + step / 1000, step)
        writer.add_scalar("losses/alpha", 0.05, step)
        writer.add_scalar("charts/episodic_return", 1000.0, step)
    writer.close()


CRITIC_HEALTH = os.path.join(REPO, "tools", "critic_health.py")


def critic_health(*flags):
    return subprocess.run(
        [sys.executable, CRITIC_HEALTH, *map(str, flags)], capture_output=True, text=True, timeout=120
    )


def test_critic_health_finds_a_planted_divergence_and_not_a_slow_climb(tmp_path):
    def climb(step):  # the loss doubles over the run, with some wobble, and never breaks away
        return 10.0 + step / 30000 + (3.0 if step % 7000 == 0 else 0.0)

    def planted(step):  # and, from 200k to 240k, 20 times as high
        return climb(step) * (20.0 if 200000 <= step < 240000 else 1.0)

    healthy, broken = tmp_path / "healthy", tmp_path / "broken"
    fake_sac_logs(healthy, climb)
    fake_sac_logs(broken, planted)
    result = critic_health(healthy, broken)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split("\n\n")
    assert "no divergence" in first and "diverged" not in first
    assert "critic diverged at 200,000-220,000" in second
    assert "back under 1.5x its baseline: from 240,000" in second
    assert second.count("diverged") == 1


def test_critic_health_reads_a_resumed_run_as_the_resume_wrote_it(tmp_path):
    # The first session logged a blow-up after its last checkpoint (150k) and was killed; the
    # resume rewrote those steps. Only the rewritten steps count, and TensorBoard's purge is quiet.
    run_dir = tmp_path / "resumed"
    fake_sac_logs(run_dir, lambda step: 10.0 if step < 150000 else 500.0, steps=range(1000, 200001, 1000))
    time.sleep(1.1)  # a new event file name (its name holds the second it was opened)
    fake_sac_logs(run_dir, lambda step: 10.0, steps=range(150001, 300001, 1000), purge_step=150001)
    result = critic_health(run_dir)
    assert result.returncode == 0 and "no divergence" in result.stdout, result.stdout + result.stderr
    assert "out of order" not in result.stderr


def test_critic_health_says_in_one_line_what_it_cannot_read(tmp_path):
    fake_run(tmp_path, "Hopper-v4", "default", 1, 100.0)  # eval/episodic_return only
    for target, message in [
        (tmp_path / "missing", "is not a run directory with TensorBoard files"),
        (tmp_path / "Hopper-v4__ppo__default__1", "has no losses/qf_loss"),
    ]:
        result = critic_health(target)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
