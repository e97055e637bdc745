"""Quick checks of sac_continuous.py: correctness at episode boundaries, checkpoints, resume,
a learning check, LayerNorm in the critics. The checks every algorithm passes (smoke runs,
determinism, a killed run resumed, bad input) are in test_algorithms.py."""

import glob
import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch

from actor_critic import cli
from sac_continuous import Actor, Args, TwinCritic, train
from tests.helpers import (
    REPO,
    assert_learns_known_values,
    assert_same_training_state,
    load,
    run_dir,
    scalar_steps,
    start,
    wait_for_step,
)


def start_sac(args_list, **kwargs):
    return start("sac_continuous.py", args_list, **kwargs)


def critic_from(checkpoint):
    obs_dim, act_dim = checkpoint["observation_shape"][0], checkpoint["action_shape"][0]
    layer_norm = checkpoint["args"].get("critic_layer_norm", False)
    qf = TwinCritic(obs_dim, act_dim, checkpoint["args"]["hidden_size"], layer_norm=layer_norm)
    qf.load_state_dict(checkpoint["qf"])
    return qf


def buffer_rows(checkpoint):
    storage = checkpoint["buffer"]["storage"]
    obs_dim, act_dim = checkpoint["observation_shape"][0], checkpoint["action_shape"][0]
    return storage.split([obs_dim, obs_dim, act_dim, 1, 1], dim=1)


# --------------------------------------------------------------------------------------------
# Episode boundaries
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_envs", [1, 3])
def test_no_transition_spans_an_episode_boundary(tiny, num_envs):
    args = tiny(
        env_id="tests.toy_envs:Counter-v0",
        num_envs=num_envs,
        total_timesteps=600,
        learning_starts=600,
        save_buffer=True,
    )
    train(args)
    checkpoint = load(os.path.join(run_dir(args), "checkpoint.pt"))
    obs, next_obs, _, rewards, terminations = buffer_rows(checkpoint)
    t, episode, end = obs[:, 0], obs[:, 1], obs[:, 2]
    next_t, next_episode = next_obs[:, 0], next_obs[:, 1]
    # Every stored transition is one step of one episode: the reset step never enters.
    assert torch.equal(next_t, t + 1)
    assert torch.equal(next_episode, episode)
    assert torch.all(rewards == 1)
    # Terminated exactly when the episode reached its end; a time-limit truncation (t=5 on an
    # episode that would go on to 7) is stored as not terminated, so the update bootstraps it.
    assert torch.equal(terminations.flatten(), (next_t == end).float())
    truncated = (next_t == 5) & (end == 7)
    assert truncated.any() and torch.all(terminations.flatten()[truncated] == 0)
    assert (terminations == 1).any()
    # All env steps but the reset steps are stored: one reset step per finished episode.
    episodes_finished = int((terminations.flatten() == 1).sum() + truncated.sum())
    assert (
        args.total_timesteps - episodes_finished
        <= len(t)
        <= args.total_timesteps - episodes_finished + num_envs
    )


def q_values(checkpoint, observations):
    """Mean of both critics over random in-bound actions: the toy rewards ignore the action."""
    qf = critic_from(checkpoint)
    obs = torch.tensor(observations, dtype=torch.float32).repeat_interleave(64, dim=0)
    actions = torch.rand(len(obs), checkpoint["action_shape"][0]) * 2 - 1
    with torch.no_grad():
        return qf(obs, actions).mean(0).view(len(observations), 64).mean(1)


def test_truncation_bootstraps_and_termination_does_not(tiny):
    # Truncated at 5 steps, the return still goes on in principle: Q = 1 / (1 - 0.5) = 2; had
    # truncation been treated as termination, Q would settle near 1.67. Terminating at t=3:
    # Q(t) = 1.75, 1.5, 1.0, nothing bootstrapped past the end. alpha=0: no entropy term in Q.
    assert_learns_known_values(
        train,
        tiny,
        q_values,
        alpha=0.0,
        autotune=False,
        total_timesteps=2000,
        learning_starts=300,
        batch_size=128,
        hidden_size=64,
        q_lr=3e-3,
    )


