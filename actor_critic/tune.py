"""Hyperparameter tuning behind `bash benchmark.sh --tune`: an Optuna study whose trials are runs.

    bash benchmark.sh --tune --algos ppo --envs HalfCheetah-v4 --steps 1000000 --trials 30

A study lives in one folder, <runs-dir>/<study>/: Optuna's journal file (study.journal, the whole
study in one file that several processes append to), tune.json (what the study searches), the
trials' run directories (trials/), the validation runs (validation/) and the report (report/).
Each trial is an ordinary run made by the sweep's own code (sweep.run_one): a run directory with
checkpoints, TensorBoard, progress.json and benchmark.json, named <env>__<algo>__trial-<n>__<seed>.

Workers (threads here, the tasks of one Slurm array there) share the study through its journal:
under the study's lock a worker takes the next trial, first one whose worker died (its trial lock
is free: it resumes the trial's runs from their checkpoints, so nothing is lost or counted twice),
else a new one while fewer than --trials exist. While a run trains, its worker reads the run's
evaluations and reports them to Optuna's pruner; a pruned run gets SIGTERM, writes its checkpoint
and stays resumable. Once every trial has ended, the workers run the validation: the best setting
and the starting one (--set) on seeds the study never saw, as an ordinary sweep would.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, fields

from actor_critic import cli, run_directory, sweep
from actor_critic.algorithms import ALGORITHMS, REPO_ROOT
from actor_critic.cli import fail
from actor_critic.run_directory import EVENTS_PREFIX, SUMMARY, SWEEP_LOG, FileLock, check_name, is_locked
from actor_critic.sweep import PlannedRun

REPO = REPO_ROOT

CONFIG = "tune.json"
JOURNAL = "study.journal"
STUDY_LOCK = "tune.lock"
EVAL_TAG = "eval/episodic_return"

# For a study over several envs each run's objective is normalized before the envs are averaged:
# 0 is a uniformly random policy (10 seeded episodes, measured with Gymnasium 1.4 / MuJoCo 4), 1 the
# best published return at 1M steps in shared/REFERENCES.md (MR.Q, SimbaV2, Tianshou), as CleanRL's
# tuner normalizes Atari by random and human scores. --reference ENV=LOW:HIGH sets others.
REFERENCE_SCORES = {
    "HalfCheetah-v4": (-272.2, 12940.0),
    "Walker2d-v4": (6.5, 6938.0),
    "Humanoid-v4": (108.3, 10546.0),
    "InvertedDoublePendulum-v4": (58.2, 9360.0),
    "HalfCheetah-v5": (-272.2, 12940.0),
    "Walker2d-v5": (3.6, 6938.0),
    "Humanoid-v5": (100.6, 10546.0),
    "InvertedDoublePendulum-v5": (48.2, 9360.0),
}


# ---------------------------------------------------------------------------------------------
# The search space: 'learning-rate=log:1e-5:1e-3 gamma=0.98:0.999 activation=tanh,elu'
# ---------------------------------------------------------------------------------------------


@dataclass
class Param:
    key: str  # the flag, as a grid spells it: learning-rate
    spec: str  # as the user wrote it: log:1e-5:1e-3
    kind: str  # "float", "int" or "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[str, ...] = ()

    def distribution(self):
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def values_to_check(self) -> list[str]:
        """The values whose flags the script must accept: each choice, both ends of a range."""
        if self.kind == "choice":
            return list(self.choices)
        ends = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return [repr(end) for end in ends]

    def contains(self, value: str) -> bool:
        if self.kind == "choice":
            return value in self.choices
        try:
            number = float(value)
        except ValueError:
            return False
        return self.low <= number <= self.high and (self.kind == "float" or number == int(number))


SPACE_FORMS = "LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH, log-int:LOW:HIGH or VALUE,VALUE,..."


def parse_param(key: str, spec: str) -> Param:
    """One entry of a space; a malformed one is one line."""
    prefix, _, rest = spec.partition(":")
    kind, log, bounds = "float", False, spec
    if prefix in ("log", "int", "log-int"):
        kind, log, bounds = ("float" if prefix == "log" else "int"), prefix.startswith("log"), rest
    if ":" not in bounds:
        if kind != "float" or not all(spec.split(",")):
            fail(f"--space: {key}={spec} is not one of {SPACE_FORMS}")
        return Param(key, spec, "choice", choices=tuple(spec.split(",")))
    low_text, _, high_text = bounds.partition(":")
    try:
        number = int if kind == "int" else float
        low, high = number(low_text), number(high_text)
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        fail(f"--space: {key}={spec}: the bounds must be {what} ({SPACE_FORMS})")
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        fail(f"--space: {key}={spec}: LOW must be below HIGH")
    if log and low <= 0:
        fail(f"--space: {key}={spec}: a log range must be above 0")
    return Param(key, spec, kind, float(low), float(high), log)


def parse_space(text: str) -> dict[str, str]:
    """'a=log:1e-5:1e-3 b=1,2' -> {'a': 'log:1e-5:1e-3', 'b': '1,2'} (checked further by make_space)."""
    space: dict[str, str] = {}
    for item in text.split():
        key, equals, spec = item.partition("=")
        key = key.lstrip("-").replace("_", "-")
        if not equals or not key or not spec:
            fail(f"--space: '{item}' is not NAME=RANGE (e.g. learning-rate=log:1e-5:1e-3; {SPACE_FORMS})")
        if key in space:
            fail(f"--space: '{key}' is given twice")
        space[key] = spec
    return space


def study_space(algo: str, space_text: str, fixed: dict[str, str], default_space: bool) -> dict[str, str]:
    """The algorithm's default space (less the flags --set fixes), with --space laid over it."""
    module = ALGORITHMS[algo].module()
    default = {key: spec for key, spec in module.TUNING_SPACE.items() if key not in fixed}
    return {**(default if default_space else {}), **parse_space(space_text)}


