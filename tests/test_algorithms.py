"""The checks every algorithm must pass, one test each, run for SAC and for PPO: smoke runs, the same
seed twice, a killed run resumed, damaged, crafted and mismatched checkpoints, bad input on one line.
What the algorithms do differently is in the tables next to each test."""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from actor_critic import checkpoints, cli, environments
from actor_critic.algorithms import ALGORITHMS
from tests.helpers import (
    REPO,
    assert_same_training_state,
    command_line,
    crafted_checkpoint,
    error_of,
    expect_error,
    load,
    run_dir,
    scalar_steps,
    start,
    wait_for_step,
)

EVERY_ALGORITHM = pytest.mark.parametrize("algo", list(ALGORITHMS))


def other_than(algo):
    (other,) = set(ALGORITHMS) - {algo}
    return other


# --------------------------------------------------------------------------------------------
# Smoke runs, logging, checkpoints
# --------------------------------------------------------------------------------------------


SMOKE = {
    "sac": dict(
        settings=dict(
            total_timesteps=1100,
            learning_starts=500,
            eval_every=1000,
            eval_episodes=1,
            checkpoint_every=500,
            log_every=100,
        ),
        snapshots=["step_00000500.pt", "step_00001000.pt", "step_00001100.pt"],
        tags={
            "losses/qf1_values",
            "losses/qf2_values",
            "losses/qf1_loss",
            "losses/qf2_loss",
            "losses/qf_loss",
            "losses/actor_loss",
            "losses/alpha",
            "losses/alpha_loss",
        },
        evaluated_at=[1000, 1100],
    ),
    "ppo": dict(
        settings=dict(
            total_timesteps=2048, num_steps=512, eval_every=1024, eval_episodes=1, checkpoint_every=1024
        ),
        snapshots=["step_00001024.pt", "step_00002048.pt"],
        tags={
            "charts/learning_rate",
            "losses/value_loss",
            "losses/policy_loss",
            "losses/entropy",
            "losses/old_approx_kl",
            "losses/approx_kl",
            "losses/clipfrac",
            "losses/explained_variance",
        },
        evaluated_at=[1024, 2048],
    ),
}


@EVERY_ALGORITHM
@pytest.mark.parametrize("env_id", ["HalfCheetah-v4", "Walker2d-v5"])
def test_smoke_run_writes_logs_checkpoints_and_summary(tiny_for, algo, env_id):
    case = SMOKE[algo]
    args = tiny_for(algo)(env_id=env_id, **case["settings"])
    summary = ALGORITHMS[algo].module().train(args)
    directory = run_dir(args)
    total = case["settings"]["total_timesteps"]
    assert summary["global_step"] == total and np.isfinite(summary["final_eval_mean"])
    assert json.load(open(os.path.join(directory, "summary.json"))) == summary
    assert sorted(os.listdir(os.path.join(directory, "models"))) == case["snapshots"]
    assert os.path.exists(os.path.join(directory, "final_model.pt"))
    events = EventAccumulator(directory)
    events.Reload()
    keys = set(events.Tags()["scalars"])
    expected = {
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/SPS",
        "eval/episodic_return",
        *case["tags"],
    }
    assert expected <= keys, expected - keys
    assert [e.step for e in events.Scalars("eval/episodic_return")] == case["evaluated_at"]


# --------------------------------------------------------------------------------------------
# Determinism, and resume after a kill
# --------------------------------------------------------------------------------------------


SAME_SEED = {
    "sac": dict(total_timesteps=500, learning_starts=100, eval_episodes=2),
    "ppo": dict(eval_episodes=2),
}


@EVERY_ALGORITHM
def test_same_seed_gives_identical_runs(tiny_for, algo):
    tiny, train = tiny_for(algo), ALGORITHMS[algo].module().train
    settings = SAME_SEED[algo]
    summaries = [train(tiny(run_name=name, **settings)) for name in ("one", "two")]
    assert summaries[0]["final_eval_mean"] == summaries[1]["final_eval_mean"]
    a, b = (load(os.path.join(tiny().runs_dir, name, "checkpoint.pt")) for name in ("one", "two"))
    assert_same_training_state(a, b)
    other = train(tiny(run_name="other", seed=2, **settings))
    assert other["final_eval_mean"] != summaries[0]["final_eval_mean"]