def test_the_critic_target_bootstraps_unless_terminated():
    # By hand: the next actions' log-probability 0.5, the target critics 10 and 12 (the min, 10,
    # is taken), alpha 0.2, gamma 0.5. A row that was truncated (stored as not terminated) gets
    # 1 + 0.5 * (10 - 0.2 * 0.5) = 5.95; a terminated row gets its reward, 1, alone.
    from sac_continuous import Args, update_critic

    class Actor(torch.nn.Module):
        def forward(self, obs):
            return torch.zeros(len(obs), 1), torch.full((len(obs),), 0.5)

    class Constant(torch.nn.Module):  # Q-values that ignore their input
        def __init__(self, values):
            super().__init__()
            self.values = torch.nn.Parameter(torch.tensor(values))

        def forward(self, obs, actions):
            return self.values

    qf, qf_target = Constant([[0.0, 0.0], [0.0, 0.0]]), Constant([[10.0, 10.0], [12.0, 12.0]])
    batch = (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 1), torch.ones(2), torch.tensor([0.0, 1.0]))
    optimizer = torch.optim.SGD(qf.parameters(), lr=0.0)
    learner = types.SimpleNamespace(actor=Actor(), qf=qf, qf_target=qf_target, q_optimizer=optimizer)
    update_critic(Args(gamma=0.5), learner, batch, torch.tensor(0.2))
    # Each member's loss is the mean of (q - target)^2 over the batch, at q = 0: grad = -target.
    targets = -qf.values.grad
    assert torch.allclose(targets, torch.tensor([[5.95, 1.0], [5.95, 1.0]]))


def test_the_target_update_averages_without_growing_an_autograd_history(tiny, monkeypatch):
    # The target critic must stay plain weights. Averaged in place from weights that require grad,
    # with autograd recording, it would chain one node per update onto its history: a leak that
    # grew a 1M-step bf16 run by gigabytes. By hand: 0 moved a quarter of the way to 1 is 0.25.
    import sac_continuous

    online, target = [torch.ones(2, 3, requires_grad=True)], [torch.zeros(2, 3)]
    sac_continuous.update_target(target, online, 0.25)
    assert torch.equal(target[0], torch.full((2, 3), 0.25))
    assert target[0].grad_fn is None and not target[0].requires_grad

    # And in the loop: after every update the target critic's weights have no history.
    plain_after_update, update_target = [], sac_continuous.update_target

    def checked(target_params, params, tau):
        update_target(target_params, params, tau)
        plain_after_update.append(all(p.grad_fn is None and not p.requires_grad for p in target_params))

    monkeypatch.setattr(sac_continuous, "update_target", checked)
    train(tiny(total_timesteps=300, learning_starts=100))
    assert len(plain_after_update) == 200 and all(plain_after_update)


def test_actions_stay_inside_asymmetric_bounds(tiny):
    # The env raises on any action outside low=[-3, 0.5], high=[-1, 2]; the policy and the
    # random warm-up both act, and the evaluation too.
    args = tiny(
        env_id="tests.toy_envs:AsymmetricBounds-v0",
        total_timesteps=1500,
        learning_starts=200,
        eval_episodes=2,
        save_buffer=True,
    )
    train(args)
    checkpoint = load(os.path.join(run_dir(args), "checkpoint.pt"))
    actions = buffer_rows(checkpoint)[2]
    low, high = torch.tensor([-3.0, 0.5]), torch.tensor([-1.0, 2.0])
    assert torch.all(actions >= low) and torch.all(actions <= high)
    actor = Actor(4, 2, 32, low.numpy(), high.numpy())
    actor.load_state_dict(checkpoint["actor"])
    sampled, _ = actor(torch.randn(1000, 4) * 10)
    assert torch.all(sampled >= low) and torch.all(sampled <= high)


# --------------------------------------------------------------------------------------------
# Checkpoints and resume
# --------------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tiny):
    args = tiny(total_timesteps=400, learning_starts=100)
    train(args)
    checkpoint = load(os.path.join(run_dir(args), "checkpoint.pt"))
    model = load(os.path.join(run_dir(args), "final_model.pt"))
    for key in (
        "format",
        "format_version",
        "algorithm",
        "env_id",
        "args",
        "observation_shape",
        "action_shape",
        "action_low",
        "action_high",
        "global_step",
        "actor",
    ):
        assert checkpoint[key] is not None and key in model
    assert checkpoint["kind"] == "training" and model["kind"] == "model"
    assert checkpoint["algorithm"] == "sac" and checkpoint["env_id"] == "Pendulum-v1"
    assert checkpoint["global_step"] == model["global_step"] == 400
    assert "buffer" not in checkpoint  # only with --save-buffer
    actor = Actor(3, 1, 32, np.array(model["action_low"]), np.array(model["action_high"]))
    actor.load_state_dict(model["actor"])
    obs = torch.randn(5, 3)
    qf = critic_from(checkpoint)
    assert qf(obs, actor.deterministic(obs)).shape == (2, 5)
    assert model["action_low"] == [-2.0] and model["action_high"] == [2.0]  # Pendulum's own bounds
    assert torch.all(actor.deterministic(obs).abs() <= 2.0)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v4"])
