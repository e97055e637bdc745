"""Convergence plots and a results table from run directories (benchmark.sh calls it after a sweep).

    python plot.py runs/                         # every run in runs/ (runs/<run>), into runs/report/
    python plot.py runs/ --out docs/ --tag charts/episodic_return

Runs with the same algorithm, env and setting are the seeds of one curve: the mean over seeds
with a 95% bootstrap confidence band, on the steps where each seed has data (seeds of different
lengths are averaged over the seeds that reach a step). An env's plot shows its default runs
where it has any, every setting where it has none. The table holds each finished run's final
deterministic evaluation, as the training scripts wrote it in summary.json.

Where settings differ in one flag only (e.g. a sweep with --grid "learning-rate=1e-4,1e-3" beside
the defaults), each such family also gets a plot of its own under study/, one curve per value of
that flag, and a table in study.md: a one-factor-at-a-time hyperparameter study.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from collections import defaultdict

import numpy as np

from actor_critic import cli, run_directory
from actor_critic.algorithms import ALGORITHMS
from actor_critic.run_directory import CHECKPOINT, FINAL_MODEL, SUMMARY, SWEEP_CONFIG


def fail(message: str) -> None:
    raise SystemExit(f"error: {message}")


def setting_from_args(algorithm: str, saved_args: dict) -> str:
    """For runs not made by benchmark.sh: the saved hyperparameters that differ from the script's
    defaults (the flags that change how, not what, is trained are no part of a setting)."""
    defaults = script_defaults(algorithm)
    not_a_setting = cli.flags_with_role(training_script(algorithm).Args, "how", "axis")
    changed = [
        f"{name.replace('_', '-')}={spell(value)}"
        for name, value in saved_args.items()
        if name not in not_a_setting
        and name.replace("_", "-") in defaults
        and not same_value(spell(value), defaults[name.replace("_", "-")])
    ]
    return ",".join(changed) or "default"


def setting_from_flags(algorithm: str, flags: list[str]) -> str | None:
    """The setting a sweep's recorded flags (benchmark.json) train, spelled as setting_from_args
    spells it, --set flags included; None where today's script no longer reads them."""
    try:
        args = cli.command_line(training_script(algorithm).Args, flags)
    except SystemExit:
        return None
    return setting_from_args(algorithm, vars(args))


def skip(run_dir: str, reason: str) -> None:
    print(f"warning: skipping {run_dir}: {reason}", file=sys.stderr)


def checked(run: dict, run_dir: str) -> dict | None:
    """The run as describe() read it, if its files hold what a plot needs, of the types it needs:
    a file names the module plot.py imports (the algorithm) and the names of the files it writes
    (the env id), so neither may be anything but ours."""
    summary = run["summary"]
    finished = isinstance(summary, dict) and summary.get("final_eval_mean") is not None
    number = (int, float)
    problems = [
        (run["algo"] not in ALGORITHMS, f"unknown algorithm {str(run['algo'])[:40]!r}"),
        (
            not isinstance(run["env_id"], str) or not re.fullmatch(r"[\w.:-]+", run["env_id"]),
            f"env id {str(run['env_id'])[:40]!r} is not a name",
        ),
        (
            not isinstance(run["seed"], int) or not isinstance(run["setting"], str),
            "a seed or setting of the wrong type",
        ),
        (summary is not None and not isinstance(summary, dict), "summary.json is not an object"),
        (
            finished
            and not (
                isinstance(summary["final_eval_mean"], number)
                and isinstance(summary.get("seed"), int)
                and isinstance(summary.get("global_step"), int)
                and isinstance(summary.get("wall_clock_s", 0), number)
            ),
            "summary.json's final_eval_mean, seed, global_step or wall_clock_s is not a number",
        ),
    ]
    for bad, reason in problems:
        if bad:
            skip(run_dir, reason)
            return None
    return run


