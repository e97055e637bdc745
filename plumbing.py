"""Plumbing that holds no algorithm, written once for sac_continuous.py and ppo_continuous.py.

The algorithm files keep everything a reader needs to understand SAC or PPO. What is here is the
same for both and would otherwise be copied between them:

- which flags define a run, declared on the Args fields (`how`, `axis`), so that resume, sweeps
  and plots derive their lists from one place;
- argument checks that end in one clear line;
- env creation with one-line errors, and the simulator state of an env, saved and restored;
- the checkpoint format: atomic save, a safe load (never executes code from the file), and the
  merge of saved and given flags on resume;
- the run directory with TensorBoard and W&B, Ctrl-C/SIGTERM handling, the progress line and its
  machine-readable twin progress.json, the evaluation loop, and summary.json.
"""

from __future__ import annotations

import atexit
import dataclasses
import difflib
import fcntl
import json
import math
import os
import platform
import re
import signal
import sys
import time
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np
import threadpoolctl
import torch

CHECKPOINT_FORMAT = "mujoco-actor-critic-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT = "checkpoint.pt"  # the run's full state: what --resume reads
FINAL_MODEL = "final_model.pt"  # the final policy alone
SUMMARY = "summary.json"
RUN_LOCK = "run.lock"  # held by the process training the run, while it runs
PROGRESS = "progress.json"
SCRIPTS = {"sac": "sac_continuous.py", "ppo": "ppo_continuous.py"}
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
# The -v4 ids are this project's default on purpose; their deprecation notice is noise here.
warnings.filterwarnings("ignore", message=".*is out of date.*")


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


def set_up_torch(args: Any) -> torch.device:
    """Threads, seed and device, as CleanRL sets them up."""
    if args.threads:
        torch.set_num_threads(args.threads)
    # NumPy's BLAS gets one thread whatever --threads says: it only multiplies the small matrices
    # of acting, and OpenBLAS keeps a thread per core spinning after each product, which took the
    # cores the env workers needed (PPO on Humanoid-v4 with 64 envs and --env-workers 2: 0.9x as
    # fast as in one process with those threads, 1.3x without them).
    threadpoolctl.threadpool_limits(1, user_api="blas")
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    return device


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


def make_env(env_id: str, needs: str, render_mode: str | None = None, bounded: bool = False) -> gym.Env:
    """gym.make with a one-line error for ids that do not exist or spaces the algorithm cannot
    handle. `needs` names the algorithm in that line; `bounded`: actions must have finite bounds."""
    try:
        env = gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}))
    except (
        gym.error.NameNotFound,
        gym.error.VersionNotFound,
        gym.error.NamespaceNotFound,
        gym.error.UnregisteredEnv,
        ModuleNotFoundError,
    ) as error:
        close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        fail(f"unknown env id '{env_id}' ({error}){hint}")
    except gym.error.Error as error:
        fail(f"cannot make env '{env_id}': {error}")
    if not isinstance(env.action_space, gym.spaces.Box):
        fail(f"{needs} needs a continuous (Box) action space; {env_id} has {env.action_space}")
    if bounded and not np.all(np.isfinite(env.action_space.low) & np.isfinite(env.action_space.high)):
        fail(f"{env_id} has unbounded actions {env.action_space}; {needs} squashes into finite bounds")
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or space.shape is None or len(space.shape) != 1:
        fail(f"{needs} needs a flat Box observation space; {env_id} has {space}")
    return env


def make_vector_env(
    env_id: str,
    num_envs: int,
    needs: str,
    bounded: bool = False,
    asynchronous: bool = False,
    workers: int = 0,
) -> gym.vector.VectorEnv | EnvWorkers:
    """`num_envs` envs stepped together: in this process (SyncVectorEnv), one subprocess each
    (`asynchronous`: AsyncVectorEnv), or `workers` subprocesses of a share each (EnvWorkers)."""
    # Gymnasium 1.x autoresets on the *next* step: the step after a done returns the first
    # observation of a new episode with reward 0 and ignores the action. It is not a transition.
    probe = make_env(env_id, needs, bounded=bounded)  # validate once, with a clear error
    probe.close()
    if workers:
        return EnvWorkers(env_id, num_envs, needs, bounded, workers, probe)
    env_fns = [lambda: make_env(env_id, needs, bounded=bounded) for _ in range(num_envs)]
    if not asynchronous:
        return gym.vector.SyncVectorEnv(env_fns)
    # A terminal's Ctrl-C reaches the whole process group. AsyncVectorEnv's workers would die of
    # it, and the parent needs them for the checkpoint it writes then: they start with SIGINT
    # ignored (inherited, by fork or exec). SIGTERM stays theirs: their close(terminate=True) uses it.
    parents_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return gym.vector.AsyncVectorEnv(env_fns)
    finally:
        signal.signal(signal.SIGINT, parents_handler)


