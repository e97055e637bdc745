"""Soft Actor-Critic for continuous control, in one file.

    python sac_continuous.py --env-id Walker2d-v4
    python sac_continuous.py --resume runs/<run_name>/checkpoint.pt

Read top to bottom: hyperparameters, networks, replay buffer, the update, the loop state, and the
training loop. What holds no algorithm (checkpoint files, resume, run directories, logging,
signals, env creation) is in the actor_critic package. docs/sac.md documents the logged metrics and details.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from actor_critic import checkpoints, cli, environments, training
from actor_critic.cli import axis, fail, how

ALGORITHM = "sac"


@dataclass
class Args:
    # The run's name and seed (axes), and how it is carried out (plumbing, not the numbers).
    exp_name: str = axis("sac_continuous")
    """the name of this experiment, part of the run name"""
    seed: int = axis(1)
    """seed of the experiment (envs, warm-up actions, networks, sampling)"""
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

    # The algorithm: what a user tuning SAC changes.
    env_id: str = axis("HalfCheetah-v4")
    """the id of the environment (any registered env with a Box action space)"""
    total_timesteps: int = axis(1_000_000, resumable=True)
    """total environment steps, summed over the parallel envs (a resume may extend it)"""
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
    critic_layer_norm: bool = False
    """LayerNorm after each hidden layer of the critics (against value divergence; Nauman et al., 2024)"""
    precision: Literal["fp32", "bf16"] = "fp32"
    """the update's matrix products in bf16 (weights, optimizer, losses and log-densities stay fp32;
    needs native bf16: a CPU with avx512_bf16/AMX or an Ampere+ GPU); acting is always fp32"""

    # Plumbing: logging, evaluation, checkpoints.
    log_every: int = how(1_000)
    """log the losses every N gradient updates (CleanRL: 100; 1000 keeps a 1M-step run's events ~0.5 MB)"""
    eval_every: int = how(10_000)
    """evaluate the deterministic policy every N env steps (0: only at the end)"""
    eval_episodes: int = how(10)
    """episodes per evaluation, on a separate env (0: no evaluation)"""
    checkpoint_every: int = how(50_000)
    """write runs/<run_name>/checkpoint.pt every N env steps (0: only at the end)"""
    save_buffer: bool = how(False)
    """also store the replay buffer in the checkpoint, so that a resume loses nothing"""
    resume: str | None = how(None)
    """continue the run of this checkpoint.pt with its saved settings"""
    run_name: str | None = axis(None)
    """the run directory's name (default: {env_id}__{exp_name}__{seed}__{unix time})"""
    runs_dir: str = how("runs")
    """where run directories are created"""
    threads: int = how(0)
    """torch CPU threads (0: torch's default)"""


# What `benchmark.sh --tune --algos sac` searches unless told otherwise (docs/tuning.md says why).
# A flag that --set fixes is left out; --space adds flags or replaces these ranges.
TUNING_SPACE = {
    "policy-lr": "log:1e-4:1e-3",
    "q-lr": "log:1e-4:3e-3",
    "gamma": "0.98:0.999",
    "tau": "log:0.001:0.02",
    "batch-size": "128,256,512",
    "hidden-size": "128,256,512",
    "learning-starts": "1000,5000,10000",
    "critic-layer-norm": "false,true",
}


def check_args(args: Args) -> None:
    cli.check_numbers(
        args,
        positive=("total_timesteps", "num_envs", "buffer_size", "batch_size", "policy_lr", "q_lr", "tau")
        + ("policy_frequency", "target_network_frequency", "hidden_size", "log_every"),
        non_negative=("seed", "learning_starts", "eval_every", "eval_episodes", "checkpoint_every", "alpha")
        + ("threads",),
        unit_interval=("gamma",),
    )
    if not args.tau <= 1.0:
        fail(f"--tau must be in (0, 1], got {args.tau}")
    if args.autotune and args.alpha <= 0:
        fail(f"--alpha (the initial entropy coefficient) must be positive with --autotune, got {args.alpha}")
    if args.batch_size > args.buffer_size:
        fail(f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}")
    if args.num_envs > args.buffer_size:  # one step of the envs would overwrite itself
        fail(f"--num-envs {args.num_envs} is larger than --buffer-size {args.buffer_size}")
    if not args.save_model:
        fail("--no-save-model: this script always saves its models (final_model.pt, models/)")
    training.check_run_flags(args)


def check_memory(args: Args, obs_dim: int, act_dim: int) -> None:
    """Refuse now what this machine cannot hold: the replay buffer, and the networks (weights,
    gradients and two Adam moments each: the actor, the twin critic and its target)."""
    row_bytes = 4 * (2 * obs_dim + act_dim + 2)  # a float32 row of the buffer
    training.check_memory(args.buffer_size * row_bytes, f"--buffer-size {args.buffer_size}")
    weights = (3 * (obs_dim + act_dim) + 3 * args.hidden_size) * args.hidden_size
    training.check_memory(4 * 4 * weights, f"networks of --hidden-size {args.hidden_size}")


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
        # .float(): under bf16 autocast the head returns bf16; the log-density is computed in fp32.
        mean, log_std = self.head(self.trunk(obs)).float().chunk(2, dim=-1)
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
    """Both Q-networks as one ensemble: every layer is a single batched matmul over the members.

    With `layer_norm`, each hidden layer's output is normalized over its units, with a gain and a
    shift per member, before the ReLU: it bounds the features the last layer sees, which keeps
    Q-values from running away (Ball et al., 2023; Nauman et al., 2024).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, members: int = 2, layer_norm: bool = False):
        super().__init__()
        sizes = [obs_dim + act_dim, hidden, hidden, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per member
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))
        self.layer_norm = layer_norm
        self.norm_gains, self.norm_shifts = nn.ParameterList(), nn.ParameterList()  # empty without it
        for _ in range(len(sizes) - 2 if layer_norm else 0):
            self.norm_gains.append(nn.Parameter(torch.ones(members, 1, hidden)))
            self.norm_shifts.append(nn.Parameter(torch.zeros(members, 1, hidden)))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """Q-values of shape (members, batch). detach_params: gradients reach the inputs only."""
        x = torch.cat([obs, actions], dim=-1)
        x = x.expand(len(self.weights[0]), *x.shape)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if detach_params:
                weight, bias = weight.detach(), bias.detach()
            x = torch.baddbmm(bias, x, weight)
            if i < len(self.weights) - 1:
                if self.layer_norm:
                    gain, shift = self.norm_gains[i], self.norm_shifts[i]
                    if detach_params:
                        gain, shift = gain.detach(), shift.detach()
                    x = torch.addcmul(shift, F.layer_norm(x, x.shape[-1:]), gain)
                x = F.relu(x)
        return x.squeeze(-1).float()  # fp32 Q-values for the losses, also under bf16 autocast


def policy_function(
    actor: Actor, device: torch.device, stochastic: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """obs -> action in env units: tanh of the mean (as evaluated), or a squashed sample."""

    def act(obs: np.ndarray) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
        with torch.no_grad():
            action = actor(obs_t, with_log_prob=False)[0] if stochastic else actor.deterministic(obs_t)
        return action.cpu().numpy()

    return act


def policy_from_checkpoint(
    checkpoint: dict, path: str, device: str = "cpu", stochastic: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a loaded checkpoint (see load_policy)."""
    try:  # a damaged file is one line, whatever is wrong with it
        obs_dim, act_dim = checkpoint["observation_shape"][0], checkpoint["action_shape"][0]
        low, high = np.array(checkpoint["action_low"]), np.array(checkpoint["action_high"])
        actor = Actor(obs_dim, act_dim, checkpoint["args"]["hidden_size"], low, high)
        actor.load_state_dict(checkpoint["actor"])
    except (KeyError, IndexError, RuntimeError, TypeError, AttributeError, ValueError) as error:
        fail(f"{path} is damaged: its policy does not load ({cli.first_line(error)[:160]})")
    checkpoints.check_finite_policy(list(actor.parameters()), path)
    return policy_function(actor.to(device), torch.device(device), stochastic)


def load_policy(
    path: str, device: str = "cpu", stochastic: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """A trained SAC policy from final_model.pt, models/step_*.pt or checkpoint.pt, as a function
    from an observation (or a batch) to the action to take. Never runs code from the file."""
    return policy_from_checkpoint(checkpoints.load_policy_file(path, ALGORITHM), path, device, stochastic)


class Learner:
    """What SAC learns with: the actor, the twin critic and its target copy, their optimizers, and
    the entropy coefficient. state_dict() is what a checkpoint saves of them."""

    def __init__(self, args: Args, obs_dim: int, act_dim: int, low, high, device: torch.device):
        self.actor = Actor(obs_dim, act_dim, args.hidden_size, low, high).to(device)
        self.qf = TwinCritic(obs_dim, act_dim, args.hidden_size, layer_norm=args.critic_layer_norm).to(device)
        self.qf_target = copy.deepcopy(self.qf).requires_grad_(False)
        # Fused Adam: one kernel per optimizer step instead of one per parameter tensor.
        self.q_optimizer = torch.optim.Adam(self.qf.parameters(), lr=args.q_lr, fused=True)
        self.target_entropy = -float(act_dim)
        self.log_alpha = torch.tensor(
            math.log(args.alpha) if args.alpha > 0 else -math.inf, device=device, requires_grad=args.autotune
        )
        # The entropy coefficient rides in the actor's optimizer as a group of its own (lr: --q-lr,
        # as in CleanRL): one backward and one step serve both losses, which share no parameters.
        actor_groups = [{"params": list(self.actor.parameters())}]
        if args.autotune:
            actor_groups.append({"params": [self.log_alpha], "lr": args.q_lr})
        self.actor_optimizer = torch.optim.Adam(actor_groups, lr=args.policy_lr, fused=True)

    MODULES = ("actor", "qf", "qf_target", "q_optimizer", "actor_optimizer")

    def state_dict(self) -> dict:
        return {name: getattr(self, name).state_dict() for name in self.MODULES} | {
            "log_alpha": self.log_alpha.detach().cpu()
        }

    def load_state_dict(self, state: dict) -> None:
        for name in self.MODULES:
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])

    def parameters(self) -> list[torch.Tensor]:
        """What must stay finite: the actor's and the critics' weights."""
        return [*self.actor.parameters(), *self.qf.parameters()]


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
# The update: no host syncs in it; the losses are read (.item()) only when logged
# ---------------------------------------------------------------------------------------------


