"""Proximal Policy Optimization for continuous control, in one file.

    python ppo_continuous.py --env-id HalfCheetah-v4
    python ppo_continuous.py --resume runs/<run_name>/checkpoint.pt

Read top to bottom: hyperparameters, environments, normalization, the agent, checkpoints, the
training loop. It follows sac_continuous.py's conventions: the same run directory, logging,
checkpoint format, resume and bad-input behaviour. The README documents them.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import signal
import time
import uuid
import warnings
from collections import deque
from dataclasses import asdict, dataclass, fields

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "ppo"
CHECKPOINT_FORMAT = "mujoco-actor-critic-checkpoint"
CHECKPOINT_VERSION = 1
# The -v4 ids are this project's default on purpose; their deprecation notice is noise here.
warnings.filterwarnings("ignore", message=".*is out of date.*")


@dataclass
class Args:
    exp_name: str = "ppo_continuous"
    """the name of this experiment, part of the run name"""
    seed: int = 1
    """seed of the experiment (envs, networks, sampling)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda is used when available"""
    track: bool = False
    """if toggled, the run is mirrored to Weights & Biases (WANDB_MODE=offline works)"""
    wandb_project_name: str = "mujoco-actor-critic"
    """the wandb project name"""
    wandb_entity: str | None = None
    """the entity (team) of the wandb project"""
    capture_video: bool = False
    """if toggled, the first episode of each evaluation is saved to runs/<run_name>/videos"""

    env_id: str = "HalfCheetah-v4"
    """the id of the environment (any registered env with a Box action space)"""
    total_timesteps: int = 1_000_000
    """total environment steps, summed over the parallel envs"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel environments"""
    num_steps: int = 2048
    """the number of steps per env in each rollout"""
    anneal_lr: bool = True
    """linearly anneal the learning rate to zero over training"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda of generalized advantage estimation"""
    num_minibatches: int = 32
    """the number of minibatches each rollout is split into"""
    update_epochs: int = 10
    """the number of passes over each rollout"""
    norm_adv: bool = True
    """normalize advantages within each minibatch"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """clip the value loss, as in the original PPO implementation"""
    ent_coef: float = 0.0
    """coefficient of the entropy bonus"""
    vf_coef: float = 0.5
    """coefficient of the value loss"""
    max_grad_norm: float = 0.5
    """the maximum norm of the gradient"""
    target_kl: float | None = None
    """stop the epochs of an update early when the approximate KL exceeds this"""
    hidden_size: int = 64
    """width of the two tanh hidden layers of the policy and of the value network"""
    log_std_init: float = -1.0
    """initial log standard deviation of the policy: -1 is std 0.37; CleanRL's 0 (std 1) flips HalfCheetah"""
    norm_obs: bool = True
    """normalize observations with running statistics (saved with the policy, frozen when evaluating)"""
    norm_reward: bool = True
    """scale rewards by the running std of the discounted return (training only)"""
    async_envs: bool = False
    """step the envs in subprocesses (pays for heavy envs and many --num-envs)"""

    eval_every: int = 20_480
    """evaluate the deterministic policy every N env steps, at the next rollout end (0: only at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env (0: no evaluation)"""
    checkpoint_every: int = 100_000
    """write runs/<run_name>/checkpoint.pt every N env steps, at the next rollout end (0: only at the end)"""
    resume: str | None = None
    """continue the run of this checkpoint.pt with its saved settings"""
    run_name: str | None = None
    """the run directory's name (default: {env_id}__{exp_name}__{seed}__{unix time})"""
    runs_dir: str = "runs"
    """where run directories are created"""
    threads: int = 1
    """torch CPU threads (0: torch's default); 64-unit networks gain nothing from a second thread"""


# Flags that may differ from the checkpoint's when resuming: they change how, not what, is trained.
RESUME_OVERRIDES = ("resume", "runs_dir", "cuda", "threads", "track", "checkpoint_every", "capture_video")


def fail(message: str) -> None:
    """Bad input ends the program with one clear line and a non-zero exit."""
    raise SystemExit(f"error: {message}")


