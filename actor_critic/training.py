"""What a training script does besides its algorithm: the run's logs, signals, saving, evaluation."""

from __future__ import annotations

import dataclasses
import os
import platform
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np
import threadpoolctl
import torch

from actor_critic.algorithms import ALGORITHMS
from actor_critic.checkpoints import WriteError, save_atomically
from actor_critic.cli import fail, first_line
from actor_critic.environments import get_env_states, make_eval_env, set_env_states
from actor_critic.run_directory import (
    CHECKPOINT,
    FINAL_MODEL,
    MODELS,
    PROGRESS,
    RUN_LOCK,
    SUMMARY,
    FileLock,
    check_name,
    snapshot_path,
    video_path,
    write_json_atomically,
)

MAX_SEED = 2**31 - 1  # what every generator a run seeds (torch, NumPy, Gymnasium's envs) takes


def check_run_flags(args: Any) -> None:
    """The flags every script shares, checked before anything starts: the names that become a
    path keep the run directory one folder inside --runs-dir, and the seed and the thread count
    are ones this machine can honour."""
    check_name("--exp-name", args.exp_name)
    if args.run_name is not None:
        check_name("--run-name", args.run_name)
    else:  # the default name holds the env id, which may have a namespace ('ns/Env-v0')
        check_name("the run name (give --run-name)", f"{args.env_id}__{args.exp_name}__{args.seed}__0")
    if not 0 <= args.seed <= MAX_SEED:
        fail(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    if args.threads > available_cpus():
        fail(f"--threads {args.threads}: this process may use {available_cpus()} CPUs here")


def available_cpus() -> int:
    """The CPUs this process may run on (a Slurm task's share, not the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_memory(nbytes: int, what: str) -> None:
    """Refuse now what this machine's memory cannot hold, rather than be killed once it fills."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on Linux: no check
        return
    if nbytes > total:
        fail(f"{what} would take {nbytes / 2**30:.1f} GiB; this machine has {total / 2**30:.1f} GiB")


def set_up_torch(args: Any) -> torch.device:
    """Threads, seed and device, as CleanRL sets them up, and the precision the device must run
    natively (check_precision)."""
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
    check_precision(args.precision, device)
    return device


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16")


def cpuinfo(*keys: str) -> str | None:
    """The value of the first line of /proc/cpuinfo that starts with one of `keys`; None where
    there is no such line or no such file (not on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(keys):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The feature flags of this CPU (x86 'flags', Arm 'Features'); empty where unknown."""
    return set((cpuinfo("flags", "Features") or "").split())


def bf16_unsupported(device: torch.device) -> str | None:
    """Why this device has no native bf16 arithmetic, or None where it has. Without it, bf16 is
    emulated in fp32 and many times slower (PyTorch issue 146508): nothing to gain."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return None
        return f"{torch.cuda.get_device_name(device)} has no native bf16 (it needs compute capability 8.0+)"
    flags = cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:  # Zen 4+, Cooper Lake+/Sapphire Rapids+, Armv8.6
        return None
    flags_wanted = "no avx512_bf16, amx_bf16 or bf16 flag in /proc/cpuinfo"
    return f"this CPU ({cpu_name()}) has no native bf16: {flags_wanted}"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse, in one line, a precision this device cannot run at its own speed."""
    if precision not in PRECISIONS:
        fail(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision}")
    if precision == "bf16" and (reason := bf16_unsupported(device)) is not None:
        fail(f"--precision bf16: {reason}; use --precision fp32")


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The context the update's forward passes run in: with bf16, matrix products take bf16
    inputs (the weights stay fp32 and are cast per product) and return bf16; the scripts turn
    results back to fp32 before anything that decides a number's quality (losses, log-densities,
    advantages). With fp32 it is switched off and changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


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

    # Keys of a checkpoint's "loop_state" record (format 1: "rollout").
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
# The run: its directory, TensorBoard and W&B, signals, progress, checkpoints and summary
# ---------------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name, as runs, checkpoints and the benchmarks record it."""
    return cpuinfo("model name") or platform.processor() or platform.machine()


