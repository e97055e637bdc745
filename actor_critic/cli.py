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



def command_line(args_class: type, args: list[str] | None = None) -> Any:
    """The scripts' flags through tyro, whose errors are boxes of many lines: a bad flag ends
    with one line instead, the box's first part (--help is printed as tyro prints it)."""
    import contextlib
    import io

    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parsed = tyro.cli(args_class, args=args)
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



def given_flags(args_class: type, argv: list[str] | None = None) -> set[str]:
    """The fields a command line (this process's, by default) sets, by name (`--total-timesteps 5`,
    `--total_timesteps=5`, `--no-save-buffer`). On a resume these win over the checkpoint, even at
    their defaults."""
    names = {field.name.replace("_", "-"): field.name for field in dataclasses.fields(args_class)}
    given = set()
    for token in sys.argv[1:] if argv is None else argv:
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0].replace("_", "-")
        if name not in names and name.startswith("no-"):
            name = name[3:]
        if name in names:
            given.add(names[name])
    return given


def args_for_resume(
    cli_args: Any, checkpoint: dict, path: str, algorithm: str, given: set[str] | None = None
) -> Any:
    """The run continues with its saved settings; a flag that contradicts them is an error.
    `given`: the fields the command line set (given_flags); without it (Args built in Python), a
    field counts as given where it differs from its default."""
    if checkpoint["algorithm"] != algorithm:
        fail(
            f"{path} is a {checkpoint['algorithm']} checkpoint; "
            f"resume it with {ALGORITHMS[checkpoint['algorithm']].script}"
        )
    if checkpoint["kind"] != "training":
        fail(f"{path} holds a policy only; resume needs the run's {CHECKPOINT}")
    args_class = type(cli_args)
    # A flag since removed (its value is already in the other saved fields) is left behind.
    known = {field.name for field in dataclasses.fields(args_class)}
    saved = {name: value for name, value in checkpoint["args"].items() if name in known}
    defaults, may_change = args_class(), resumable_flags(args_class)

    def was_given(name: str) -> bool:
        return name in given if given is not None else getattr(cli_args, name) != getattr(defaults, name)

    for field in dataclasses.fields(args_class):
        value, name = getattr(cli_args, field.name), field.name
        if name in may_change or not was_given(name) or value == saved.get(name):
            continue
        fail(f"{path} was trained with {flag(name)} {saved.get(name)}, not {value}")
    # The flags a resume may change keep their saved values unless given now.
    changed = {name: getattr(cli_args, name) for name in may_change if was_given(name)}
    return args_class(**{**saved, **changed, "resume": cli_args.resume})