def make_space(algo: str, space: dict[str, str], base_flags: dict[str, str]) -> dict[str, Param]:
    """Each entry checked as the sweep checks a grid: a flag of the script, of the right type, and
    each choice and both ends of each range accepted by the script's own checks."""
    module = ALGORITHMS[algo].module()
    params = {key: parse_param(key, spec) for key, spec in space.items()}
    types = {
        field.name.replace("_", "-"): str(field.type).removesuffix(" | None") for field in fields(module.Args)
    }
    for param in params.values():
        kind = types.get(param.key)
        if param.kind == "float" and kind == "int":
            fail(f"--space: {param.key} takes integers: int:LOW:HIGH or log-int:LOW:HIGH")
        if param.kind == "int" and kind not in (None, "int"):
            fail(f"--space: {param.key} takes {kind}, not integers: LOW:HIGH or log:LOW:HIGH")
        if param.kind != "choice" and kind not in (None, "int", "float"):
            fail(f"--space: {param.key} is not a number: give its values, e.g. {param.key}=a,b")
        for value in param.values_to_check():
            settings = {**base_flags, param.key: value}
            flags = assignment_flags(module, algo, settings)
            try:
                module.check_args(cli.command_line(module.Args, ["--env-id", "Pendulum-v1", *flags]))
            except SystemExit as error:
                fail(f"--space: {param.key}={value}: {str(error).removeprefix('error: ')}")
    return params


def set_values(text: str) -> dict[str, str]:
    """--set's flags and their one value each: 'gamma=0.99 num-envs=4' -> {'gamma': '0.99', ...}."""
    return {key: values[0] for key, values in sweep.parse_assignments(text, "--set")}


def assignment_flags(module, algo: str, settings: dict[str, str]) -> list[str]:
    return [flag for key, value in settings.items() for flag in sweep.flag_for(module, algo, key, value)]