def update_critic(args: Args, learner: Learner, batch, alpha):
    obs, next_obs, actions, rewards, terminations = batch
    with torch.no_grad(), training.autocast(args.precision, obs.device):
        next_actions, next_log_prob = learner.actor(next_obs)
        next_q = learner.qf_target(next_obs, next_actions).min(dim=0).values - alpha * next_log_prob
        # Only termination stops bootstrapping; a time-limit truncation is stored as not terminated.
        td_target = rewards.flatten() + args.gamma * (1 - terminations.flatten()) * next_q
    with training.autocast(args.precision, obs.device):
        q_values = learner.qf(obs, actions)
    member_losses = (q_values - td_target).pow(2).mean(dim=1)
    qf_loss = member_losses.sum()
    learner.q_optimizer.zero_grad(set_to_none=True)
    qf_loss.backward()
    learner.q_optimizer.step()
    return q_values.detach(), member_losses.detach(), qf_loss.detach()


def update_actor(args: Args, learner: Learner, obs, alpha):
    with training.autocast(args.precision, obs.device):
        actions, log_prob = learner.actor(obs)
        q_pi = learner.qf(obs, actions, detach_params=True).min(dim=0).values
    actor_loss = (alpha * log_prob - q_pi).mean()  # alpha is detached: no gradient to it here
    alpha_loss = torch.zeros((), device=obs.device)
    if args.autotune:
        alpha_loss = (-learner.log_alpha.exp() * (log_prob.detach() + learner.target_entropy)).mean()
    learner.actor_optimizer.zero_grad(set_to_none=True)
    (actor_loss + alpha_loss).backward()
    learner.actor_optimizer.step()
    return actor_loss.detach(), alpha_loss.detach()


