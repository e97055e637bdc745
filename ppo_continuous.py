"""Proximal Policy Optimization for continuous control, in one file.

    python ppo_continuous.py --env-id HalfCheetah-v4
    python ppo_continuous.py --resume runs/<run_name>/checkpoint.pt

Read top to bottom: hyperparameters, normalization, the agent, advantages and the update, the loop
state, and the training loop (rollout, advantages, update). What holds no algorithm (checkpoint
files, resume, run directories, logging, signals, env creation) is in the actor_critic package. docs/ppo.md
documents the logged metrics and details.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from actor_critic import checkpoints, cli, environments, training
from actor_critic.cli import axis, fail, how

ALGORITHM = "ppo"


@dataclass
class Args:
    # The run's name and seed (axes), and how it is carried out (plumbing, not the numbers).
    exp_name: str = axis("ppo_continuous")
    """the name of this experiment, part of the run name"""
    seed: int = axis(1)
    """seed of the experiment (envs, networks, sampling)"""
    torch_deterministic: bool = how(True)
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = how(True)
    """if toggled, cuda is used when available"""
    track: bool = how(False)
    """if toggled, the run is mirrored to Weights & Biases (WANDB_MODE=offline works)"""
    wandb_project_name: str = how("mujoco-actor-critic")
    """the wandb project name"""
    wandb_entity: str | None = how(None)
    """the entity (team) of the wandb project"""
    capture_video: bool = how(False)
    """if toggled, the first episode of each evaluation is saved to runs/<run_name>/videos"""
    save_model: bool = how(True)
    """CleanRL's flag, accepted so its command lines run unchanged: the models are always saved"""

    # The algorithm: what a user tuning PPO changes.
    env_id: str = axis("HalfCheetah-v4")
    """the id of the environment (any registered env with a Box action space)"""
    total_timesteps: int = axis(1_000_000)
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
    minibatch_size: int = 0
    """the size of each minibatch instead (0: --num-minibatches decides); large-batch recipes set this"""
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
    """width of the two hidden layers of the policy and of the value network"""
    hidden_sizes: tuple[int, ...] = ()
    """the hidden layers' widths instead, e.g. 512 256 128 (empty: two of --hidden-size)"""
    activation: Literal["tanh", "relu", "elu"] = "tanh"
    """the hidden layers' activation"""
    kl_adaptive_lr: float = 0.0
    """adapt the learning rate to the approximate KL instead of annealing it (0: off; rl_games uses
    0.008): /1.5 after an epoch whose mean KL exceeds twice this, x1.5 after one under half of it"""
    log_std_init: float = -1.0
    """initial log standard deviation of the policy: -1 is std 0.37; CleanRL's 0 (std 1) flips HalfCheetah"""
    norm_obs: bool = True
    """normalize observations with running statistics (saved with the policy, frozen when evaluating)"""
    norm_reward: bool = True
    """scale rewards by the running std of the discounted return (training only)"""
    reward_scale: float = 1.0
    """multiply the rewards the agent learns from by this (rl_games' 0.1 goes with --no-norm-reward)"""
    norm_value: bool = False
    """the value network predicts returns normalized by their running mean and std (rl_games'
    normalize_value); the advantages are computed in the returns' own units"""
    precision: Literal["fp32", "bf16"] = "fp32"
    """the update's matrix products in bf16 (weights, optimizer, losses, ratios, advantages and
    normalizers stay fp32; needs native bf16: a CPU with avx512_bf16/AMX or an Ampere+ GPU); the
    rollout acts in fp32"""
    async_envs: bool = False
    """step each env in a subprocess of its own (Gymnasium's AsyncVectorEnv)"""
    env_workers: int = how(0)
    """step the envs in this many subprocesses, a share each (0: in this process); the same numbers
    for any count, and what pays with many envs on two cores or more"""

    # Plumbing: evaluation, checkpoints.
    eval_every: int = how(20_480)
    """evaluate the deterministic policy every N env steps, at the next rollout end (0: only at the end)"""
    eval_episodes: int = how(10)
    """episodes per evaluation, on a separate env (0: no evaluation)"""
    checkpoint_every: int = how(100_000)
    """write runs/<run_name>/checkpoint.pt every N env steps, at the next rollout end (0: only at the end)"""
    resume: str | None = how(None)
    """continue the run of this checkpoint.pt with its saved settings"""
    run_name: str | None = axis(None)
    """the run directory's name (default: {env_id}__{exp_name}__{seed}__{unix time})"""
    runs_dir: str = how("runs")
    """where run directories are created"""
    threads: int = how(1)
    """torch CPU threads (0: torch's default); 64-unit networks gain nothing from a second thread"""