def spelled(value) -> str:
    """A sampled value as a grid spells it: exact for floats (repr), x-joined tuples, true/false."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "x".join(str(item) for item in value)
    return repr(value) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# The study's configuration: tune.json, and the same flags again continue the same study
# ---------------------------------------------------------------------------------------------

# What defines a study: the same command with other values of these is another study.
IDENTITY = ("algo", "envs", "seeds", "set", "label", "space", "objective_evals", "references")


def study_config(options: argparse.Namespace) -> dict:
    algos = options.algos.split()
    if len(algos) != 1 or algos[0] not in ALGORITHMS:
        fail(f"--tune tunes one algorithm at a time: give --algos {' or '.join(ALGORITHMS)}")
    if options.grid:
        fail("--tune searches --space, not a --grid: give the values to search with --space")
    algo = algos[0]
    # The sweep's own planning checks envs, seeds, steps, --set and --label as it does for a sweep.
    planned = sweep.plan(argparse.Namespace(**{**vars(options), "algos": algo, "runs_dir": "/nonexistent"}))
    envs = list(dict.fromkeys((run.env_id, run.steps) for run in planned))
    seeds = list(dict.fromkeys(run.seed for run in planned))
    fixed = set_values(options.set)
    space = study_space(algo, options.space, fixed, not options.no_default_space)
    if not space:
        fail("nothing to search: the space is empty (--set fixes every flag of the default space?)")
    make_space(algo, space, fixed)
    module = ALGORITHMS[algo].module()
    settings = cli.command_line(module.Args, ["--env-id", "Pendulum-v1", *planned[0].flags])
    if settings.eval_episodes <= 0:
        fail("--tune scores trials by their evaluations: --eval-episodes must be above 0")
    if options.objective_evals < 1:
        fail("--objective-evals must be at least 1")
    references = {env_id: list(REFERENCE_SCORES[env_id]) for env_id, _ in envs if env_id in REFERENCE_SCORES}
    references.update(parse_references(options.reference))
    if len(envs) > 1:
        missing = [env_id for env_id, _ in envs if env_id not in references]
        if missing:
            fail(f"no reference score to normalize {missing[0]} by: tune it alone or give --reference "
                 f"'{missing[0]}=LOW:HIGH' (a random policy's return and a good one)")  # fmt: skip
    references = {env_id: references[env_id] for env_id, _ in envs if env_id in references}
    if options.no_validate:
        validate_seeds = []
    elif options.validate_seeds is not None:
        if not options.validate_seeds.split():
            fail("--validate-seeds is empty: give seeds, or --no-validate for no validation")
        try:
            validate_seeds = [int(seed) for seed in options.validate_seeds.split()]
        except ValueError:
            fail(f"--validate-seeds must be integers, got '{options.validate_seeds}'")
        if set(validate_seeds) & set(seeds):
            fail(f"--validate-seeds must be seeds the study never saw (it trains on {seeds})")
    else:
        validate_seeds = [max(seeds) + i for i in (1, 2, 3)]
    if options.trials < 1:
        fail("--trials must be at least 1")
    if options.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it; the project does not)
        except ImportError:
            fail("--sampler cmaes needs the cmaes package: pip install cmaes")
    return {
        "algo": algo,
        "envs": envs,
        "seeds": seeds,
        "set": options.set,
        "label": options.label,
        "space": space,
        "objective_evals": options.objective_evals,
        "references": references,
        "trials": options.trials,
        "sampler": options.sampler,
        "pruner": options.pruner,
        "validate_seeds": validate_seeds,
    }


def parse_references(text: str) -> dict[str, list[float]]:
    references = {}
    for item in text.split():
        env_id, _, bounds = item.partition("=")
        try:
            low, high = (float(number) for number in bounds.split(":"))
        except ValueError:
            fail(f"--reference: '{item}' is not ENV=LOW:HIGH (e.g. Walker2d-v4=0:5000)")
        if not low < high:
            fail(f"--reference: {item}: LOW must be below HIGH")
        references[env_id] = [low, high]
    return references


def default_study_name(config: dict) -> str:
    envs = "+".join(env_id for env_id, _ in config["envs"])
    return f"{envs}__{config['algo']}__{config['label'] or 'default'}__tune"


def check_config(study_dir: str, config: dict) -> None:
    """A study's later commands must define the same study (they may change --trials, --workers,
    the sampler, the pruner and the validation seeds)."""
    path = os.path.join(study_dir, CONFIG)
    if not os.path.exists(path):
        return
    try:
        saved = read_config(study_dir)
    except (OSError, ValueError) as error:
        fail(f"{path} cannot be read ({cli.first_line(error)}); move the study or fix it")
    differ = [key for key in IDENTITY if json.dumps(saved.get(key)) != json.dumps(config[key])]
    if differ:
        fail(
            f"{study_dir} holds another study (its {', '.join(differ)} differ): give the same "
            "flags to continue it, or --study NAME for a new one"
        )


def read_config(study_dir: str) -> dict:
    with open(os.path.join(study_dir, CONFIG)) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# The study in Optuna: journal storage, sampler, pruner
# ---------------------------------------------------------------------------------------------


def load_study(study_dir: str, config: dict, create: bool = True):
    """The study in its journal; `create` False (status, report) refuses a missing one in one line
    instead of beginning an empty one."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tuner prints its own lines
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    journal = os.path.join(study_dir, JOURNAL)
    if not create and not os.path.exists(journal):
        fail(f"{study_dir} holds no study yet: its {JOURNAL} is missing")
    storage = optuna.storages.JournalStorage(JournalFileBackend(journal))
    samplers = {
        # constant_liar: parallel workers do not all sample next to the same running trial.
        "tpe": lambda: optuna.samplers.TPESampler(n_startup_trials=8, multivariate=True, constant_liar=True),
        "random": optuna.samplers.RandomSampler,
        "cmaes": lambda: optuna.samplers.CmaEsSampler(n_startup_trials=8, warn_independent_sampling=False),
    }
    total = sum(steps for _, steps in config["envs"]) * len(config["seeds"])
    pruners = {
        # Not before 5 trials have ended, nor on a trial's first quarter: early returns are noise.
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=total // 4),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=max(total // 8, 1)),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=max(total // 8, 1), max_resource=total
        ),
        "none": optuna.pruners.NopPruner,
    }
    name = config.get("study_name") or os.path.basename(study_dir)
    if not create:
        try:
            return optuna.load_study(
                study_name=name,
                storage=storage,
                sampler=samplers[config["sampler"]](),
                pruner=pruners[config["pruner"]](),
            )
        except KeyError:
            fail(f"{study_dir} holds no study '{name}' (its {JOURNAL} is missing or another study's)")
    with FileLock(os.path.join(study_dir, STUDY_LOCK), wait=True):  # two workers may create it at once
        return optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=samplers[config["sampler"]](),
            pruner=pruners[config["pruner"]](),
            load_if_exists=True,
        )


def distributions(config: dict) -> dict:
    return {key: parse_param(key, spec).distribution() for key, spec in config["space"].items()}


def starting_values(config: dict) -> dict:
    """The starting setting's value of each searched flag (--set's, else the script's default),
    where it lies in the space: the study's first trial, so the report shows where it began."""
    module = ALGORITHMS[config["algo"]].module()
    fixed = set_values(config["set"])
    defaults = {field.name.replace("_", "-"): field.default for field in fields(module.Args)}
    values = {}
    for key, spec in config["space"].items():
        param = parse_param(key, spec)
        value = fixed.get(key, spelled(defaults.get(key)))
        if param.contains(value):
            values[key] = value if param.kind == "choice" else (int if param.kind == "int" else float)(value)
    return values


# ---------------------------------------------------------------------------------------------
# A trial: its runs, its intermediate values for the pruner, its objective
# ---------------------------------------------------------------------------------------------


def trial_settings(config: dict, params: dict) -> str:
    """--set for a trial's runs: the starting flags with the trial's values laid over them."""
    fixed = set_values(config["set"])
    merged = {**fixed, **{key: spelled(value) for key, value in params.items()}}
    return " ".join(f"{key}={value}" for key, value in merged.items())


def plan_runs(config: dict, runs_dir: str, label: str, settings: str, seeds: list[int]) -> list[PlannedRun]:
    """The runs of one setting, planned (and checked) exactly as `benchmark.sh` plans them."""
    options = argparse.Namespace(
        algos=config["algo"],
        envs=" ".join(f"{env_id}@{steps}" for env_id, steps in config["envs"]),
        seeds=" ".join(str(seed) for seed in seeds),
        steps="1",
        grid="",
        set=settings,
        label=label,
        runs_dir=runs_dir,
    )
    return sweep.plan(options)