@torch.no_grad()
def update_target(target_params: list[torch.Tensor], params: list[torch.Tensor], tau: float) -> None:
    """Polyak averaging, target <- target + tau * (online - target), as one fused op. Under
    no_grad because the online weights require grad: an in-place op on the target would otherwise
    be recorded by autograd, and the target's history would grow by a node per update (in bf16
    runs, 4.6 KiB per step, and steps took 1.19x as long over steps 36k-165k; see docs/speed.md)."""
    torch._foreach_lerp_(target_params, params, tau)


def update(args: Args, learner: Learner, rb: ReplayBuffer, update_count: int, qf_params, qf_target_params):
    """One learning step of the loop: a batch, the critic's update, the actor's every
    policy_frequency steps (as many times, to make up for the delay, as in TD3/CleanRL), the target
    average. Returns the losses as tensors, whether they are finite (one bool tensor, read later,
    not here: no host sync), and the entropy coefficient the step used."""
    alpha = learner.log_alpha.exp().detach()
    batch = rb.sample(args.batch_size)
    q_values, member_losses, qf_loss = update_critic(args, learner, batch, alpha)
    losses = {"q_values": q_values, "member_losses": member_losses, "qf_loss": qf_loss}
    finite = torch.isfinite(qf_loss)
    if update_count % args.policy_frequency == 0:
        for _ in range(args.policy_frequency):
            actor_loss, alpha_loss = update_actor(args, learner, batch[0], alpha)
            losses |= {"actor_loss": actor_loss, "alpha_loss": alpha_loss}
            finite = finite & torch.isfinite(actor_loss)
    if update_count % args.target_network_frequency == 0:
        update_target(qf_target_params, qf_params, args.tau)
    return losses, finite, alpha