# What `benchmark.sh --tune --algos ppo` searches unless told otherwise (docs/tuning.md says why):
# the knobs the PPO literature and this project's study found to matter, in ranges that stay
# stable. A flag that --set fixes is left out; --space adds flags or replaces these ranges.
TUNING_SPACE = {
    "learning-rate": "log:1e-5:1e-3",
    "gamma": "0.98:0.999",
    "gae-lambda": "0.9:0.99",
    "update-epochs": "int:3:10",
    "minibatch-size": "64,128,256,512,1024",
    "clip-coef": "0.1:0.3",
    "max-grad-norm": "log:0.3:3",
    "log-std-init": "-2:0",
    "activation": "tanh,elu",
}


def check_args(args: Args) -> None:
    cli.check_numbers(
        args,
        positive=("total_timesteps", "learning_rate", "num_envs", "num_steps", "num_minibatches")
        + ("update_epochs", "hidden_size", "reward_scale"),
        non_negative=("seed", "eval_every", "eval_episodes", "checkpoint_every", "threads", "ent_coef")
        + ("vf_coef", "clip_coef", "max_grad_norm", "target_kl", "minibatch_size", "kl_adaptive_lr")
        + ("env_workers",),
        unit_interval=("gamma", "gae_lambda"),
    )
    if not -87.0 <= args.log_std_init <= 88.0:  # exp() of it must be a float32 number, not 0 or inf
        fail(f"--log-std-init must be in [-87, 88], got {args.log_std_init}")
    batch = args.num_envs * args.num_steps
    if not args.minibatch_size and args.num_minibatches > batch:
        fail(f"--num-minibatches {args.num_minibatches} is larger than a rollout of {batch} steps")
    if args.minibatch_size > batch:
        fail(f"--minibatch-size {args.minibatch_size} is larger than a rollout of {batch} steps")
    if args.norm_adv and (
        args.minibatch_size == 1 or (not args.minibatch_size and args.num_minibatches == batch)
    ):
        fail("one-step minibatches leave --norm-adv nothing to normalize: make them larger, or --no-norm-adv")
    if not all(size > 0 for size in args.hidden_sizes):
        fail(f"--hidden-sizes must all be positive, got {' '.join(map(str, args.hidden_sizes))}")
    if args.kl_adaptive_lr and args.anneal_lr:
        fail("--kl-adaptive-lr sets the learning rate itself: give --no-anneal-lr with it")
    if args.async_envs and args.env_workers:
        fail("--async-envs and --env-workers are two ways to step the envs: give one")
    if not args.save_model:
        fail("--no-save-model: this script always saves its models (final_model.pt, models/)")
    training.check_run_flags(args)


def check_memory(args: Args, obs_dim: int, act_dim: int) -> None:
    """Refuse now what this machine cannot hold: a rollout and its copy as a batch, and the
    networks (weights, gradients and two Adam moments each)."""
    step_bytes = 4 * (obs_dim + act_dim + 3) + 3  # a step of one env: float32 and bool arrays
    rollout = f"a rollout of --num-steps {args.num_steps} x --num-envs {args.num_envs}"
    training.check_memory(2 * args.num_steps * args.num_envs * step_bytes, rollout)
    hidden = list(args.hidden_sizes) or [args.hidden_size] * 2
    weights = 2 * sum(a * b for a, b in zip([obs_dim, *hidden], [*hidden, act_dim], strict=True))
    training.check_memory(4 * 4 * weights, f"networks of --hidden-size(s) {' '.join(map(str, hidden))}")


