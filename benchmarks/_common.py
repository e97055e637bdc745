"""Driver code shared by `sac_speed.py` and `ppo_speed.py` (ours vs Stable-Baselines3 and peers).

Each benchmark keeps its own argument parser, workers (SB3, SBX) and the way it builds our command
and reads our number; this module holds what is the same in both: child processes with a fixed
thread budget (thread counts in the environment, optionally pinned to as many CPUs), the settings
and header, the alternating repeat loop, the summary and the JSON. `run_benchmark` is the whole
driver for one (env, threads) setting and two implementations; `sac_speed.py` builds its grid of
settings from the same pieces (`run_repeats`, `median_sps`, `pair_ratios`, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from actor_critic.run_directory import SUMMARY

IMPLS = ("ours", "sb3")
# The packages whose versions the settings record by default (JSON key: the name with "_" for "-").
PACKAGES = ("torch", "stable-baselines3", "gymnasium", "mujoco")


@dataclass
class RunResult:
    impl: str
    repeat: int
    steps_per_s: float
    wall_s: float  # wall time of the whole child process, start-up and warm-up included
    load_before: float | None  # 1-minute load average just before the run
    details: dict[str, Any] = field(default_factory=dict)


class BenchmarkError(RuntimeError):
    pass


# A runner does one timed run of one implementation: runner(args, repeat, runs_dir).
Runner = Callable[[argparse.Namespace, int, Path], RunResult]


# --------------------------------------------------------------------------- arguments


def add_driver_args(
    p: argparse.ArgumentParser,
    script: Path,
    impls: Sequence[str] = IMPLS,
    workers: Sequence[str] = ("sb3",),
    pin_cpus: bool = False,
) -> None:
    """Add the options both benchmarks share, from --impls on; `script` is --script's default.

    `impls` are the implementations --impls may name ("all", the default, is all of them, in this
    order), `workers` the values of the internal --worker, and `pin_cpus` whether `run_child` pins
    every child to as many CPUs as it has threads (args.pin_cpus; not an option).
    """
    p.add_argument(
        "--impls", default="all", help=f"comma-separated subset of: {','.join(impls)}, or all of them"
    )
    p.add_argument(
        "--extra-ours",
        default="",
        help="extra flags for our script, one string (absolute paths: it runs in a temp dir)",
    )
    p.add_argument("--script", type=Path, default=script)
    p.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    p.add_argument("--keep-runs", action="store_true", help="keep our script's run directories")
    p.add_argument("--child-timeout", type=float, default=3600.0, help="seconds per child run")
    p.add_argument("--verbose", action="store_true", help="show every child's output")
    # Internal: the peers (SB3, SBX) run as children of this script.
    p.add_argument("--worker", choices=list(workers), default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.set_defaults(pin_cpus=pin_cpus)


def check_driver_args(
    p: argparse.ArgumentParser, args: argparse.Namespace, impls: Sequence[str] = IMPLS
) -> None:
    """Resolve --script and split --impls in place; exit through `p.error` if --impls is bad."""
    args.script = args.script.resolve()  # children run in a temporary directory
    if args.impls.strip() == "all":
        args.impls = list(impls)
        return
    args.impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    unknown = [s for s in args.impls if s not in impls]
    if unknown or not args.impls:
        p.error(f"--impls must be a comma-separated subset of {','.join(impls)}, got {unknown}")


# --------------------------------------------------------------------------- child processes


def child_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with OMP_NUM_THREADS and MKL_NUM_THREADS set to `threads`,
    then the variables in `extra`."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env.update(extra or {})
    return env


def available_cpus() -> list[int] | None:
    """The CPUs this process may run on, or None where the OS cannot say (no sched_getaffinity)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def pinned_cpus(threads: int) -> list[int] | None:
    """The CPUs a child with `threads` threads is pinned to: the first `threads` of those this
    process may use; None (no pinning) where that would be all of them or the OS cannot pin."""
    cpus = available_cpus()
    if cpus is None or threads >= len(cpus):
        return None
    return cpus[:threads]


