#!/usr/bin/env bash
# Sweep algorithms x envs x seeds x hyperparameter grids, locally or as one Slurm array job, then
# plot and tabulate; with --tune, an Optuna study instead. `bash benchmark.sh --help` lists the
# options; every published result (docs/results.md) is made this way. Runs are named from their
# configuration, so running the same command again skips what finished and resumes what was
# interrupted. The sweep lives in actor_critic/sweep.py (tuning: actor_critic/tune.py), the plots
# and the table in plot.py.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# This checkout's package, whether or not it is installed (pip install -r requirements.txt does).
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m actor_critic.sweep "$@"