def _env_worker(pipe, env_id: str, needs: str, bounded: bool, count: int) -> None:
    """A subprocess of EnvWorkers: a SyncVectorEnv of `count` envs, driven over `pipe`."""
    # Ctrl-C and SIGTERM are the parent's to handle: it still needs these envs for its checkpoint.
    # So the parent stops its workers itself (EnvWorkers.close), and a worker whose parent was
    # killed outright leaves by itself: the pipe need not tell it (forked siblings hold its ends).
    # Its parent is the training process (fork, spawn) or multiprocessing's forkserver, which
    # leaves with it; either way, once the parent is gone, the worker is someone else's child.
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    envs = gym.vector.SyncVectorEnv([lambda: make_env(env_id, needs, bounded=bounded) for _ in range(count)])
    commands = {
        "step": lambda actions: envs.step(actions)[:4],  # infos are not carried back
        "reset": lambda seed: envs.reset(seed=seed)[0],
        "get_states": lambda _: get_env_states(envs),
        "set_states": lambda data: set_env_states(envs, *data),
    }
    try:
        while True:
            while not pipe.poll(1.0):
                if os.getppid() != parent:
                    return
            command, data = pipe.recv()
            if command == "close":
                break
            try:
                pipe.send((True, commands[command](data)))
            except Exception as error:  # reported in the parent, which stops
                pipe.send((False, f"{type(error).__name__}: {first_line(error)}"))
    except EOFError:  # the parent is gone (killed): nothing to clean up but the envs
        pass
    finally:
        envs.close()


class EnvWorkers:
    """`num_envs` envs in `workers` subprocesses, each stepping its share in turn (a SyncVectorEnv).

    Gymnasium's AsyncVectorEnv gives every env a process of its own, which on two cores costs more
    in messages and context switches than it gains (many small envs); here each core steps a block
    of envs per message. The envs are Gymnasium's own, seeded as one SyncVectorEnv seeds them
    (env i gets seed + i), and stepped the same way, so a run gives the same numbers with any
    number of workers, and their simulator states are saved and restored as in-process envs' are.
    What step() returns is a SyncVectorEnv's, less the infos (the scripts read none).
    """

    def __init__(self, env_id: str, num_envs: int, needs: str, bounded: bool, workers: int, probe: gym.Env):
        """`probe`: one env of the kind, already made (and closed), for its spaces."""
        import multiprocessing

        self.single_observation_space, self.single_action_space = probe.observation_space, probe.action_space
        self.num_envs = num_envs
        self.counts = [len(share) for share in np.array_split(np.arange(num_envs), min(workers, num_envs))]
        self.offsets = np.cumsum([0, *self.counts[:-1]]).tolist()
        self.pipes, self.processes = [], []
        # Stops the workers when the envs are closed, collected, or the interpreter exits on an
        # error: multiprocessing's own exit handler would SIGTERM them (ignored) and wait forever.
        self._stop = weakref.finalize(self, _stop_workers, self.pipes, self.processes)
        context = multiprocessing.get_context()
        atexit.register(self._stop)  # registered after multiprocessing's, so it runs before it
        for count in self.counts:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_env_worker, args=(child_end, env_id, needs, bounded, count), daemon=True
            )
            process.start()
            child_end.close()
            self.pipes.append(parent_end)
            self.processes.append(process)

    def _call(self, command: str, data: list) -> list:
        try:
            for pipe, share in zip(self.pipes, data, strict=True):
                pipe.send((command, share))
            replies = [pipe.recv() for pipe in self.pipes]
        except (EOFError, OSError) as error:  # killed, or out of memory
            raise RuntimeError(f"an env worker died ({type(error).__name__})") from None
        for ok, reply in replies:
            if not ok:
                raise RuntimeError(f"an env worker failed: {reply}")
        return [reply for _, reply in replies]

    def _split(self, array) -> list:
        return [
            array[offset : offset + count] for offset, count in zip(self.offsets, self.counts, strict=True)
        ]

    def reset(self, seed: int | None = None):
        seeds = [None if seed is None else seed + offset for offset in self.offsets]
        return np.concatenate(self._call("reset", seeds)), {}

    def step(self, actions: np.ndarray):
        shares = self._call("step", self._split(actions))
        return (*(np.concatenate(parts) for parts in zip(*shares, strict=True)), {})

    def get_states(self) -> list[dict | None]:
        return [state for share in self._call("get_states", [None] * len(self.pipes)) for state in share]

    def set_states(self, states: list[dict | None], prev_done: np.ndarray) -> bool:
        return all(
            self._call("set_states", list(zip(self._split(states), self._split(prev_done), strict=True)))
        )

    def close(self) -> None:
        self._stop()


