"""Soft Actor-Critic for continuous control, in one file.

    python sac_continuous.py --env-id Walker2d-v4
    python sac_continuous.py --resume runs/<run_name>/checkpoint.pt

Read top to bottom: hyperparameters, environments, networks, replay buffer, checkpoints, the
training loop. The README documents the run directory and the checkpoint format.
"""

from __future__ import annotations

import copy
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
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "sac"
CHECKPOINT_FORMAT = "mujoco-actor-critic-checkpoint"
CHECKPOINT_VERSION = 1
# The -v4 ids are this project's default on purpose; their deprecation notice is noise here.
warnings.filterwarnings("ignore", message=".*is out of date.*")


@dataclass
class Args:
    exp_name: str = "sac_continuous"
    """the name of this experiment, part of the run name"""
    seed: int = 1
    """seed of the experiment (envs, warm-up actions, networks, sampling)"""
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
    num_envs: int = 1
    """the number of parallel environments (one gradient update per vector step)"""
    buffer_size: int = 1_000_000
    """the replay memory size, in transitions"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient: target <- (1 - tau) * target + tau * online"""
    batch_size: int = 256
    """the batch size of a gradient update"""
    learning_starts: int = 5_000
    """environment steps of uniform random actions before learning starts"""
    policy_lr: float = 3e-4
    """the learning rate of the policy network optimizer"""
    q_lr: float = 1e-3
    """the learning rate of the Q network optimizer"""
    policy_frequency: int = 2
    """the policy is updated every N updates, N times (delayed, TD3-style)"""
    target_network_frequency: int = 1
    """the target networks are updated every N updates"""
    alpha: float = 0.2
    """entropy regularization coefficient (the initial value when autotuned)"""
    autotune: bool = True
    """automatic tuning of the entropy coefficient towards a target entropy of -|A|"""
    hidden_size: int = 256
    """width of the two hidden layers of the actor and of each critic"""

    log_every: int = 1_000
    """log the losses every N gradient updates (CleanRL: 100; 1000 keeps a 1M-step run's events ~0.5 MB)"""
    eval_every: int = 10_000
    """evaluate the deterministic policy every N env steps (0: only at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env (0: no evaluation)"""
    checkpoint_every: int = 50_000
    """write runs/<run_name>/checkpoint.pt every N env steps (0: only at the end)"""
    save_buffer: bool = False
    """also store the replay buffer in the checkpoint, so that a resume loses nothing"""
    resume: str | None = None
    """continue the run of this checkpoint.pt with its saved settings"""
    run_name: str | None = None
    """the run directory's name (default: {env_id}__{exp_name}__{seed}__{unix time})"""
    runs_dir: str = "runs"
    """where run directories are created"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""


# Flags that may differ from the checkpoint's when resuming: they change how, not what, is trained.
RESUME_OVERRIDES = (
    "resume",
    "runs_dir",
    "cuda",
    "threads",
    "track",
    "checkpoint_every",
    "log_every",
    "save_buffer",
    "total_timesteps",
    "capture_video",
)


def fail(message: str) -> None:
    """Bad input ends the program with one clear line and a non-zero exit."""
    raise SystemExit(f"error: {message}")


def check_args(args: Args) -> None:
    positive = (
        "total_timesteps",
        "num_envs",
        "buffer_size",
        "batch_size",
        "policy_lr",
        "q_lr",
        "policy_frequency",
        "target_network_frequency",
        "hidden_size",
        "log_every",
    )
    for name in positive:
        if not getattr(args, name) > 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_starts", "eval_every", "eval_episodes", "checkpoint_every", "alpha", "threads"):
        if getattr(args, name) < 0:
            fail(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    if not 0.0 <= args.gamma <= 1.0:
        fail(f"--gamma must be in [0, 1], got {args.gamma}")
    if not 0.0 < args.tau <= 1.0:
        fail(f"--tau must be in (0, 1], got {args.tau}")
    if args.autotune and args.alpha <= 0:
        fail(f"--alpha (the initial entropy coefficient) must be positive with --autotune, got {args.alpha}")
    if args.batch_size > args.buffer_size:
        fail(f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """gym.make with a one-line error for ids that do not exist or spaces SAC cannot handle."""
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
        fail(f"SAC needs a continuous (Box) action space; {env_id} has {env.action_space}")
    if not np.all(np.isfinite(env.action_space.low) & np.isfinite(env.action_space.high)):
        fail(f"{env_id} has unbounded actions {env.action_space}; SAC squashes into finite bounds")
    if (
        not isinstance(env.observation_space, gym.spaces.Box)
        or env.observation_space.shape is None
        or len(env.observation_space.shape) != 1
    ):
        fail(f"SAC here needs a flat Box observation space; {env_id} has {env.observation_space}")
    return env


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    # Gymnasium 1.x autoresets on the *next* step: the step after a done returns the first
    # observation of a new episode with reward 0 and ignores the action. It is not a transition.
    make_env(env_id).close()  # validate once, with a clear error, before building the vector env
    return gym.vector.SyncVectorEnv([lambda: make_env(env_id) for _ in range(num_envs)])


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


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Actor(nn.Module):
    """Squashed Gaussian policy: a = tanh(u) * scale + bias with u ~ N(mean(s), std(s))."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, 2 * act_dim)  # mean and log std in one matmul
        low_t, high_t = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        # Env bounds may be anything finite (Humanoid: +-0.4, asymmetric in custom envs).
        self.register_buffer("action_scale", (high_t - low_t) / 2)
        self.register_buffer("action_bias", (high_t + low_t) / 2)

    def mean_and_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(self.trunk(obs)).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def forward(
        self, obs: torch.Tensor, with_log_prob: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A sampled action in env units and, unless only acting, its log-density."""
        mean, log_std = self.mean_and_log_std(obs)
        noise = torch.randn_like(mean)
        pre_tanh = mean + log_std.exp() * noise
        action = torch.tanh(pre_tanh) * self.action_scale + self.action_bias
        if not with_log_prob:
            return action, None
        # Gaussian log-density minus the log-Jacobian of tanh and the rescale, with the stable
        # identity log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)).
        log_terms = -0.5 * noise.pow(2) - log_std - 2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))
        constant = 0.5 * math.log(2 * math.pi) * mean.shape[-1] + self.action_scale.log().sum()
        return action, log_terms.sum(-1) - constant

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self.mean_and_log_std(obs)
        return torch.tanh(mean) * self.action_scale + self.action_bias


class TwinCritic(nn.Module):
    """Both Q-networks as one ensemble: every layer is a single batched matmul over the members."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, members: int = 2):
        super().__init__()
        sizes = [obs_dim + act_dim, hidden, hidden, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """Q-values of shape (members, batch). detach_params: gradients reach the inputs only."""
        x = torch.cat([obs, actions], dim=-1)
        x = x.expand(len(self.weights[0]), *x.shape)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if detach_params:
                weight, bias = weight.detach(), bias.detach()
            x = torch.baddbmm(bias, x, weight)
            if i < len(self.weights) - 1:
                x = F.relu(x)
        return x.squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Replay buffer
# ---------------------------------------------------------------------------------------------


class ReplayBuffer:
    """One preallocated tensor; a row is (obs, next_obs, action, reward, terminated).

    A row never spans an episode boundary: the caller leaves out autoreset steps, so next_obs is
    always the true successor, the final observation included.
    """

    def __init__(self, size: int, obs_dim: int, act_dim: int, device: torch.device):
        self.size, self.obs_dim, self.act_dim = size, obs_dim, act_dim
        self.storage = torch.zeros(size, 2 * obs_dim + act_dim + 2, device=device)
        self.pos, self.count = 0, 0

    def add(self, obs, next_obs, actions, rewards, terminations) -> None:
        rows = torch.cat([obs, next_obs, actions, rewards[:, None], terminations[:, None]], dim=1)
        index = (self.pos + torch.arange(len(rows), device=rows.device)) % self.size
        self.storage[index] = rows
        self.pos = (self.pos + len(rows)) % self.size
        self.count = min(self.count + len(rows), self.size)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        rows = self.storage[torch.randint(self.count, (batch_size,), device=self.storage.device)]
        return rows.split([self.obs_dim, self.obs_dim, self.act_dim, 1, 1], dim=1)

    def state_dict(self) -> dict:
        return {"storage": self.storage[: self.count].cpu().clone(), "pos": self.pos, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.storage[: state["count"]] = state["storage"].to(self.storage.device)
        self.pos, self.count = state["pos"], state["count"]


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
    saved, defaults = checkpoint["args"], Args()
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
    actor: Actor, env: gym.Env, episodes: int, seed: int, device: torch.device, record_frames: bool = False
) -> tuple[list[float], list[np.ndarray]]:
    """Deterministic policy, one episode per seed: the same start states at every evaluation."""
    returns, frames = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, episode_return = False, 0.0
        while not done:
            if record_frames and episode == 0:
                frames.append(env.render())
            with torch.no_grad():
                action = actor.deterministic(torch.as_tensor(obs, dtype=torch.float32, device=device))
            obs, reward, terminated, truncated, _ = env.step(action.cpu().numpy())
            episode_return += float(reward)
            done = terminated or truncated
        returns.append(episode_return)
    return returns, frames


def crossed(step: int, step_size: int, every: int) -> bool:
    """Did the last vector step pass a multiple of `every`?"""
    return every > 0 and step // every > (step - step_size) // every


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train(args: Args) -> dict:
    # Adam moments of dead ReLU units decay into subnormal floats within a thousand updates, and
    # x86 computes on those ~30x slower. Flushing them to zero must come before torch starts its
    # worker threads, which inherit the setting.
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

    envs = make_vector_env(args.env_id, args.num_envs)
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

    actor = Actor(obs_dim, act_dim, args.hidden_size, act_space.low, act_space.high).to(device)
    qf = TwinCritic(obs_dim, act_dim, args.hidden_size).to(device)
    qf_target = copy.deepcopy(qf).requires_grad_(False)
    # Fused Adam: one kernel per optimizer step instead of one per parameter tensor.
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.q_lr, fused=True)
    target_entropy = -float(act_dim)
    log_alpha = torch.tensor(
        math.log(args.alpha) if args.alpha > 0 else -math.inf, device=device, requires_grad=args.autotune
    )
    # The entropy coefficient rides in the actor's optimizer as a group of its own (lr: --q-lr, as
    # in CleanRL): one backward and one step serve both losses, which share no parameters.
    actor_groups = [{"params": list(actor.parameters())}]
    if args.autotune:
        actor_groups.append({"params": [log_alpha], "lr": args.q_lr})
    actor_optimizer = torch.optim.Adam(actor_groups, lr=args.policy_lr, fused=True)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)

    # The state of the rollout, all of it saved in a checkpoint.
    global_step, wall_clock_before, learning_starts_at = 0, 0.0, args.learning_starts
    update_count = 0  # gradient updates so far; the policy delay counts them
    envs.action_space.seed(args.seed)
    obs, _ = envs.reset(seed=args.seed)
    prev_done = np.zeros(args.num_envs, dtype=bool)  # True: this env's next step is a reset step
    episode_returns, episode_lengths = np.zeros(args.num_envs), np.zeros(args.num_envs, dtype=np.int64)
    recent_returns: deque = deque(maxlen=20)
    wandb_id = uuid.uuid4().hex[:12]

    if checkpoint is not None:
        actor.load_state_dict(checkpoint["actor"])
        qf.load_state_dict(checkpoint["qf"])
        qf_target.load_state_dict(checkpoint["qf_target"])
        q_optimizer.load_state_dict(checkpoint["q_optimizer"])
        actor_optimizer.load_state_dict(checkpoint["actor_optimizer"])
        with torch.no_grad():
            log_alpha.copy_(checkpoint["log_alpha"])
        rollout = checkpoint["rollout"]
        global_step, wall_clock_before = checkpoint["global_step"], rollout["wall_clock"]
        learning_starts_at, wandb_id = rollout["learning_starts_at"], rollout["wandb_id"]
        update_count = rollout["update_count"]
        recent_returns.extend(rollout["recent_returns"])
        torch.set_rng_state(checkpoint["torch_rng"])
        envs.action_space.np_random.bit_generator.state = rollout["action_space_rng"]
        if all(state is not None for state in rollout["env_states"]):
            for env, state in zip(envs.envs, rollout["env_states"], strict=True):
                set_env_state(env, state)
            obs = rollout["obs"].numpy()
            prev_done = rollout["prev_done"].numpy().copy()
            episode_returns = rollout["episode_returns"].numpy().copy()
            episode_lengths = rollout["episode_lengths"].numpy().copy()
            envs._autoreset_envs = prev_done.copy()  # the vector env's own copy of that flag
        else:
            print(f"note: the state of {args.env_id} cannot be saved; resumed episodes start afresh")
            obs, _ = envs.reset(seed=args.seed + global_step)
        if "buffer" in checkpoint:
            rb.load_state_dict(checkpoint["buffer"])
        elif global_step < args.total_timesteps:
            # Without a saved buffer, refill it with the current policy before updating again.
            learning_starts_at = global_step + args.learning_starts
            print(
                f"note: no replay buffer in the checkpoint; refilling it for {args.learning_starts} "
                f"steps with the current policy before learning resumes"
            )
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

    # ----- the update: no host syncs here; losses are read only when logged -----
    qf_params, qf_target_params = list(qf.parameters()), list(qf_target.parameters())
    finite_log = torch.ones(100, dtype=torch.bool, device=device)  # one flag per update, a ring

    def update_critic(obs_b, next_obs_b, actions_b, rewards_b, terminations_b, alpha):
        with torch.no_grad():
            next_actions, next_log_prob = actor(next_obs_b)
            next_q = qf_target(next_obs_b, next_actions).min(dim=0).values - alpha * next_log_prob
            # Only termination stops bootstrapping; a time-limit truncation is stored as not terminated.
            td_target = rewards_b.flatten() + args.gamma * (1 - terminations_b.flatten()) * next_q
        q_values = qf(obs_b, actions_b)
        member_losses = (q_values - td_target).pow(2).mean(dim=1)
        qf_loss = member_losses.sum()
        q_optimizer.zero_grad(set_to_none=True)
        qf_loss.backward()
        q_optimizer.step()
        return q_values.detach(), member_losses.detach(), qf_loss.detach()

    def update_actor(obs_b, alpha):
        actions, log_prob = actor(obs_b)
        q_pi = qf(obs_b, actions, detach_params=True).min(dim=0).values
        actor_loss = (alpha * log_prob - q_pi).mean()  # alpha is detached: no gradient to it here
        alpha_loss = torch.zeros((), device=device)
        if args.autotune:
            alpha_loss = (-log_alpha.exp() * (log_prob.detach() + target_entropy)).mean()
        actor_optimizer.zero_grad(set_to_none=True)
        (actor_loss + alpha_loss).backward()
        actor_optimizer.step()
        return actor_loss.detach(), alpha_loss.detach()

    def check_finite(step: int) -> None:
        """Stop before a non-finite loss reaches a checkpoint; the last good one stays."""
        params_ok = all(bool(torch.isfinite(p).all()) for p in [*actor.parameters(), *qf_params])
        if bool(finite_log.all()) and params_ok:
            return
        when = f"by step {step}"
        flags = finite_log.tolist()
        for update in range(max(update_count - len(flags), 0), update_count):  # oldest first
            if not flags[update % len(flags)]:  # one update per vector step since learning began
                when = f"at step {step - (update_count - 1 - update) * args.num_envs}"
                break
        last = (
            f"{checkpoint_path} (step {last_checkpoint_step})" if last_checkpoint_step is not None else "none"
        )
        fail(f"non-finite loss or weights {when}; training stopped. Last good checkpoint: {last}")

    def write_checkpoint(step: int, final: bool) -> None:
        nonlocal last_checkpoint_step
        check_finite(step)
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
            "global_step": step,
            "actor": actor.state_dict(),
            "kind": "model",
        }
        os.makedirs(os.path.join(run_dir, "models"), exist_ok=True)
        save_atomically(model, os.path.join(run_dir, "models", f"step_{step:08d}.pt"))
        if final:
            save_atomically(model, os.path.join(run_dir, "final_model.pt"))
        env_states = [get_env_state(env) for env in envs.envs]
        full = {
            **model,
            "kind": "training",
            "qf": qf.state_dict(),
            "qf_target": qf_target.state_dict(),
            "q_optimizer": q_optimizer.state_dict(),
            "actor_optimizer": actor_optimizer.state_dict(),
            "log_alpha": log_alpha.detach().cpu(),
            "torch_rng": torch.get_rng_state(),
            "rollout": {
                "obs": torch.as_tensor(obs),
                "prev_done": torch.as_tensor(prev_done),
                "episode_returns": torch.as_tensor(episode_returns),
                "episode_lengths": torch.as_tensor(episode_lengths),
                "env_states": env_states,
                "action_space_rng": envs.action_space.np_random.bit_generator.state,
                "recent_returns": list(recent_returns),
                "learning_starts_at": learning_starts_at,
                "update_count": update_count,
                "wandb_id": wandb_id,
                "wall_clock": wall_clock_before + time.time() - start_time,
            },
        }
        if args.save_buffer:
            full["buffer"] = rb.state_dict()
        save_atomically(full, checkpoint_path)
        last_checkpoint_step = step

    # Ctrl-C and SIGTERM finish the current step, write a checkpoint, and exit cleanly.
    stop_signal: list[int] = []
    previous_handlers = {
        sig: signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }

    start_time = time.time()
    start_step, last_checkpoint_step = global_step, (global_step if checkpoint else None)
    update_start_time, update_start_step = None, None
    last_print, last_eval = start_time, None
    obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)

    while global_step < args.total_timesteps:
        if global_step < args.learning_starts:
            actions = envs.action_space.sample()
        else:
            with torch.no_grad():
                actions = actor(obs_t, with_log_prob=False)[0].cpu().numpy()
            if not np.isfinite(actions).all():  # already on the host: a free check each step
                check_finite(global_step)

        next_obs, rewards, terminations, truncations, _ = envs.step(actions)
        next_obs_t = torch.as_tensor(next_obs, dtype=torch.float32, device=device)

        # A reset step (after a done) is not a transition: keep it out of the buffer and the stats.
        is_transition = ~prev_done
        if is_transition.any():
            rows = torch.as_tensor(is_transition, device=device)
            rb.add(
                obs_t[rows],
                next_obs_t[rows],
                torch.as_tensor(actions, dtype=torch.float32, device=device)[rows],
                torch.as_tensor(rewards, dtype=torch.float32, device=device)[rows],
                torch.as_tensor(terminations, dtype=torch.float32, device=device)[rows],
            )
        episode_returns = np.where(prev_done, 0.0, episode_returns + rewards)
        episode_lengths = np.where(prev_done, 0, episode_lengths + 1)
        prev_done = terminations | truncations
        global_step += args.num_envs
        for i in np.flatnonzero(prev_done):
            recent_returns.append(float(episode_returns[i]))
            writer.add_scalar("charts/episodic_return", episode_returns[i], global_step)
            writer.add_scalar("charts/episodic_length", episode_lengths[i], global_step)
        obs, obs_t = next_obs, next_obs_t

        if global_step > learning_starts_at:
            if update_start_time is None:
                update_start_time, update_start_step = time.time(), global_step - args.num_envs
            alpha = log_alpha.exp().detach()
            obs_b, next_obs_b, actions_b, rewards_b, terminations_b = rb.sample(args.batch_size)
            q_values, member_losses, qf_loss = update_critic(
                obs_b, next_obs_b, actions_b, rewards_b, terminations_b, alpha
            )
            finite = torch.isfinite(qf_loss)
            if update_count % args.policy_frequency == 0:
                for _ in range(args.policy_frequency):  # compensate for the delay, as in TD3/CleanRL
                    actor_loss, alpha_loss = update_actor(obs_b, alpha)
                    finite = finite & torch.isfinite(actor_loss)
            if update_count % args.target_network_frequency == 0:
                torch._foreach_lerp_(qf_target_params, qf_params, args.tau)
            finite_log[update_count % len(finite_log)] = finite
            update_count += 1

            if update_count % len(finite_log) == 0:
                check_finite(global_step)
            if update_count % args.log_every == 0:
                writer.add_scalar("losses/qf1_values", q_values[0].mean().item(), global_step)
                writer.add_scalar("losses/qf2_values", q_values[1].mean().item(), global_step)
                writer.add_scalar("losses/qf1_loss", member_losses[0].item(), global_step)
                writer.add_scalar("losses/qf2_loss", member_losses[1].item(), global_step)
                writer.add_scalar("losses/qf_loss", qf_loss.item() / 2.0, global_step)
                writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                writer.add_scalar("losses/alpha", alpha.item(), global_step)
                if args.autotune:
                    writer.add_scalar("losses/alpha_loss", alpha_loss.item(), global_step)
                sps = int((global_step - start_step) / (time.time() - start_time))
                writer.add_scalar("charts/SPS", sps, global_step)

        finished = global_step >= args.total_timesteps
        if eval_env is not None and (crossed(global_step, args.num_envs, args.eval_every) or finished):
            check_finite(global_step)
            eval_returns, frames = evaluate(
                actor,
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
        if crossed(global_step, args.num_envs, args.checkpoint_every) or finished or stop_signal:
            write_checkpoint(global_step, final=finished)

        now = time.time()
        if now - last_print >= 10 or finished or stop_signal:
            last_print = now
            sps = (global_step - start_step) / max(now - start_time, 1e-9)
            recent = f"{np.mean(recent_returns):9.1f}" if recent_returns else "        -"
            evaluated = f" | eval {last_eval[0]:9.1f}" if last_eval else ""
            time_left = format_duration((args.total_timesteps - global_step) / max(sps, 1e-9))
            print(
                f"step {global_step:>9}/{args.total_timesteps} | {sps:6.0f} steps/s | return {recent}"
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
        eval_returns, _ = evaluate(actor, eval_env, args.eval_episodes, args.seed + 100_000, device)
        last_eval = (float(np.mean(eval_returns)), float(np.std(eval_returns)))
    if last_checkpoint_step != global_step or not os.path.exists(os.path.join(run_dir, "final_model.pt")):
        write_checkpoint(global_step, final=True)
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
        "update_phase_sps": round((global_step - update_start_step) / (time.time() - update_start_time), 2)
        if update_start_time
        else None,
        "final_eval_mean": last_eval[0] if last_eval else None,
        "final_eval_std": last_eval[1] if last_eval else None,
        "final_eval_episodes": args.eval_episodes,
        "eval_protocol": "deterministic policy (tanh of the mean), one seeded episode each",
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
