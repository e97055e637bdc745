"""The sweep behind benchmark.sh: plan the runs, run them (local workers or one Slurm array), report.

    bash benchmark.sh --help

A run is one algorithm on one env with one seed and one grid setting. Its directory name says
which: <env>__<algo>__<setting>__<seed>, e.g. HalfCheetah-v4__ppo__gamma=0.995__1 ("default"
when the grid is empty). benchmark.json in that directory records the configuration that made
it, so the same command run twice skips what finished, resumes what was interrupted from its
last checkpoint, and refuses to reuse a directory that another configuration made.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from types import ModuleType

from actor_critic import cli, run_directory, training
from actor_critic.algorithms import ALGORITHMS, REPO_ROOT
from actor_critic.cli import fail
from actor_critic.run_directory import (
    CHECKPOINT,
    PROGRESS,
    RUN_LOCK,
    SUMMARY,
    SWEEP_CONFIG,
    SWEEP_LOCK,
    SWEEP_LOG,
    FileLock,
    check_name,
    is_locked,
)

REPO = REPO_ROOT

DEFAULT_ENVS = "HalfCheetah-v4 Walker2d-v4 Humanoid-v4 InvertedDoublePendulum-v4"
# What the sweep passes itself besides a run's axes (env, seed, steps, names): where the run goes.
SWEEP_FLAGS = {"runs_dir", "resume", "threads"}
SKIPPED = "skipped (finished)"


# ---------------------------------------------------------------------------------------------
# Planning: which runs, with which flags
# ---------------------------------------------------------------------------------------------


@dataclass
class PlannedRun:
    """A run as the sweep plans it: what defines it, its name and directory, and the command that
    starts or resumes it. (The training script's side of a run is actor_critic.training.Run.)"""

    algo: str
    env_id: str
    seed: int
    steps: int
    setting: str  # "default", or the grid's choices, e.g. "gamma=0.995,gae-lambda=0.97"
    flags: list[str]  # the training script's flags for the setting and the fixed --set values
    runs_dir: str

    @property
    def name(self) -> str:
        return f"{self.env_id}__{self.algo}__{self.setting}__{self.seed}"

    @property
    def run_dir(self) -> str:
        return os.path.join(self.runs_dir, self.name)

    def config(self) -> dict:
        """What defines the run; a directory made with anything else is another run."""
        return {
            "algo": self.algo,
            "env_id": self.env_id,
            "seed": self.seed,
            "steps": self.steps,
            "setting": self.setting,
            "flags": self.flags,
        }

    def status(self) -> str:
        if os.path.exists(os.path.join(self.run_dir, SUMMARY)):
            return "finished"
        if os.path.exists(os.path.join(self.run_dir, CHECKPOINT)):
            return "interrupted"
        return "new"

    def start_flags(self) -> list[str]:
        return [
            *("--env-id", self.env_id, "--seed", str(self.seed), "--total-timesteps", str(self.steps)),
            *("--run-name", self.name, "--runs-dir", self.runs_dir),
            *self.flags,
        ]

    def command(self, threads: int) -> list[str]:
        """Start the run, or continue it from its last checkpoint with its saved settings."""
        script = [sys.executable, ALGORITHMS[self.algo].script_path]
        flags = self.start_flags()
        if self.status() == "interrupted":
            # The same flags again: they match the saved settings, and the ones a resume may
            # change (--checkpoint-every, --save-buffer, ...) would otherwise fall back to defaults.
            flags = ["--resume", os.path.join(self.run_dir, CHECKPOINT), *flags]
        return [*script, *flags, "--threads", str(threads)]


def parse_assignments(text: str, what: str) -> list[tuple[str, list[str]]]:
    """'gamma=0.99,0.995 gae-lambda=0.95' -> [('gamma', ['0.99', '0.995']), ('gae-lambda', ['0.95'])]"""
    assignments = []
    for item in text.split():
        key, equals, values = item.partition("=")
        choices = values.split(",")
        if not equals or not key or not all(choices):
            fail(f"{what}: '{item}' is not NAME=VALUE[,VALUE...] (e.g. gamma=0.99,0.995)")
        key = key.lstrip("-").replace("_", "-")
        if key in (k for k, _ in assignments):
            fail(f"{what}: '{key}' is given twice")
        assignments.append((key, choices))
    return assignments


def flag_for(module: ModuleType, algo: str, key: str, value: str) -> list[str]:
    """The script's own flag for key=value, with the value checked against the field's type."""
    field = {f.name: f for f in fields(module.Args)}.get(key.replace("-", "_"))
    if field is None:
        close = difflib.get_close_matches(key, [f.name.replace("_", "-") for f in fields(module.Args)], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        fail(f"--{key} is not a flag of {ALGORITHMS[algo].script}{hint}")
    if field.name in cli.flags_with_role(module.Args, "axis") | SWEEP_FLAGS:
        fail(f"--{key} is set by the sweep itself (use --envs, --seeds, --steps), not by a grid")
    kind = str(field.type)
    if kind == "bool":
        if value.lower() not in ("true", "false"):
            fail(f"{key}={value}: {key} is a switch, give true or false")
        return [f"--{key}" if value.lower() == "true" else f"--no-{key}"]
    if value == "None" and "None" in kind:
        return [f"--{key}", "None"]
    if kind.startswith("Literal["):
        choices = typing.get_args(typing.get_type_hints(module.Args)[field.name])
        if value not in choices:
            fail(f"{key}={value}: {key} is one of {', '.join(choices)}")
        return [f"--{key}", value]
    # A tuple's items are joined by x: hidden-sizes=512x256x128 is --hidden-sizes 512 256 128.
    items = value.split("x") if kind.startswith("tuple[") else [value]
    element = kind.removeprefix("tuple[")
    number = "int" if element.startswith("int") else "float" if element.startswith("float") else None
    try:
        for item in items:
            {"int": int, "float": float, None: str}[number](item)
    except ValueError:
        what = "integers joined by x, e.g. 512x256" if items != [value] else "an integer"
        fail(f"{key}={value}: {key} takes {what if number == 'int' else 'a number'}")
    return [f"--{key}", *items]


def plan(options: argparse.Namespace) -> list[PlannedRun]:
    """Every run of the sweep, each checked (flags, values, env ids, directories) before any starts."""
    algos = options.algos.split()
    for algo in algos:
        if algo not in ALGORITHMS:
            fail(f"unknown algorithm '{algo}' (choose from {', '.join(ALGORITHMS)})")
    # ENV@STEPS gives one env its own length (SAC's InvertedDoublePendulum target is at 200k steps).
    env_steps = [
        (spec.partition("@")[0], spec.partition("@")[2] or options.steps) for spec in options.envs.split()
    ]
    try:
        seeds = [int(seed) for seed in options.seeds.split()]
        env_steps = [(env_id, int(steps)) for env_id, steps in env_steps]
    except ValueError:
        fail(f"seeds and steps must be integers, got seeds '{options.seeds}', steps '{options.steps}', "
             f"envs '{options.envs}'")  # fmt: skip
    if not algos or not env_steps or not seeds:
        fail("nothing to run: give at least one algorithm, env and seed")
    import gymnasium as gym

    for env_id, steps in env_steps:
        if steps <= 0:
            fail(f"steps must be positive, got {steps} for {env_id}")
        if env_id not in gym.registry:
            close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
            fail(f"unknown env id '{env_id}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
    if options.label:
        check_name("--label", options.label)  # it is part of every run's directory name
    # One word besides: plot.py reads a setting's ',' and '=' as its grid values.
    if options.label and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.+-]*", options.label):
        fail(f"--label '{options.label}' must be one word of letters, digits and _.+- (it names runs)")
    if options.label == "default" or (options.label and not options.set):
        fail("--label names the --set flags in the run names: give --set with it, and not 'default'")
    label = [options.label] if options.label else []
    grid = parse_assignments(options.grid, "--grid")
    fixed = parse_assignments(options.set, "--set")
    for key, choices in fixed:
        if len(choices) > 1:
            fail(f"--set: '{key}' takes one value; vary it with --grid")
    if set(dict(grid)) & set(dict(fixed)):
        fail(f"--grid and --set both give {', '.join(set(dict(grid)) & set(dict(fixed)))}")

    runs = []
    for algo in algos:
        module = ALGORITHMS[algo].module()
        fixed_flags = [flag for key, (value,) in fixed for flag in flag_for(module, algo, key, value)]
        for combination in itertools.product(*(choices for _, choices in grid)):
            chosen = list(zip([key for key, _ in grid], combination, strict=True))
            flags = [flag for key, value in chosen for flag in flag_for(module, algo, key, value)]
            setting = ",".join([*label, *(f"{key}={value}" for key, value in chosen)]) or "default"
            for (env_id, steps), seed in itertools.product(env_steps, seeds):
                run = PlannedRun(algo, env_id, seed, steps, setting, flags + fixed_flags, options.runs_dir)
                # A namespaced env id (phys2d/CartPole-v1) or a grid value with a '/' would put the
                # run outside --runs-dir, or in a folder of runs of its own.
                check_name("the run name", run.name)
                runs.append(run)
        # Values of the right type can still be nonsense together (a batch larger than the buffer).
        for run in runs:
            if run.algo == algo:
                try:
                    module.check_args(cli.command_line(module.Args, run.start_flags()))
                except SystemExit as error:
                    fail(f"{run.name}: {error}".replace(": error: ", ": "))
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        fail(f"two runs would be {repeated[0]}: give each env and seed once (a length is not in the name)")

    for run in runs:
        # The lock alone is ours: a sweep takes it before writing the marker, and another sweep may
        # hold it (or a kill come) in between.
        if os.path.isdir(run.run_dir) and set(os.listdir(run.run_dir)) - {SWEEP_LOCK}:
            marker = os.path.join(run.run_dir, SWEEP_CONFIG)
            if not os.path.exists(marker):
                fail(
                    f"{run.run_dir} exists but benchmark.sh did not make it; "
                    "move it or use another --runs-dir"
                )
            try:
                made_by = read_marker(run)
            except (OSError, ValueError) as error:
                fail(f"{marker} cannot be read ({cli.first_line(error)}); move the run or fix it")
            if made_by != run.config():
                fail(
                    f"{run.run_dir} was made by another configuration ({made_by}); "
                    "move it or use another --runs-dir"
                )
    return runs


# ---------------------------------------------------------------------------------------------
# Running one run: the same for a local worker and a Slurm array task
# ---------------------------------------------------------------------------------------------


def read_marker(run: PlannedRun) -> dict:
    """The configuration that made the run's directory (benchmark.json); OSError or ValueError if
    it cannot be read."""
    with open(os.path.join(run.run_dir, SWEEP_CONFIG)) as f:
        return json.load(f)


def prepare(run: PlannedRun) -> None:
    """Mark the directory as this configuration's; clear what a start killed before its first
    checkpoint left behind, so that its TensorBoard curve does not hold two first attempts."""
    os.makedirs(run.run_dir, exist_ok=True)
    if run.status() == "new":
        for entry in os.listdir(run.run_dir):
            if entry not in (SWEEP_CONFIG, SWEEP_LOG, SWEEP_LOCK):
                path = os.path.join(run.run_dir, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    run_directory.write_json_atomically(run.config(), os.path.join(run.run_dir, SWEEP_CONFIG), indent=2)


RUNNING: set[subprocess.Popen] = set()  # the training processes of this sweep, for stop()


def thread_limited_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_one(
    run: PlannedRun, threads: int, watch: Watch | None = None, pass_fds: tuple = ()
) -> tuple[int, str]:
    """Run (or resume) one run to its end under the run's lock. `watch`, if given, is called with
    the training process every few seconds while it runs (the tuner reads evaluations and may
    stop it); `pass_fds` are more locks the training process holds as its sweep does."""
    if run.status() == "finished":
        return 0, SKIPPED
    os.makedirs(run.run_dir, exist_ok=True)
    # Two sweeps started at once (two terminals, a requeued Slurm task) must not run one run twice.
    lock = FileLock(os.path.join(run.run_dir, SWEEP_LOCK), wait=False)
    if not lock.held:
        return 1, "not run: another sweep is running it"
    try:
        return run_locked(run, threads, (lock.fileno(), *pass_fds), watch)
    finally:
        lock.release()


Watch = typing.Callable[[subprocess.Popen], None]
WATCH_EVERY_S = 2.0


def run_locked(run: PlannedRun, threads: int, lock_fds: tuple, watch: Watch | None) -> tuple[int, str]:
    # Again, now under the lock: since this sweep planned, another (a local one beside a Slurm
    # array still queued, with other --set values and so the same run names) may have made it.
    if os.path.exists(os.path.join(run.run_dir, SWEEP_CONFIG)):
        try:
            made_by = read_marker(run)
        except (OSError, ValueError):
            made_by = None
        if made_by != run.config():
            return 1, "not run: another configuration made this run directory since the sweep began"
    status = run.status()  # again: the other sweep may have finished it meanwhile
    if status == "finished":
        return 0, SKIPPED
    if is_locked(os.path.join(run.run_dir, RUN_LOCK)):
        return 1, "not run: a process started outside this sweep is training it"
    prepare(run)
    command = run.command(threads)
    with open(os.path.join(run.run_dir, SWEEP_LOG), "a") as log:
        log.write(f"\n# started {time.time():.3f} ({time.ctime()})\n$ {shlex.join(command)}\n")
        log.flush()
        # The training process holds the lock too: should this sweep die, no other starts the run
        # again while it still runs.
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=thread_limited_env(threads),
            cwd=run.run_dir,
            pass_fds=lock_fds,
        )
        RUNNING.add(process)
        code = wait(process, watch)
        RUNNING.discard(process)
        log.write(f"# ended {time.time():.3f} ({time.ctime()}), exit {code}\n")
    verb = "resumed" if status == "interrupted" else "ran"
    return code, f"{verb}, {'finished' if code == 0 else f'FAILED (exit {code})'}"


def wait(process: subprocess.Popen, watch: Watch | None) -> int:
    while watch is not None:
        try:
            return process.wait(timeout=WATCH_EVERY_S)
        except subprocess.TimeoutExpired:
            watch(process)
    return process.wait()


def stop_runs_on(signals: tuple[signal.Signals, ...]) -> threading.Event:
    """On any of these signals: set the returned event and send SIGTERM to every training process
    this sweep started. The training scripts checkpoint on SIGTERM: the same command resumes them."""
    stopping = threading.Event()

    def stop(signum, frame):
        stopping.set()
        for process in list(RUNNING):
            process.send_signal(signal.SIGTERM)

    for signum in signals:
        signal.signal(signum, stop)
    return stopping


def run_locally(runs: list[PlannedRun], workers: int, threads: int) -> bool:
    """Each run is its own process with `threads` torch threads; a failed run does not stop the others."""
    stopping = stop_runs_on((signal.SIGTERM, signal.SIGINT))
    results: dict[str, tuple[int, str]] = {}
    lock = threading.Lock()

    def work(run: PlannedRun) -> None:
        if stopping.is_set():
            results[run.name] = (1, "not started (sweep stopped)")
            return
        started = time.time()
        code, outcome = run_one(run, threads=threads)
        took = f" in {(time.time() - started) / 60:.1f} min" if outcome != SKIPPED else ""
        with lock:  # one worker at a time counts and prints
            results[run.name] = code, outcome
            print(f"[{len(results)}/{len(runs)}] {run.name}: {outcome}{took}", flush=True)

    print(f"{len(runs)} runs, {workers} workers; each run logs to <run dir>/{SWEEP_LOG}", flush=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, runs))
    failed = [name for name, (code, _) in results.items() if code != 0]
    print(f"\n{len(runs) - len(failed)} of {len(runs)} runs finished or already done", flush=True)
    for name in failed:
        print(f"  failed: {name}: {results[name][1]}; see {os.path.join(runs[0].runs_dir, name, SWEEP_LOG)}")
    if stopping.is_set():
        print("stopped: run the same command again to resume")
    return not failed and not stopping.is_set()


# ---------------------------------------------------------------------------------------------
# Status: where each run of the plan stands, for sweeps that take hours
# ---------------------------------------------------------------------------------------------


def is_running(run: PlannedRun) -> bool:
    """Whether this run is running now: a sweep (or the training process it started) holds the
    sweep's lock (see run_one), or a training process started by hand holds the run's own."""
    return any(is_locked(os.path.join(run.run_dir, name)) for name in (SWEEP_LOCK, RUN_LOCK))


def checkpoint_step(run: PlannedRun) -> int | None:
    """The step an interrupted run resumes from: its checkpoint's, which lags the last step logged
    by up to --checkpoint-every steps when the run was killed hard (SIGKILL, a session ending)."""
    import torch

    try:
        # mmap: only the step is read, not the replay buffer a checkpoint may hold.
        checkpoint = torch.load(os.path.join(run.run_dir, CHECKPOINT), weights_only=True, mmap=True)
        return int(checkpoint["global_step"])
    except Exception:
        return None


def progress_details(run: PlannedRun, state: str) -> list[str]:
    """A status line's details from the run's own files: its final evaluation, or how far it got."""
    details = []
    if state == "finished":
        final = json.load(open(os.path.join(run.run_dir, SUMMARY))).get("final_eval_mean")
        details.append(f"final eval {final:.1f}" if final is not None else "no final evaluation")
    elif progress := run_directory.read_progress(run.run_dir):  # what the script last reported
        step, total = progress["step"], progress["total_timesteps"]
        details.append(f"step {step:,}/{total:,} ({100 * step / total:.0f}%)")
        details += [f"eval {progress['eval']:.1f}"] if progress.get("eval") is not None else []
        details += [f"{progress['time_left']} left"] if state == "running" else []
    return details


def print_status(runs: list[PlannedRun]) -> None:
    """One line per run: finished (its final evaluation), running, interrupted (resumes from its
    last checkpoint on the next sweep) or not started, with the last step and evaluation logged
    and, for an interrupted run, the step its checkpoint resumes from."""
    counts = dict.fromkeys(("finished", "running", "interrupted", "not started"), 0)
    width = max(len(run.name) for run in runs)
    for run in runs:
        state = {"finished": "finished", "interrupted": "interrupted", "new": "not started"}[run.status()]
        if state != "finished" and is_running(run):
            state = "running"
        counts[state] += 1
        try:
            details = progress_details(run, state)
        except (OSError, ValueError, TypeError, KeyError, AttributeError, ZeroDivisionError) as error:
            details = [f"its {SUMMARY} or {PROGRESS} is unreadable ({type(error).__name__})"]
        if state == "interrupted":
            resume_step = checkpoint_step(run)
            details.append(
                "checkpoint unreadable" if resume_step is None else f"resumes from {resume_step:,}"
            )
        print(f"{run.name:<{width}}  {state:<11}  {', '.join(details)}".rstrip())
    print(", ".join(f"{count} {state}" for state, count in counts.items() if count))


# ---------------------------------------------------------------------------------------------
# Slurm: one array job, one task per run that has not finished
# ---------------------------------------------------------------------------------------------


def submit_to_slurm(runs: list[PlannedRun], options: argparse.Namespace) -> bool:
    pending = [run for run in runs if run.status() != "finished"]
    if not pending:
        print("all runs have finished; nothing to submit")
        return True
    if shutil.which("sbatch") is None:
        fail("--slurm needs sbatch on the PATH")
    slurm_dir = os.path.abspath(os.path.join(options.runs_dir, "slurm"))
    os.makedirs(slurm_dir, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # two submissions in one second differ
    plan_path = os.path.join(slurm_dir, f"plan-{stamp}.json")
    with open(plan_path, "w") as f:
        json.dump({"threads": options.cpus_per_task, "runs": [asdict(run) for run in pending]}, f, indent=2)
    script_path = write_array_script(
        options,
        len(pending),
        os.path.join(slurm_dir, f"array-{stamp}.sbatch"),
        "# task i runs plan entry i: skipped if finished, resumed if interrupted",
        f'--run-task "$SLURM_ARRAY_TASK_ID" --plan {shlex.quote(plan_path)}',
    )
    skipped = len(runs) - len(pending)
    print(
        f"submitting {len(pending)} runs as one array job ({skipped} finished runs skipped); "
        f"task logs: {slurm_dir}/<job>_<task>.out, run logs: <run dir>/{SWEEP_LOG}",
        flush=True,
    )
    result = subprocess.run(["sbatch", *options.sbatch_args_list, script_path])
    return result.returncode == 0


def write_array_script(
    options: argparse.Namespace, tasks: int, path: str, comment: str, arguments: str
) -> str:
    """An sbatch script of `tasks` array tasks, each running this sweep with `arguments`."""
    slurm_dir = os.path.dirname(path)
    directives = [
        f"--job-name={options.job_name}",
        f"--array=0-{tasks - 1}",
        "--ntasks=1",
        f"--cpus-per-task={options.cpus_per_task}",
        f"--output={slurm_dir}/%A_%a.out",
        *([f"--partition={options.partition}"] if options.partition else []),
        *([f"--time={options.time}"] if options.time else []),
    ]
    with open(path, "w") as f:
        f.write("#!/bin/bash\n" + "".join(f"#SBATCH {line}\n" for line in directives))
        f.write(f"{comment}\n")
        # The package from this checkout, whether or not it is installed where the task runs.
        f.write(f"export PYTHONPATH={shlex.quote(REPO_ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}\n")
        f.write(f"exec {shlex.quote(sys.executable)} -m actor_critic.sweep {arguments}\n")
    return path


def run_task(index: int, plan_path: str) -> int:
    with open(plan_path) as f:
        saved = json.load(f)
    run = PlannedRun(**saved["runs"][index])
    # Slurm's warning before a time limit (--signal=B:TERM@...) reaches this process alone: pass
    # it on, so the run writes its checkpoint before the kill.
    stop_runs_on((signal.SIGTERM,))
    code, outcome = run_one(run, threads=saved["threads"])
    print(f"{run.name}: {outcome}", flush=True)
    return code


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    """The sweep's options; the tuner (tune.py) adds its own to the same parser."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="bash benchmark.sh",
        description="Sweep algorithms x envs x seeds x grid settings, locally or as one Slurm array "
        "job, then plot and tabulate. Each option also reads its environment variable (ALGOS, ENVS, "
        "SEEDS, STEPS, GRID, SET, LABEL, WORKERS, THREADS, RUNS_DIR); a flag wins over the variable.",
        epilog='example: ALGOS=ppo SEEDS="1 2" bash benchmark.sh --grid "gamma=0.99,0.995"',
    )
    add = parser.add_argument
    add("--algos", default=env("ALGOS", " ".join(ALGORITHMS)), help="algorithms (default: %(default)s)")
    add(
        "--envs",
        default=env("ENVS", DEFAULT_ENVS),
        help="env ids, ENV@STEPS for a length of its own (default: %(default)s)",
    )
    add("--seeds", default=env("SEEDS", "1 2 3"), help="seeds (default: %(default)s)")
    add("--steps", default=env("STEPS", "1000000"), help="env steps per run (default: %(default)s)")
    add(
        "--grid",
        default=env("GRID", ""),
        help='settings to cross, e.g. "gamma=0.99,0.995 gae-lambda=0.95,0.97": '
        "one run per combination per env and seed",
    )
    add(
        "--set",
        default=env("SET", ""),
        help='flags for every run, one value each, e.g. "eval-every=5000";'
        " recorded in benchmark.json, not in the run name",
    )
    add(
        "--label",
        default=env("LABEL", ""),
        help="a name for the --set flags, put in the run names (e.g. large-batch): runs with other"
        " --set values then live beside the defaults' in one --runs-dir, and plots tell them apart",
    )
    add("--runs-dir", default=env("RUNS_DIR", "runs"), help="where runs go (default: %(default)s)")
    add(
        "--workers",
        type=int,
        default=env("WORKERS", str(os.cpu_count() or 1)),  # a string: parsed (and checked) as the flag is
        help="runs at once (default: one per core, %(default)s)",
    )
    add(
        "--threads",
        type=int,
        default=env("THREADS", "1"),
        help="torch threads of each local run (default: %(default)s; one run alone on the machine "
        "finishes sooner with one per core, several single-threaded runs do more steps in all)",
    )
    add(
        "--tune",
        action="store_true",
        help="tune with an Optuna study instead of a grid (bash benchmark.sh --tune --help; docs/tuning.md)",
    )
    add("--dry-run", action="store_true", help="print the commands, run nothing")
    add("--status", action="store_true", help="where each run stands (finished, running, ...); run nothing")
    add("--report", action="store_true", help="only make the plots and the table of what is there")
    add("--no-report", action="store_true", help="no plots and table after the runs")
    slurm = parser.add_argument_group("Slurm")
    slurm.add_argument("--slurm", action="store_true", help="submit one array job, a task per unfinished run")
    slurm.add_argument("--partition", default=None, help="sbatch --partition")
    slurm.add_argument("--time", default=None, help="sbatch --time, e.g. 24:00:00")
    slurm.add_argument(
        "--cpus-per-task", type=int, default=1, help="sbatch --cpus-per-task; the torch threads"
    )
    slurm.add_argument("--job-name", default="benchmark", help="sbatch --job-name")
    slurm.add_argument(
        "--sbatch-args",
        default="",
        help="more sbatch options, e.g. --sbatch-args='--wait --mem=4G' (mind the =)",
    )
    add("--run-task", type=int, help=argparse.SUPPRESS)  # a Slurm array task's entry point
    add("--plan", help=argparse.SUPPRESS)
    return parser


def parse_options(argv: list[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    options = (parser or make_parser()).parse_args(argv)
    if options.workers < 1 or options.threads < 1 or options.cpus_per_task < 1:
        fail("--workers, --threads and --cpus-per-task must be at least 1")
    if options.slurm and options.threads != 1:
        fail("--threads is for local runs; with --slurm, --cpus-per-task sets each task's threads")
    if options.threads > training.available_cpus():  # each run would refuse it as it starts
        fail(f"--threads {options.threads}: a run may use {training.available_cpus()} CPUs here")
    # Runs start in their own directories, Slurm tasks wherever Slurm puts them.
    options.runs_dir = os.path.abspath(options.runs_dir)
    if os.path.exists(options.runs_dir) and not os.path.isdir(options.runs_dir):
        fail(f"--runs-dir {options.runs_dir} is a file, not a directory")
    if options.slurm:
        # sbatch reads #SBATCH lines split at whitespace, with quotes and '#' of its own: a value
        # holding them would be cut or read as another option.
        for name in ("runs_dir", "job_name", "partition", "time"):
            value = getattr(options, name) or ""
            if re.search(r"[\s'\"#\\]", value):
                fail(f"with --slurm, --{name.replace('_', '-')} may hold no spaces, quotes or '#': {value!r}")
        try:
            options.sbatch_args_list = shlex.split(options.sbatch_args)
        except ValueError as error:
            fail(f"--sbatch-args {options.sbatch_args!r}: {error}")
    return options


def main(argv: list[str]) -> int:
    # An Optuna study instead of a grid: tune.py, with the same options and more. (argparse would
    # take --tu and --tun for --tune too.)
    tune_flags = {"--tu", "--tun", "--tune"}
    if tune_flags & set(argv):
        from actor_critic import tune

        return tune.main([arg for arg in argv if arg not in tune_flags])
    options = parse_options(argv)
    if options.run_task is not None:
        return run_task(options.run_task, options.plan)
    if options.report:
        return report(options.runs_dir)
    runs = plan(options)
    if options.status:
        print_status(runs)
        return 0
    if options.dry_run:
        threads = options.cpus_per_task if options.slurm else options.threads
        for run in runs:
            line = shlex.join(run.command(threads))
            print(f"# {run.name}: finished, skipped" if run.status() == "finished" else line)
        return 0
    if options.slurm:
        succeeded = submit_to_slurm(runs, options)
    else:
        succeeded = run_locally(runs, options.workers, options.threads)
    waited = options.slurm and "--wait" in options.sbatch_args_list
    if not options.no_report and (waited or not options.slurm):
        report(options.runs_dir)
    return 0 if succeeded else 1


def report(runs_dir: str) -> int:
    import plot

    return plot.main([runs_dir, "--out", os.path.join(runs_dir, "report")])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