def _stop_workers(pipes: list, processes: list) -> None:
    """Ask EnvWorkers' subprocesses to close their envs; kill any that has not within 5 s."""
    for pipe in pipes:
        try:
            pipe.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
    for pipe in pipes:
        pipe.close()


def make_eval_env(env_id: str, needs: str, capture_video: bool) -> gym.Env:
    env = make_env(env_id, needs, render_mode="rgb_array" if capture_video else None)
    if capture_video and hasattr(env.unwrapped, "model"):
        # MuJoCo's default 4096-texel shadow map is much of a frame's cost when drawn in software
        # (no GPU); one of 1024 looks the same in a 480-pixel video.
        quality = env.unwrapped.model.vis.quality
        quality.shadowsize = min(quality.shadowsize, 1024)
    return env


def find_wrapper(env: gym.Env, wrapper_type: type) -> gym.Wrapper | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, wrapper_type):
            return env
        env = env.env
    return None


# What MuJoCo computes from the state rather than integrates, and Gymnasium's envs read (Humanoid's
# and Ant's rewards: the centre of mass, a body's position, before the step). After mj_step these
# describe the start of its last substep, which mj_forward on the restored state would not give back.
MUJOCO_DERIVED = ("xpos", "xquat", "xmat", "xipos", "ximat", "geom_xpos", "geom_xmat", "site_xpos")
MUJOCO_DERIVED += ("site_xmat", "subtree_com", "cinert", "cvel", "cfrc_ext", "qfrc_actuator")
MUJOCO_DERIVED += ("qfrc_constraint", "ten_length", "ten_velocity")


def get_env_state(env: gym.Env) -> dict | None:
    """The full simulator state of one env, so a resumed run continues the very same episode."""
    inner, state = env.unwrapped, {}
    if hasattr(inner, "model") and hasattr(inner, "data"):  # a MuJoCo env
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        values = np.empty(mujoco.mj_stateSize(inner.model, spec))
        mujoco.mj_getState(inner.model, inner.data, values, spec)
        state["mujoco"] = torch.from_numpy(values)
        state["mujoco_derived"] = {
            name: torch.from_numpy(getattr(inner.data, name).copy()) for name in MUJOCO_DERIVED
        }
    elif isinstance(getattr(inner, "state", None), np.ndarray):  # classic control
        state["state"] = torch.from_numpy(inner.state.copy())
    else:
        return None
    state["np_random"] = inner.np_random.bit_generator.state
    time_limit = find_wrapper(env, gym.wrappers.TimeLimit)
    state["elapsed_steps"] = time_limit._elapsed_steps if time_limit else 0
    return state


def set_env_state(env: gym.Env, state: dict) -> None:
    inner = env.unwrapped
    if "mujoco" in state:
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(inner.model, inner.data, state["mujoco"].numpy(), spec)
        mujoco.mj_forward(inner.model, inner.data)
        for name, value in state.get("mujoco_derived", {}).items():  # older checkpoints: none
            getattr(inner.data, name)[...] = value.numpy()
    else:
        inner.state = state["state"].numpy().copy()
    inner.np_random.bit_generator.state = state["np_random"]
    time_limit = find_wrapper(env, gym.wrappers.TimeLimit)
    if time_limit:
        time_limit._elapsed_steps = state["elapsed_steps"]