# ---------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------


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


def normalized(obs_rms: RunningMeanStd | None, raw_obs: np.ndarray) -> np.ndarray:
    return (obs_rms.normalize(raw_obs) if obs_rms is not None else raw_obs).astype(np.float32)


def standardized(value_rms: RunningMeanStd, values: np.ndarray) -> np.ndarray:
    """Returns (or values) in the value network's normalized units: (x - mean) / std, unclipped."""
    return ((values - value_rms.mean) / np.sqrt(value_rms.var + 1e-8)).astype(np.float32)


def denormalized(value_rms: RunningMeanStd | None, outputs: np.ndarray) -> np.ndarray:
    """The value network's outputs in the returns' own units (unchanged without --norm-value)."""
    if value_rms is None:
        return outputs
    return (outputs * np.sqrt(value_rms.var + 1e-8) + value_rms.mean).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------------


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def mlp(sizes: list[int], activation: str, output_std: float) -> nn.Sequential:
    """Linear layers of these sizes, the activation between them, orthogonal initialisation."""
    layers = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [layer_init(nn.Linear(fan_in, fan_out)), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers, layer_init(nn.Linear(sizes[-2], sizes[-1]), std=output_std))


class Agent(nn.Module):
    """A Gaussian policy with a state-independent log std, and a separate value network."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int | tuple[int, ...],
        log_std_init: float = 0.0,
        activation: str = "tanh",
    ):
        super().__init__()
        hidden_sizes = list(hidden) if isinstance(hidden, tuple) else [hidden, hidden]
        self.critic = mlp([obs_dim, *hidden_sizes, 1], activation, output_std=1.0)
        self.actor_mean = mlp([obs_dim, *hidden_sizes, act_dim], activation, output_std=0.01)
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), log_std_init))
        self.activation = activation

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1).float()  # fp32 for the losses, also under bf16 autocast

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        """Sample (or score) an action: action, log-density, entropy, value.

        Written out rather than through torch.distributions.Normal, which validates its arguments
        and costs more than the math itself at these sizes.
        """
        mean = self.actor_mean(obs).float()  # the log-density in fp32, also under bf16 autocast
        log_std = self.actor_logstd.expand_as(mean)
        if action is None:
            noise = torch.randn_like(mean)
            action = mean + log_std.exp() * noise
        else:
            noise = (action - mean) / log_std.exp()
        log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * mean.shape[-1]
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
        return action, log_prob, entropy, self.get_value(obs)


NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0, dtype=x.dtype),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
}


def numpy_policy(agent: Agent, rng: np.random.Generator):
    """The policy and value function on a NumPy copy of the weights, for acting in the envs.

    A rollout acts on one observation per env at a time. At that size PyTorch spends nearly all
    of its time in per-operation overhead (a few microseconds each, for ~1 us of arithmetic in
    all), so NumPy on the same float32 weights acts about five times faster. The copy is taken
    again after every update. act(obs) returns what get_action_and_value does (action,
    log-density, value), with the noise drawn from `rng`.
    """
    weights = {name: tensor.detach().cpu().numpy() for name, tensor in agent.state_dict().items()}
    activation = NUMPY_ACTIVATIONS[agent.activation]
    last = len(agent.critic) - 1  # the Linear layers sit at 0, 2, ..., last

    def mlp(x: np.ndarray, prefix: str) -> np.ndarray:
        for i in range(0, last, 2):  # the hidden layers, then the linear output layer
            x = activation(x @ weights[f"{prefix}.{i}.weight"].T + weights[f"{prefix}.{i}.bias"])
        return x @ weights[f"{prefix}.{last}.weight"].T + weights[f"{prefix}.{last}.bias"]

    log_std = weights["actor_logstd"]
    std, log_density_offset = np.exp(log_std), -log_std.sum() - 0.5 * math.log(2 * math.pi) * log_std.size

    def act(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = obs.astype(np.float32)
        mean = mlp(obs, "actor_mean")
        noise = rng.standard_normal(mean.shape, dtype=np.float32)
        log_prob = -0.5 * np.square(noise).sum(-1) + log_density_offset
        return mean + std * noise, log_prob, mlp(obs, "critic")[:, 0]

    return act


def policy_function(
    agent: Agent,
    obs_rms: RunningMeanStd | None,
    low: np.ndarray,
    high: np.ndarray,
    device: torch.device,
    stochastic: bool = False,
) -> Callable[[np.ndarray], np.ndarray]:
    """obs -> action: the Gaussian mean (as evaluated) or a sample, of the observation normalized
    with the frozen statistics, clipped to the env's bounds as in training."""

    def act(obs: np.ndarray) -> np.ndarray:
        if obs_rms is not None:
            obs = obs_rms.normalize(obs)
        with torch.no_grad():
            mean = agent.actor_mean(torch.as_tensor(obs, dtype=torch.float32, device=device))
            action = mean + agent.actor_logstd[0].exp() * torch.randn_like(mean) if stochastic else mean
        return np.clip(action.cpu().numpy(), low, high)

    return act