def describe(run_dir: str) -> dict | None:
    """algorithm, env, seed and setting of a run, or None for a directory that is not one of ours."""
    summary_path, marker_path = os.path.join(run_dir, SUMMARY), os.path.join(run_dir, SWEEP_CONFIG)
    try:
        summary = json.load(open(summary_path)) if os.path.exists(summary_path) else None
        marker = json.load(open(marker_path)) if os.path.exists(marker_path) else None
    except (OSError, ValueError) as error:
        return skip(run_dir, f"unreadable JSON ({str(error)[:120]})")
    if marker is not None:
        try:
            run = {"algo": marker["algo"], "env_id": marker["env_id"], "seed": marker["seed"],
                   "setting": marker["setting"], "summary": summary}  # fmt: skip
        except (KeyError, TypeError):
            return skip(run_dir, "benchmark.json lacks algo, env_id, seed or setting")
        if checked(run, run_dir) is None:
            return None
        # Only a label's families need what its --set flags were (a parse of the flags per run).
        labelled = LABEL in parse_setting(marker["setting"])
        flags = marker.get("flags", [])
        if labelled and not (isinstance(flags, list) and all(isinstance(flag, str) for flag in flags)):
            return skip(run_dir, "benchmark.json's flags are not a list of strings")
        run["trained"] = setting_from_flags(marker["algo"], flags) if labelled else None
        return run
    # A run started by hand: its policy file knows how it was made.
    candidates = [
        os.path.join(run_dir, FINAL_MODEL),
        *run_directory.snapshots(run_dir)[-1:],
        os.path.join(run_dir, CHECKPOINT),
    ]
    existing = [path for path in candidates if os.path.exists(path)]
    if not existing:
        return None
    import torch

    try:
        checkpoint = torch.load(existing[0], map_location="cpu", weights_only=True)
        args = checkpoint["args"]
        run = {"algo": checkpoint["algorithm"], "env_id": checkpoint["env_id"], "seed": args["seed"],
               "setting": "", "summary": summary}  # fmt: skip
        if checked(run, run_dir) is None:
            return None
        run["setting"] = setting_from_args(checkpoint["algorithm"], args)
        return run
    except Exception as error:  # a foreign or broken file: say so, and go on with the others
        return skip(run_dir, f"{existing[0]} is not readable ({cli.first_line(error)[:160]})")


LABEL = "label"  # a sweep's --label (a name for its --set flags) reads as the value of this flag


def parse_setting(setting: str) -> dict[str, str]:
    """'gamma=0.995,gae-lambda=0.97' -> {'gamma': '0.995', 'gae-lambda': '0.97'}; 'default' -> {};
    'large-batch,gamma=0.99' (a --label first) -> {'label': 'large-batch', 'gamma': '0.99'}."""
    if setting == "default":
        return {}
    return dict(item.split("=", 1) if "=" in item else (LABEL, item) for item in setting.split(","))


def same_value(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)  # 1e-3 and 0.001 are one learning rate
    except ValueError:
        return a.lower() == b.lower()