def get_env_states(envs: gym.vector.VectorEnv | EnvWorkers) -> list[dict | None]:
    """One state per env; None where it cannot be read (AsyncVectorEnv's subprocesses; envs that
    are neither MuJoCo nor classic control)."""
    if isinstance(envs, EnvWorkers):
        return envs.get_states()
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        return [None] * envs.num_envs
    return [get_env_state(env) for env in envs.envs]


def set_env_states(
    envs: gym.vector.VectorEnv | EnvWorkers, states: list[dict | None], prev_done: np.ndarray
) -> bool:
    """Put every env back where the checkpoint left it; False (nothing changed) if one cannot be."""
    if any(state is None for state in states):
        return False
    if isinstance(envs, EnvWorkers):
        return envs.set_states(states, prev_done)
    if not isinstance(envs, gym.vector.SyncVectorEnv):
        return False
    for env, state in zip(envs.envs, states, strict=True):
        set_env_state(env, state)
    envs._autoreset_envs = prev_done.copy()  # the vector env's own copy of the reset-step flags
    return True


# ---------------------------------------------------------------------------------------------
# Episode statistics
# ---------------------------------------------------------------------------------------------


class Episodes:
    """Per-env episode return, length and done flags, and the returns of the last episodes.

    `done[i]` True means env i's next step is a reset step: its observation starts a new episode
    and it is not a transition.
    """

    def __init__(self, num_envs: int, recent: int = 20):
        self.done = np.zeros(num_envs, dtype=bool)
        self.returns, self.lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)
        self.recent: deque = deque(maxlen=recent)

    def record(self, rewards: np.ndarray, dones: np.ndarray, global_step: int, writer) -> None:
        """Count one vector step; log the return and length of each episode that ended."""
        self.returns = np.where(self.done, 0.0, self.returns + rewards)
        self.lengths = np.where(self.done, 0, self.lengths + 1)
        self.done = dones
        for i in np.flatnonzero(dones):
            self.recent.append(float(self.returns[i]))
            writer.add_scalar("charts/episodic_return", self.returns[i], global_step)
            writer.add_scalar("charts/episodic_length", self.lengths[i], global_step)

    def recent_mean(self) -> float | None:
        return float(np.mean(self.recent)) if self.recent else None

    # The keys of checkpoint format 1's "rollout" record.
    def state_dict(self) -> dict:
        return {
            "prev_done": torch.as_tensor(self.done),
            "episode_returns": torch.as_tensor(self.returns),
            "episode_lengths": torch.as_tensor(self.lengths),
            "recent_returns": list(self.recent),
        }

    def load_state_dict(self, state: dict, episodes_too: bool = True) -> None:
        """The recent returns; with `episodes_too`, the episodes under way as well."""
        self.recent.extend(state["recent_returns"])
        if episodes_too:
            self.done = state["prev_done"].numpy().copy()
            self.returns = state["episode_returns"].numpy().copy()
            self.lengths = state["episode_lengths"].numpy().copy()


# ---------------------------------------------------------------------------------------------
# Checkpoints: plain tensors and Python values only, so torch.load(weights_only=True) reads them
# and loading a file can never run code from it.
# ---------------------------------------------------------------------------------------------


def save_atomically(obj: dict, path: str) -> None:
    """Write to a temporary file, then rename: a kill at any instant leaves the old file intact."""
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_path, path)


def write_json_atomically(record: Any, path: str, indent: int | None = None) -> None:
    """JSON through a temporary file and a rename: a reader never sees half a file."""
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "w") as f:
        json.dump(record, f, indent=indent)
    os.replace(tmp_path, path)


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