def trial_runs(study_dir: str, config: dict, number: int, params: dict) -> list[PlannedRun]:
    return plan_runs(
        config,
        os.path.join(study_dir, "trials"),
        f"trial-{number}",
        trial_settings(config, params),
        config["seeds"],
    )


def normalized(config: dict, env_id: str, value: float) -> float:
    if len(config["envs"]) == 1:
        return value  # one env: its own return, in its own units
    low, high = config["references"][env_id]
    return (value - low) / (high - low)


def read_evaluations(run_dir: str) -> list[tuple[int, float]]:
    import plot

    steps, values = plot.read_curve(run_dir, EVAL_TAG) if os.path.isdir(run_dir) else ([], [])
    return [(int(step), float(value)) for step, value in zip(steps, values, strict=True)]


def run_objective(config: dict, run: PlannedRun) -> float | None:
    """The mean of a finished run's last --objective-evals evaluations (its final one included),
    normalized where the study has several envs: one evaluation alone is noisy."""
    evaluations = read_evaluations(run.run_dir)
    if not evaluations:
        return None
    last = [value for _, value in evaluations[-config["objective_evals"] :]]
    return normalized(config, run.env_id, sum(last) / len(last))


def eval_every(config: dict, run: PlannedRun) -> int:
    module = ALGORITHMS[config["algo"]].module()
    return cli.command_line(module.Args, run.start_flags()).eval_every


class Watcher:
    """Called by the sweep every few seconds while a trial's run trains: each new evaluation is
    reported to Optuna (the mean of the runs that ended and this run's latest), and a trial the
    pruner rejects has its run stopped with SIGTERM, which makes it write its checkpoint: a pruned
    trial stays resumable. So does a worker being stopped, which this passes on too.

    The pruner compares trials at equal steps, so an evaluation is reported at the multiple of
    --eval-every it passed (the final one at the run's length), not at the rollout end where it
    fell: trials whose rollouts differ in size still report at the same steps."""

    def __init__(
        self, trial, config: dict, run: PlannedRun, offset: int, finished: list[float], reported, stopping
    ):
        self.trial, self.config, self.run, self.offset = trial, config, run, offset
        self.finished = list(finished)  # the objectives of the trial's runs that ended before this
        self.reported = set(reported)  # steps reported before (by a worker that was stopped)
        self.every = eval_every(config, run)
        self.stopping = stopping
        self.seen: tuple = ()
        self.pruned = False

    def step_of(self, step: int) -> int:
        if step >= self.run.steps or self.every <= 0:
            return self.offset + self.run.steps
        return self.offset + step // self.every * self.every

    def __call__(self, process: subprocess.Popen | None) -> None:
        """With process None (the run has ended): report its last evaluations, prune nothing."""
        if process is not None and self.stopping.is_set():
            process.send_signal(signal.SIGTERM)  # a stop that came as the run was starting
        if self.pruned or not self.changed():
            return
        new = False
        for step, value in read_evaluations(self.run.run_dir):
            at = self.step_of(step)
            if at in self.reported:
                continue
            current = normalized(self.config, self.run.env_id, value)
            self.trial.report((sum(self.finished) + current) / (len(self.finished) + 1), at)
            self.reported.add(at)
            new = True
        if process is not None and new and self.trial.should_prune():
            self.pruned = True
            process.send_signal(signal.SIGTERM)

    def changed(self) -> bool:
        """Whether the run's TensorBoard files grew since the last look (reading them costs more)."""
        try:
            seen = tuple(
                (entry.name, entry.stat().st_size)
                for entry in os.scandir(self.run.run_dir)
                if entry.name.startswith(EVENTS_PREFIX)
            )
        except OSError:
            return False
        changed, self.seen = seen != self.seen, seen
        return changed


def log_tail(run: PlannedRun) -> str:
    try:
        with open(os.path.join(run.run_dir, SWEEP_LOG)) as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        return lines[-1] if lines else ""
    except OSError:
        return ""


def end_trial(study, trial, state, reason: str) -> str:
    """A trial that cannot score: told as failed (or refused), with its reason in the study."""
    trial.set_user_attr("error", reason)
    study.tell(trial.number, state=state)
    return reason


def run_trial(
    study, study_dir: str, config: dict, frozen, threads: int, stopping: threading.Event, lock_fd: int
):
    """Run (or resume) each of the trial's runs, report and prune, and tell Optuna how it ended.
    A trial whose worker is stopped (Ctrl-C, SIGTERM, a Slurm time limit) is left running in the
    study: the next worker adopts it and resumes its runs."""
    import optuna
    from optuna.trial import TrialState

    number, params = frozen.number, frozen.params
    trial = optuna.trial.Trial(study, frozen._trial_id)
    try:
        runs = trial_runs(study_dir, config, number, params)
    except SystemExit as error:  # values of the right type that the script refuses together
        reason = str(error).removeprefix("error: ")
        return f"trial {number}: refused ({end_trial(study, trial, TrialState.FAIL, reason)})"
    objectives: list[float] = []
    offset = 0
    for run in runs:
        if stopping.is_set():
            return f"trial {number}: stopped, resumes next time"
        watcher = Watcher(trial, config, run, offset, objectives, frozen.intermediate_values, stopping)
        code, outcome = sweep.run_one(run, threads, watch=watcher, pass_fds=(lock_fd,))
        if watcher.pruned and run.status() != "finished":  # (one that ended meanwhile scores)
            study.tell(number, state=TrialState.PRUNED)
            step = max(watcher.reported)
            return f"trial {number}: pruned at {step:,} steps ({frozen_value(study, number)})"
        if stopping.is_set() and code != 0:
            return f"trial {number}: stopped, resumes next time"
        watcher(None)  # the evaluations logged since the last look, up to the final one
        objective = run_objective(config, run) if code == 0 else None
        if objective is None or not math.isfinite(objective):
            why = f": {log_tail(run)}" if code != 0 else f", its objective is {objective}"
            reason = f"{run.name}: {outcome}{why}"
            return f"trial {number}: failed ({end_trial(study, trial, TrialState.FAIL, reason)})"
        objectives.append(objective)
        offset += run.steps
    value = sum(objectives) / len(objectives)
    study.tell(number, value)
    return f"trial {number}: {value:.1f}"