KILLED = {
    # SAC's run stops on a SIGTERM first, and its resumed session is the one killed (PPO's
    # SIGTERM and resume has a test of its own, that the run continues exactly).
    "sac": dict(
        flags={
            "env-id": "HalfCheetah-v4",
            "total-timesteps": 3000,
            "learning-starts": 300,
            "batch-size": 32,
            "hidden-size": 32,
            "checkpoint-every": 200,
            "log-every": 100,
        },
        first_checkpoint=400,
        sigterm_first=True,
        tag="losses/qf_loss",
    ),
    "ppo": dict(
        flags={
            "env-id": "HalfCheetah-v4",
            "total-timesteps": 6144,
            "num-steps": 256,
            "num-minibatches": 4,
            "update-epochs": 2,
            "hidden-size": 32,
            "checkpoint-every": 256,
        },
        first_checkpoint=1024,
        sigterm_first=False,
        tag="losses/value_loss",
    ),
}


@EVERY_ALGORITHM
def test_sigkill_then_resume_completes(tmp_path, algo):
    case, script = KILLED[algo], ALGORITHMS[algo].script
    total = case["flags"]["total-timesteps"]
    quick = {"eval-every": 0, "eval-episodes": 0, "runs-dir": tmp_path, "run-name": "run", "cuda": False}
    flags = command_line({**case["flags"], **quick, "threads": 1})
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    process = start(script, flags)
    wait_for_step(checkpoint, case["first_checkpoint"], process)
    reached = case["first_checkpoint"]
    if case["sigterm_first"]:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGTERM, err
        assert "--resume" in out and "Traceback" not in err
        stopped_at = load(checkpoint)["global_step"]
        assert stopped_at >= case["first_checkpoint"]
        process = start(script, ["--resume", checkpoint])
        reached = stopped_at + 600
        wait_for_step(checkpoint, reached, process)

    process.kill()  # SIGKILL: no chance to write anything
    process.wait()
    killed_at = load(checkpoint)["global_step"]  # the last checkpoint is intact and loadable
    assert killed_at >= reached

    process = start(script, ["--resume", checkpoint])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["global_step"] == total > killed_at
    # TensorBoard continues: one point per step, what the killed run logged after its last
    # checkpoint is purged.
    steps = scalar_steps(str(tmp_path / "run"), case["tag"])
    assert steps == sorted(set(steps)) and steps[-1] == total
    assert not glob.glob(str(tmp_path / "run" / "*.tmp"))


# --------------------------------------------------------------------------------------------
# Bad checkpoints
# --------------------------------------------------------------------------------------------


# The run whose checkpoint the bad resumes start from.
FINISHED = {
    "sac": dict(env_id="HalfCheetah-v4", total_timesteps=300, learning_starts=100),
    "ppo": dict(env_id="Pendulum-v1"),
}