def check_args(args: Args) -> None:
    positive = (
        "total_timesteps",
        "learning_rate",
        "num_envs",
        "num_steps",
        "num_minibatches",
        "update_epochs",
        "hidden_size",
    )
    for name in positive:
        if not getattr(args, name) > 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in (
        "eval_every",
        "eval_episodes",
        "checkpoint_every",
        "threads",
        "ent_coef",
        "vf_coef",
        "clip_coef",
        "max_grad_norm",
    ):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            fail(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    batch = args.num_envs * args.num_steps
    if args.num_minibatches > batch:
        fail(f"--num-minibatches {args.num_minibatches} is larger than a rollout of {batch} steps")


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """gym.make with a one-line error for ids that do not exist or spaces PPO cannot handle."""
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
        fail(f"this PPO needs a continuous (Box) action space; {env_id} has {env.action_space}")
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or space.shape is None or len(space.shape) != 1:
        fail(f"this PPO needs a flat Box observation space; {env_id} has {space}")
    return env


def make_vector_env(env_id: str, num_envs: int, asynchronous: bool) -> gym.vector.VectorEnv:
    # Gymnasium 1.x autoresets on the *next* step: the step after a done returns the first
    # observation of a new episode with reward 0 and ignores the action. It is not a transition.
    make_env(env_id).close()  # validate once, with a clear error, before building the vector env
    vector_env = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    return vector_env([lambda: make_env(env_id) for _ in range(num_envs)])


def find_wrapper(env: gym.Env, wrapper_type: type) -> gym.Wrapper | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, wrapper_type):
            return env
        env = env.env
    return None


def get_env_state(env: gym.Env) -> dict | None:
    """The full simulator state of one env, so a resumed run continues the very same episode."""
    inner, state = env.unwrapped, {}
    if hasattr(inner, "model") and hasattr(inner, "data"):  # a MuJoCo env
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        values = np.empty(mujoco.mj_stateSize(inner.model, spec))
        mujoco.mj_getState(inner.model, inner.data, values, spec)
        state["mujoco"] = torch.from_numpy(values)
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
    else:
        inner.state = state["state"].numpy().copy()
    inner.np_random.bit_generator.state = state["np_random"]
    time_limit = find_wrapper(env, gym.wrappers.TimeLimit)
    if time_limit:
        time_limit._elapsed_steps = state["elapsed_steps"]


