"""Quick checks of ppo_continuous.py: truncation and reset steps, normalization statistics,
resume, a learning check, the knobs of large-batch recipes, env workers. The checks every algorithm
passes (smoke runs, determinism, a killed run resumed, bad input) are in test_algorithms.py."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from actor_critic import cli, environments, training
from ppo_continuous import Agent, RunningMeanStd, numpy_policy, policy_function, train
from tests.helpers import (
    REPO,
    assert_learns_known_values,
    assert_same_training_state,
    command_line,
    expect_error,
    load,
    run_dir,
    start,
    wait_for_step,
)

LEARNING_STEPS, LEARNING_THRESHOLD = 40960, 500


def agent_from(checkpoint):
    agent = Agent(
        checkpoint["observation_shape"][0], checkpoint["action_shape"][0], checkpoint["args"]["hidden_size"]
    )
    agent.load_state_dict(checkpoint["agent"])
    return agent


def values(checkpoint, observations):
    with torch.no_grad():
        return agent_from(checkpoint).get_value(torch.tensor(observations, dtype=torch.float32))


# --------------------------------------------------------------------------------------------
# Truncation and reset steps
# --------------------------------------------------------------------------------------------


# Training on the toy envs whose values are known: no normalization, a constant learning rate.
KNOWN_VALUE_SETTINGS = dict(
    gae_lambda=0.95,
    norm_obs=False,
    norm_reward=False,
    total_timesteps=16384,
    num_steps=512,
    num_minibatches=4,
    update_epochs=4,
    learning_rate=3e-3,
    anneal_lr=False,
    clip_vloss=False,
)


def test_truncation_bootstraps_and_reset_steps_are_not_transitions(tiny_ppo):
    # Truncated after 5 steps with one constant observation: V = 2. Treating truncation as
    # termination, or taking the reset step (reward 0) for a transition, would both pull V down
    # to about 1.67. Terminating at t=3: V(t) = 1.75, 1.5, 1.0.
    assert_learns_known_values(train, tiny_ppo, values, **KNOWN_VALUE_SETTINGS)


def test_advantages_by_hand_at_truncation_termination_and_reset_steps():
    # Env 0, gamma 0.5, lambda 1: t0 a step; t1 truncated (bootstraps from its final observation,
    # whose value the reset step t2 holds: 10); t2 the reset step; t3 terminated (no bootstrap,
    # although the next reset step holds a value, 100); t4 that reset step. Env 1 never ends and
    # bootstraps from the value after the rollout (7).
    from types import SimpleNamespace

    from ppo_continuous import advantages_and_returns

    args = SimpleNamespace(num_envs=2, num_steps=5, gamma=0.5, gae_lambda=1.0)
    column = lambda *xs: np.array(xs, dtype=np.float32)  # noqa: E731
    rewards = np.stack([column(1, 1, 0, 1, 0), column(1, 1, 1, 1, 1)], axis=1)
    values = np.stack([column(1, 2, 10, 3, 100), column(0, 0, 0, 0, 0)], axis=1)
    terminations = np.stack([column(0, 0, 0, 1, 0), column(0, 0, 0, 0, 0)], axis=1).astype(bool)
    dones = np.stack([column(0, 1, 0, 1, 0), column(0, 0, 0, 0, 0)], axis=1).astype(bool)
    valid = np.stack([column(1, 1, 0, 1, 0), column(1, 1, 1, 1, 1)], axis=1).astype(bool)
    advantages, returns = advantages_and_returns(
        args, rewards, values, terminations, dones, valid, next_value=column(5, 7)
    )
    # t3: 1 - 3; t1: 1 + 0.5 * 10 - 2; t0: (1 + 0.5 * 2 - 1) + 0.5 * 4; reset steps: 0.
    assert np.allclose(advantages[:, 0], [3.0, 4.0, 0.0, -2.0, 0.0])
    assert np.allclose(returns[[0, 1, 3], 0], [4.0, 6.0, 1.0])
    # Env 1: the discounted rewards plus 0.5^5 * 7 from the end, nothing from env 0.
    expected = [sum(0.5**k for k in range(5 - t)) + 0.5 ** (5 - t) * 7 for t in range(5)]
    assert np.allclose(returns[:, 1], expected)


# --------------------------------------------------------------------------------------------
# Normalization, checkpoints, resume
# --------------------------------------------------------------------------------------------


def test_normalization_statistics_are_saved_and_frozen_when_evaluating(tiny_ppo):
    args = tiny_ppo(env_id="HalfCheetah-v4", total_timesteps=1024)
    train(args)
    model = load(os.path.join(run_dir(args), "final_model.pt"))
    assert model["kind"] == "model" and model["algorithm"] == "ppo"
    stats = model["obs_rms"]
    assert stats["count"] > 1024 and stats["mean"].abs().sum() > 0 and not torch.all(stats["var"] == 1)
    obs_rms = RunningMeanStd((17,))
    obs_rms.load_state_dict(stats)
    before = {
        key: (value.clone() if torch.is_tensor(value) else value)
        for key, value in obs_rms.state_dict().items()
    }
    env = environments.make_env("HalfCheetah-v4", "PPO")
    low, high, cpu = env.action_space.low, env.action_space.high, torch.device("cpu")
    first, _ = training.evaluate(policy_function(agent_from(model), obs_rms, low, high, cpu), env, 2, 7)
    second, _ = training.evaluate(policy_function(agent_from(model), obs_rms, low, high, cpu), env, 2, 7)
    assert first == second  # a seeded deterministic evaluation repeats exactly...
    after = obs_rms.state_dict()
    assert torch.equal(after["mean"], before["mean"]) and torch.equal(
        after["var"], before["var"]
    )  # ...frozen
    assert after["count"] == before["count"]
    # Without the statistics the same policy sees other inputs and scores differently.
    fresh_policy = policy_function(agent_from(model), RunningMeanStd((17,)), low, high, cpu)
    fresh, _ = training.evaluate(fresh_policy, env, 2, 7)
    assert fresh != first


def flags(env_id, runs_dir, total, **extra):
    settings = {
        "env-id": env_id,
        "total-timesteps": total,
        "num-steps": 256,
        "num-minibatches": 4,
        "update-epochs": 2,
        "hidden-size": 32,
        "eval-every": 0,
        "eval-episodes": 2,
        "checkpoint-every": 256,
        "runs-dir": runs_dir,
        "run-name": "run",
        "threads": 1,
        **extra,
    }
    return command_line({**settings, "cuda": False})


def start_ppo(args_list, **kwargs):
    return start("ppo_continuous.py", args_list, **kwargs)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v4", "Humanoid-v4"])
def test_sigterm_then_resume_continues_exactly(tiny_ppo, tmp_path, env_id):
    # Hopper falls often (episode boundaries everywhere); Pendulum is classic control.
    straight = tiny_ppo(
        env_id=env_id,
        run_name="straight",
        total_timesteps=8192,
        num_steps=256,
        checkpoint_every=256,
        eval_episodes=2,
        runs_dir=str(tmp_path / "a"),
    )
    straight_summary = train(straight)
    checkpoint = str(tmp_path / "b" / "run" / "checkpoint.pt")
    process = start_ppo(flags(env_id, str(tmp_path / "b"), 8192))
    wait_for_step(checkpoint, 1024, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    stopped_at = load(checkpoint)["global_step"]
    # The signal lands thousands of steps before the end: a run that finishes anyway ignored it.
    assert process.returncode == 128 + signal.SIGTERM and "--resume" in out, err
    assert stopped_at < 8192
    process = start_ppo(["--resume", checkpoint])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    a, b = load(os.path.join(run_dir(straight), "checkpoint.pt")), load(checkpoint)
    assert b["global_step"] == 8192
    assert_same_training_state(a, b)
    resumed_summary = json.load(open(tmp_path / "b" / "run" / "summary.json"))
    assert resumed_summary["final_eval_mean"] == straight_summary["final_eval_mean"]


# --------------------------------------------------------------------------------------------
# Learning
# --------------------------------------------------------------------------------------------


def test_ppo_learns_inverted_pendulum(tiny_ppo):
    # A random policy scores about 5-10; the maximum is 1000.
    summary = train(
        tiny_ppo(
            env_id="InvertedPendulum-v4",
            total_timesteps=LEARNING_STEPS,
            num_steps=1024,
            num_minibatches=16,
            update_epochs=10,
            hidden_size=64,
            eval_episodes=10,
        )
    )
    assert summary["final_eval_mean"] > LEARNING_THRESHOLD, summary


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_a_checkpoint_with_a_flag_since_removed_still_resumes():
    from dataclasses import asdict

    from ppo_continuous import Args

    # Checkpoints written before --preset was dropped (its values sit in the other fields).
    saved = {**asdict(Args(log_std_init=-0.5, seed=7)), "preset": "halfcheetah"}
    checkpoint = {"algorithm": "ppo", "kind": "training", "args": saved}
    args = cli.saved_args(Args, checkpoint, "old.pt")
    assert (args.log_std_init, args.seed, args.resume) == (-0.5, 7, "old.pt")


def test_a_cleanrl_command_line_runs_unchanged(tmp_path):
    # CleanRL's ppo_continuous_action.py flags, --save-model included; the run goes to ./runs.
    cleanrl = "--exp-name ppo_continuous_action --seed 1 --torch-deterministic --cuda --save-model"
    cleanrl += " --env-id Pendulum-v1 --total-timesteps 512 --learning-rate 3e-4 --num-envs 1 --num-steps 256"
    cleanrl += " --anneal-lr --gamma 0.99 --gae-lambda 0.95 --num-minibatches 4 --update-epochs 2 --norm-adv"
    cleanrl += " --clip-coef 0.2 --clip-vloss --ent-coef 0.0 --vf-coef 0.5 --max-grad-norm 0.5"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "ppo_continuous.py"), *cleanrl.split()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (run,) = os.listdir(tmp_path / "runs")
    assert run.startswith("Pendulum-v1__ppo_continuous_action__1__")
    assert os.path.exists(tmp_path / "runs" / run / "final_model.pt")


# --------------------------------------------------------------------------------------------
# Knobs for large-batch recipes (issue 24)
# --------------------------------------------------------------------------------------------


def test_minibatch_size_is_the_other_way_to_say_num_minibatches(tiny_ppo):
    # Rollouts of 256 with one reset step: 255 transitions in 4 minibatches of 64, 64, 64, 63.
    train(tiny_ppo(run_name="by_count", num_minibatches=4))
    train(tiny_ppo(run_name="by_size", num_minibatches=32, minibatch_size=64))
    a, b = (
        load(os.path.join(tiny_ppo().runs_dir, name, "checkpoint.pt")) for name in ("by_count", "by_size")
    )
    for name, tensor in a["agent"].items():
        assert torch.equal(tensor, b["agent"][name]), name
    train(tiny_ppo(run_name="smaller", minibatch_size=32))
    c = load(os.path.join(tiny_ppo().runs_dir, "smaller", "checkpoint.pt"))
    assert not torch.equal(c["agent"]["actor_logstd"], a["agent"]["actor_logstd"])


def test_a_one_step_minibatch_left_over_does_not_poison_the_update(tiny_ppo):
    # 255 transitions in minibatches of 127 leave one step over, every epoch: its advantage,
    # normalized alone, would be 0/0 and turn every weight into NaN.
    args = tiny_ppo(minibatch_size=127)
    train(args)
    checkpoint = load(os.path.join(run_dir(args), "checkpoint.pt"))
    assert checkpoint["global_step"] == args.total_timesteps
    assert all(torch.isfinite(t).all() for t in checkpoint["agent"].values())
    expect_error(tiny_ppo(minibatch_size=1), "one-step minibatches")
    expect_error(tiny_ppo(num_minibatches=256), "one-step minibatches")
    train(
        tiny_ppo(run_name="no_norm", minibatch_size=1, norm_adv=False, total_timesteps=256, update_epochs=1)
    )
    # --minibatch-size decides alone: --num-minibatches' default (32) may exceed a small rollout.
    train(tiny_ppo(run_name="small", num_steps=16, num_minibatches=32, minibatch_size=8, total_timesteps=32))


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_the_numpy_policy_matches_the_agent_for_any_shape(activation):
    torch.manual_seed(0)
    agent = Agent(5, 2, (16, 8, 4), log_std_init=-0.5, activation=activation)
    assert len(agent.critic) == len(agent.actor_mean) == 7  # three hidden layers and the output
    obs = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    action, log_prob, value = numpy_policy(agent, np.random.default_rng(1))(obs)
    with torch.no_grad():
        _, torch_log_prob, _, torch_value = agent.get_action_and_value(
            torch.as_tensor(obs), torch.as_tensor(action)
        )
    assert np.allclose(log_prob, torch_log_prob.numpy(), atol=1e-4)
    assert np.allclose(value, torch_value.numpy(), atol=1e-5)


def test_a_shaped_network_and_a_kl_adaptive_learning_rate_train_and_load(tiny_ppo):
    import ppo_continuous

    args = tiny_ppo(
        hidden_sizes=(32, 16, 8), activation="elu", kl_adaptive_lr=0.008, anneal_lr=False, eval_episodes=1
    )
    summary = train(args)
    checkpoint = load(os.path.join(run_dir(args), "checkpoint.pt"))
    assert checkpoint["args"]["hidden_sizes"] == (32, 16, 8) and checkpoint["args"]["activation"] == "elu"
    assert checkpoint["agent"]["actor_mean.6.weight"].shape == (1, 8)
    learning_rate = checkpoint["optimizer"]["param_groups"][0]["lr"]
    assert learning_rate != 3e-4 and 1e-6 <= learning_rate <= 1e-2  # it moved, within its bounds
    policy = ppo_continuous.load_policy(os.path.join(run_dir(args), "final_model.pt"))
    assert policy(np.zeros(3, dtype=np.float32)).shape == (1,) and np.isfinite(summary["final_eval_mean"])
    expect_error(tiny_ppo(kl_adaptive_lr=0.008), "--no-anneal-lr")
    expect_error(tiny_ppo(hidden_sizes=(32, 0)), "--hidden-sizes must all be positive")
    expect_error(tiny_ppo(minibatch_size=5000), "--minibatch-size 5000 is larger")


def test_norm_value_and_reward_scale_still_learn_the_known_values(tiny_ppo):
    # With --norm-value the network predicts standardized returns, and --reward-scale 0.5 halves
    # what it learns: undone, the estimates must be the known values again (V = 2 truncated;
    # 1.75, 1.5, 1.0 terminating). A mistake in either unit conversion moves them.
    def estimate(checkpoint, observations):
        value_rms = checkpoint["value_rms"]
        std = torch.sqrt(value_rms["var"] + 1e-8).float()
        return (values(checkpoint, observations) * std + value_rms["mean"].float()) / 0.5

    assert_learns_known_values(
        train, tiny_ppo, estimate, **KNOWN_VALUE_SETTINGS, norm_value=True, reward_scale=0.5
    )


def test_the_episodic_return_is_logged_in_the_envs_own_units(tiny_ppo):
    # Counter-v0 pays 1 per step, so every episode's logged return is its length, whatever
    # --reward-scale the agent learns from.
    args = tiny_ppo(env_id="tests.toy_envs:Counter-v0", reward_scale=0.1, norm_reward=False, norm_value=True)
    train(args)
    events = EventAccumulator(run_dir(args))
    events.Reload()
    returns = [event.value for event in events.Scalars("charts/episodic_return")]
    lengths = [event.value for event in events.Scalars("charts/episodic_length")]
    assert returns and returns == lengths and set(returns) <= {3.0, 4.0, 5.0}
    assert "value_rms" in load(os.path.join(run_dir(args), "checkpoint.pt"))


def test_the_kl_adaptive_learning_rate_moves_once_an_epoch(tiny_ppo):
    # rl_games' "standard" schedule: one factor of 1.5 per epoch, on the epoch's mean KL. After one
    # rollout of one epoch in 8 minibatches the rate has moved once at most (per minibatch, a
    # near-zero first KL would have raised it 1.5^8-fold).
    args = tiny_ppo(
        kl_adaptive_lr=0.008, anneal_lr=False, total_timesteps=256, num_minibatches=8, update_epochs=1
    )
    train(args)
    learning_rate = load(os.path.join(run_dir(args), "checkpoint.pt"))["optimizer"]["param_groups"][0]["lr"]
    assert min(abs(learning_rate - 3e-4 * factor) for factor in (1 / 1.5, 1.0, 1.5)) < 1e-12, learning_rate


def test_env_workers_give_the_same_numbers_as_one_process(tiny_ppo):
    # Hopper falls often, so resets happen inside the workers; 3 workers of 5 envs split 2, 2, 1.
    settings = dict(env_id="Hopper-v4", num_envs=5, num_steps=64, total_timesteps=1280, eval_episodes=2)
    summaries = [
        train(tiny_ppo(run_name=f"w{workers}", env_workers=workers, **settings)) for workers in (0, 3)
    ]
    a, b = (load(os.path.join(tiny_ppo().runs_dir, name, "checkpoint.pt")) for name in ("w0", "w3"))
    assert_same_training_state(a, b)
    for state_a, state_b in zip(a["loop_state"]["env_states"], b["loop_state"]["env_states"], strict=True):
        assert torch.equal(state_a["mujoco"], state_b["mujoco"])
    assert summaries[0]["final_eval_mean"] == summaries[1]["final_eval_mean"]
    expect_error(tiny_ppo(env_workers=2, async_envs=True), "give one")
    expect_error(tiny_ppo(reward_scale=0.0), "--reward-scale must be positive")


def test_ctrl_c_with_async_envs_writes_a_checkpoint(tmp_path):
    # The same Ctrl-C with AsyncVectorEnv: its workers must leave the signal to the parent too (a
    # worker that dies of it takes the parent's checkpoint with it: a traceback, nothing written).
    extra = {"num-envs": 2, "num-steps": 64}
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    command = [*flags("Hopper-v4", str(tmp_path), 8192, **extra), "--async-envs"]
    process = start_ppo(command, start_new_session=True)
    wait_for_step(checkpoint, 1024, process)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT and "--resume" in out, err
    assert "Traceback" not in err and 1024 <= load(checkpoint)["global_step"] < 8192


def test_ctrl_c_with_env_workers_saves_their_envs_and_resumes_exactly(tiny_ppo, tmp_path):
    # A terminal's Ctrl-C reaches the whole process group: the workers must leave it to the
    # parent, which still needs their envs' states for the checkpoint it writes.
    settings = dict(env_id="Hopper-v4", num_envs=4, num_steps=64, total_timesteps=8192, checkpoint_every=256)
    train(tiny_ppo(run_name="straight", eval_episodes=2, runs_dir=str(tmp_path / "a"), **settings))
    extra = {"num-envs": 4, "num-steps": 64, "env-workers": 2}
    checkpoint = str(tmp_path / "b" / "run" / "checkpoint.pt")
    process = start_ppo(flags("Hopper-v4", str(tmp_path / "b"), 8192, **extra), start_new_session=True)
    wait_for_step(checkpoint, 1024, process)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    # The signal lands thousands of steps before the end: a run that finishes anyway ignored it.
    assert process.returncode == 128 + signal.SIGINT and "--resume" in out, err
    assert all(state is not None for state in load(checkpoint)["loop_state"]["env_states"])
    process = start_ppo(["--resume", checkpoint])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    a, b = load(str(tmp_path / "a" / "straight" / "checkpoint.pt")), load(checkpoint)
    assert b["global_step"] == 8192
    assert_same_training_state(a, b)
