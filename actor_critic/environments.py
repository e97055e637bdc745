"""Environments: creation with one-line errors, env workers, and simulator states."""

from __future__ import annotations

import atexit
import difflib
import os
import signal
import weakref

import gymnasium as gym
import numpy as np
import torch

from actor_critic.cli import fail, first_line

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
