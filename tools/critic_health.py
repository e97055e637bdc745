"""Where does a SAC run's critic diverge? Its training logs in windows, and the windows that break away.

    python tools/critic_health.py runs/published/Humanoid-v4__sac__default__1
    python tools/critic_health.py RUN_DIR [RUN_DIR ...] [--window 20000] [--baseline 100000] [--factor 3]

Per run, one line per window of --window env steps, read from its TensorBoard files (a resumed
run's rewritten steps count once, as in plot.py): the critics' loss (losses/qf_loss, the median
and the largest value logged in the window), their Q-values (losses/qf1_values, median), alpha
(losses/alpha, median), the mean training return of the episodes that ended in the window
(charts/episodic_return) and the last evaluation in it (eval/episodic_return).

Then the verdict. A critic diverges in a window whose median loss is over --factor times the
median loss of the --baseline steps before it; it is back once a later window's median is under
1.5 times that baseline again, and the search for the next divergence starts there. A slow climb
of the loss as the returns grow (every SAC run on Humanoid shows one) is not a divergence: each
window is compared with the steps just before it.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import plot
from actor_critic import run_directory

LOSS, Q_VALUES, ALPHA = "losses/qf_loss", "losses/qf1_values", "losses/alpha"
TRAIN_RETURN, EVAL_RETURN = "charts/episodic_return", "eval/episodic_return"
BACK_UNDER = 1.5  # times the baseline: the critic is back


def windows(run_dir: str, window: int) -> tuple[list[dict], int]:
    """The run's logs cut into windows of `window` env steps, [start, start + window), and the
    last step with a logged loss."""
    curves = plot.read_curves(run_dir, (LOSS, Q_VALUES, ALPHA, TRAIN_RETURN, EVAL_RETURN))
    loss_steps = curves[LOSS][0]
    if not len(loss_steps):
        raise SystemExit(f"error: {run_dir} has no {LOSS} in its TensorBoard files (not a SAC run?)")

    def values_in(tag: str, start: int) -> np.ndarray:
        steps, values = curves[tag]
        return values[(steps >= start) & (steps < start + window)]

    rows = []
    for start in range(0, int(loss_steps[-1]) + 1, window):
        loss = values_in(LOSS, start)
        if not len(loss):
            continue
        q_values, alpha = values_in(Q_VALUES, start), values_in(ALPHA, start)
        returns, evals = values_in(TRAIN_RETURN, start), values_in(EVAL_RETURN, start)
        rows.append(
            {
                "start": start,
                "points": len(loss),
                "loss_median": float(np.median(loss)),
                "loss_max": float(loss.max()),
                "q_median": float(np.median(q_values)) if len(q_values) else float("nan"),
                "alpha_median": float(np.median(alpha)) if len(alpha) else float("nan"),
                "train_return": float(returns.mean()) if len(returns) else float("nan"),
                "eval": float(evals[-1]) if len(evals) else float("nan"),
            }
        )
    return rows, int(loss_steps[-1])


def divergences(rows: list[dict], window: int, baseline: int, factor: float) -> list[dict]:
    """Each stretch of windows whose median loss breaks away from the steps before it."""
    # A window with under half the usual number of logged losses (the run's last, say) is too
    # few points to judge: it is shown, not compared.
    full = 0.5 * np.median([row["points"] for row in rows])
    found, i = [], 0
    while i < len(rows):
        if rows[i]["points"] < full:
            i += 1
            continue
        before = [row for row in rows[:i] if rows[i]["start"] - baseline <= row["start"]]
        if len(before) * window < baseline:  # not enough history yet to compare with
            i += 1
            continue
        base = {key: float(np.nanmedian([row[key] for row in before])) for key in rows[i] if key != "start"}
        if rows[i]["loss_median"] <= factor * base["loss_median"]:
            i += 1
            continue
        end = i
        while end < len(rows) and rows[end]["loss_median"] >= BACK_UNDER * base["loss_median"]:
            end += 1
        stretch = rows[i:end]
        found.append(
            {
                "start": rows[i]["start"],
                "ratio": rows[i]["loss_median"] / base["loss_median"],
                "base": base,
                "first": rows[i],
                "worst_loss": float(np.nanmax([row["loss_max"] for row in stretch])),
                "worst_q": float(np.nanmax([row["q_median"] for row in stretch])),
                "worst_alpha": float(np.nanmax([row["alpha_median"] for row in stretch])),
                "worst_return": float(np.nanmin([row["train_return"] for row in stretch])),
                "back_at": rows[end]["start"] if end < len(rows) else None,
            }
        )
        i = end + 1
    return found


def report(run_dir: str, window: int, baseline: int, factor: float) -> str:
    rows, last_step = windows(run_dir, window)
    header = ("steps from", "qf_loss median", "max", "Q1", "alpha", "train return", "eval")
    widths = (11, 14, 8, 8, 7, 12, 8)
    lines = [
        f"{os.path.basename(os.path.normpath(run_dir))}: windows of {window:,} env steps",
        " ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)),
    ]
    for row in rows:
        lines.append(
            f"{row['start']:>11,} {row['loss_median']:>14.1f} {row['loss_max']:>8.1f} {row['q_median']:>8.1f}"
            f" {row['alpha_median']:>7.3f} {row['train_return']:>12.1f} {row['eval']:>8.1f}"
        )
    found = divergences(rows, window, baseline, factor)
    if not found:
        lines.append(
            f"no divergence: no window's median qf_loss is over {factor:g}x that of the {baseline:,} steps"
            f" before it (logged to step {last_step:,})"
        )
    for event in found:
        base, back = event["base"], event["back_at"]
        lines += [
            f"critic diverged at {event['start']:,}-{event['start'] + window:,}: qf_loss median"
            f" {event['first']['loss_median']:.1f} against {base['loss_median']:.1f} over the {baseline:,}"
            f" steps before ({event['ratio']:.1f}x)",
            f"  at its worst: qf_loss {event['worst_loss']:.1f}, Q1 {event['worst_q']:.1f} (from"
            f" {base['q_median']:.1f}), alpha {event['worst_alpha']:.3f} (from {base['alpha_median']:.3f}),"
            f" training return {event['worst_return']:.1f} (from {base['train_return']:.1f})",
            f"  back under {BACK_UNDER:g}x its baseline: "
            + (f"from {back:,}" if back is not None else "not by the last logged window"),
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Where a SAC run's critic diverges, from its TensorBoard files."
    )
    parser.add_argument("runs", nargs="+", help="SAC run directories")
    parser.add_argument("--window", type=int, default=20000, help="env steps per window (default 20000)")
    parser.add_argument("--baseline", type=int, default=100000, help="env steps a window is compared with")
    parser.add_argument("--factor", type=float, default=3.0, help="how far over the baseline's loss diverges")
    options = parser.parse_args(argv)
    if options.window <= 0 or options.baseline < options.window or options.factor <= BACK_UNDER:
        parser.error(f"need --window > 0, --baseline >= --window and --factor > {BACK_UNDER:g}")
    for run_dir in options.runs:
        if not run_directory.event_files(run_dir):  # also a path that is no directory
            raise SystemExit(f"error: {run_dir} is not a run directory with TensorBoard files")
    print(
        "\n\n".join(
            report(run_dir, options.window, options.baseline, options.factor) for run_dir in options.runs
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