def load_checkpoint(path: str, reader: str = "this project") -> dict:
    """Any file this project writes, checked: readable, ours, of a version we read, complete."""
    if not os.path.isfile(path):
        fail(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warning: the error says enough
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
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
        fail(f"{path} is not a checkpoint of this project (sac_continuous.py or ppo_continuous.py)")
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        fail(
            f"{path} has checkpoint format version {checkpoint.get('format_version')}, "
            f"{reader} reads version {CHECKPOINT_VERSION}"
        )
    if checkpoint.get("algorithm") not in SCRIPTS:
        fail(f"{path} is a checkpoint of an unknown algorithm {checkpoint.get('algorithm')!r}")
    for key in (*COMMON_KEYS, "kind"):
        if key not in checkpoint:
            fail(f"{path} is damaged: it has no '{key}'")
    if not isinstance(checkpoint["args"], dict) or not {"hidden_size", "seed"} <= checkpoint["args"].keys():
        fail(f"{path} is damaged: its 'args' lack hidden_size or seed")
    return checkpoint


def load_policy_file(path: str, algorithm: str, policy_keys: tuple[str, ...]) -> dict:
    """A checkpoint of `algorithm` that holds its policy, for the algorithm's own load_policy."""
    checkpoint = load_checkpoint(path)
    if checkpoint["algorithm"] != algorithm:
        fail(f"{path} is a {checkpoint['algorithm']} checkpoint, not {algorithm}")
    for key in policy_keys:
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
            f"resume it with {SCRIPTS[checkpoint['algorithm']]}"
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


def check_shapes(checkpoint: dict, envs: gym.vector.VectorEnv, path: str, env_id: str) -> None:
    obs_shape, act_shape = envs.single_observation_space.shape, envs.single_action_space.shape
    if tuple(checkpoint["observation_shape"]) != obs_shape or tuple(checkpoint["action_shape"]) != act_shape:
        fail(
            f"{path} has observation/action shapes {checkpoint['observation_shape']}/"
            f"{checkpoint['action_shape']}, but {env_id} has {obs_shape}/{act_shape}"
        )


# ---------------------------------------------------------------------------------------------
# The run: its directory, TensorBoard and W&B, signals, progress, checkpoints and summary
# ---------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Run:
    """A run directory and what writes into it. Made before the networks, so that a bad --resume
    or --runs-dir fails at once; `open_logs` then starts TensorBoard (and W&B) at the right step."""

    def __init__(self, args: Any, algorithm: str, checkpoint: dict | None):
        self.args, self.algorithm, self.resumed = args, algorithm, checkpoint is not None
        if checkpoint is not None:
            self.dir, self.name = os.path.dirname(os.path.abspath(args.resume)), args.run_name
            rollout = checkpoint["rollout"]
            self.wandb_id, self.wall_clock_before = rollout["wandb_id"], rollout["wall_clock"]
            self.sessions = list(rollout.get("sessions", []))
            self.start_step = checkpoint["global_step"]
            self.last_checkpoint_step: int | None = checkpoint["global_step"]
        else:
            if os.path.exists(args.runs_dir) and not os.path.isdir(args.runs_dir):
                fail(f"--runs-dir {args.runs_dir} is a file, not a directory")
            self.name = args.run_name or f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
            args.run_name = self.name
            self.dir = os.path.join(args.runs_dir, self.name)
            if os.path.exists(os.path.join(self.dir, CHECKPOINT)):
                fail(
                    f"{self.dir} already holds a run; continue it with --resume "
                    f"{os.path.join(self.dir, CHECKPOINT)} or choose another --run-name"
                )
            if os.path.exists(self.dir) and not os.path.isdir(self.dir):
                fail(f"{self.dir} is a file, not a run directory")
            self.wandb_id, self.wall_clock_before, self.sessions = uuid.uuid4().hex[:12], 0.0, []
            self.start_step, self.last_checkpoint_step = 0, None
        self.checkpoint_path = os.path.join(self.dir, CHECKPOINT)
        self.start_time = time.time()
        self.writer, self.lock = None, None
        self.stop_signal: list[int] = []
        self.previous_handlers: dict = {}

    def open_logs(self, global_step: int) -> None:
        """TensorBoard (and W&B with --track) from `global_step` on; catch Ctrl-C and SIGTERM."""
        from torch.utils.tensorboard import SummaryWriter

        args = self.args
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as error:
            fail(f"cannot make the run directory {self.dir}: {first_line(error)}")
        # One process per run: a second (the same --resume given twice, a run a killed sweep left
        # running) would write the same checkpoint.
        self.lock = open(os.path.join(self.dir, RUN_LOCK), "a")  # held until close()
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock.close()
            fail(f"{self.dir} is in use: another process is training this run")
        except OSError:  # a file system without locks: go on without one
            pass
        if args.track:
            import wandb

            wandb.init(
                project=args.wandb_project_name,
                entity=args.wandb_entity,
                sync_tensorboard=True,
                config=dataclasses.asdict(args),
                name=self.name,
                id=self.wandb_id,
                resume="allow",
                dir=self.dir,
                save_code=True,
            )
        # purge_step drops what a killed run logged after its last checkpoint: TensorBoard continues.
        self.writer = SummaryWriter(self.dir, purge_step=global_step + 1 if self.resumed else None)
        if not self.resumed:
            table = "\n".join(f"|{key}|{value}|" for key, value in dataclasses.asdict(args).items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        # Ctrl-C and SIGTERM only set a flag: the loop finishes its step, checkpoints, and exits.
        self.previous_handlers = {
            sig: signal.signal(sig, lambda signum, frame: self.stop_signal.append(signum))
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        self.start_time = time.time()

    def wall_clock(self) -> float:
        return self.wall_clock_before + time.time() - self.start_time

    def session(self, global_step: int, device: torch.device) -> dict:
        """This process's part of the run, for summary.json's provenance."""
        return {
            "start_step": self.start_step,
            "end_step": global_step,
            "wall_clock_s": round(time.time() - self.start_time, 2),
            "cpu": cpu_name(),
            "threads": torch.get_num_threads(),
            "device": str(device),
        }

    def save(self, model: dict, training: dict, final: bool, device: torch.device) -> None:
        """models/step_N.pt and, at the end, final_model.pt (the policy); checkpoint.pt (all of it).
        `training` holds what the algorithm needs to resume; its "rollout" gains the run's own."""
        step = model["global_step"]
        os.makedirs(os.path.join(self.dir, "models"), exist_ok=True)
        save_atomically(model, os.path.join(self.dir, "models", f"step_{step:08d}.pt"))
        if final:
            save_atomically(model, os.path.join(self.dir, FINAL_MODEL))
        rollout = {
            **training["rollout"],
            "wandb_id": self.wandb_id,
            "wall_clock": self.wall_clock(),
            "sessions": [*self.sessions, self.session(step, device)],
        }
        save_atomically({**model, "kind": "training", **training, "rollout": rollout}, self.checkpoint_path)
        self.last_checkpoint_step = step

    def last_good_checkpoint(self) -> str:
        if self.last_checkpoint_step is None:
            return "none"
        return f"{self.checkpoint_path} (step {self.last_checkpoint_step})"

    def stop_non_finite(self, what: str) -> NoReturn:
        """Stop before a non-finite value reaches a checkpoint; the last good one stays."""
        self.close()  # an in-process caller (a notebook, a test) gets its Ctrl-C back
        fail(f"non-finite {what}; training stopped. Last good checkpoint: {self.last_good_checkpoint()}")

    def evaluate(self, policy: Callable, env: gym.Env, global_step: int, log: bool = True) -> tuple:
        """--eval-episodes seeded episodes of `policy`, logged (unless not `log`); with
        --capture-video, the first one's video. Returns the mean and std of the returns."""
        args = self.args
        video = args.capture_video and log
        returns, frames = evaluate(policy, env, args.eval_episodes, args.seed + 100_000, video)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        if not log:
            return mean, std
        self.writer.add_scalar("eval/episodic_return", mean, global_step)
        self.writer.add_scalar("eval/episodic_return_std", std, global_step)
        if frames:
            import imageio

            os.makedirs(os.path.join(self.dir, "videos"), exist_ok=True)
            path = os.path.join(self.dir, "videos", f"eval_step_{global_step:08d}.mp4")
            imageio.mimwrite(path, frames, fps=env.metadata.get("render_fps", 30))
        return mean, std

    def exit_if_signalled(self, global_step: int, envs: gym.vector.VectorEnv) -> None:
        """After a Ctrl-C or SIGTERM (and the checkpoint it asked for): say how to go on, and exit.
        A signal that came after this step's checkpoint decision waits for the next step's."""
        if not self.stop_signal or self.last_checkpoint_step != global_step:
            return
        name = signal.Signals(self.stop_signal[0]).name
        print(
            f"{name}: checkpoint written at step {global_step}; continue with:\n"
            f"  python {SCRIPTS[self.algorithm]} --resume {self.checkpoint_path}",
            flush=True,
        )
        envs.close()
        self.close()
        raise SystemExit(128 + self.stop_signal[0])

    def needs_final_save(self, global_step: int) -> bool:
        """A run resumed after its end has its files already; any other needs its last save."""
        final_model = os.path.join(self.dir, FINAL_MODEL)
        return self.last_checkpoint_step != global_step or not os.path.exists(final_model)

    def finish(
        self, last_eval: tuple | None, eval_protocol: str, global_step: int, device: torch.device, **speed
    ) -> dict:
        """summary.json: the run's final evaluation, its speed and where it ran; then close."""
        summary = {
            "algorithm": self.algorithm,
            "env_id": self.args.env_id,
            "seed": self.args.seed,
            "run_name": self.name,
            "total_timesteps": self.args.total_timesteps,
            "global_step": global_step,
            "wall_clock_s": round(self.wall_clock(), 2),
            "sps": round((global_step - self.start_step) / max(time.time() - self.start_time, 1e-9), 2),
            **speed,
            "final_eval_mean": last_eval[0] if last_eval else None,
            "final_eval_std": last_eval[1] if last_eval else None,
            "final_eval_episodes": self.args.eval_episodes,
            "eval_protocol": eval_protocol,
            "sessions": [*self.sessions, self.session(global_step, device)],
        }
        write_json_atomically(summary, os.path.join(self.dir, SUMMARY), indent=2)
        self.close()
        if self.args.track:
            import wandb

            wandb.finish()
        return summary

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.lock is not None:
            self.lock.close()  # releases it
            self.lock = None
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)
        self.previous_handlers = {}


class Progress:
    """The line printed every 10 s, and progress.json beside it for sweeps to read.

    Time left comes from the rate over the last minute or so, not the average since the start:
    SAC's random warm-up steps are many times faster than its learning steps.
    """

    WINDOW_S = 60.0

    def __init__(self, run_dir: str, total: int, start_step: int, every_s: float = 10.0):
        self.path, self.total, self.every_s = os.path.join(run_dir, PROGRESS), total, every_s
        now = time.time()
        self.last_print, self.history = now, deque([(now, start_step)])

    def rate(self, now: float, global_step: int) -> float:
        while len(self.history) > 1 and now - self.history[1][0] >= self.WINDOW_S:
            self.history.popleft()
        then, step = self.history[0]
        return (global_step - step) / max(now - then, 1e-9)

    def update(self, global_step: int, episodes: Episodes, last_eval: float | None, force: bool) -> None:
        """Called every step; prints (and writes progress.json) every `every_s` s or when forced."""
        now = time.time()
        if now - self.last_print < self.every_s and not force:
            return
        self.last_print = now
        recent_return = episodes.recent_mean()
        sps = self.rate(now, global_step)
        self.history.append((now, global_step))
        left_s = (self.total - global_step) / max(sps, 1e-9)
        recent = f"{recent_return:9.1f}" if recent_return is not None else "        -"
        evaluated = f" | eval {last_eval:9.1f}" if last_eval is not None else ""
        print(
            f"step {global_step:>9}/{self.total} | {sps:6.0f} steps/s | return {recent}"
            f"{evaluated} | left {format_duration(left_s)}",
            flush=True,
        )
        record = {
            "step": global_step,
            "total_timesteps": self.total,
            "steps_per_s": round(sps, 2),
            "recent_return": recent_return,
            "eval": last_eval,
            "time_left_s": round(left_s, 1),
            "time_left": format_duration(left_s),
            "time": now,
        }
        write_json_atomically(record, self.path)


def read_progress(run_dir: str) -> dict | None:
    """The last progress record of a run, or None if it has none (or it cannot be read)."""
    try:
        with open(os.path.join(run_dir, PROGRESS)) as f:
            record = json.load(f)
        return record if isinstance(record, dict) and {"step", "total_timesteps"} <= record.keys() else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Evaluation and small helpers
# ---------------------------------------------------------------------------------------------


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env: gym.Env,
    episodes: int,
    seed: int,
    record_frames: bool = False,
) -> tuple[list[float], list[np.ndarray]]:
    """The policy (an obs -> action function), one episode per seed: the same start states at
    every evaluation. Frames of the first episode with `record_frames`."""
    returns, frames = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, episode_return = False, 0.0
        while not done:
            if record_frames and episode == 0:
                frames.append(env.render())
            with torch.no_grad():
                obs, reward, terminated, truncated, _ = env.step(policy(obs))
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return returns, frames


def crossed(step: int, step_size: int, every: int) -> bool:
    """Did the last `step_size` steps pass a multiple of `every`?"""
    return every > 0 and step // every > (step - step_size) // every


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