def log_losses(writer, args: Args, losses: dict, alpha: torch.Tensor, global_step: int, sps: int) -> None:
    q_values, member_losses = losses["q_values"], losses["member_losses"]
    writer.add_scalar("losses/qf1_values", q_values[0].mean().item(), global_step)
    writer.add_scalar("losses/qf2_values", q_values[1].mean().item(), global_step)
    writer.add_scalar("losses/qf1_loss", member_losses[0].item(), global_step)
    writer.add_scalar("losses/qf2_loss", member_losses[1].item(), global_step)
    writer.add_scalar("losses/qf_loss", losses["qf_loss"].item() / 2.0, global_step)
    if "actor_loss" in losses:  # a resumed run may log before its first actor update
        writer.add_scalar("losses/actor_loss", losses["actor_loss"].item(), global_step)
        if args.autotune:
            writer.add_scalar("losses/alpha_loss", losses["alpha_loss"].item(), global_step)
    writer.add_scalar("losses/alpha", alpha.item(), global_step)
    writer.add_scalar("charts/SPS", sps, global_step)


# ---------------------------------------------------------------------------------------------
# The loop state, and checkpoints of all of it
# ---------------------------------------------------------------------------------------------


@dataclass
class LoopState:
    """What the loop carries from one step to the next. With the networks, the optimizers, the
    buffer and the RNGs, it is what a checkpoint saves and a resume restores."""

    obs: np.ndarray
    episodes: training.Episodes
    finite_log: torch.Tensor  # whether each of the last updates was finite, a ring (not saved)
    global_step: int = 0
    update_count: int = 0  # gradient updates so far; the policy delay counts them
    learning_starts_at: int = 0  # no update before this step (later after a resume without buffer)

    def state_dict(self, envs) -> dict:
        return {
            "obs": torch.as_tensor(self.obs),
            **training.envs_state(envs, self.episodes),
            "action_space_rng": envs.action_space.np_random.bit_generator.state,
            "learning_starts_at": self.learning_starts_at,
            "update_count": self.update_count,
        }

    def load_state_dict(self, saved: dict, global_step: int, envs, args: Args) -> None:
        self.global_step, self.update_count = global_step, saved["update_count"]
        self.learning_starts_at = saved["learning_starts_at"]
        envs.action_space.np_random.bit_generator.state = saved["action_space_rng"]
        if training.restore_envs(envs, saved, self.episodes, args.env_id):
            self.obs = saved["obs"].numpy()
        else:
            self.obs, _ = envs.reset(seed=args.seed + global_step)