def one_factor_families(
    settings: list[str], defaults: dict[str, str], label_values: dict[str, dict[str, str]] | None = None
) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Families of settings that differ in one flag only: (flag, what they share, [(value, setting)]).

    A flag a setting leaves out has its default value, so 'default', 'gamma=0.995' and
    'gamma=0.9' are one family (gamma: 0.99, 0.995, 0.9). In a setting with a --label, the label's
    own values (label_values[label], its --set flags) stand in for the defaults: 'large-batch' and
    'large-batch,norm-value=false' are a family (norm-value: the label's true, then false) even
    though false is the script's default. Settings whose names differ in their label alone are a
    family of that label ('default', 'large-batch').
    """
    label_values = label_values or {}

    def value(config: dict[str, str], flag: str) -> str:
        """The flag's value in a setting: as written, else its label's, else the default."""
        if flag in config:
            return config[flag]
        if flag in label_values.get(config.get(LABEL, ""), {}):
            return label_values[config[LABEL]][flag]
        return defaults.get(flag, "default" if flag == LABEL else "?")

    configs = {setting: parse_setting(setting) for setting in settings}
    flags = sorted({flag for config in configs.values() for flag in config})
    families = []
    for flag in flags:
        by_rest: dict[tuple, list[str]] = defaultdict(list)
        for setting, config in configs.items():
            # Labels differ in the values they stand for: across labels, compare the names ("" unset).
            rest = {
                other: value(config, other) if flag != LABEL else config.get(other, "")
                for other in flags
                if other != flag
            }
            # Settings that agree on every other flag (up to the spelling of numbers) share a family.
            key = next(
                (known for known in by_rest if all(same_value(rest[o], v) for o, v in known)),
                tuple(sorted(rest.items())),
            )
            by_rest[key].append(setting)
        for rest, members in by_rest.items():
            values = [value(configs[member], flag) for member in members]
            distinct = [v for i, v in enumerate(values) if not any(same_value(v, w) for w in values[:i])]
            if len(distinct) < 2:
                continue
            # What the members' names share: a label, not the values it stands for.
            written = [{o: configs[m].get(o, "") for o, _ in rest} for m in members]
            shared = ",".join(
                f"{o}={v}"
                for o, v in written[0].items()
                if v and all(same_value(w[o], v) for w in written) and not same_value(v, defaults.get(o, "?"))
            )
            pairs = sorted(zip(values, members, strict=True), key=lambda pair: sort_key(pair[0]))
            families.append((flag, shared or "default", pairs))
    return families


def sort_key(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def spell(value) -> str:
    """A default as a user would type it: 'true', '0.99', and '3e-4' rather than '0.0003'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return "x".join(spell(item) for item in value)  # as a sweep spells it: 512x256x128
    if isinstance(value, float):
        mantissa, exponent = f"{value:e}".split("e")
        scientific = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return min(str(value), scientific, key=len)  # a tie keeps the plain spelling
    return str(value)


def training_script(algorithm: str):
    # The registry's scripts: the only modules a run's files may name.
    if algorithm not in ALGORITHMS:
        fail(f"unknown algorithm {algorithm!r}")
    return ALGORITHMS[algorithm].module()


def script_defaults(algorithm: str) -> dict[str, str]:
    """The training script's defaults, spelled as on the command line ('learning-rate': '3e-4')."""
    module = training_script(algorithm)
    defaults = {name.replace("_", "-"): spell(value) for name, value in vars(module.Args()).items()}
    return {**defaults, LABEL: "default"}  # runs without a sweep's --label


def not_a_resume_purge(record: logging.LogRecord) -> bool:
    """TensorBoard warns when a resumed run's file drops the steps the earlier session wrote after
    its checkpoint; here that is the point (the resume's values win), not news."""
    return not record.getMessage().startswith("Detected out of order event.step")


def read_curves(run_dir: str, tags: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Steps and values of each tag, from one read of the run's TensorBoard files (empty arrays for
    a tag the run has not logged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tensorboard_log = logging.getLogger("tensorboard")
    if not_a_resume_purge not in tensorboard_log.filters:
        tensorboard_log.addFilter(not_a_resume_purge)
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    curves = {}
    for tag in tags:
        if tag not in events.Tags()["scalars"]:
            curves[tag] = np.zeros(0), np.zeros(0)
            continue
        # A resumed run rewrites the steps after its checkpoint: the last value written for a step wins.
        by_step = {event.step: event.value for event in events.Scalars(tag)}
        steps = np.array(sorted(by_step), dtype=np.float64)
        curves[tag] = steps, np.array([by_step[step] for step in sorted(by_step)], dtype=np.float64)
    return curves


def read_curve(run_dir: str, tag: str) -> tuple[np.ndarray, np.ndarray]:
    return read_curves(run_dir, (tag,))[tag]


def aggregate(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 300, resamples: int = 2000):
    """Mean over seeds and a 95% bootstrap band, each seed used only within the steps it covers."""
    curves = [(steps, values) for steps, values in curves if len(steps)]
    if not curves:
        return None
    all_steps = np.unique(np.concatenate([steps for steps, _ in curves]))
    grid = all_steps if len(all_steps) <= points else np.linspace(all_steps[0], all_steps[-1], points)
    table = np.full((len(grid), len(curves)), np.nan)
    for column, (steps, values) in enumerate(curves):
        covered = (grid >= steps[0]) & (grid <= steps[-1])
        table[covered, column] = np.interp(grid[covered], steps, values)
    rng = np.random.default_rng(0)
    mean, low, high = (np.full(len(grid), np.nan) for _ in range(3))
    for row, values in enumerate(table):
        values = values[~np.isnan(values)]
        if len(values) == 0:
            continue
        mean[row] = low[row] = high[row] = values.mean()
        if len(values) > 1:
            means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
            low[row], high[row] = np.percentile(means, [2.5, 97.5])
    return grid, mean, low, high


def draw(ax, curves: list[tuple[str, list[dict]]], title: str, tag: str) -> None:
    """One line per (label, runs): the mean over the runs' seeds and its 95% band."""
    for label, runs in curves:
        result = aggregate([run["curve"] for run in runs])
        if result is None:
            continue
        grid, mean, low, high = result
        line = ax.plot(grid, mean, label=f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")[0]
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (deterministic)" if tag.startswith("eval/") else tag)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def env_curves(groups: dict, env_id: str) -> list[tuple[str, list[dict]]]:
    """The env's curves: its default runs where it has any (the other settings are in study/)."""
    keys = sorted(key for key in groups if key[1] == env_id)
    if any(setting == "default" for _, _, setting in keys):
        keys = [key for key in keys if key[2] == "default"]
    show_setting = len({setting for _, _, setting in keys}) > 1
    return [
        (f"{algo} {setting}" if show_setting else algo, groups[algo, env, setting])
        for algo, env, setting in keys
    ]


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def hours(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def steps_per_second(summaries: list[dict]) -> str:
    rates = [s["global_step"] / s["wall_clock_s"] for s in summaries if s.get("wall_clock_s")]
    return f"{np.mean(rates):.0f}" if rates else "-"


def results_table(groups: dict) -> str:
    lines = [
        "| algorithm | env | setting | steps | seeds | final eval return, mean ± std over seeds | per seed "
        "| wall-clock per run | steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (algo, env_id, setting), runs in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        finished, cells = seed_cells(runs)
        if not finished:
            lines.append(f"| {algo} | {env_id} | {setting} | - | {cells['seeds']} | - | - | - | - |")
            continue
        lines.append(
            f"| {algo} | {env_id} | {setting} | {cells['steps']} | {cells['seeds']} "
            f"| {cells['mean_std']} | {cells['per_seed']} "
            f"| {hours(np.mean([s.get('wall_clock_s', 0) for s in finished]))} "
            f"| {steps_per_second(finished)} |"
        )
    episodes = {
        run["summary"]["final_eval_episodes"] for runs in groups.values() for run in runs if run["summary"]
    }
    lines.append(
        "\nFinal eval: the deterministic policy (the mean action; PPO's observation normalization frozen), "
        f"{'/'.join(map(str, sorted(episodes))) or '-'} seeded episodes per run at the end of training; "
        "the mean of each run, then mean ± std (population) over seeds. Wall-clock (summed over a "
        "resumed run's sessions) and steps/s (steps / wall-clock) include the periodic evaluations."
    )
    return "\n".join(lines) + "\n"


def seed_cells(runs: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """The finished runs' summaries, and the table cells both tables share: seeds (and how many
    are unfinished), the final eval as mean ± std over seeds, per seed, and the steps."""
    finished = [
        run["summary"] for run in runs if run["summary"] and run["summary"].get("final_eval_mean") is not None
    ]
    unfinished = len(runs) - len(finished)
    cells = {"seeds": f"{len(finished)}" + (f" (+{unfinished} unfinished)" if unfinished else "")}
    if finished:
        cells["mean_std"] = mean_std([summary["final_eval_mean"] for summary in finished])
        cells["per_seed"] = ", ".join(f"{s['seed']}: {s['final_eval_mean']:.0f}" for s in finished)
        cells["steps"] = "/".join(f"{s:,}" for s in sorted({summary["global_step"] for summary in finished}))
    return finished, cells


def mark(flag: str, value: str, setting: str, defaults: dict, label_values: dict) -> str:
    """A family member's value, with ' (default)' on the script's default, or ' (<label>)' on its
    label's own value where its label sets the flag."""
    label = parse_setting(setting).get(LABEL, "")
    if flag in label_values.get(label, {}):
        return value + (f" ({label})" if same_value(value, label_values[label][flag]) else "")
    return value + (" (default)" if same_value(value, defaults[flag]) else "")


def study(groups: dict, out: str, tag: str, plt) -> list[str]:
    """A plot and a table row block per one-factor family (settings that differ in one flag)."""
    written, lines = [], []
    for algo, env_id in sorted({(algo, env_id) for algo, env_id, _ in groups}):
        settings = [setting for a, e, setting in groups if (a, e) == (algo, env_id)]
        defaults = script_defaults(algo)
        # A label's values: the flags its runs were trained with, less those their grid set.
        label_values: dict[str, dict[str, str]] = defaultdict(dict)
        for setting in settings:
            config, runs = parse_setting(setting), groups[algo, env_id, setting]
            if LABEL in config and runs[0].get("trained"):
                for key, value in parse_setting(runs[0]["trained"]).items():
                    if key not in config:
                        label_values[config[LABEL]].setdefault(key, value)
        for flag, shared, members in one_factor_families(settings, defaults, label_values):
            labels = [mark(flag, value, setting, defaults, label_values) for value, setting in members]
            curves = [
                (f"{flag}={label}", groups[algo, env_id, setting])
                for label, (_, setting) in zip(labels, members, strict=True)
            ]
            figure, ax = plt.subplots(figsize=(6, 4))
            where = "" if shared == "default" else f", {shared}"
            draw(ax, curves, f"{algo} {env_id}: {flag}{where}", tag)
            figure.tight_layout()
            name = f"{env_id}__{algo}__{flag}" + ("" if shared == "default" else f"__{shared}")
            written.append(os.path.join(out, "study", f"{name}.png"))
            os.makedirs(os.path.dirname(written[-1]), exist_ok=True)
            figure.savefig(written[-1], dpi=100)
            plt.close(figure)
            lines += [
                f"\n### {algo} {env_id}: {flag}" + (f" (all with {shared})" if where else ""),
                f"\n![{name}](study/{name}.png)\n",
                f"| {flag} | seeds | final eval return, mean ± std over seeds | per seed | steps |",
                "|---|---|---|---|---|",
            ]
            for label, (_, setting) in zip(labels, members, strict=True):
                finished, cells = seed_cells(groups[algo, env_id, setting])
                if not finished:
                    lines.append(f"| {label} | {cells['seeds']} | - | - | - |")
                    continue
                row = [label, cells["seeds"], cells["mean_std"], cells["per_seed"], cells["steps"]]
                lines.append("| " + " | ".join(row) + " |")
    if lines:
        written.append(os.path.join(out, "study.md"))
        with open(written[-1], "w") as f:
            f.write("# One-factor families: settings that differ in one flag\n" + "\n".join(lines) + "\n")
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Convergence plots (PNG) and a Markdown results table.")
    parser.add_argument("paths", nargs="+", help="run directories, or folders holding them (one level down)")
    parser.add_argument("--out", default=None, help="where the report goes (default: <first path>/report)")
    parser.add_argument("--tag", default="eval/episodic_return", help="the TensorBoard scalar on the y axis")
    options = parser.parse_args(argv)
    out = options.out or os.path.join(options.paths[0], "report")
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    try:
        # Runs in progress too (TensorBoard files alone): their curves so far, "unfinished" in the table.
        run_dirs = run_directory.find_runs(options.paths)
    except NotADirectoryError as error:
        fail(str(error))
    for run_dir in run_dirs:
        if os.path.abspath(run_dir).startswith(os.path.abspath(out) + os.sep):
            continue
        run = describe(run_dir)
        if run is not None:
            run["curve"] = read_curve(run_dir, options.tag)
            groups[(run["algo"], run["env_id"], run["setting"])].append(run)
    if not groups:
        fail(
            f"no runs (directories with TensorBoard events, {CHECKPOINT}, {FINAL_MODEL} or {SUMMARY}) in "
            f"{', '.join(options.paths)} or one level"
            " below (a folder of runs inside, such as runs/published, is plotted on its own)"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    env_ids = sorted({env_id for _, env_id, _ in groups})
    written = []
    for env_id in env_ids:
        figure, ax = plt.subplots(figsize=(6, 4))
        draw(ax, env_curves(groups, env_id), env_id, options.tag)
        figure.tight_layout()
        written.append(os.path.join(out, f"{env_id}.png"))
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)
    columns = min(2, len(env_ids))
    rows = math.ceil(len(env_ids) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for ax, env_id in zip(axes.flat, env_ids, strict=False):
        draw(ax, env_curves(groups, env_id), env_id, options.tag)
    for ax in list(axes.flat)[len(env_ids) :]:
        ax.set_visible(False)
    figure.tight_layout()
    written.append(os.path.join(out, "all_envs.png"))
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)
    written += study(groups, out, options.tag, plt)
    table = results_table(groups)
    written.append(os.path.join(out, "results.md"))
    with open(written[-1], "w") as f:
        f.write(table)
    print(table)
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