def frozen_value(study, number: int) -> str:
    trial = study.get_trials(deepcopy=False)[number]
    return f"last value {trial.value:.1f}" if trial.value is not None else "no value"


# ---------------------------------------------------------------------------------------------
# Workers: take trials under the study's lock, then validate
# ---------------------------------------------------------------------------------------------


def trial_lock_path(study_dir: str, number: int) -> str:
    return os.path.join(study_dir, "trials", f"trial-{number}.lock")


def next_trial(study, study_dir: str, config: dict):
    """Under the study's lock: an orphan (a running trial whose worker is gone), else a new trial
    while the study has fewer than --trials. Returns (frozen trial, its held lock, whether it is
    an orphan) or None."""
    from optuna.trial import TrialState

    os.makedirs(os.path.join(study_dir, "trials"), exist_ok=True)
    study_lock = FileLock(os.path.join(study_dir, STUDY_LOCK), wait=True)
    try:
        while True:
            trials = study.get_trials(deepcopy=False)
            for frozen in trials:
                if frozen.state == TrialState.RUNNING:
                    lock = FileLock(trial_lock_path(study_dir, frozen.number), wait=False)
                    if lock.held:
                        return frozen, lock, True
            if sum(trial.state != TrialState.WAITING for trial in trials) >= config["trials"]:
                return None
            if not trials:  # a new study begins where the user began
                study.enqueue_trial(starting_values(config), user_attrs={"start": True})
            trial = study.ask(distributions(config))
            lock = FileLock(trial_lock_path(study_dir, trial.number), wait=False)
            if lock.held:
                return study.get_trials(deepcopy=False)[trial.number], lock, False
            # A process from before holds this number's lock (a study begun again in its folder).
            end_trial(study, trial, TrialState.FAIL, f"{trial_lock_path(study_dir, trial.number)} is held")
    finally:
        study_lock.release()


def validation_runs(study, study_dir: str, config: dict) -> list[PlannedRun]:
    """The best setting and the starting one, at the study's steps, on seeds it never saw."""
    if not config["validate_seeds"] or best_trial(study) is None:
        return []
    runs_dir = os.path.join(study_dir, "validation")
    best = best_trial(study)
    seeds = config["validate_seeds"]
    start = plan_runs(config, runs_dir, config["label"], config["set"], seeds)
    tuned = plan_runs(config, runs_dir, tuned_label(config, best), trial_settings(config, best.params), seeds)
    return start + tuned


def tuned_label(config: dict, best) -> str:
    """<label>-tuned-<trial>: the trial names the setting, so a study extended until another trial
    leads validates that one beside the first, instead of clashing with its runs."""
    return f"{config['label'] + '-' if config['label'] else ''}tuned-{best.number}"


def best_trial(study):
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda trial: trial.value) if complete else None


def work(study, study_dir: str, config: dict, threads: int, stopping: threading.Event, name: str) -> bool:
    """One worker: trials until the study has its --trials, then (once all have ended) the
    validation runs that no other worker holds. False if something failed."""
    from optuna.trial import TrialState

    succeeded = True
    while not stopping.is_set():
        taken = next_trial(study, study_dir, config)
        if taken is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            # Another worker's trial still runs (the validation needs its end), or its worker has
            # just stopped (the next look adopts it).
            stopping.wait(5)
            continue
        frozen, lock, orphan = taken
        started = time.time()
        verb = "resumes (its worker had stopped)" if orphan else "starts"
        print(f"[{name}] trial {frozen.number} {verb}: {params_text(frozen.params)}", flush=True)
        try:
            outcome = run_trial(study, study_dir, config, frozen, threads, stopping, lock.fileno())
        finally:
            lock.release()
        print(f"[{name}] {outcome} in {(time.time() - started) / 60:.1f} min", flush=True)
    if stopping.is_set():
        return False
    for run in validation_runs(study, study_dir, config):
        if stopping.is_set():
            return False
        code, outcome = sweep.run_one(run, threads)
        if outcome != sweep.SKIPPED and not outcome.startswith("not run"):
            print(f"[{name}] validation {run.name}: {outcome}", flush=True)
        succeeded &= code == 0 or outcome.startswith("not run: another sweep")
    return succeeded


def params_text(params: dict) -> str:
    """For people: floats to 4 significant digits (the report's command line keeps them exact)."""
    return " ".join(f"{key}={short(value)}" for key, value in params.items())