def save_checkpoint(
    run, args: Args, envs, state: LoopState, learner: Learner, rb, final: bool, device
) -> None:
    """The policy file(s) and checkpoint.pt: the learner, the RNGs, the loop state (and the buffer)."""
    model = checkpoints.policy_record(
        args, ALGORITHM, envs, state.global_step, actor=learner.actor.state_dict()
    )
    resume_state = {
        **learner.state_dict(),
        **checkpoints.rng_states(device),
        "loop_state": state.state_dict(envs),
    }
    if args.save_buffer:
        resume_state["buffer"] = rb.state_dict()
    run.save(model, resume_state, final, device)


def restore_checkpoint(
    checkpoint: dict, args: Args, envs, state: LoopState, learner: Learner, rb, device
) -> None:
    with checkpoints.restoring(args.resume):
        learner.load_state_dict(checkpoint)
        checkpoints.set_rng_states(checkpoint, device)
        state.load_state_dict(checkpoint["loop_state"], checkpoint["global_step"], envs, args)
        if "buffer" in checkpoint:
            rb.load_state_dict(checkpoint["buffer"])
    if "buffer" not in checkpoint and state.global_step < args.total_timesteps:
        # Without a saved buffer, refill it with the current policy before updating again (a step
        # of every env at least: the first may be all reset steps, which store nothing).
        refill = max(args.learning_starts, args.num_envs)
        state.learning_starts_at = state.global_step + refill
        print(
            f"note: no replay buffer in the checkpoint; refilling it for {refill} "
            f"steps with the current policy before learning resumes"
        )
    print(f"resuming {args.run_name} at step {state.global_step}")