def policy_from_checkpoint(
    checkpoint: dict, path: str, device: str = "cpu", stochastic: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a loaded checkpoint (see load_policy)."""
    obs_rms, tensors = None, []
    try:  # a damaged file is one line, whatever is wrong with it
        obs_dim, act_dim = checkpoint["observation_shape"][0], checkpoint["action_shape"][0]
        saved = checkpoint["args"]  # files from before --hidden-sizes and --activation have neither
        hidden = tuple(saved.get("hidden_sizes") or ()) or saved["hidden_size"]
        agent = Agent(obs_dim, act_dim, hidden, activation=saved.get("activation", "tanh"))
        agent.load_state_dict(checkpoint["agent"])
        # The observation statistics belong to the policy: restored, and frozen (never updated here).
        if checkpoint["obs_rms"] is not None:
            obs_rms = RunningMeanStd((obs_dim,))
            obs_rms.load_state_dict(checkpoint["obs_rms"])
            if obs_rms.mean.shape != (obs_dim,) or obs_rms.var.shape != (obs_dim,):
                raise ValueError(f"observation statistics of shape {obs_rms.mean.shape}")
            tensors = [torch.as_tensor(obs_rms.mean), torch.as_tensor(obs_rms.var)]
    except (KeyError, IndexError, RuntimeError, TypeError, AttributeError, ValueError) as error:
        fail(f"{path} is damaged: its policy does not load ({cli.first_line(error)[:160]})")
    checkpoints.check_finite_policy([*agent.parameters(), *tensors], path)
    low, high = (
        np.array(checkpoint["action_low"], np.float32),
        np.array(checkpoint["action_high"], np.float32),
    )
    return policy_function(agent.to(device), obs_rms, low, high, torch.device(device), stochastic)


def load_policy(
    path: str, device: str = "cpu", stochastic: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """A trained PPO policy from final_model.pt, models/step_*.pt or checkpoint.pt, as a function
    from an observation (or a batch) to the action to take, its normalization included. Never runs
    code from the file."""
    return policy_from_checkpoint(checkpoints.load_policy_file(path, ALGORITHM), path, device, stochastic)


class Learner:
    """What PPO learns with: the agent, its optimizer, and the running statistics that normalize
    observations, rewards and values. state_dict() is what a checkpoint saves of them."""

    def __init__(self, args: Args, obs_dim: int, act_dim: int, device: torch.device):
        hidden = args.hidden_sizes or args.hidden_size
        self.agent = Agent(obs_dim, act_dim, hidden, args.log_std_init, args.activation).to(device)
        self.optimizer = torch.optim.Adam(
            self.agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True
        )
        self.obs_rms = RunningMeanStd((obs_dim,)) if args.norm_obs else None
        self.return_rms = RunningMeanStd() if args.norm_reward else None
        self.value_rms = RunningMeanStd() if args.norm_value else None

    def state_dict(self) -> dict:
        return {
            "agent": self.agent.state_dict(),
            "obs_rms": self.obs_rms.state_dict() if self.obs_rms is not None else None,  # the policy's
            "optimizer": self.optimizer.state_dict(),
            "return_rms": self.return_rms.state_dict() if self.return_rms is not None else None,
            **({"value_rms": self.value_rms.state_dict()} if self.value_rms is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name in ("obs_rms", "return_rms", "value_rms"):
            if getattr(self, name) is not None:
                getattr(self, name).load_state_dict(state[name])


# ---------------------------------------------------------------------------------------------
# The update
# ---------------------------------------------------------------------------------------------


def advantages_and_returns(args: Args, rewards, values, terminations, dones, valid, next_value):
    """Generalized advantage estimation over a rollout (arrays of shape (num_steps, num_envs)).

    After a done at step t, step t+1 is a reset step whose stored observation is the episode's
    *final* observation: values[t+1] is exactly the bootstrap value a time-limit truncation
    needs. Termination cuts the bootstrap, any done cuts the GAE recursion, and reset steps get
    no advantage and no loss.
    """
    advantages = np.zeros_like(rewards)
    last_gae = np.zeros(args.num_envs, dtype=np.float32)
    for t in reversed(range(args.num_steps)):
        following_value = values[t + 1] if t + 1 < args.num_steps else next_value
        delta = rewards[t] + args.gamma * following_value * ~terminations[t] - values[t]
        last_gae = delta + args.gamma * args.gae_lambda * ~dones[t] * last_gae
        advantages[t] = last_gae * valid[t]
    return advantages, advantages + values


def adapt_learning_rate(
    optimizer, kl: float, threshold: float, low: float = 1e-6, high: float = 1e-2
) -> None:
    """rl_games' adaptive schedule ("standard": once an epoch, on its mean KL): an epoch that
    moved the policy too far slows the next one, one that barely moved it speeds it up."""
    group = optimizer.param_groups[0]
    if kl > 2.0 * threshold:
        group["lr"] = max(group["lr"] / 1.5, low)
    elif kl < 0.5 * threshold:
        group["lr"] = min(group["lr"] * 1.5, high)


def update(args: Args, agent: Agent, optimizer, batch: list[torch.Tensor]) -> dict:
    """PPO's clipped surrogate, value and entropy losses: --update-epochs passes over the rollout
    in --num-minibatches minibatches. Returns the last minibatch's losses and the epoch's KL."""
    b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values = batch
    clipfracs, approx_kl, old_approx_kl = [], torch.zeros(()), torch.zeros(())
    for _epoch in range(args.update_epochs):
        epoch_kls = []
        order = torch.randperm(len(b_obs), device=b_obs.device)
        minibatches = (
            order.split(args.minibatch_size) if args.minibatch_size else order.chunk(args.num_minibatches)
        )
        for minibatch in minibatches:
            with training.autocast(args.precision, b_obs.device):
                _, new_logprob, entropy, new_value = agent.get_action_and_value(
                    b_obs[minibatch], b_actions[minibatch]
                )
            logratio = new_logprob - b_logprobs[minibatch]
            ratio = logratio.exp()
            with torch.no_grad():
                old_approx_kl = (-logratio).mean()
                approx_kl = ((ratio - 1) - logratio).mean()
                clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())
                epoch_kls.append(approx_kl)

            mb_advantages = b_advantages[minibatch]
            if args.norm_adv and len(minibatch) > 1:
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
            elif args.norm_adv:  # a lone step (a rollout's remainder) has no spread: centred, it is 0
                mb_advantages = torch.zeros_like(mb_advantages)
            pg_loss = torch.max(
                -mb_advantages * ratio,
                -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef),
            ).mean()
            if args.clip_vloss:
                v_loss_unclipped = (new_value - b_returns[minibatch]).pow(2)
                v_clipped = b_values[minibatch] + torch.clamp(
                    new_value - b_values[minibatch], -args.clip_coef, args.clip_coef
                )
                v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - b_returns[minibatch]).pow(2)).mean()
            else:
                v_loss = 0.5 * (new_value - b_returns[minibatch]).pow(2).mean()
            entropy_loss = entropy.mean()
            loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
            optimizer.step()
        if args.kl_adaptive_lr:  # one host sync an epoch
            adapt_learning_rate(optimizer, torch.stack(epoch_kls).mean().item(), args.kl_adaptive_lr)
        if args.target_kl is not None and approx_kl.item() > args.target_kl:
            break
    return {
        "loss": loss,
        "v_loss": v_loss,
        "pg_loss": pg_loss,
        "entropy_loss": entropy_loss,
        "old_approx_kl": old_approx_kl,
        "approx_kl": approx_kl,
        "clipfrac": torch.stack(clipfracs).mean(),
    }


def log_update(
    writer, optimizer, stats: dict, values_buf, returns, valid, global_step: int, sps: float
) -> None:
    y_pred, y_true = values_buf.reshape(-1)[valid], returns.reshape(-1)[valid]
    var_y = np.var(y_true)
    explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
    writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
    writer.add_scalar("losses/value_loss", stats["v_loss"].item(), global_step)
    writer.add_scalar("losses/policy_loss", stats["pg_loss"].item(), global_step)
    writer.add_scalar("losses/entropy", stats["entropy_loss"].item(), global_step)
    writer.add_scalar("losses/old_approx_kl", stats["old_approx_kl"].item(), global_step)
    writer.add_scalar("losses/approx_kl", stats["approx_kl"].item(), global_step)
    writer.add_scalar("losses/clipfrac", stats["clipfrac"].item(), global_step)
    writer.add_scalar("losses/explained_variance", explained_var, global_step)
    writer.add_scalar("charts/SPS", int(sps), global_step)


# ---------------------------------------------------------------------------------------------
# The loop state, and checkpoints of all of it
# ---------------------------------------------------------------------------------------------


@dataclass
class LoopState:
    """What the loop carries from one rollout to the next. With the agent, the optimizer, the
    normalization statistics and the RNGs, it is what a checkpoint saves and a resume restores."""

    raw_obs: np.ndarray  # the envs' last observations, before normalization
    episodes: training.Episodes
    discounted_returns: np.ndarray  # per env, for reward scaling
    action_rng: np.random.Generator  # the rollout's exploration noise
    global_step: int = 0
    iteration: int = 0

    def state_dict(self, envs) -> dict:
        return {
            "iteration": self.iteration,
            "raw_obs": torch.as_tensor(self.raw_obs),
            **training.envs_state(envs, self.episodes),
            "discounted_returns": torch.as_tensor(self.discounted_returns),
            "action_rng": self.action_rng.bit_generator.state,
        }

    def load_state_dict(self, saved: dict, global_step: int, envs, args: Args) -> None:
        self.global_step, self.iteration = global_step, saved["iteration"]
        self.action_rng.bit_generator.state = saved["action_rng"]
        if training.restore_envs(envs, saved, self.episodes, args.env_id):
            self.raw_obs = saved["raw_obs"].numpy()
            self.discounted_returns = saved["discounted_returns"].numpy().copy()
        else:
            self.raw_obs, _ = envs.reset(seed=args.seed + global_step)


def save_checkpoint(run, args: Args, envs, state: LoopState, learner: Learner, final: bool, device) -> None:
    """The policy file(s) and checkpoint.pt: the learner, the RNGs and the loop state."""
    if not all(bool(torch.isfinite(p).all()) for p in learner.agent.parameters()):  # the last good one stays
        run.stop_non_finite(f"weights by step {state.global_step}")
    learned = learner.state_dict()
    policy = {"agent": learned["agent"], "obs_rms": learned["obs_rms"]}
    model = checkpoints.policy_record(args, ALGORITHM, envs, state.global_step, **policy)
    resume_state = {**learned, **checkpoints.rng_states(device), "loop_state": state.state_dict(envs)}
    run.save(model, resume_state, final, device)


def restore_checkpoint(
    checkpoint: dict, args: Args, envs, state: LoopState, learner: Learner, device
) -> None:
    with checkpoints.restoring(args.resume):
        learner.load_state_dict(checkpoint)
        checkpoints.set_rng_states(checkpoint, device)
        state.load_state_dict(checkpoint["loop_state"], checkpoint["global_step"], envs, args)
    print(f"resuming {args.run_name} at step {state.global_step}")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train(args: Args) -> dict:
    """Train, or with `args.resume` continue a run with these settings (the command line lays the
    saved ones under what it gives; from Python, cli.resume_args does)."""
    # Subnormal floats are ~30x slower on x86; flushing them must precede torch's worker threads.
    torch.set_flush_denormal(True)
    checkpoint = None
    if args.resume:
        checkpoint = checkpoints.load_checkpoint(args.resume)
        cli.check_resume(args, checkpoint)
    check_args(args)
    device = training.set_up_torch(args)
    batch_size = args.num_envs * args.num_steps
    num_iterations = math.ceil(args.total_timesteps / batch_size)  # at least the steps asked for

    envs = environments.make_vector_env(
        args.env_id, args.num_envs, "this PPO", asynchronous=args.async_envs, workers=args.env_workers
    )
    if checkpoint is not None:
        checkpoints.check_shapes(checkpoint, envs, args.resume, args.env_id)
    run = training.Run(args, ALGORITHM, checkpoint)
    act_space = envs.single_action_space
    obs_dim, act_dim = envs.single_observation_space.shape[0], act_space.shape[0]

    check_memory(args, obs_dim, act_dim)
    learner = Learner(args, obs_dim, act_dim, device)
    agent, optimizer = learner.agent, learner.optimizer
    obs_rms, return_rms, value_rms = learner.obs_rms, learner.return_rms, learner.value_rms

    # Rollout storage, preallocated on the host where the envs live: a numpy write costs far less
    # than a torch op, and the rollout moves to the device once, for the update. `valid` is False
    # on reset steps: they are not transitions.
    shape = (args.num_steps, args.num_envs)
    obs_buf = np.zeros((*shape, obs_dim), dtype=np.float32)
    actions_buf = np.zeros((*shape, act_dim), dtype=np.float32)
    logprobs_buf, rewards_buf, values_buf = (np.zeros(shape, dtype=np.float32) for _ in range(3))
    terminations_buf, dones_buf, valid_buf = (np.zeros(shape, dtype=bool) for _ in range(3))

    raw_obs, _ = envs.reset(seed=args.seed)
    if obs_rms is not None:
        obs_rms.update(raw_obs)
    episodes, discounted_returns = training.Episodes(args.num_envs), np.zeros(args.num_envs)
    state = LoopState(raw_obs, episodes, discounted_returns, np.random.default_rng(args.seed))
    if checkpoint is not None:
        restore_checkpoint(checkpoint, args, envs, state, learner, device)
    run.open_logs(state.global_step, total_steps=num_iterations * batch_size)
    last_eval, warm_up = None, None  # warm_up: (time, step) after this process's first iteration
    low, high = act_space.low, act_space.high
    next_obs = normalized(obs_rms, state.raw_obs)

    while state.iteration < num_iterations:
        state.iteration += 1
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (
                1.0 - (state.iteration - 1.0) / num_iterations
            ) * args.learning_rate

        # ----- rollout -----
        act = numpy_policy(agent, state.action_rng)
        for step in range(args.num_steps):
            state.global_step += args.num_envs
            obs_buf[step] = next_obs
            is_transition = valid_buf[step] = ~state.episodes.done
            actions_buf[step], logprobs_buf[step], values_buf[step] = act(next_obs)
            # The policy is an unbounded Gaussian; the env gets the action clipped to its bounds.
            raw_obs, rewards, terminations, truncations, _ = envs.step(np.clip(actions_buf[step], low, high))
            dones = terminations | truncations
            learned_rewards = rewards * args.reward_scale
            if return_rms is not None:
                state.discounted_returns = np.where(
                    state.episodes.done, 0.0, state.discounted_returns * args.gamma + learned_rewards
                )
                if is_transition.any():
                    return_rms.update(state.discounted_returns[is_transition])
                learned_rewards = np.clip(learned_rewards / np.sqrt(return_rms.var + 1e-8), -10.0, 10.0)
            rewards_buf[step] = learned_rewards * is_transition
            terminations_buf[step], dones_buf[step] = terminations, dones
            state.episodes.record(rewards, dones, state.global_step, run.writer)
            state.raw_obs = raw_obs
            if obs_rms is not None:
                obs_rms.update(raw_obs)
            next_obs = normalized(obs_rms, raw_obs)

        # ----- generalized advantage estimation -----
        with torch.no_grad():
            next_value = agent.get_value(torch.as_tensor(next_obs, device=device)).cpu().numpy()
        values, next_value = denormalized(value_rms, values_buf), denormalized(value_rms, next_value)
        advantages, returns = advantages_and_returns(
            args, rewards_buf, values, terminations_buf, dones_buf, valid_buf, next_value
        )
        valid = valid_buf.reshape(-1)
        value_targets, old_values = returns, values
        if value_rms is not None:  # the value network learns the returns in normalized units
            value_rms.update(returns.reshape(-1)[valid])
            value_targets, old_values = standardized(value_rms, returns), standardized(value_rms, values)

        # ----- the update, on valid transitions only -----
        batch = [
            torch.as_tensor(array.reshape(len(valid), *array.shape[2:])[valid], device=device)
            for array in (obs_buf, actions_buf, logprobs_buf, advantages, value_targets, old_values)
        ]
        stats = update(args, agent, optimizer, batch)
        if not math.isfinite(stats["loss"].item()):
            run.stop_non_finite(f"loss at step {state.global_step}")
        sps = (state.global_step - run.start_step) / max(time.time() - run.start_time, 1e-9)
        log_update(run.writer, optimizer, stats, values, returns, valid, state.global_step, sps)
        warm_up = warm_up or (time.time(), state.global_step)

        # ----- evaluate, checkpoint, report -----
        finished = state.iteration >= num_iterations
        if run.evaluation_due(state.global_step, batch_size, finished):
            last_eval = run.evaluate(policy_function(agent, obs_rms, low, high, device), state.global_step)
        if run.checkpoint_due(state.global_step, batch_size, finished):
            save_checkpoint(run, args, envs, state, learner, finished, device)
        run.report(state.global_step, state.episodes, last_eval, finished, envs)

    if last_eval is None and run.eval_env is not None:  # resumed a finished run: evaluate it again
        policy = policy_function(agent, obs_rms, low, high, device)
        last_eval = run.evaluate(policy, state.global_step, log=False)
    if run.needs_final_save(state.global_step):
        save_checkpoint(run, args, envs, state, learner, True, device)
    steady_sps = None
    if warm_up is not None and state.global_step > warm_up[1]:
        steady_sps = round((state.global_step - warm_up[1]) / (time.time() - warm_up[0]), 2)
    envs.close()
    protocol = (
        "deterministic policy (the Gaussian mean), frozen observation normalization, one seeded episode each"
    )
    return run.finish(last_eval, protocol, state.global_step, device, steady_sps=steady_sps)


if __name__ == "__main__":
    train(cli.command_line(Args))
