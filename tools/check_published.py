"""Does every published agent still score what its run's final evaluation says?

    python tools/check_published.py [runs/published]

Each finished run's final_model.pt is scored by enjoy.py's own scoring function (its algorithm's
loader, the run's own evaluation seeds, deterministic policy, no drawing), and the mean return must
equal summary.json's final_eval_mean exactly. Exit status 0 only if every run matches. It takes a few
minutes (10 episodes per published run).

Exactly, that is, on the kind of CPU that ran the final evaluation: another kind rounds the
policy's arithmetic differently, and a chaotic episode then drifts to another return. A line that
differs says which CPU the run recorded for its last session (summary.json's "sessions", which
newer runs write), so a difference on the run's own kind of CPU, which no rounding explains,
stands out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import enjoy
from actor_critic import training
from actor_critic.algorithms import REPO_ROOT
from actor_critic.cli import fail
from actor_critic.run_directory import FINAL_MODEL, SUMMARY, find_runs

REPO = REPO_ROOT


def where_evaluated(summary: dict, here: str) -> str:
    """What a differing line adds: the CPU that ran the run's final evaluation, against this one."""
    ran_on = (summary.get("sessions") or [{}])[-1].get("cpu")
    if not ran_on:
        return f" (its CPU is not recorded; this CPU: {here})"
    if ran_on == here:
        return f" (on its own kind of CPU, {here}: not a matter of rounding)"
    return f" (evaluated on {ran_on}; this CPU: {here})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Does each published agent score its run's final evaluation?"
    )
    parser.add_argument("folder", nargs="?", default=os.path.join(REPO, "runs", "published"))
    folder = parser.parse_args(argv).folder
    if not os.path.isdir(folder):
        fail(f"{folder} is not a directory")
    # Finished runs only: the final evaluation to compare against is in their summary.json.
    runs = [
        run for run in find_runs([folder], finished=True) if os.path.isfile(os.path.join(run, FINAL_MODEL))
    ]
    if not runs:
        fail(f"no finished run directories with a {FINAL_MODEL} in {folder}")
    mismatches, started, here = 0, time.time(), training.cpu_name()
    for run in runs:
        with open(os.path.join(run, SUMMARY)) as f:
            summary = json.load(f)
        expected, episodes = summary["final_eval_mean"], summary["final_eval_episodes"]
        args = enjoy.Args(checkpoint=(os.path.join(run, FINAL_MODEL),), eval_episodes=episodes, render=False)
        scored = enjoy.score(args).results[0].mean
        same = scored == expected
        mismatches += not same
        print(
            f"{'ok  ' if same else 'DIFF'} {os.path.basename(run)}: {scored:.4f} (run's own: {expected:.4f})"
            + ("" if same else where_evaluated(summary, here))
        )
    took = time.time() - started
    print(f"{len(runs) - mismatches} of {len(runs)} score exactly their final evaluation ({took:.0f} s)")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