@EVERY_ALGORITHM
def test_bad_resume(tiny_for, algo, tmp_path):
    tiny, settings = tiny_for(algo), FINISHED[algo]
    args = tiny(**settings)
    ALGORITHMS[algo].module().train(args)
    finished_checkpoint = os.path.join(run_dir(args), "checkpoint.pt")
    before = open(finished_checkpoint, "rb").read()

    def untouched_after(args, *fragments):
        expect_error(args, *fragments)
        assert open(finished_checkpoint, "rb").read() == before

    expect_error(tiny(resume=str(tmp_path / "missing.pt")), "checkpoint not found")
    truncated = tmp_path / "truncated.pt"
    for size in (3000, 5000):
        truncated.write_bytes(before[:size])
        expect_error(tiny(resume=str(truncated)), "cannot read checkpoint")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    expect_error(tiny(resume=str(garbage)), "cannot read checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    expect_error(tiny(resume=str(foreign)), "not a checkpoint of this project")

    checkpoint = load(finished_checkpoint)
    other = other_than(algo)
    for change, fragments in [
        ({"algorithm": other}, [f"{other} checkpoint"]),
        ({"observation_shape": [5]}, ["shapes"]),
        ({"kind": "model"}, ["policy only"]),
    ]:
        altered = tmp_path / "altered.pt"
        torch.save({**checkpoint, **change}, altered)
        expect_error(tiny(resume=str(altered), **settings), *fragments)
    untouched_after(
        tiny(resume=finished_checkpoint, env_id="Walker2d-v4"),
        f"trained with --env-id {settings['env_id']}, not Walker2d-v4",
    )
    untouched_after(
        tiny(resume=finished_checkpoint, env_id=settings["env_id"], gamma=0.9),
        "trained with --gamma 0.99, not 0.9",
    )
    untouched_after(tiny(**settings), "already holds a run")  # same --run-name
    # The other algorithm's script refuses the real checkpoint.
    untouched_after(tiny_for(other)(resume=finished_checkpoint), f"{algo} checkpoint")


@EVERY_ALGORITHM
def test_crafted_pickle_is_refused_not_executed(tiny_for, algo, tmp_path):
    crafted, marker = crafted_checkpoint(tmp_path)
    expect_error(tiny_for(algo)(resume=str(crafted)), "cannot read checkpoint", "refused to load", "system")
    assert not marker.exists()


@EVERY_ALGORITHM
def test_damaged_files_are_one_line(algo, tmp_path):
    module, policy_key = ALGORITHMS[algo].module(), ALGORITHMS[algo].policy_keys[0]
    envs = environments.make_vector_env("Pendulum-v1", 1, "SAC")
    args = dataclasses.asdict(module.Args(env_id="Pendulum-v1", hidden_size=-1, run_name="r"))
    record = checkpoints.policy_record(
        module.Args(), module.ALGORITHM, envs, 100, **{policy_key: {}}, obs_rms=None
    )
    envs.close()
    torch.save({**record, "args": args}, tmp_path / "bad_size.pt")
    assert "is damaged" in error_of(module.load_policy, str(tmp_path / "bad_size.pt"))
    # A training checkpoint without its networks: the resume says so in one line.
    training = {**record, "kind": "training", "run": {"wandb_id": "x", "wall_clock": 0.0}}
    training["args"] = {
        **dataclasses.asdict(module.Args(env_id="Pendulum-v1", run_name="r")),
        "hidden_size": 8,
    }
    os.makedirs(tmp_path / "r")
    torch.save(training, tmp_path / "r" / "checkpoint.pt")
    resume = cli.resume_args(module.Args, str(tmp_path / "r" / "checkpoint.pt"))
    assert "is damaged: it does not restore" in error_of(module.train, resume)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


BAD_SETTINGS = {
    "sac": [
        (dict(batch_size=512, buffer_size=100), ["--batch-size 512 is larger than --buffer-size 100"]),
        (dict(num_envs=8, batch_size=4, buffer_size=5), ["--num-envs 8 is larger than --buffer-size 5"]),
        (dict(gamma=1.5), ["--gamma"]),
        (dict(alpha=0.0, autotune=True), ["--alpha"]),
    ],
    "ppo": [
        (dict(num_minibatches=512, num_steps=256), ["--num-minibatches 512 is larger"]),
        (dict(gae_lambda=1.5), ["--gae-lambda"]),
        # std = exp(log std) must be a float32 number: exp(1000) is inf, and every loss NaN
        (dict(log_std_init=1000.0), ["--log-std-init must be in [-87, 88], got 1000.0"]),
    ],
}


@EVERY_ALGORITHM
def test_bad_hyperparameters_and_envs(tiny_for, algo):
    tiny = tiny_for(algo)
    expect_error(tiny(env_id="HalfCheeta-v4"), "unknown env id", "HalfCheetah-v4")
    expect_error(tiny(env_id="CartPole-v1"), "Box")
    expect_error(tiny(total_timesteps=-5), "--total-timesteps must be positive")
    for overrides, fragments in BAD_SETTINGS[algo]:
        expect_error(tiny(**overrides), *fragments)


@EVERY_ALGORITHM
def test_flags_the_machine_cannot_honour_are_refused_before_anything_runs(tiny_for, algo, tmp_path):
    # Each of these once ended in a traceback (a seed past 2**63), a crash (100000 threads), an
    # allocation failure, or a run directory outside --runs-dir; now in one line, with no folder made.
    tiny = tiny_for(algo)
    memory = {"sac": dict(buffer_size=10**11, batch_size=32), "ppo": dict(num_steps=10**10)}[algo]
    for overrides, fragment in [
        (dict(seed=10**23), "--seed must be in [0, 2147483647]"),
        (dict(threads=100_000), "--threads 100000: this process may use"),
        (memory, "GiB; this machine has"),
        (dict(hidden_size=10**7), "networks of --hidden-size"),
        (
            dict(exp_name="../../escape"),
            "--exp-name '../../escape' must be one name, a folder inside --runs-dir",
        ),
        (dict(run_name="../x"), "--run-name '../x' must be one name"),
        (dict(run_name="/tmp/x"), "--run-name '/tmp/x' must be one name"),
    ]:
        args = tiny(**overrides)
        expect_error(args, fragment)
        assert not os.listdir(args.runs_dir), overrides


CHECKPOINT_STEPS = {"sac": 200, "ppo": 256}  # a checkpoint every ... steps of the tiny runs


@EVERY_ALGORITHM
def test_a_full_disk_while_checkpointing_ends_in_one_line_and_the_run_resumes(tiny_for, algo, monkeypatch):
    # The disk fills while the second checkpoint.pt is written: half a file is on disk when the
    # write fails. The run must stop in one line naming the last good checkpoint, leave no
    # temporary file, and resume from that checkpoint once there is room again.
    module, every = ALGORITHMS[algo].module(), CHECKPOINT_STEPS[algo]
    exact = {"save_buffer": True} if algo == "sac" else {}  # SAC resumes exactly with its buffer
    args = tiny_for(algo)(checkpoint_every=every, run_name="full", **exact)
    real_save, writes = torch.save, []

    def save_until_the_disk_fills(obj, f, *rest, **kwargs):
        if f.name.endswith("checkpoint.pt.tmp"):
            writes.append(f.name)
            if len(writes) == 2:
                f.write(b"half a checkpoint")
                raise OSError(28, os.strerror(28))  # ENOSPC
        return real_save(obj, f, *rest, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    message = error_of(module.train, args)
    directory = run_dir(args)
    checkpoint_path = os.path.join(directory, "checkpoint.pt")
    assert f"cannot write {checkpoint_path}: No space left on device; training stopped" in message
    assert f"Last good checkpoint: {checkpoint_path} (step {every})" in message
    assert not glob.glob(os.path.join(directory, "**", "*.tmp"), recursive=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert load(checkpoint_path)["global_step"] == every
    summary = module.train(cli.resume_args(module.Args, checkpoint_path))
    assert summary["global_step"] == args.total_timesteps


@EVERY_ALGORITHM
def test_a_negative_seed_is_one_line(algo, tmp_path):
    module = ALGORITHMS[algo].module()
    args = module.Args(env_id="Pendulum-v1", seed=-1, runs_dir=str(tmp_path))
    assert "--seed must not be negative" in error_of(module.train, args)


LEARNING_RATES = {"sac": "q_lr", "ppo": "learning_rate"}


@EVERY_ALGORITHM
def test_non_finite_learning_rates_are_refused_before_anything_runs(tiny_for, algo):
    flag = LEARNING_RATES[algo]
    for rate in (float("inf"), float("nan")):
        args = tiny_for(algo)(**{flag: rate})
        expect_error(args, f"--{flag.replace('_', '-')} must be a finite number")
        assert not os.path.exists(run_dir(args))


@pytest.mark.parametrize(
    "algo, flags, message",
    [
        *[
            (algo, flags, message)
            for algo in ALGORITHMS
            for flags, message in [
                (["--env-id", "Walker2d-v9"], "unknown env id 'Walker2d-v9'"),
                (["--total-timesteps", "abc"], "Error parsing --total-timesteps: invalid literal for int()"),
                (["--no-such-flag", "3"], "Unrecognized options: --no-such-flag"),
            ]
        ],
        ("ppo", ["--activation", "sigmoid"], "invalid choice 'sigmoid' for argument '--activation'"),
    ],
)
def test_command_line_errors_are_one_line(algo, flags, message):
    # Not tyro's box of many lines, nor a traceback: the whole of stderr is the one line.
    result = subprocess.run(
        [sys.executable, ALGORITHMS[algo].script, *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


# --------------------------------------------------------------------------------------------
# A non-finite loss
# --------------------------------------------------------------------------------------------


# Step 300 of the toy env pays an infinite reward. SAC's first non-finite update may come any time
# after it; PPO's comes in the update after the second rollout (at step 512), whose checkpoint is
# refused, so the first rollout's (step 256) is the last good one.
NON_FINITE = [
    pytest.param(
        "sac",
        dict(total_timesteps=2000, learning_starts=100, batch_size=64, checkpoint_every=200),
        "qf",
        (301, 2000, None),
        id="sac",
    ),
    *[
        pytest.param(
            "ppo",
            dict(norm_reward=norm_reward, checkpoint_every=256),
            "agent",
            (512, 512, 256),
            id=f"ppo-norm_reward={norm_reward}",
        )
        for norm_reward in (True, False)
    ],
]


@pytest.mark.parametrize("algo, settings, network, steps", NON_FINITE)
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_for, algo, settings, network, steps):
    first_failing, last_failing, last_good = steps
    args = tiny_for(algo)(env_id="tests.toy_envs:InfiniteReward-v0", **settings)
    message = expect_error(args, "non-finite", "Last good checkpoint")
    step = int(message.split("at step ")[1].split(";")[0])
    assert first_failing <= step <= last_failing, message
    checkpoint = load(os.path.join(run_dir(args), "checkpoint.pt"))
    assert checkpoint["global_step"] < step and f"(step {checkpoint['global_step']})" in message
    if last_good is not None:
        assert checkpoint["global_step"] == last_good
    assert all(torch.isfinite(t).all() for t in checkpoint[network].values())
