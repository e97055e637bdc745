"""What sac_continuous.py and ppo_continuous.py share, and the engine behind benchmark.sh.

One module per concern; none holds any algorithm:

- algorithms: the registry of algorithms (script, policy keys), read by every tool;
- cli: flags declared on the Args fields (`how`, `axis`), their checks, tyro, resume's merge;
- environments: env creation with one-line errors, env workers, simulator states saved and restored;
- checkpoints: the file format, atomic save, safe load (never runs code from a file), upgrades;
- run_directory: a run directory's file names, how runs are found and locked;
- training: the run a script trains (logs, signals, saving, evaluation, summary.json);
- sweep, tune: `bash benchmark.sh` and `bash benchmark.sh --tune`.
"""

import warnings

import gymnasium  # noqa: F401  (first: importing it puts its own DeprecationWarning filter in front)

# The -v4 ids are this project's default on purpose; their deprecation notice is noise here.
warnings.filterwarnings("ignore", message=".*is out of date.*")