def short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else spelled(value)


def run_workers(study_dir: str, config: dict, workers: int, threads: int) -> bool:
    """Local workers, each a thread that starts one training process at a time."""
    # The runs checkpoint on SIGTERM; their trials stay running in the study and resume.
    stopping = sweep.stop_runs_on((signal.SIGTERM, signal.SIGINT))
    study = load_study(study_dir, config)
    print(
        f"study {study_dir}: {config['trials']} trials, {workers} workers; "
        f"each run logs to <run dir>/{SWEEP_LOG}",
        flush=True,
    )
    results: list[bool] = []
    threads_ = [
        threading.Thread(target=guarded_work, args=(results, study, study_dir, config, threads, stopping, i))
        for i in range(workers)
    ]
    for thread in threads_:
        thread.start()
    for thread in threads_:
        thread.join()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops the report again
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if stopping.is_set():
        print("stopped: run the same command again to resume the study")
    return len(results) == workers and all(results) and not stopping.is_set()


def guarded_work(results: list[bool], study, study_dir, config, threads, stopping, index: int) -> None:
    """A worker thread: what stops it early (an error it cannot step over) is one line, and the
    tuner's exit status says so; the trial it held stays running in the study and resumes."""
    name = f"worker {index}"
    try:
        results.append(work(study, study_dir, config, threads, stopping, name))
    except SystemExit as error:
        print(f"[{name}] stopped: {error}", flush=True)
        results.append(False)
    except Exception as error:
        print(f"[{name}] stopped by {type(error).__name__}: {cli.first_line(error)}", flush=True)
        results.append(False)


def run_task(study_dir: str, threads: int) -> int:
    """A Slurm array task: one worker of the study."""
    config = read_config(study_dir)
    # Slurm's warning before a time limit (--signal=B:TERM@...) reaches this process alone: pass
    # it on, so the runs write their checkpoints before the kill.
    stopping = sweep.stop_runs_on((signal.SIGTERM,))
    study = load_study(study_dir, config)
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "?")
    succeeded = work(study, study_dir, config, threads, stopping, f"task {task}")
    write_report(study_dir, config, quiet=True)
    return 0 if succeeded else 1


def submit_to_slurm(study_dir: str, options: argparse.Namespace) -> bool:
    if shutil.which("sbatch") is None:
        fail("--slurm needs sbatch on the PATH")
    slurm_dir = os.path.join(study_dir, "slurm")
    os.makedirs(slurm_dir, exist_ok=True)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    script_path = sweep.write_array_script(
        options,
        options.workers,
        os.path.join(slurm_dir, f"tune-{stamp}.sbatch"),
        "# each task is one worker of the study: trials until it has its --trials, then validation",
        f"--tune --tune-task {shlex.quote(study_dir)} --threads {options.cpus_per_task}",
    )
    print(
        f"submitting {options.workers} workers as one array job; task logs: {slurm_dir}/<job>_<task>.out",
        flush=True,
    )
    return subprocess.run(["sbatch", *options.sbatch_args_list, script_path]).returncode == 0


# ---------------------------------------------------------------------------------------------
# Status and report
# ---------------------------------------------------------------------------------------------


def trial_rows(study, study_dir: str) -> list[dict]:
    from optuna.trial import TrialState

    rows = []
    for trial in study.get_trials(deepcopy=False):
        state = trial.state.name.lower()
        if trial.state == TrialState.RUNNING:
            state = "running" if is_locked(trial_lock_path(study_dir, trial.number)) else "interrupted"
        steps = max(trial.intermediate_values, default=0)
        rows.append(
            {
                "number": trial.number,
                "state": state,
                "value": trial.value,
                "steps": steps,
                "params": trial.params,
                "start": bool(trial.user_attrs.get("start")),
                "error": trial.user_attrs.get("error"),
            }
        )
    return rows


def print_status(study_dir: str, config: dict) -> None:
    study = load_study(study_dir, config, create=False)
    rows = trial_rows(study, study_dir)
    for row in rows:
        value = f"{row['value']:.1f}" if row["value"] is not None else "-"
        note = " (the starting setting)" if row["start"] else ""
        note += f": {row['error']}" if row["error"] else ""
        print(f"trial {row['number']:<4} {row['state']:<11} {value:>10}  at {row['steps']:,}  "
              f"{params_text(row['params'])}{note}")  # fmt: skip
    counts = collections.Counter(row["state"] for row in rows)
    summary = ", ".join(f"{count} {state}" for state, count in counts.items())
    print(f"{len(rows)} of {config['trials']} trials" + (f": {summary}" if rows else ""))
    best = best_trial(study)
    if best is not None:
        print(f"best so far: trial {best.number}, {best.value:.1f}: {params_text(best.params)}")
    runs = validation_runs(study, study_dir, config)
    if runs:
        print("validation:")
        sweep.print_status(runs)


def command_for(config: dict, settings: str, label: str, seeds: list[int]) -> str:
    envs = " ".join(
        env_id if steps == config["envs"][0][1] else f"{env_id}@{steps}" for env_id, steps in config["envs"]
    )
    return (
        f"bash benchmark.sh --algos {config['algo']} --envs {shlex.quote(envs)} "
        f"--steps {config['envs'][0][1]} --seeds {shlex.quote(' '.join(map(str, seeds)))} "
        f"--label {label} --set {shlex.quote(settings)}"
    )