def run_child(
    cmd: list[str],
    cwd: Path,
    args: argparse.Namespace,
    what: str,
    extra_env: dict[str, str] | None = None,
) -> float:
    """Run one child process with `args.threads` threads (see `child_env`, plus `extra_env`), and
    pinned to as many CPUs if `args.pin_cpus` (see `pinned_cpus`); return its wall time. Raise
    BenchmarkError if it fails."""
    cpus = pinned_cpus(args.threads) if args.pin_cpus else None
    if args.verbose:
        pinned = "" if cpus is None else f"  (pinned to CPUs {cpus})"
        print(f"  $ {shlex.join(cmd)}{pinned}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            cwd=cwd,  # keeps stray files (e.g. MUJOCO_LOG.TXT) out of the repo
            env=child_env(args.threads, extra_env),
            # Pinned between fork and exec: the child, and every thread it starts, inherits it.
            preexec_fn=None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus),
            stdout=None if args.verbose else subprocess.PIPE,
            stderr=None if args.verbose else subprocess.STDOUT,
            text=True,
            timeout=args.child_timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchmarkError(f"{what} timed out after {args.child_timeout:.0f} s") from e
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").splitlines()[-30:])
        raise BenchmarkError(
            f"{what} failed with exit code {proc.returncode}\n"
            f"command: {shlex.join(cmd)}\n--- last lines of its output ---\n{tail}"
        )
    return wall


def read_our_summary(summary_path: Path, algo: str, key: str) -> dict[str, Any]:
    """Load the summary.json our script wrote; raise BenchmarkError if it is missing."""
    if not summary_path.is_file():
        raise BenchmarkError(
            f"our {algo} exited cleanly but wrote no {summary_path}; "
            f"it must write {SUMMARY} with the key '{key}'"
        )
    return json.loads(summary_path.read_text())


def run_worker_child(
    args: argparse.Namespace,
    repeat: int,
    runs_dir: Path,
    script: Path,
    worker: str,
    algo: str,
    key: str,
    flags: list[str],
    extra_env: dict[str, str] | None = None,
) -> RunResult:
    """Run `script --worker <worker>` with `flags` (and `extra_env`, see `run_child`) and read
    the steps/s it wrote under `key`; the result's impl is `worker`."""
    out = runs_dir / f"{worker}_{repeat}.json"
    cmd = [
        sys.executable,
        str(script),
        "--worker", worker,
        "--worker-out", str(out),
        "--env-id", args.env_id,
        "--seed", str(args.seed),
        *flags,
        "--threads", str(args.threads),
    ]  # fmt: skip
    load = load_1min()
    wall = run_child(cmd, runs_dir, args, f"{worker.upper()} {algo} (repeat {repeat + 1})", extra_env)
    result = json.loads(out.read_text())
    return RunResult(worker, repeat, float(result[key]), wall, load, result)


def run_sb3_child(
    args: argparse.Namespace,
    repeat: int,
    runs_dir: Path,
    script: Path,
    algo: str,
    key: str,
    flags: list[str],
) -> RunResult:
    """Run `script --worker sb3` with `flags` and read the steps/s it wrote under `key`."""
    return run_worker_child(args, repeat, runs_dir, script, "sb3", algo, key, flags)


# --------------------------------------------------------------------------- machine and settings


def load_1min() -> float | None:
    """The 1-minute load average, or None where the OS has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def version(package: str) -> str:
    """The installed version of `package`, or "not installed"."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(packages: Sequence[str] = PACKAGES) -> dict[str, Any]:
    """Python's version, those of `packages` (keys with "_" for "-"), the CPU and the load."""
    from actor_critic.training import cpu_name  # imports torch: not at the top, for the parent

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        **{package.replace("-", "_"): version(package) for package in packages},
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": load,
    }


def settings(args: argparse.Namespace, specific: dict[str, Any]) -> dict[str, Any]:
    """The run's settings and environment for the JSON; `specific` goes after "repeats"."""
    return {
        "env_id": args.env_id,
        "impls": args.impls,
        "repeats": args.repeats,
        **specific,
        "seed": args.seed,
        "threads": args.threads,
        "extra_ours": args.extra_ours,
        "script": str(args.script),
        **machine_info(),
    }


# --------------------------------------------------------------------------- results


def median_sps(results: list[RunResult], impls: Sequence[str]) -> dict[str, float | None]:
    """The median steps/s of each of `impls` (None for one without runs)."""
    by_impl = {impl: [r.steps_per_s for r in results if r.impl == impl] for impl in impls}
    return {impl: statistics.median(v) if v else None for impl, v in by_impl.items()}


def pair_ratios(results: list[RunResult], a: str, b: str) -> list[float]:
    """steps/s of `a` over that of `b` in each repeat where both ran, in repeat order."""
    sps_a = {r.repeat: r.steps_per_s for r in results if r.impl == a}
    sps_b = {r.repeat: r.steps_per_s for r in results if r.impl == b}
    return [sps_a[i] / sps_b[i] for i in sorted(sps_a) if i in sps_b]


