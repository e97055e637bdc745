"""Does a refactor keep the numbers? Train the same short runs with two commits and compare them.

    python benchmarks/same_numbers.py                 # this work tree against REFERENCE_COMMIT
    python benchmarks/same_numbers.py --ref HEAD~3    # against any other commit

Each configuration runs once in a copy of the reference commit (`git archive`) and once in this
work tree, on this machine, in child processes with one thread each; then once more in the
reference, stopped with SIGTERM after its first checkpoint and resumed by this work tree (the
reference's checkpoint files must resume, exactly). The final evaluation
(summary.json) and every tensor and value of final_model.pt and checkpoint.pt (networks,
optimizers, RNG states, the saved loop state; the settings and the wall clock aside) must be equal
to the last bit. Floating-point results differ between CPUs, so references are never stored:
both sides are computed side by side, here and now. Exit status 0 only if every run matches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from actor_critic.run_directory import CHECKPOINT, FINAL_MODEL, SUMMARY

REPO = Path(__file__).resolve().parent.parent
# The last commit before the scripts were split into algorithm files and plumbing.py (issue 23),
# which later became the actor_critic package.
REFERENCE_COMMIT = "7270a2d"
COMMON = ["--seed", "3", "--threads", "1", "--no-cuda", "--run-name", "run"]
CONFIGS = {
    "sac": [
        "sac_continuous.py",
        "--env-id",
        "HalfCheetah-v4",
        "--total-timesteps",
        "2500",
        "--learning-starts",
        "1000",
        "--eval-every",
        "1000",
        "--eval-episodes",
        "2",
        "--checkpoint-every",
        "1000",
        "--save-buffer",
    ],
    "ppo": [
        "ppo_continuous.py",
        "--env-id",
        "HalfCheetah-v4",
        "--total-timesteps",
        "4096",
        "--num-steps",
        "1024",
        "--eval-every",
        "2048",
        "--eval-episodes",
        "2",
        "--checkpoint-every",
        "1024",
    ],
}
# Not numbers of the run: the settings (a refactor may add flags), the clock, the W&B id, and
# where each session ran (added in issue 23).
IGNORED_KEYS = {"args", "wall_clock", "wandb_id", "sessions"}


def fingerprint(value, path: str = "") -> dict[str, str]:
    """A digest per leaf of a checkpoint, keyed by its path in the nested structure."""
    import torch

    if isinstance(value, dict):
        out = {}
        for key in sorted(value, key=str):
            if key not in IGNORED_KEYS:
                out.update(fingerprint(value[key], f"{path}/{key}"))
        return out
    if isinstance(value, list | tuple):
        out = {}
        for i, item in enumerate(value):
            out.update(fingerprint(item, f"{path}[{i}]"))
        return out
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest = hashlib.sha256(tensor.numpy().tobytes()).hexdigest()[:16]
        return {path: f"{tensor.dtype}{list(tensor.shape)}:{digest}"}
    return {path: repr(value)}


def command(tree: Path, config: list[str], runs_dir: Path) -> list[str]:
    return [sys.executable, str(tree / config[0]), *config[1:], *COMMON, "--runs-dir", str(runs_dir)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MUJOCO_GL": "egl"}


def run(tree: Path, config: list[str], runs_dir: Path, resume_from: Path | None = None) -> dict:
    """Train (or, with `resume_from`, resume that checkpoint) and fingerprint what it wrote."""
    args = command(tree, config, runs_dir)
    if resume_from is not None:
        args += ["--resume", str(resume_from)]
    done = subprocess.run(args, cwd=tree, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return fingerprint_run(resume_from.parent if resume_from else runs_dir / "run")


def fingerprint_run(run_dir: Path) -> dict:
    import torch

    from actor_critic.checkpoints import upgrade

    summary = json.loads((run_dir / SUMMARY).read_text())
    result = {"final_eval": (summary["final_eval_mean"], summary["final_eval_std"])}
    for name in (FINAL_MODEL, CHECKPOINT):
        # Both sides in today's format version: a file of an older one is upgraded as it is
        # when loaded for use (the same numbers, moved).
        checkpoint = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        result[name] = fingerprint(upgrade(checkpoint))
    return result


def stopped_after_first_checkpoint(tree: Path, config: list[str], runs_dir: Path) -> Path:
    """Start the run, SIGTERM it once its first checkpoint exists: a checkpoint from mid-run."""
    process = subprocess.Popen(
        command(tree, config, runs_dir),
        cwd=tree,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = runs_dir / "run" / CHECKPOINT
    while not checkpoint.exists():
        if process.poll() is not None:
            raise SystemExit(f"error: the run in {tree} ended before its first checkpoint")
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait()
    return checkpoint


def compare(name: str, ref: dict, new: dict) -> bool:
    same = True
    print(f"{name}: final evaluation {ref['final_eval']} (reference) vs {new['final_eval']} (this tree)")
    if ref["final_eval"] != new["final_eval"]:
        same = False
    for file in (FINAL_MODEL, CHECKPOINT):
        a, b = ref[file], new[file]
        differ = sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))
        print(f"  {file}: {len(a)} leaves, {len(differ)} differ" + (f": {differ[:8]}" if differ else ""))
        same = same and not differ
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=REFERENCE_COMMIT, help="the commit to compare with")
    parser.add_argument("--only", choices=sorted(CONFIGS), help="one algorithm only")
    options = parser.parse_args()
    names = [options.only] if options.only else sorted(CONFIGS)
    all_same = True
    with tempfile.TemporaryDirectory() as tmp:
        ref_tree = Path(tmp) / "ref"
        ref_tree.mkdir()
        archive = subprocess.run(["git", "archive", options.ref], cwd=REPO, capture_output=True)
        if archive.returncode != 0:
            raise SystemExit(f"error: git archive {options.ref}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(ref_tree)], input=archive.stdout, check=True)
        for name in names:
            ref = run(ref_tree, CONFIGS[name], Path(tmp) / f"ref_{name}")
            new = run(REPO, CONFIGS[name], Path(tmp) / f"new_{name}")
            all_same = compare(name, ref, new) and all_same
            checkpoint = stopped_after_first_checkpoint(
                ref_tree, CONFIGS[name], Path(tmp) / f"stopped_{name}"
            )
            resumed = run(REPO, CONFIGS[name], Path(tmp) / f"stopped_{name}", resume_from=checkpoint)
            all_same = compare(f"{name}, the reference's checkpoint resumed here", ref, resumed) and all_same
    print("bit-identical" if all_same else "DIFFERENT")
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