def test_resume_with_saved_buffer_continues_exactly(tiny, env_id):
    # Hopper falls often (episode boundaries around the split); the split lands mid-episode.
    common = dict(env_id=env_id, learning_starts=200, save_buffer=True, eval_episodes=2)
    straight = tiny(run_name="straight", total_timesteps=1000, **common)
    train(straight)
    first_half = tiny(run_name="split", total_timesteps=533, **common)
    train(first_half)
    resumed = train(
        tiny(
            run_name="split",
            total_timesteps=1000,
            resume=os.path.join(run_dir(first_half), "checkpoint.pt"),
            **common,
        )
    )
    a = load(os.path.join(run_dir(straight), "checkpoint.pt"))
    b = load(os.path.join(run_dir(first_half), "checkpoint.pt"))
    assert b["global_step"] == 1000
    assert_same_training_state(a, b)
    assert torch.equal(a["buffer"]["storage"], b["buffer"]["storage"])
    assert (
        resumed["final_eval_mean"]
        == json.load(open(os.path.join(run_dir(straight), "summary.json")))["final_eval_mean"]
    )


def test_resume_without_buffer_refills_and_finishes(tiny, capsys):
    first = tiny(total_timesteps=500, learning_starts=200)
    train(first)
    summary = train(
        tiny(total_timesteps=900, learning_starts=200, resume=os.path.join(run_dir(first), "checkpoint.pt"))
    )
    assert summary["global_step"] == 900
    assert "refilling it for 200 steps" in capsys.readouterr().out
    # Updates after step 200 of the first run (300), then none until the refill ends at 700 (200).
    assert load(os.path.join(run_dir(first), "checkpoint.pt"))["loop_state"]["update_count"] == 300 + 200


def test_resume_without_buffer_on_a_reset_step_stores_before_it_updates(tiny, capsys):
    # Pendulum's episodes are truncated at 200 steps: the run stops on the last step of one, so the
    # first step after the resume is a reset step and stores nothing; even with --learning-starts 0
    # the resumed run must not sample an empty buffer.
    settings = dict(env_id="Pendulum-v1", learning_starts=0, eval_episodes=1)
    first = tiny(total_timesteps=200, **settings)
    train(first)
    checkpoint = os.path.join(run_dir(first), "checkpoint.pt")
    summary = train(tiny(total_timesteps=210, resume=checkpoint, **settings))
    assert summary["global_step"] == 210 and "refilling it for 1 steps" in capsys.readouterr().out


def test_a_resume_takes_a_flag_given_at_its_default(tiny):
    # --no-save-buffer is the default: given on the command line, it stops saving a run's buffer.
    args = tiny(total_timesteps=300, save_buffer=True)
    train(args)
    checkpoint = os.path.join(args.runs_dir, args.run_name, "checkpoint.pt")
    assert "buffer" in load(checkpoint)
    process = start_sac(["--resume", checkpoint, "--total-timesteps", "400", "--no-save-buffer"])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    resumed = load(checkpoint)
    assert resumed["global_step"] == 400 and not resumed["args"]["save_buffer"] and "buffer" not in resumed


# --------------------------------------------------------------------------------------------
# Learning
# --------------------------------------------------------------------------------------------


def test_sac_learns_pendulum(tiny):
    # Random policy: about -1200. SAC with these settings reaches about -150 by 6000 steps.
    summary = train(
        tiny(
            env_id="Pendulum-v1",
            total_timesteps=6000,
            learning_starts=500,
            batch_size=128,
            hidden_size=64,
            q_lr=1e-3,
            policy_frequency=1,
            buffer_size=10_000,
            eval_episodes=10,
        )
    )
    assert summary["final_eval_mean"] > -400, summary


# --------------------------------------------------------------------------------------------
# Weights & Biases offline, and evaluation videos
# --------------------------------------------------------------------------------------------