def check_finite(run, state: LoopState, learner: Learner, num_envs: int) -> None:
    """Stop before a non-finite loss reaches a checkpoint; the last good one stays. The loop's
    `finite_log` holds one flag per update, a ring: the first bad one in it dates the failure."""
    if bool(state.finite_log.all()) and all(bool(torch.isfinite(p).all()) for p in learner.parameters()):
        return
    when, flags, updates = f"by step {state.global_step}", state.finite_log.tolist(), state.update_count
    for update in range(max(updates - len(flags), 0), updates):  # oldest first
        if not flags[update % len(flags)]:  # one update per vector step since learning began
            when = f"at step {state.global_step - (updates - 1 - update) * num_envs}"
            break
    run.stop_non_finite(f"loss or weights {when}")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train(args: Args) -> dict:
    """Train, or with `args.resume` continue a run with these settings (the command line lays the
    saved ones under what it gives; from Python, cli.resume_args does)."""
    # Adam moments of dead ReLU units decay into subnormal floats within a thousand updates, and
    # x86 computes on those ~30x slower. Flushing them to zero must come before torch starts its
    # worker threads, which inherit the setting.
    torch.set_flush_denormal(True)
    checkpoint = None
    if args.resume:
        checkpoint = checkpoints.load_checkpoint(args.resume)
        cli.check_resume(args, checkpoint)
    check_args(args)
    device = training.set_up_torch(args)

    envs = environments.make_vector_env(args.env_id, args.num_envs, needs="SAC", bounded=True)
    if checkpoint is not None:
        checkpoints.check_shapes(checkpoint, envs, args.resume, args.env_id)
    run = training.Run(args, ALGORITHM, checkpoint)
    act_space = envs.single_action_space
    obs_dim, act_dim = envs.single_observation_space.shape[0], act_space.shape[0]
    check_memory(args, obs_dim, act_dim)
    learner = Learner(args, obs_dim, act_dim, act_space.low, act_space.high, device)
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)
    actor = learner.actor  # acting and evaluation need only the actor

    envs.action_space.seed(args.seed)
    obs, _ = envs.reset(seed=args.seed)
    finite_log = torch.ones(100, dtype=torch.bool, device=device)
    state = LoopState(
        obs, training.Episodes(args.num_envs), finite_log, learning_starts_at=args.learning_starts
    )
    if checkpoint is not None:
        restore_checkpoint(checkpoint, args, envs, state, learner, rb, device)
    run.open_logs(state.global_step)
    qf_params, qf_target_params = list(learner.qf.parameters()), list(learner.qf_target.parameters())
    losses, last_eval, update_start = {}, None, None  # update_start: (time, step) of the first update
    obs_t = torch.as_tensor(state.obs, dtype=torch.float32, device=device)

    while state.global_step < args.total_timesteps:
        # ----- act: uniform random actions until learning starts, then the policy's samples -----
        if state.global_step < args.learning_starts:
            actions = envs.action_space.sample()
        else:
            with torch.no_grad():
                actions = actor(obs_t, with_log_prob=False)[0].cpu().numpy()
            if not np.isfinite(actions).all():  # already on the host: a free check each step
                check_finite(run, state, learner, args.num_envs)
        next_obs, rewards, terminations, truncations, _ = envs.step(actions)
        next_obs_t = torch.as_tensor(next_obs, dtype=torch.float32, device=device)

        # A reset step (after a done) is not a transition: keep it out of the buffer and the stats.
        is_transition = ~state.episodes.done
        if is_transition.any():
            rows = torch.as_tensor(is_transition, device=device)
            rb.add(
                obs_t[rows],
                next_obs_t[rows],
                torch.as_tensor(actions, dtype=torch.float32, device=device)[rows],
                torch.as_tensor(rewards, dtype=torch.float32, device=device)[rows],
                torch.as_tensor(terminations, dtype=torch.float32, device=device)[rows],
            )
        state.global_step += args.num_envs
        state.episodes.record(rewards, terminations | truncations, state.global_step, run.writer)
        state.obs, obs_t = next_obs, next_obs_t

        # ----- learn: one critic update per vector step, the actor's delayed -----
        if state.global_step > state.learning_starts_at:
            update_start = update_start or (time.time(), state.global_step - args.num_envs)
            step_losses, finite, alpha = update(
                args, learner, rb, state.update_count, qf_params, qf_target_params
            )
            losses |= step_losses  # the actor's losses stay from its last (delayed) update
            finite_log[state.update_count % len(finite_log)] = finite
            state.update_count += 1
            if state.update_count % len(finite_log) == 0:
                check_finite(run, state, learner, args.num_envs)
            if state.update_count % args.log_every == 0:
                sps = int((state.global_step - run.start_step) / (time.time() - run.start_time))
                log_losses(run.writer, args, losses, alpha, state.global_step, sps)

        # ----- evaluate, checkpoint, report -----
        finished = state.global_step >= args.total_timesteps
        if run.evaluation_due(state.global_step, args.num_envs, finished):
            check_finite(run, state, learner, args.num_envs)
            last_eval = run.evaluate(policy_function(actor, device), state.global_step)
        if run.checkpoint_due(state.global_step, args.num_envs, finished):
            check_finite(run, state, learner, args.num_envs)  # the last good checkpoint stays
            save_checkpoint(run, args, envs, state, learner, rb, finished, device)
        run.report(state.global_step, state.episodes, last_eval, finished, envs)

    if last_eval is None and run.eval_env is not None:  # resumed a finished run: evaluate it again
        last_eval = run.evaluate(policy_function(actor, device), state.global_step, log=False)
    if run.needs_final_save(state.global_step):
        check_finite(run, state, learner, args.num_envs)
        save_checkpoint(run, args, envs, state, learner, rb, True, device)
    update_sps = None
    if update_start is not None:
        update_sps = round((state.global_step - update_start[1]) / (time.time() - update_start[0]), 2)
    envs.close()
    protocol = "deterministic policy (tanh of the mean), one seeded episode each"
    return run.finish(last_eval, protocol, state.global_step, device, update_phase_sps=update_sps)


if __name__ == "__main__":
    train(cli.command_line(Args))