class RunningMeanStd:
    """Running mean and variance over batches (Chan et al.'s parallel update), in float64."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, batch: np.ndarray) -> None:
        batch_mean, batch_var, batch_count = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        delta, total = batch_mean - self.mean, self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var, self.count = m2 / total, total

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -10.0, 10.0)

    def state_dict(self) -> dict:
        return {"mean": torch.as_tensor(self.mean), "var": torch.as_tensor(self.var), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"].numpy(), state["var"].numpy(), state["count"]


# ---------------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------------


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """A Gaussian policy with a state-independent log std, and a separate value network."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, log_std_init: float = 0.0):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, act_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), log_std_init))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """Sample (or score) an action: action, log-density, entropy, value.

        Written out rather than through torch.distributions.Normal, which validates its arguments
        and costs more than the math itself at these sizes.
        """
        mean = self.actor_mean(obs)
        log_std = self.actor_logstd.expand_as(mean)
        if action is None:
            noise = torch.randn_like(mean)
            action = mean + log_std.exp() * noise
        else:
            noise = (action - mean) / log_std.exp()
        log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * mean.shape[-1]
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
        return action, log_prob, entropy, self.get_value(obs)


def numpy_policy(agent: Agent, rng: np.random.Generator):
    """The policy and value function on a NumPy copy of the weights, for acting in the envs.

    A rollout acts on one observation per env at a time. At that size PyTorch spends nearly all
    of its time in per-operation overhead (a few microseconds each, for ~1 us of arithmetic in
    all), so NumPy on the same float32 weights acts about five times faster. The copy is taken
    again after every update. act(obs) returns what get_action_and_value does (action,
    log-density, value), with the noise drawn from `rng`.
    """
    weights = {name: tensor.detach().cpu().numpy() for name, tensor in agent.state_dict().items()}

    def mlp(x: np.ndarray, prefix: str) -> np.ndarray:
        for i in (0, 2):  # the tanh hidden layers, then the linear output layer
            x = np.tanh(x @ weights[f"{prefix}.{i}.weight"].T + weights[f"{prefix}.{i}.bias"])
        return x @ weights[f"{prefix}.4.weight"].T + weights[f"{prefix}.4.bias"]

    log_std = weights["actor_logstd"]
    std, log_density_offset = np.exp(log_std), -log_std.sum() - 0.5 * math.log(2 * math.pi) * log_std.size

    def act(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = obs.astype(np.float32)
        mean = mlp(obs, "actor_mean")
        noise = rng.standard_normal(mean.shape, dtype=np.float32)
        log_prob = -0.5 * np.square(noise).sum(-1) + log_density_offset
        return mean + std * noise, log_prob, mlp(obs, "critic")[:, 0]

    return act


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


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        fail(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupted, not a torch file, or unsafe to unpickle
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        fail(f"cannot read checkpoint {path}: {reason[:200]}")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        fail(f"{path} is not a checkpoint of this project")
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        fail(
            f"{path} has checkpoint format version {checkpoint.get('format_version')}, "
            f"this script reads version {CHECKPOINT_VERSION}"
        )
    return checkpoint


def args_for_resume(cli_args: Args, checkpoint: dict, path: str) -> Args:
    """The run continues with its saved settings; a flag that contradicts them is an error."""
    if checkpoint["algorithm"] != ALGORITHM:
        fail(
            f"{path} is a {checkpoint['algorithm']} checkpoint; resume it with "
            f"{checkpoint['algorithm']}_continuous.py"
        )
    if checkpoint["kind"] != "training":
        fail(f"{path} holds a policy only; resume needs the run's checkpoint.pt")
    # A flag since removed (--preset: its values are already in the saved fields) is left behind.
    known = {field.name for field in fields(Args)}
    saved = {name: value for name, value in checkpoint["args"].items() if name in known}
    defaults = Args()
    for field in fields(Args):
        given, name = getattr(cli_args, field.name), field.name
        if name in RESUME_OVERRIDES or given == getattr(defaults, name) or given == saved.get(name):
            continue
        fail(f"{path} was trained with --{name.replace('_', '-')} {saved.get(name)}, not {given}")
    # The flags a resume may change keep their saved values unless given (non-default) now.
    given = {name: getattr(cli_args, name) for name in RESUME_OVERRIDES}
    changed = {name: value for name, value in given.items() if value != getattr(defaults, name)}
    return Args(**{**saved, **changed, "resume": cli_args.resume})


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def evaluate(
    agent: Agent,
    obs_rms: RunningMeanStd | None,
    env: gym.Env,
    episodes: int,
    seed: int,
    device: torch.device,
    record_frames: bool = False,
) -> tuple[list[float], list[np.ndarray]]:
    """Deterministic policy (the Gaussian mean), frozen normalization, one episode per seed."""
    returns, frames = [], []
    low, high = env.action_space.low, env.action_space.high
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, episode_return = False, 0.0
        while not done:
            if record_frames and episode == 0:
                frames.append(env.render())
            if obs_rms is not None:
                obs = obs_rms.normalize(obs)
            with torch.no_grad():
                action = agent.actor_mean(torch.as_tensor(obs, dtype=torch.float32, device=device))
            obs, reward, terminated, truncated, _ = env.step(np.clip(action.cpu().numpy(), low, high))
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


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train(args: Args) -> dict:
    # Subnormal floats are ~30x slower on x86; flushing them must precede torch's worker threads.
    torch.set_flush_denormal(True)
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        args = args_for_resume(args, checkpoint, args.resume)
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    batch_size = args.num_envs * args.num_steps
    num_iterations = math.ceil(args.total_timesteps / batch_size)  # at least the steps asked for

    envs = make_vector_env(args.env_id, args.num_envs, args.async_envs)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    obs_dim, act_dim = obs_space.shape[0], act_space.shape[0]
    if checkpoint is not None:
        if (
            tuple(checkpoint["observation_shape"]) != obs_space.shape
            or tuple(checkpoint["action_shape"]) != act_space.shape
        ):
            fail(
                f"{args.resume} has observation/action shapes {checkpoint['observation_shape']}/"
                f"{checkpoint['action_shape']}, but {args.env_id} has {obs_space.shape}/{act_space.shape}"
            )
        run_dir = os.path.dirname(os.path.abspath(args.resume))
        run_name = args.run_name
    else:
        run_name = args.run_name or f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        args.run_name = run_name
        run_dir = os.path.join(args.runs_dir, run_name)
        if os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
            fail(
                f"{run_dir} already holds a run; continue it with --resume "
                f"{os.path.join(run_dir, 'checkpoint.pt')} or choose another --run-name"
            )
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")

    agent = Agent(obs_dim, act_dim, args.hidden_size, args.log_std_init).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    obs_rms = RunningMeanStd((obs_dim,)) if args.norm_obs else None
    return_rms = RunningMeanStd() if args.norm_reward else None

    # Rollout storage, preallocated on the host where the envs live: a numpy write costs far less
    # than a torch op, and the rollout moves to the device once, for the update. `valid` is False
    # on reset steps: they are not transitions.
    shape = (args.num_steps, args.num_envs)
    obs_buf = np.zeros((*shape, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((*shape, act_dim), dtype=np.float32)
    logprobs_buf, rewards_buf, values_buf = (np.zeros(shape, dtype=np.float32) for _ in range(3))
    terminations_buf, dones_buf, valid_buf = (np.zeros(shape, dtype=bool) for _ in range(3))

    # The state of the rollout, all of it saved in a checkpoint.
    global_step, iteration, wall_clock_before = 0, 0, 0.0
    raw_obs, _ = envs.reset(seed=args.seed)
    if obs_rms is not None:
        obs_rms.update(raw_obs)
    prev_done = np.zeros(args.num_envs, dtype=bool)  # True: this env's next step is a reset step
    episode_returns, episode_lengths = np.zeros(args.num_envs), np.zeros(args.num_envs, dtype=np.int64)
    discounted_returns = np.zeros(args.num_envs)  # for reward scaling
    recent_returns: deque = deque(maxlen=20)
    wandb_id = uuid.uuid4().hex[:12]
    action_rng = np.random.default_rng(args.seed)  # the rollout's exploration noise

    if checkpoint is not None:
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if obs_rms is not None:
            obs_rms.load_state_dict(checkpoint["obs_rms"])
        if return_rms is not None:
            return_rms.load_state_dict(checkpoint["return_rms"])
        rollout = checkpoint["rollout"]
        global_step, iteration = checkpoint["global_step"], rollout["iteration"]
        wall_clock_before, wandb_id = rollout["wall_clock"], rollout["wandb_id"]
        recent_returns.extend(rollout["recent_returns"])
        torch.set_rng_state(checkpoint["torch_rng"])
        action_rng.bit_generator.state = rollout["action_rng"]
        env_states = rollout["env_states"]
        if not args.async_envs and all(state is not None for state in env_states):
            for env, state in zip(envs.envs, env_states, strict=True):
                set_env_state(env, state)
            raw_obs = rollout["raw_obs"].numpy()
            prev_done = rollout["prev_done"].numpy().copy()
            episode_returns = rollout["episode_returns"].numpy().copy()
            episode_lengths = rollout["episode_lengths"].numpy().copy()
            discounted_returns = rollout["discounted_returns"].numpy().copy()
            envs._autoreset_envs = prev_done.copy()  # the vector env's own copy of that flag
        else:
            print(f"note: the state of {args.env_id} cannot be saved here; resumed episodes start afresh")
            raw_obs, _ = envs.reset(seed=args.seed + global_step)
        print(f"resuming {run_name} at step {global_step}")

    os.makedirs(run_dir, exist_ok=True)
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=asdict(args),
            name=run_name,
            id=wandb_id,
            resume="allow",
            dir=run_dir,
            save_code=True,
        )
    # purge_step drops what a killed run logged after its last checkpoint: TensorBoard continues.
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)
    if checkpoint is None:
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n" + "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items()),
        )
    eval_env = None
    if args.eval_episodes > 0:
        eval_env = make_env(args.env_id, render_mode="rgb_array" if args.capture_video else None)
        if args.capture_video and hasattr(eval_env.unwrapped, "model"):
            # MuJoCo's default 4096-texel shadow map is much of a frame's cost when drawn in
            # software (no GPU); one of 1024 looks the same in a 480-pixel video.
            quality = eval_env.unwrapped.model.vis.quality
            quality.shadowsize = min(quality.shadowsize, 1024)

    def normalize(raw: np.ndarray) -> np.ndarray:
        return (obs_rms.normalize(raw) if obs_rms is not None else raw).astype(np.float32)

    def stop_non_finite(what: str) -> None:
        """Stop before a non-finite value reaches a checkpoint; the last good one stays."""
        last = (
            f"{checkpoint_path} (step {last_checkpoint_step})" if last_checkpoint_step is not None else "none"
        )
        fail(f"non-finite {what}; training stopped. Last good checkpoint: {last}")

    def write_checkpoint(final: bool) -> None:
        nonlocal last_checkpoint_step
        if not all(bool(torch.isfinite(p).all()) for p in agent.parameters()):
            stop_non_finite(f"weights by step {global_step}")
        model = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "algorithm": ALGORITHM,
            "env_id": args.env_id,
            "args": asdict(args),
            "observation_shape": list(obs_space.shape),
            "action_shape": list(act_space.shape),
            "action_low": act_space.low.tolist(),
            "action_high": act_space.high.tolist(),
            "global_step": global_step,
            "agent": agent.state_dict(),
            "obs_rms": obs_rms.state_dict() if obs_rms is not None else None,
            "kind": "model",
        }
        os.makedirs(os.path.join(run_dir, "models"), exist_ok=True)
        save_atomically(model, os.path.join(run_dir, "models", f"step_{global_step:08d}.pt"))
        if final:
            save_atomically(model, os.path.join(run_dir, "final_model.pt"))
        env_states = [None] * args.num_envs if args.async_envs else [get_env_state(e) for e in envs.envs]
        full = {
            **model,
            "kind": "training",
            "optimizer": optimizer.state_dict(),
            "return_rms": return_rms.state_dict() if return_rms is not None else None,
            "torch_rng": torch.get_rng_state(),
            "rollout": {
                "iteration": iteration,
                "raw_obs": torch.as_tensor(raw_obs),
                "prev_done": torch.as_tensor(prev_done),
                "episode_returns": torch.as_tensor(episode_returns),
                "episode_lengths": torch.as_tensor(episode_lengths),
                "discounted_returns": torch.as_tensor(discounted_returns),
                "action_rng": action_rng.bit_generator.state,
                "env_states": env_states,
                "recent_returns": list(recent_returns),
                "wandb_id": wandb_id,
                "wall_clock": wall_clock_before + time.time() - start_time,
            },
        }
        save_atomically(full, checkpoint_path)
        last_checkpoint_step = global_step

    # Ctrl-C and SIGTERM finish the current rollout and update, write a checkpoint, and exit cleanly.
    stop_signal: list[int] = []
    previous_handlers = {
        sig: signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    start_time = time.time()
    start_step, last_checkpoint_step = global_step, (global_step if checkpoint else None)
    last_print, last_eval = start_time, None
    warm_time, warm_step = None, None  # when this process finished its first iteration: speed after warm-up
    low, high = act_space.low, act_space.high
    next_obs = normalize(raw_obs)

    while iteration < num_iterations:
        iteration += 1
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * args.learning_rate

        # ----- rollout -----
        act = numpy_policy(agent, action_rng)
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs_buf[step] = next_obs
            is_transition = valid_buf[step] = ~prev_done
            actions_buf[step], logprobs_buf[step], values_buf[step] = act(next_obs)
            # The policy is an unbounded Gaussian; the env gets the action clipped to its bounds.
            raw_obs, rewards, terminations, truncations, _ = envs.step(np.clip(actions_buf[step], low, high))
            dones = terminations | truncations

            episode_returns = np.where(prev_done, 0.0, episode_returns + rewards)
            episode_lengths = np.where(prev_done, 0, episode_lengths + 1)
            if return_rms is not None:
                discounted_returns = np.where(prev_done, 0.0, discounted_returns * args.gamma + rewards)
                if is_transition.any():
                    return_rms.update(discounted_returns[is_transition])
                rewards = np.clip(rewards / np.sqrt(return_rms.var + 1e-8), -10.0, 10.0)
            rewards_buf[step] = rewards * is_transition
            terminations_buf[step], dones_buf[step] = terminations, dones
            for i in np.flatnonzero(dones):
                recent_returns.append(float(episode_returns[i]))
                writer.add_scalar("charts/episodic_return", episode_returns[i], global_step)
                writer.add_scalar("charts/episodic_length", episode_lengths[i], global_step)
            prev_done = dones
            if obs_rms is not None:
                obs_rms.update(raw_obs)
            next_obs = normalize(raw_obs)

        # ----- generalized advantage estimation -----
        # After a done at step t, step t+1 is a reset step whose stored observation is the
        # episode's *final* observation: values[t+1] is exactly the bootstrap value a time-limit
        # truncation needs. Termination cuts the bootstrap, any done cuts the GAE recursion, and
        # reset steps get no advantage and no loss.
        with torch.no_grad():
            next_value = agent.get_value(torch.as_tensor(next_obs, device=device)).cpu().numpy()
        advantages = np.zeros_like(rewards_buf)
        last_gae = np.zeros(args.num_envs, dtype=np.float32)
        for t in reversed(range(args.num_steps)):
            following_value = values_buf[t + 1] if t + 1 < args.num_steps else next_value
            delta = rewards_buf[t] + args.gamma * following_value * ~terminations_buf[t] - values_buf[t]
            last_gae = delta + args.gamma * args.gae_lambda * ~dones_buf[t] * last_gae
            advantages[t] = last_gae * valid_buf[t]
        returns = advantages + values_buf

        # ----- the update, on valid transitions only -----
        valid = valid_buf.reshape(-1)
        b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values = [
            torch.as_tensor(array.reshape(len(valid), *array.shape[2:])[valid], device=device)
            for array in (obs_buf, actions_buf, logprobs_buf, advantages, returns, values_buf)
        ]
        clipfracs, approx_kl, old_approx_kl = [], torch.zeros(()), torch.zeros(())
        for _epoch in range(args.update_epochs):
            for minibatch in torch.randperm(len(b_obs), device=device).chunk(args.num_minibatches):
                _, new_logprob, entropy, new_value = agent.get_action_and_value(
                    b_obs[minibatch], b_actions[minibatch]
                )
                logratio = new_logprob - b_logprobs[minibatch]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())

                mb_advantages = b_advantages[minibatch]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                pg_loss = torch.max(
                    -mb_advantages * ratio,
                    -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef),
                ).mean()
                if args.clip_vloss:
                    v_loss_unclipped = (new_value - b_returns[minibatch]).pow(2)
                    v_clipped = b_values[minibatch] + torch.clamp(
                        new_value - b_values[minibatch], -args.clip_coef, args.clip_coef
                    )
                    v_loss = (
                        0.5 * torch.max(v_loss_unclipped, (v_clipped - b_returns[minibatch]).pow(2)).mean()
                    )
                else:
                    v_loss = 0.5 * (new_value - b_returns[minibatch]).pow(2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
                optimizer.step()
            if args.target_kl is not None and approx_kl.item() > args.target_kl:
                break

        if not math.isfinite(loss.item()):
            stop_non_finite(f"loss at step {global_step}")

        y_pred, y_true = values_buf.reshape(-1)[valid], returns.reshape(-1)[valid]
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        sps = (global_step - start_step) / max(time.time() - start_time, 1e-9)
        writer.add_scalar("charts/SPS", int(sps), global_step)
        if warm_time is None:
            warm_time, warm_step = time.time(), global_step

        finished = iteration >= num_iterations
        if eval_env is not None and (crossed(global_step, batch_size, args.eval_every) or finished):
            eval_returns, frames = evaluate(
                agent,
                obs_rms,
                eval_env,
                args.eval_episodes,
                args.seed + 100_000,
                device,
                record_frames=args.capture_video,
            )
            last_eval = (float(np.mean(eval_returns)), float(np.std(eval_returns)))
            writer.add_scalar("eval/episodic_return", last_eval[0], global_step)
            writer.add_scalar("eval/episodic_return_std", last_eval[1], global_step)
            if frames:
                import imageio

                os.makedirs(os.path.join(run_dir, "videos"), exist_ok=True)
                imageio.mimwrite(
                    os.path.join(run_dir, "videos", f"eval_step_{global_step:08d}.mp4"),
                    frames,
                    fps=eval_env.metadata.get("render_fps", 30),
                )
        if crossed(global_step, batch_size, args.checkpoint_every) or finished or stop_signal:
            write_checkpoint(final=finished)

        now = time.time()
        if now - last_print >= 10 or finished or stop_signal:
            last_print = now
            recent = f"{np.mean(recent_returns):9.1f}" if recent_returns else "        -"
            evaluated = f" | eval {last_eval[0]:9.1f}" if last_eval else ""
            time_left = format_duration((num_iterations * batch_size - global_step) / max(sps, 1e-9))
            print(
                f"step {global_step:>9}/{num_iterations * batch_size} | {sps:6.0f} steps/s | return {recent}"
                f"{evaluated} | left {time_left}",
                flush=True,
            )
        if stop_signal and not finished:
            name = signal.Signals(stop_signal[0]).name
            print(
                f"{name}: checkpoint written at step {global_step}; continue with:\n"
                f"  python {os.path.basename(__file__)} --resume {checkpoint_path}",
                flush=True,
            )
            envs.close()
            writer.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            raise SystemExit(128 + stop_signal[0])

    if last_eval is None and eval_env is not None:  # resumed a finished run: evaluate it again
        eval_returns, _ = evaluate(agent, obs_rms, eval_env, args.eval_episodes, args.seed + 100_000, device)
        last_eval = (float(np.mean(eval_returns)), float(np.std(eval_returns)))
    if last_checkpoint_step != global_step or not os.path.exists(os.path.join(run_dir, "final_model.pt")):
        write_checkpoint(final=True)
    wall_clock = wall_clock_before + time.time() - start_time
    summary = {
        "algorithm": ALGORITHM,
        "env_id": args.env_id,
        "seed": args.seed,
        "run_name": run_name,
        "total_timesteps": args.total_timesteps,
        "global_step": global_step,
        "wall_clock_s": round(wall_clock, 2),
        "sps": round((global_step - start_step) / max(time.time() - start_time, 1e-9), 2),
        "steady_sps": round((global_step - warm_step) / (time.time() - warm_time), 2)
        if warm_step is not None and global_step > warm_step
        else None,
        "final_eval_mean": last_eval[0] if last_eval else None,
        "final_eval_std": last_eval[1] if last_eval else None,
        "final_eval_episodes": args.eval_episodes,
        "eval_protocol": "deterministic policy (the Gaussian mean), frozen observation normalization, "
        "one seeded episode each",
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    envs.close()
    if eval_env is not None:
        eval_env.close()
    writer.close()
    if args.track:
        wandb.finish()
    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)
    return summary


if __name__ == "__main__":
    train(tyro.cli(Args))