def test_track_offline_and_capture_video(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MUJOCO_GL": "egl"}
    result = subprocess.run(
        [
            sys.executable,
            "sac_continuous.py",
            "--env-id",
            "InvertedPendulum-v4",
            "--total-timesteps",
            "300",
            "--learning-starts",
            "100",
            "--batch-size",
            "32",
            "--hidden-size",
            "32",
            "--eval-episodes",
            "1",
            "--track",
            "--capture-video",
            "--runs-dir",
            str(tmp_path),
            "--run-name",
            "run",
            "--no-cuda",
            "--threads",
            "1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*"))
    videos = glob.glob(str(tmp_path / "run" / "videos" / "*.mp4"))
    assert videos
    import imageio

    with imageio.get_reader(videos[0], "ffmpeg") as video:
        assert video.count_frames() >= 1


# --------------------------------------------------------------------------------------------
# Resume at any moment
# --------------------------------------------------------------------------------------------


def test_resume_at_an_odd_update_count_logs_before_the_first_actor_update(tiny):
    # The commands: the run stops after 999 updates; the resumed one logs at update 1000,
    # before its first actor update (on even counts). That used to end in UnboundLocalError.
    first = tiny(total_timesteps=2000, learning_starts=1001, checkpoint_every=2000)
    train(first)
    checkpoint = os.path.join(run_dir(first), "checkpoint.pt")
    assert load(checkpoint)["loop_state"]["update_count"] == 999
    # No buffer saved: it refills for 1001 steps, then updates from count 999 on.
    summary = train(tiny(total_timesteps=5000, learning_starts=1001, resume=checkpoint))
    assert summary["global_step"] == 5000
    # The resumed session logs at updates 1000 and 2000; the actor loss only once it has one.
    critic_logs = [step for step in scalar_steps(run_dir(first), "losses/qf_loss") if step > 2000]
    actor_logs = [step for step in scalar_steps(run_dir(first), "losses/actor_loss") if step > 2000]
    assert len(critic_logs) == 2 and actor_logs == critic_logs[1:]


def kill_at_random_moments(flags, checkpoint, seed, kills=2):
    """Start the run, SIGKILL it at `kills` random moments after its first checkpoint, resuming
    from the last checkpoint each time; then let it finish."""
    rng, step = np.random.default_rng(seed), 0
    process = start_sac(flags)
    for _ in range(kills):
        wait_for_step(checkpoint, step + 1, process)  # each session gets as far as a checkpoint
        time.sleep(rng.uniform(0.0, 1.5))  # then anywhere: mid-step, mid-update, mid-write
        process.kill()
        process.wait()
        step = load(checkpoint)["global_step"]  # the last checkpoint is intact
        process = start_sac(["--resume", checkpoint])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err


def test_sigkill_at_any_moment_then_resume_ends_exactly_as_the_run_left_alone(tmp_path):
    # An odd --learning-starts and two envs put checkpoints at odd update counts and mid-episode;
    # --log-every 1 logs at every update, the first of a resumed session included.
    common = ["--env-id", "HalfCheetah-v4", "--num-envs", "2", "--total-timesteps", "1600"]
    common += ["--learning-starts", "301", "--log-every", "1", "--save-buffer", "--checkpoint-every", "150"]
    common += ["--batch-size", "32", "--hidden-size", "32", "--eval-every", "0", "--eval-episodes", "2"]
    common += ["--no-cuda", "--threads", "1", "--runs-dir", str(tmp_path)]
    alone = start_sac([*common, "--run-name", "alone"])
    _, err = alone.communicate(timeout=300)
    assert alone.returncode == 0, err
    killed = [*common, "--run-name", "killed"]
    kill_at_random_moments(killed, str(tmp_path / "killed" / "checkpoint.pt"), seed=0)
    a, b = (load(str(tmp_path / name / "checkpoint.pt")) for name in ("alone", "killed"))
    assert b["global_step"] == 1600 and b["loop_state"]["update_count"] == a["loop_state"]["update_count"]
    assert_same_training_state(a, b)
    summaries = [json.load(open(tmp_path / name / "summary.json")) for name in ("alone", "killed")]
    assert summaries[0]["final_eval_mean"] == summaries[1]["final_eval_mean"]
    assert len(summaries[1]["sessions"]) == 3  # started, and resumed twice


# --------------------------------------------------------------------------------------------
# LayerNorm in the critics
# --------------------------------------------------------------------------------------------


def test_critic_layer_norm_normalizes_each_hidden_layer():
    torch.manual_seed(0)
    qf = TwinCritic(3, 2, 16, layer_norm=True)
    with torch.no_grad():  # gains and shifts of their own per member and layer
        for gain, shift in zip(qf.norm_gains, qf.norm_shifts, strict=True):
            gain.uniform_(0.5, 2.0), shift.uniform_(-1.0, 1.0)
    obs, actions = torch.randn(5, 3), torch.randn(5, 2)
    x = torch.cat([obs, actions], dim=-1).expand(2, 5, 5)
    for i in range(2):  # the layers by hand: affine, normalize over the units, gain and shift, ReLU
        h = x @ qf.weights[i] + qf.biases[i]
        normalized = (h - h.mean(-1, keepdim=True)) / torch.sqrt(
            h.var(-1, unbiased=False, keepdim=True) + 1e-5
        )
        x = torch.relu(normalized * qf.norm_gains[i] + qf.norm_shifts[i])
    expected = (x @ qf.weights[2] + qf.biases[2]).squeeze(-1)
    assert torch.allclose(qf(obs, actions), expected, atol=1e-5)
    plain = TwinCritic(3, 2, 16)
    assert not any("norm" in name for name in plain.state_dict())  # the default is unchanged
    plain.load_state_dict({k: v for k, v in qf.state_dict().items() if "norm" not in k})
    assert not torch.allclose(plain(obs, actions), qf(obs, actions))


def test_critic_layer_norm_trains_is_saved_and_resumes_exactly(tiny):
    common = dict(learning_starts=100, save_buffer=True, critic_layer_norm=True)
    straight = tiny(run_name="straight", total_timesteps=600, **common)
    train(straight)
    first = tiny(run_name="split", total_timesteps=333, **common)
    train(first)
    checkpoint = os.path.join(run_dir(first), "checkpoint.pt")
    # Resumed without the flag: the run's saved settings keep it on.
    train(cli.resume_args(Args, checkpoint, total_timesteps=600))
    a, b = load(os.path.join(run_dir(straight), "checkpoint.pt")), load(checkpoint)
    assert b["args"]["critic_layer_norm"] and "norm_gains.0" in b["qf"] and "norm_shifts.1" in b["qf_target"]
    assert not torch.equal(b["qf"]["norm_gains.0"], torch.ones_like(b["qf"]["norm_gains.0"]))  # trained
    assert_same_training_state(a, b)
    for name, tensor in a["qf"].items():
        assert torch.equal(tensor, b["qf"][name]), name


def test_update_time_compile_times_a_compiled_update_and_puts_the_eager_one_back():
    # docs/speed.md quotes `update_time.py --compile`: the compiled cell must really run compiled
    # graphs, and the script's own functions must be back in place for the eager cells after it.
    import sac_continuous as sac

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import update_time

    try:
        torch._dynamo.utils.counters.clear()
        assert update_time.ms_per_update("fp32", 5, 2, 2, hidden_size=8, batch_size=8, compiled=True) > 0
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # the critic's and the actor's
        assert sac.update_critic is not update_time.EAGER[0]
        assert update_time.ms_per_update("fp32", 5, 2, 2, hidden_size=8, batch_size=8) > 0
        assert (sac.update_critic, sac.update_actor) == update_time.EAGER
    finally:
        sac.update_critic, sac.update_actor = update_time.EAGER
        sys.path.remove(os.path.join(REPO, "benchmarks"))
        torch._dynamo.reset()


def test_layer_matmuls_benchmark_prints_both_tables():
    # benchmarks/layer_matmuls.py is quoted in docs/speed.md: it must run, and time every row.
    result = subprocess.run(
        [sys.executable, "benchmarks/layer_matmuls.py", "--calls", "10", "--hidden", "8", "--batch", "16"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith(("| fp32", "| bf16"))]
    products, elementwise = rows[:6], rows[6:]
    assert [row[1].strip() for row in products] == ["23 -> 8", "8 -> 8", "8 -> 1"] * 2, result.stdout
    assert "2x16x8 activations" in result.stdout and len(elementwise) == 2, result.stdout
    times = [cell for row in products for cell in row[2:]] + [cell for row in elementwise for cell in row[1:]]
    assert times[-1].strip() != "-", result.stdout  # bf16's cast is timed
    assert all(cell.strip() == "-" or float(cell.split()[0]) > 0 for cell in times), result.stdout


def test_update_time_benchmark_times_the_scripts_own_update():
    # benchmarks/update_time.py calls the training loop's `update` by name: a renamed or
    # re-signatured update must break it here, not when someone next measures speed.
    result = subprocess.run(
        [sys.executable, "benchmarks/update_time.py", "--threads", "1", "--updates", "4"]
        + ["--hidden-size", "8", "--batch-size", "16"],  # the fixed-cost setting, and fast
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ms per update, batch 16, 8x8" in result.stdout, result.stdout
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| H")]
    assert [row[0].split()[0] for row in rows] == ["HalfCheetah", "Humanoid"], result.stdout
    for _, threads, fp32, bf16 in rows:
        assert threads.strip() == "1" and float(fp32) > 0, result.stdout
        assert bf16.strip() == "-" or float(bf16) > 0, result.stdout
    if any(row[3].strip() == "-" for row in rows):
        assert "bf16 not timed: this CPU" in result.stdout