def summarize(results: list[RunResult]) -> dict[str, Any]:
    """Median steps/s per implementation, their ratio and the per-pair (same repeat) ratios."""
    medians = median_sps(results, IMPLS)
    pair_ratios_ = pair_ratios(results, "ours", "sb3")
    ratio = None
    if medians["ours"] is not None and medians["sb3"] is not None:
        ratio = medians["ours"] / medians["sb3"]
    return {
        "median_sps": medians,
        "ratio_of_medians": ratio,
        "pair_ratios": pair_ratios_,
        "median_pair_ratio": statistics.median(pair_ratios_) if pair_ratios_ else None,
    }


def fmt(x: float | None, spec: str = ".1f") -> str:
    """`x` formatted with `spec`, or "n/a" for None."""
    return "n/a" if x is None else format(x, spec)


# --------------------------------------------------------------------------- driver (parent)


def check_script(args: argparse.Namespace, impls_using_it: Sequence[str] = ("ours",)) -> bool:
    """False, after a message, where one of `impls_using_it` runs and our script is missing."""
    if any(impl in args.impls for impl in impls_using_it) and not args.script.is_file():
        print(f"error: our script {args.script} does not exist (use --impls sb3?)", file=sys.stderr)
        return False
    return True


def exit_on_sigterm() -> None:
    """On SIGTERM, unwind through subprocess.run, which then kills the running child."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@contextlib.contextmanager
def runs_directory(args: argparse.Namespace, tmp_prefix: str) -> Iterator[Path]:
    """A temporary directory for the children's runs, removed at the end unless --keep-runs."""
    runs_dir = Path(tempfile.mkdtemp(prefix=tmp_prefix))
    try:
        yield runs_dir
    finally:
        if args.keep_runs:
            print(f"run directories kept in {runs_dir}")
        else:
            shutil.rmtree(runs_dir, ignore_errors=True)


def run_repeats(
    args: argparse.Namespace,
    runners: dict[str, Runner],
    runs_dir: Path,
    impls: Sequence[str] = IMPLS,
) -> list[RunResult]:
    """Do `args.repeats` runs of each implementation in `args.impls`, printing each one.

    The implementations run in the order of `impls`, rotated by one every repeat (with two, that
    swaps them) to cancel slow drift in machine load. Raise BenchmarkError if a run fails.
    """
    order = [impl for impl in impls if impl in args.impls]
    width = max(4, *map(len, order))
    results: list[RunResult] = []
    for repeat in range(args.repeats):
        shift = repeat % len(order)
        for impl in order[shift:] + order[:shift]:
            r = runners[impl](args, repeat, runs_dir)
            results.append(r)
            load = fmt(r.load_before, ".2f")
            print(
                f"repeat {repeat + 1}/{args.repeats}  {impl:<{width}}  {r.steps_per_s:8.1f} steps/s"
                f"   (child wall time {r.wall_s:.1f} s, load avg before {load})",
                flush=True,
            )
    return results


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` (making its folder) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"raw numbers written to {path}")


def run_benchmark(
    args: argparse.Namespace,
    header: list[str],
    specific_settings: dict[str, Any],
    runners: dict[str, Runner],
    tmp_prefix: str,
) -> int:
    """Run the alternating repeats, print every run and the summary; return the exit code.

    `header` is the title line and the benchmark's own setting lines, printed before the shared
    ones (versions, CPU, load); `specific_settings` goes into the settings (see `settings`).
    """
    if not check_script(args):
        return 1
    exit_on_sigterm()

    info = settings(args, specific_settings)
    for line in header:
        print(line)
    print(f"  torch {info['torch']} (CPU), {args.threads} torch threads per child")
    sb3, gym, mujoco = info["stable_baselines3"], info["gymnasium"], info["mujoco"]
    print(f"  SB3 {sb3}, gymnasium {gym}, mujoco {mujoco}")
    print(f"  CPU {info['cpu']} ({info['cpu_count']} logical cores)")
    print(f"  load average at start {info['loadavg_at_start']}")
    if "ours" in args.impls:
        extra = f" {args.extra_ours}" if args.extra_ours else ""
        print(f"  ours: {args.script.name}{extra}")
    print(flush=True)

    with runs_directory(args, tmp_prefix) as runs_dir:
        try:
            results = run_repeats(args, runners, runs_dir)
        except BenchmarkError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 1

    summary = summarize(results)
    med = summary["median_sps"]
    pairs = ", ".join(f"{x:.3f}" for x in summary["pair_ratios"]) or "n/a"
    print(
        f"\nmedian steps/s: ours {fmt(med['ours'])}, SB3 {fmt(med['sb3'])}, "
        f"ratio {fmt(summary['ratio_of_medians'], '.3f')} "
        f"(per-pair ratios: {pairs}; median {fmt(summary['median_pair_ratio'], '.3f')})"
    )

    if args.json is not None:
        write_json(args.json, {"settings": info, "runs": [asdict(r) for r in results], "summary": summary})
    return 0
