"""The command line: flags declared on the Args fields, their checks, tyro, and resume's merge."""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, NoReturn

from actor_critic.algorithms import ALGORITHMS
from actor_critic.run_directory import CHECKPOINT


def fail(message: str) -> NoReturn:
    """Bad input ends the program with one clear line and a non-zero exit."""
    raise SystemExit(f"error: {message}")


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


# ---------------------------------------------------------------------------------------------
# Which flags define a run: one declaration, on the Args fields
# ---------------------------------------------------------------------------------------------
# A field without a marker is a hyperparameter: it defines what is trained. A resume refuses to
# change it, a sweep may vary it, and a plot groups runs by it.


def how(default: Any) -> Any:
    """A flag that changes how a run is carried out, not what it computes on a given device and
    thread count (logging, evaluation, checkpoints, where files go): a resume may change it, and
    plots do not group runs by it."""
    return dataclasses.field(default=default, metadata={"role": "how"})


def axis(default: Any, resumable: bool = False) -> Any:
    """A flag that names the run rather than its setting (env id, seed, length, names): sweeps set
    it themselves and plots keep it apart. `resumable`: a resume may change it (SAC's length)."""
    return dataclasses.field(default=default, metadata={"role": "axis", "resumable": resumable})


def role(field: dataclasses.Field) -> str:
    return field.metadata.get("role", "hyperparameter")


def flags_with_role(args_class: type, *roles: str) -> set[str]:
    return {field.name for field in dataclasses.fields(args_class) if role(field) in roles}


def resumable_flags(args_class: type) -> set[str]:
    """The flags a resume may change: every `how` flag, and axes marked resumable."""
    return {
        field.name
        for field in dataclasses.fields(args_class)
        if role(field) == "how" or field.metadata.get("resumable", False)
    }


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


def check_numbers(
    args: Any,
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
    unit_interval: tuple[str, ...] = (),
) -> None:
    """Every number must be finite (an inf or NaN learning rate is refused now, not after a
    rollout), and positive, not negative, or in [0, 1] as its group says."""
    for name in (*positive, *non_negative, *unit_interval):
        value = getattr(args, name)
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"{flag(name)} must be a finite number, got {value}")
    for name in positive:
        if not getattr(args, name) > 0:
            fail(f"{flag(name)} must be positive, got {getattr(args, name)}")
    for name in non_negative:
        if getattr(args, name) is not None and getattr(args, name) < 0:
            fail(f"{flag(name)} must not be negative, got {getattr(args, name)}")
    for name in unit_interval:
        if not 0.0 <= getattr(args, name) <= 1.0:
            fail(f"{flag(name)} must be in [0, 1], got {getattr(args, name)}")


def command_line(args_class: type, argv: list[str] | None = None) -> Any:
    """The script's Args from the command line (this process's, by default), through tyro. With
    --resume, the run's saved settings lie under the command line (tyro's `default=`): a flag not
    given keeps its saved value, a flag given wins, even at its default (train() then refuses one
    that may not change). A bad flag ends in one line."""
    args = parse(args_class, argv)
    if getattr(args, "resume", None):  # enjoy.py's Args have none
        from actor_critic.checkpoints import load_checkpoint

        checkpoint = load_checkpoint(args.resume, mmap=True)  # the settings only: no buffer read
        check_resumable(checkpoint, args.resume, args_class)
        args = parse(args_class, argv, default=saved_args(args_class, checkpoint, args.resume))
    return args


def parse(args_class: type, argv: list[str] | None, default: Any = None) -> Any:
    """tyro.cli, whose errors are boxes of many lines: a bad flag ends with one line instead, the
    box's first part (--help is printed as tyro prints it)."""
    import contextlib
    import io

    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parsed = tyro.cli(args_class, args=argv, **({"default": default} if default is not None else {}))
    except SystemExit as error:
        if error.code:
            fail(tyro_error_line(captured.getvalue()))
        sys.stderr.write(captured.getvalue())
        raise
    sys.stderr.write(captured.getvalue())
    return parsed


def tyro_error_line(box: str) -> str:
    """'Error parsing --gamma: ...' from the box tyro draws around an error and its help."""
    lines = [line.strip().strip("│╭╮╰╯").strip() for line in box.strip().splitlines()]
    body = []
    for line in lines[1:]:
        if not line.strip("─") or line.startswith("For full helptext"):
            break
        body.append(line)
    return " ".join(body) or lines[0].strip("─ ") or "bad command line"


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_resumable(checkpoint: dict, path: str, args_class: type) -> None:
    """A training checkpoint of the algorithm whose script defines `args_class`."""
    algorithm = sys.modules[args_class.__module__].ALGORITHM
    if checkpoint["algorithm"] != algorithm:
        fail(
            f"{path} is a {checkpoint['algorithm']} checkpoint; "
            f"resume it with {ALGORITHMS[checkpoint['algorithm']].script}"
        )
    if checkpoint["kind"] != "training":
        fail(f"{path} holds a policy only; resume needs the run's {CHECKPOINT}")


def saved_args(args_class: type, checkpoint: dict, path: str, **changes: Any) -> Any:
    """The settings a checkpoint's run was trained with, as Args, with `changes` laid over them.
    A flag since removed is left behind (its value is in the other saved fields); one added since
    takes its default."""
    known = {field.name for field in dataclasses.fields(args_class)}
    saved = {name: value for name, value in checkpoint["args"].items() if name in known}
    return args_class(**{**saved, **changes, "resume": path})


def resume_args(args_class: type, path: str, **changes: Any) -> Any:
    """From Python, what `--resume PATH --flag value ...` gives on the command line:
    `train(cli.resume_args(Args, path, total_timesteps=2_000_000))`."""
    from actor_critic.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(path, mmap=True)
    check_resumable(checkpoint, path, args_class)
    return saved_args(args_class, checkpoint, path, **changes)


def check_resume(args: Any, checkpoint: dict) -> None:
    """A resume continues the run with its own settings: any flag that may not change (every
    hyperparameter, and the axes but SAC's length) must have its saved value."""
    args_class, path = type(args), args.resume
    check_resumable(checkpoint, path, args_class)
    defaults, may_change = args_class(), resumable_flags(args_class)
    for field in dataclasses.fields(args_class):
        name = field.name
        saved = checkpoint["args"].get(name, getattr(defaults, name))  # added since: its default
        if name not in may_change and getattr(args, name) != saved:
            fail(f"{path} was trained with {flag(name)} {saved}, not {getattr(args, name)}")
