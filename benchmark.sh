#!/usr/bin/env bash
# Sweep algorithms x envs x seeds x hyperparameter grids, locally or as one Slurm array job, then
# plot and tabulate. `bash benchmark.sh --help` lists the options; every published result
# (docs/results.md) is made this way. Runs are named from their configuration, so running the
# same command again skips what finished and resumes what was interrupted. The sweep itself lives
# in benchmarks/sweep.py, the plots and the table in plot.py.
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "${BASH_SOURCE[0]}")/benchmarks/sweep.py" "$@"