class Run:
    """A run directory and what writes into it. Made before the networks, so that a bad --resume
    or --runs-dir fails at once; `open_logs` then starts TensorBoard (and W&B) at the right step."""

    def __init__(self, args: Any, algorithm: str, checkpoint: dict | None):
        self.args, self.algorithm, self.resumed = args, algorithm, checkpoint is not None
        if checkpoint is not None:
            self.dir, self.name = os.path.dirname(os.path.abspath(args.resume)), args.run_name
            record = checkpoint["run"]
            self.wandb_id, self.wall_clock_before = record["wandb_id"], record["wall_clock"]
            self.sessions = list(record.get("sessions", []))
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
        self.writer, self.lock, self.progress, self.eval_env = None, None, None, None
        self.writer_fault: OSError | None = None  # what TensorBoard's writer thread could not write
        self.previous_excepthook = None
        self.stop_signal: list[int] = []
        self.previous_handlers: dict = {}

    def open_logs(self, global_step: int, total_steps: int | None = None) -> None:
        """TensorBoard (and W&B with --track) from `global_step` on, the progress line towards
        `total_steps` (default: --total-timesteps), the evaluation env; catch Ctrl-C and SIGTERM."""
        from torch.utils.tensorboard import SummaryWriter

        args = self.args
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as error:
            fail(f"cannot make the run directory {self.dir}: {first_line(error)}")
        # One process per run: a second (the same --resume given twice, a run a killed sweep left
        # running) would write the same checkpoint.
        self.lock = FileLock(os.path.join(self.dir, RUN_LOCK))  # held until close()
        if not self.lock.held:
            fail(f"{self.dir} is in use: another process is training this run")
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
        self.writer = TensorBoardWriter(
            SummaryWriter(self.dir, purge_step=global_step + 1 if self.resumed else None), self.keep_fault
        )
        if not self.resumed:
            table = "\n".join(f"|{key}|{value}|" for key, value in dataclasses.asdict(args).items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        # Ctrl-C and SIGTERM only set a flag: the loop finishes its step, checkpoints, and exits.
        self.previous_handlers = {
            sig: signal.signal(sig, lambda signum, frame: self.stop_signal.append(signum))
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        self.previous_excepthook, threading.excepthook = threading.excepthook, self.keep_writer_fault
        self.progress = Progress(self.dir, total_steps or args.total_timesteps, global_step)
        if args.eval_episodes:  # an env of its own: evaluating never disturbs the training envs
            self.eval_env = make_eval_env(args.env_id, self.algorithm.upper(), args.capture_video)
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

    def save(self, model: dict, resume_state: dict, final: bool, device: torch.device) -> None:
        """models/step_N.pt and, at the end, final_model.pt (the policy); checkpoint.pt (all of it:
        `resume_state` holds what the algorithm needs to resume, and the run's own record is added).
        A file that cannot be written (a full disk) stops the run in one line; the last good
        checkpoint stays as it was, and resumes once the fault is mended."""
        step = model["global_step"]
        record = {
            "wandb_id": self.wandb_id,
            "wall_clock": self.wall_clock(),
            "sessions": [*self.sessions, self.session(step, device)],
        }
        try:
            if not os.path.isdir(self.dir):  # deleted under the run: do not quietly start another
                raise FileNotFoundError(self.dir)
            os.makedirs(os.path.join(self.dir, MODELS), exist_ok=True)
            save_atomically(model, snapshot_path(self.dir, step))
            if final:
                save_atomically(model, os.path.join(self.dir, FINAL_MODEL))
            save_atomically(
                {**model, "kind": "training", **resume_state, "run": record}, self.checkpoint_path
            )
        except (OSError, WriteError) as error:
            self.stop_on_write_fault(error)
        self.last_checkpoint_step = step

    def stop_on_write_fault(self, error: BaseException) -> NoReturn:
        """A file of the run could not be written (a full disk, the run's folder deleted): one line
        that says what and where the last good checkpoint is, which a resume continues from."""
        self.close()
        if isinstance(error, WriteError):  # it names the file and why
            reason = str(error)
        elif not os.path.isdir(self.dir):
            reason = f"the run directory {self.dir} is gone"
        else:
            reason = f"cannot write in {self.dir}: {getattr(error, 'strerror', None) or first_line(error)}"
        fail(f"{reason}; training stopped. Last good checkpoint: {self.last_good_checkpoint()}")

    def keep_writer_fault(self, hook_args) -> None:
        """threading.excepthook while the run is open: TensorBoard writes from a thread of its own,
        and a fault there (a full disk, the folder deleted) would print that thread's traceback and
        let training go on. It is kept instead, and the loop stops on it at its next report."""
        if isinstance(hook_args.exc_value, OSError):
            self.keep_fault(hook_args.exc_value)
        else:
            self.previous_excepthook(hook_args)

    def keep_fault(self, error: OSError) -> None:
        self.writer_fault = self.writer_fault or error

    def last_good_checkpoint(self) -> str:
        if self.last_checkpoint_step is None or not os.path.exists(self.checkpoint_path):
            return "none"
        return f"{self.checkpoint_path} (step {self.last_checkpoint_step})"

    def stop_non_finite(self, what: str) -> NoReturn:
        """Stop before a non-finite value reaches a checkpoint; the last good one stays."""
        self.close()  # an in-process caller (a notebook, a test) gets its Ctrl-C back
        fail(f"non-finite {what}; training stopped. Last good checkpoint: {self.last_good_checkpoint()}")

    def evaluation_due(self, global_step: int, step_size: int, finished: bool) -> bool:
        """Did the last `step_size` steps pass a multiple of --eval-every (or end the run)?"""
        return self.eval_env is not None and (
            crossed(global_step, step_size, self.args.eval_every) or finished
        )

    def checkpoint_due(self, global_step: int, step_size: int, finished: bool) -> bool:
        """A multiple of --checkpoint-every passed, the run ended, or a Ctrl-C or SIGTERM asks."""
        return (
            crossed(global_step, step_size, self.args.checkpoint_every) or finished or bool(self.stop_signal)
        )

    def report(
        self, global_step: int, episodes: Episodes, last_eval: tuple | None, finished: bool, envs
    ) -> None:
        """The progress line (every 10 s, and progress.json); after a Ctrl-C or SIGTERM, the exit."""
        last_mean = last_eval[0] if last_eval else None
        try:
            self.progress.update(global_step, episodes, last_mean, finished or bool(self.stop_signal))
        except OSError as error:
            self.stop_on_write_fault(error)
        if self.writer_fault is not None:
            self.stop_on_write_fault(self.writer_fault)
        if not finished:
            self.exit_if_signalled(global_step, envs)

    def evaluate(self, policy: Callable, global_step: int, log: bool = True) -> tuple:
        """--eval-episodes seeded episodes of `policy` on the evaluation env, logged (unless not
        `log`); with --capture-video, the first one's video. Returns the returns' mean and std."""
        args, env = self.args, self.eval_env
        video = args.capture_video and log
        returns, frames = evaluate(policy, env, args.eval_episodes, args.seed + 100_000, video)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        if not log:
            return mean, std
        self.writer.add_scalar("eval/episodic_return", mean, global_step)
        self.writer.add_scalar("eval/episodic_return_std", std, global_step)
        if frames:
            import imageio

            path = video_path(self.dir, global_step)
            os.makedirs(os.path.dirname(path), exist_ok=True)
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
            f"  python {ALGORITHMS[self.algorithm].script} --resume {self.checkpoint_path}",
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
            try:
                self.writer.close()
            except OSError:  # its folder is gone (deleted under the run): nothing left to flush to
                pass
            self.writer = None
        if self.eval_env is not None:
            self.eval_env.close()
            self.eval_env = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.previous_excepthook is not None:
            threading.excepthook, self.previous_excepthook = self.previous_excepthook, None
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)
        self.previous_handlers = {}


class TensorBoardWriter:
    """A SummaryWriter whose writes do not raise. TensorBoard writes from a thread of its own, and
    after a fault there (a full disk, the run's folder deleted) it raises that fault again from
    whichever add_scalar the loop calls next, as a traceback. The fault is kept instead, like the
    thread's own (Run.keep_writer_fault), and the loop stops on it in one line at its next report."""

    def __init__(self, writer, keep_fault: Callable[[OSError], None]):
        self.writer, self.keep_fault = writer, keep_fault

    def add_scalar(self, tag: str, value, global_step: int) -> None:
        try:
            self.writer.add_scalar(tag, value, global_step)
        except OSError as error:
            self.keep_fault(error)

    def add_text(self, tag: str, text: str) -> None:
        try:
            self.writer.add_text(tag, text)
        except OSError as error:
            self.keep_fault(error)

    def close(self) -> None:
        self.writer.close()


def envs_state(envs, episodes: Episodes) -> dict:
    """What a loop state saves of its envs: the episodes under way, and every env's simulator
    state (so a resumed run continues the very same episodes)."""
    return {**episodes.state_dict(), "env_states": get_env_states(envs)}


def restore_envs(envs, saved: dict, episodes: Episodes, env_id: str) -> bool:
    """The envs and the episodes where envs_state left them. False where an env's state cannot be
    restored (AsyncVectorEnv, an env that is neither MuJoCo nor classic control): the caller resets
    the envs, and the resumed episodes start afresh."""
    restored = set_env_states(envs, saved["env_states"], saved["prev_done"].numpy())
    episodes.load_state_dict(saved, episodes_too=restored)
    if not restored:
        print(f"note: the state of {env_id} cannot be saved here; resumed episodes start afresh")
    return restored


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
