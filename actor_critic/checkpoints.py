"""The checkpoint format: what a run's files hold, written atomically, read safely (never running
code from the file), and older versions upgraded on load. docs/checkpoints.md describes it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import warnings
from typing import Any

import gymnasium as gym
import torch

from actor_critic.algorithms import ALGORITHMS
from actor_critic.cli import fail, first_line

CHECKPOINT_FORMAT = "mujoco-actor-critic-checkpoint"
# Version 2: the loop's state under "loop_state", the run's own record (W&B id, wall clock,
# sessions) under "run"; version 1 kept both in one "rollout" record. upgrade() reads version 1.
CHECKPOINT_VERSION = 2
# What every checkpoint file holds besides its policy (docs/checkpoints.md).
COMMON_KEYS = (
    "env_id",
    "observation_shape",
    "action_shape",
    "action_low",
    "action_high",
    "args",
    "global_step",
)
RUN_RECORD_KEYS = ("wandb_id", "wall_clock", "sessions")


def upgrade(checkpoint: dict) -> dict:
    """A checkpoint of an older format version in today's layout (the same numbers, moved)."""
    if checkpoint.get("format_version") == 1:
        checkpoint = {**checkpoint, "format_version": 2}
        if "rollout" in checkpoint:  # a training checkpoint
            loop_state = dict(checkpoint.pop("rollout"))
            checkpoint["run"] = {key: loop_state.pop(key) for key in RUN_RECORD_KEYS if key in loop_state}
            checkpoint["loop_state"] = loop_state
    return checkpoint


def rng_states(device: torch.device) -> dict:
    """torch's random generators: the CPU's and, on a GPU, the GPU's (it draws its own numbers)."""
    states = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(checkpoint: dict, device: torch.device) -> None:
    torch.set_rng_state(checkpoint["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in checkpoint:
        torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)


# ---------------------------------------------------------------------------------------------
# Writing: plain tensors and Python values only, so torch.load(weights_only=True) reads them and
# loading a file can never run code from it.
# ---------------------------------------------------------------------------------------------


class WriteError(Exception):
    """A file of the run could not be written (a full disk, a vanished folder); nothing half
    written is left behind. The message is one line: what failed, where, and why."""


def save_atomically(obj: dict, path: str) -> None:
    """Write to a temporary file, then rename: a kill at any instant leaves the old file intact,
    and a failed write (WriteError) removes its temporary file, leaving the old file as it was."""
    tmp_path = f"{path}.tmp"
    try:
        with open(tmp_path, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as error:  # torch's zip writer reports a full disk as RuntimeError
        try:
            os.remove(tmp_path)
        except OSError:
            pass
        reason = os.strerror(error.errno) if getattr(error, "errno", None) else first_line(error)[:160]
        if isinstance(error, RuntimeError) and "write" in str(error):
            reason = f"{reason} (is the disk full?)"
        raise WriteError(f"cannot write {path}: {reason}") from None


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def load_checkpoint(path: str, reader: str = "this project", mmap: bool = False) -> dict:
    """Any file this project writes, checked (readable, ours, of a version we read, complete) and
    upgraded to today's format version. `mmap`: map the tensors instead of reading them (cheap
    when only the settings are wanted: a saved replay buffer can be gigabytes)."""
    if not os.path.isfile(path):
        fail(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warning: the error says enough
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # truncated, corrupted, not a torch file, or unsafe to unpickle
        blocked = re.search(r"GLOBAL (\S+)", str(error))
        if blocked:  # the unpickler stopped before importing it, so nothing from the file ran
            fail(
                f"cannot read checkpoint {path}: refused to load it, it would call {blocked.group(1)}; "
                "checkpoints hold only data"
            )
        reason = first_line(error)
        if reason.startswith("Weights only load failed"):
            reason = "not a pickle of tensors and plain values"
        fail(f"cannot read checkpoint {path}: {reason[:160]}")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        scripts = " or ".join(algorithm.script for algorithm in ALGORITHMS.values())
        fail(f"{path} is not a checkpoint of this project ({scripts})")
    if checkpoint.get("format_version") not in range(1, CHECKPOINT_VERSION + 1):
        fail(
            f"{path} has checkpoint format version {checkpoint.get('format_version')}, "
            f"{reader} reads versions 1 to {CHECKPOINT_VERSION}"
        )
    checkpoint = upgrade(checkpoint)
    if checkpoint.get("algorithm") not in ALGORITHMS:
        fail(f"{path} is a checkpoint of an unknown algorithm {checkpoint.get('algorithm')!r}")
    for key in (*COMMON_KEYS, "kind"):
        if key not in checkpoint:
            fail(f"{path} is damaged: it has no '{key}'")
    if not isinstance(checkpoint["args"], dict) or not {"hidden_size", "seed"} <= checkpoint["args"].keys():
        fail(f"{path} is damaged: its 'args' lack hidden_size or seed")
    return checkpoint


@contextlib.contextmanager
def restoring(path: str):
    """A checkpoint that is ours but does not fit what it is loaded into ends in one line."""
    try:
        yield
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as error:
        fail(f"{path} is damaged: it does not restore ({first_line(error)[:160]})")


def load_policy_file(path: str, algorithm: str) -> dict:
    """A checkpoint of `algorithm` that holds its policy, for the algorithm's own load_policy."""
    checkpoint = load_checkpoint(path)
    if checkpoint["algorithm"] != algorithm:
        fail(f"{path} is a {checkpoint['algorithm']} checkpoint, not {algorithm}")
    for key in ALGORITHMS[algorithm].policy_keys:
        if key not in checkpoint:
            fail(f"{path} is damaged: it has no '{key}'")
    return checkpoint


def check_finite_policy(tensors: list[torch.Tensor], path: str) -> None:
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        fail(f"{path} is damaged: its policy has non-finite weights or statistics")


def policy_record(args: Any, algorithm: str, envs: gym.vector.VectorEnv, global_step: int, **policy) -> dict:
    """What every file of a run holds: the format, the run's flags, the spaces, the policy."""
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "algorithm": algorithm,
        "env_id": args.env_id,
        "args": dataclasses.asdict(args),
        "observation_shape": list(obs_space.shape),
        "action_shape": list(act_space.shape),
        "action_low": act_space.low.tolist(),
        "action_high": act_space.high.tolist(),
        "global_step": global_step,
        **policy,
        "kind": "model",
    }


def check_shapes(checkpoint: dict, envs: gym.vector.VectorEnv, path: str, env_id: str) -> None:
    obs_shape, act_shape = envs.single_observation_space.shape, envs.single_action_space.shape
    if tuple(checkpoint["observation_shape"]) != obs_shape or tuple(checkpoint["action_shape"]) != act_shape:
        fail(
            f"{path} has observation/action shapes {checkpoint['observation_shape']}/"
            f"{checkpoint['action_shape']}, but {env_id} has {obs_shape}/{act_shape}"
        )
