"""--precision bf16: the update's products in bf16, what stays fp32, exact resume, the refusal
where the hardware has no native bf16, and enjoy.py on a bf16 run. The runs need a CPU with
native bf16 (avx512_bf16 or AMX); elsewhere they are skipped and only the refusal is checked."""

import json
import math
import os

import numpy as np
import pytest
import torch

import enjoy
import ppo_continuous
import sac_continuous
from actor_critic import cli, training
from tests.helpers import assert_same_training_state, expect_error, load, run_dir

CPU = torch.device("cpu")
NEEDS_BF16 = pytest.mark.skipif(
    training.bf16_unsupported(CPU) is not None, reason="this CPU has no native bf16"
)


# --------------------------------------------------------------------------------------------
# The capability check
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, native",
    [({"avx512_bf16", "avx512f"}, True), ({"amx_bf16"}, True), ({"bf16", "asimd"}, True), ({"avx2"}, False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, flags, native):
    monkeypatch.setattr(training, "cpu_flags", lambda: flags)
    reason = training.bf16_unsupported(CPU)
    assert (reason is None) == native
    if not native:
        assert "no native bf16" in reason and "avx512_bf16" in reason


@pytest.mark.parametrize("algo", ["sac", "ppo"])
def test_bf16_without_native_support_is_refused_in_one_line(tiny_for, algo, monkeypatch):
    monkeypatch.setattr(training, "cpu_flags", lambda: {"avx2", "fma"})  # an older x86 CPU
    args = tiny_for(algo)(precision="bf16")
    expect_error(args, "--precision bf16", "no native bf16", "--precision fp32")
    assert not os.path.exists(run_dir(args))  # refused before the run directory exists


# --------------------------------------------------------------------------------------------
# What stays fp32
# --------------------------------------------------------------------------------------------


@NEEDS_BF16
def test_sac_bf16_log_density_is_the_fp32_density_of_the_same_sample():
    # Under autocast the actor's products run in bf16, but its log-density must be the fp32 (here
    # float64) density of the action it returns, given the mean and std the network gave. Computed
    # in bf16 instead (no .float() after the head), it misses by ~1e-2 and this fails.
    torch.manual_seed(0)
    low, high = np.array([-0.4, -1.0, 0.0]), np.array([0.4, 1.0, 3.0])
    actor = sac_continuous.Actor(11, 3, 64, low, high)
    obs = torch.randn(512, 11) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        action, log_prob = actor(obs)
        mean, log_std = actor.mean_and_log_std(obs)
    assert log_prob.dtype == mean.dtype == torch.float32
    torch.manual_seed(1)
    noise = torch.randn_like(mean).double()
    mean, std = mean.double(), log_std.double().exp()
    pre_tanh = mean + std * noise
    scale = actor.action_scale.double()
    exact = (
        torch.distributions.Normal(mean, std).log_prob(pre_tanh)
        - torch.log(scale * (1 - torch.tanh(pre_tanh) ** 2))
    ).sum(-1)
    expected_action = torch.tanh(pre_tanh) * scale + actor.action_bias.double()
    assert torch.allclose(action.double(), expected_action, atol=1e-6)
    # Tolerance: fp32 rounding of a sum of three terms of size ~10, far below bf16's 2^-8.
    error = (log_prob.double() - exact).abs().max()
    assert torch.allclose(log_prob.double(), exact, rtol=1e-5, atol=1e-4), error


@NEEDS_BF16
def test_ppo_bf16_log_density_and_value_are_fp32():
    torch.manual_seed(0)
    agent = ppo_continuous.Agent(11, 3, 64, log_std_init=-0.5)
    obs, actions = torch.randn(512, 11), torch.randn(512, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, log_prob, entropy, value = agent.get_action_and_value(obs, actions)
        mean = agent.actor_mean(obs)
    assert mean.dtype == torch.bfloat16  # the products did run in bf16
    assert log_prob.dtype == entropy.dtype == value.dtype == torch.float32
    std = agent.actor_logstd.double().exp()
    exact = torch.distributions.Normal(mean.double(), std).log_prob(actions.double()).sum(-1)
    error = (log_prob.double() - exact).abs().max()
    assert torch.allclose(log_prob.double(), exact, rtol=1e-5, atol=1e-4), error


# --------------------------------------------------------------------------------------------
# Runs in bf16
# --------------------------------------------------------------------------------------------


@NEEDS_BF16
def test_sac_bf16_resumed_with_its_buffer_ends_exactly_as_the_run_left_alone(tiny):
    common = dict(learning_starts=200, save_buffer=True, eval_episodes=2, precision="bf16")
    straight = tiny(run_name="straight", total_timesteps=500, **common)
    straight_summary = sac_continuous.train(straight)
    first = tiny(run_name="split", total_timesteps=333, **common)
    sac_continuous.train(first)
    checkpoint = os.path.join(run_dir(first), "checkpoint.pt")
    # Resumed without --precision: the run's saved setting keeps bf16.
    resumed = sac_continuous.train(cli.resume_args(sac_continuous.Args, checkpoint, total_timesteps=500))
    a, b = load(os.path.join(run_dir(straight), "checkpoint.pt")), load(checkpoint)
    assert b["args"]["precision"] == "bf16" and b["global_step"] == 500
    assert_same_training_state(a, b)
    assert torch.equal(a["buffer"]["storage"], b["buffer"]["storage"])
    assert resumed["final_eval_mean"] == straight_summary["final_eval_mean"]
    # bf16 is not fp32 under another name: the same run in fp32 learns other weights.
    fp32 = tiny(run_name="fp32", total_timesteps=500, **{**common, "precision": "fp32"})
    sac_continuous.train(fp32)
    c = load(os.path.join(run_dir(fp32), "checkpoint.pt"))
    assert not torch.equal(c["actor"]["head.weight"], a["actor"]["head.weight"])
    assert a["actor"]["head.weight"].dtype == torch.float32  # the weights stay fp32
    # A resume may not change the precision: the run's numbers depend on it.
    expect_error(
        cli.resume_args(sac_continuous.Args, checkpoint, total_timesteps=600, precision="fp32"),
        "was trained with --precision bf16, not fp32",
    )


@NEEDS_BF16
def test_ppo_bf16_trains_repeats_and_saves_its_precision(tiny_ppo):
    summaries = [
        ppo_continuous.train(tiny_ppo(run_name=name, precision="bf16", eval_episodes=1))
        for name in ("a", "b")
    ]
    assert summaries[0]["final_eval_mean"] == summaries[1]["final_eval_mean"]
    a, b = (load(os.path.join(run_dir(tiny_ppo(run_name=name)), "checkpoint.pt")) for name in ("a", "b"))
    assert a["args"]["precision"] == "bf16"
    assert_same_training_state(a, b)
    assert all(math.isfinite(v) for v in a["agent"]["actor_logstd"].flatten().tolist())


@NEEDS_BF16
def test_enjoy_scores_a_bf16_run_as_the_run_did(tiny, tmp_path):
    args = tiny(env_id="InvertedPendulum-v4", eval_episodes=2, precision="bf16")
    summary = sac_continuous.train(args)
    path = os.path.join(run_dir(args), "final_model.pt")
    result = enjoy.main(enjoy.Args(checkpoint=(path,), eval_episodes=2, render=False))["results"][0]
    assert (result["mean"], result["std"]) == (summary["final_eval_mean"], summary["final_eval_std"])
    act = sac_continuous.load_policy(path)
    assert act(np.zeros(4, dtype=np.float32)).dtype == np.float32
    assert json.load(open(os.path.join(run_dir(args), "summary.json")))["final_eval_mean"] == result["mean"]