def final_evaluations(runs: list[PlannedRun]) -> list[float]:
    """Each finished run's final evaluation (summary.json)."""
    finals = []
    for run in runs:
        try:
            with open(os.path.join(run.run_dir, SUMMARY)) as f:
                finals.append(float(json.load(f)["final_eval_mean"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return finals


def mean_std(values: list[float]) -> str:
    import numpy as np

    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else "-"


def write_report(study_dir: str, config: dict, quiet: bool = False) -> str:
    """report/tuning.md, history.png and importances.png; the validation's curves in validation/report.
    Under the study's lock: the workers of a Slurm array each write it as they end."""
    study = load_study(study_dir, config, create=False)
    with FileLock(os.path.join(study_dir, STUDY_LOCK), wait=True):
        return write_report_locked(study, study_dir, config, quiet)


def save_figure(path: str) -> None:
    """Optuna's matplotlib plot just drawn, at a readable size."""
    import matplotlib.pyplot as plt

    plt.gcf().set_size_inches(8, 5)
    plt.tight_layout()
    plt.savefig(path, dpi=100)
    plt.close("all")


def write_report_locked(study, study_dir: str, config: dict, quiet: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import optuna

    out = os.path.join(study_dir, "report")
    os.makedirs(out, exist_ok=True)
    rows = trial_rows(study, study_dir)
    best = best_trial(study)
    envs = ", ".join(f"{env_id} ({steps:,} steps)" for env_id, steps in config["envs"])
    objective = f"the mean of a run's last {config['objective_evals']} evaluations"
    if len(config["envs"]) > 1:
        objective += ", normalized by (return - random) / (reference - random) and averaged over the envs"
    lines = [
        f"# Tuning {config['algo']} on {envs}",
        "",
        f"Study `{os.path.basename(study_dir)}`: {len(rows)} of {config['trials']} trials, sampler "
        f"{config['sampler']}, pruner {config['pruner']}, seeds {config['seeds']}. Objective: {objective} "
        "(deterministic policy, the run's --eval-episodes seeded episodes each).",
        "",
        f"Starting setting (`--set`): `{config['set'] or '(the defaults)'}`",
        "",
        "Space: " + ", ".join(f"`{key}={spec}`" for key, spec in config["space"].items()),
        "",
    ]
    if best is not None:
        lines += [
            f"## Best: trial {best.number}, {best.value:.1f}",
            "",
            "```bash",
            command_for(
                config,
                trial_settings(config, best.params),
                tuned_label(config, best),
                config["validate_seeds"] or config["seeds"],
            ),
            "```",
            "",
        ]
        complete = [row for row in rows if row["state"] == "complete"]
        if len(complete) > 1 and len(config["space"]) > 1:
            try:
                importances = optuna.importance.get_param_importances(study)
                lines += ["Parameter importances (Optuna's default evaluator, PED-ANOVA):", ""]
                lines += [f"- {key}: {value:.2f}" for key, value in importances.items()] + [""]
                optuna.visualization.matplotlib.plot_param_importances(study)
                save_figure(os.path.join(out, "importances.png"))
                lines += ["![importances](importances.png)", ""]
            except (ValueError, RuntimeError, ImportError) as error:
                lines += [f"(no importances: {cli.first_line(error)})", ""]
        optuna.visualization.matplotlib.plot_optimization_history(study)
        save_figure(os.path.join(out, "history.png"))
        lines += ["![history](history.png)", ""]
    runs = validation_runs(study, study_dir, config)
    if runs:
        lines += [
            f"## Validation on seeds {config['validate_seeds']}",
            "",
            "Final evaluation, mean ± std over seeds (and per seed); the study's objective on these seeds:",
            "",
            "| setting | final eval | per seed | the study's objective | seeds finished |",
            "|---|---|---|---|---|",
        ]
        for label in dict.fromkeys(run.setting for run in runs):
            finished = [run for run in runs if run.setting == label and run.status() == "finished"]
            finals = final_evaluations(finished)
            # The same measure as the study's (its best value is the best of many noisy draws).
            objectives = [run_objective(config, run) for run in finished]
            per_seed = ", ".join(f"{value:.0f}" for value in finals)
            lines.append(
                f"| {label} | {mean_std(finals)} | {per_seed} | "
                f"{mean_std([value for value in objectives if value is not None])} | "
                f"{len(finals)} of {len(config['validate_seeds'])} |"
            )
        lines += [""]
        if any(run.status() == "finished" for run in runs):
            import plot

            try:
                with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
                    plot.main(
                        [
                            os.path.join(study_dir, "validation"),
                            "--out",
                            os.path.join(study_dir, "validation", "report"),
                        ]
                    )
                lines += ["Curves: [validation/report](../validation/report/results.md)", ""]
            except SystemExit:
                pass
    lines += [
        "## Trials",
        "",
        "| trial | state | value | steps | " + " | ".join(config["space"]) + " |",
        "|---|---|---|---|" + "---|" * len(config["space"]),
    ]
    for row in rows:
        value = f"{row['value']:.1f}" if row["value"] is not None else "-"
        cells = [short(row["params"][key]) if key in row["params"] else "-" for key in config["space"]]
        name = f"{row['number']}" + (" (start)" if row["start"] else "")
        lines.append(f"| {name} | {row['state']} | {value} | {row['steps']:,} | " + " | ".join(cells) + " |")
    path = os.path.join(out, "tuning.md")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    if not quiet:
        print(f"report: {path}")
    return path


# ---------------------------------------------------------------------------------------------
# The command line: the sweep's options and the study's
# ---------------------------------------------------------------------------------------------


def parse_options(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    parser = sweep.make_parser()
    parser.prog = "bash benchmark.sh --tune"
    parser.description = (
        "Tune one algorithm with an Optuna study whose trials are runs; the sweep's options work as"
        " for a sweep, --workers and --slurm run trials at once (docs/tuning.md)."
    )
    parser.epilog = (
        "example: bash benchmark.sh --tune --algos ppo --envs HalfCheetah-v4 --steps 1000000 --trials 30"
    )
    parser.set_defaults(algos=env("ALGOS", ""), seeds=env("SEEDS", "1"))
    tuning = parser.add_argument_group("tuning (--tune)")
    add = tuning.add_argument
    add(
        "--trials",
        type=int,
        default=30,
        help="trials in the study; a larger number extends it (default: %(default)s)",
    )
    add(
        "--space",
        default="",
        help="flags to search, e.g. 'learning-rate=log:1e-5:1e-3 gamma=0.98:0.999 update-epochs=int:4:10 "
        "activation=tanh,elu', laid over the algorithm's default space (TUNING_SPACE in its script; a flag "
        "that --set fixes is left out of it)",
    )
    add("--no-default-space", action="store_true", help="search only the --space flags")
    add(
        "--sampler",
        choices=("tpe", "random", "cmaes"),
        default="tpe",
        help="Optuna's sampler (default: %(default)s)",
    )
    add(
        "--pruner",
        choices=("median", "halving", "hyperband", "none"),
        default="median",
        help="Optuna's pruner, on each run's evaluations (default: %(default)s)",
    )
    add(
        "--objective-evals",
        type=int,
        default=3,
        help="a trial's score is the mean of its runs' last N evaluations (default: %(default)s)",
    )
    add(
        "--validate-seeds",
        default=None,
        help="seeds for re-running the best and the starting setting (default: the three after the study's)",
    )
    add("--no-validate", action="store_true", help="no validation runs")
    add(
        "--study", default="", help="the study's folder under --runs-dir (default: from envs, algo and label)"
    )
    add(
        "--reference",
        default="",
        help="'ENV=LOW:HIGH ...': scores that normalize an env of a study over several",
    )
    add("--tune-task", help=argparse.SUPPRESS)  # a Slurm array task's entry point: the study folder
    options = sweep.parse_options(argv, parser)
    if options.study:
        check_name("--study", options.study)  # a folder inside --runs-dir
    # One name besides: the study's Slurm tasks and its report spell it unquoted.
    if options.study and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+=,-]*", options.study):
        fail(f"--study '{options.study}' must be one name of letters, digits and _.+=,- (it names a folder)")
    return options


def main(argv: list[str]) -> int:
    options = parse_options(argv)
    if options.tune_task is not None:
        return run_task(options.tune_task, options.threads)
    config = study_config(options)
    study_name = options.study or default_study_name(config)
    check_name("the study name (from --envs, --algos and --label)", study_name)
    study_dir = os.path.join(options.runs_dir, study_name)
    check_config(study_dir, config)
    exists = os.path.exists(os.path.join(study_dir, CONFIG))
    # The study's name in its journal stays what it was made with, should the folder be renamed.
    saved_name = read_config(study_dir).get("study_name") if exists else None
    config["study_name"] = saved_name or os.path.basename(study_dir)
    if options.dry_run:
        print_plan(study_dir, config, exists, options.threads)
        return 0
    if options.status:
        if not exists:
            print(f"study {study_dir}: not started (0 of {config['trials']} trials)")
        else:  # as the study last ran: its --trials then, whatever this command says
            print_status(study_dir, {**config, "trials": read_config(study_dir)["trials"]})
        return 0
    if options.report:
        if not exists:
            fail(f"no study in {study_dir} yet: run the same command without --report")
        write_report(study_dir, config)
        return 0
    os.makedirs(study_dir, exist_ok=True)
    run_directory.write_json_atomically(config, os.path.join(study_dir, CONFIG), indent=2)
    if options.slurm:
        succeeded = submit_to_slurm(study_dir, options)
        if succeeded and "--wait" in options.sbatch_args_list and not options.no_report:
            write_report(study_dir, config)
        return 0 if succeeded else 1
    succeeded = run_workers(study_dir, config, options.workers, options.threads)
    if not options.no_report:
        write_report(study_dir, config)
    return 0 if succeeded else 1


def print_plan(study_dir: str, config: dict, exists: bool, threads: int) -> None:
    """--dry-run: the study, its space and its first trial's command; nothing is run or written."""
    print(f"study {study_dir} ({'continued' if exists else 'new'}): {config['trials']} trials of "
          f"{len(config['envs']) * len(config['seeds'])} run(s), sampler {config['sampler']}, "
          f"pruner {config['pruner']}")  # fmt: skip
    for key, spec in config["space"].items():
        print(f"  searches {key}={spec}")
    start = starting_values(config)
    runs = plan_runs(
        config, os.path.join(study_dir, "trials"), "trial-0", trial_settings(config, start), config["seeds"]
    )
    print(
        "the first trial (the starting setting"
        + (", less what lies outside the space" if len(start) < len(config["space"]) else "")
        + "):"
    )
    for run in runs:
        print(shlex.join(run.command(threads)))
    seeds = config["validate_seeds"]
    print(f"then the best and the starting setting on seeds {seeds}" if seeds else "no validation")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
