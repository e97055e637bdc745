"""The actor_critic package on its own (cli, environments, checkpoints, training, run_directory):
flag roles, checks, envs and their state, checkpoint I/O, resume, the run directory, signals,
progress and evaluation."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_continuous
import sac_continuous
from actor_critic import checkpoints, cli, environments, run_directory, training
from tests.helpers import REPO, crafted_checkpoint, error_of

# --------------------------------------------------------------------------------------------
# Which flags define a run
# --------------------------------------------------------------------------------------------


def test_one_declaration_gives_the_lists_resume_sweeps_and_plots_use():
    for module in (sac_continuous, ppo_continuous):
        axes = cli.flags_with_role(module.Args, "axis")
        assert axes == {"exp_name", "seed", "env_id", "total_timesteps", "run_name"}
        how = cli.flags_with_role(module.Args, "how")
        # What used to be listed by hand in four places: the sweep's reserved flags, the plots'
        # "not a setting" and each script's resume overrides.
        assert {"runs_dir", "resume", "threads", "cuda", "track", "checkpoint_every", "capture_video"} <= how
        assert {
            "wandb_project_name",
            "wandb_entity",
            "eval_every",
            "eval_episodes",
            "torch_deterministic",
        } <= how
        hyperparameters = cli.flags_with_role(module.Args, "hyperparameter")
        assert {"gamma", "hidden_size", "num_envs"} <= hyperparameters
        assert not hyperparameters & (axes | how)
    assert {"log_every", "save_buffer"} <= cli.flags_with_role(sac_continuous.Args, "how")
    # SAC may be extended on resume; PPO's learning-rate schedule depends on the length.
    assert "total_timesteps" in cli.resumable_flags(sac_continuous.Args)
    assert "total_timesteps" not in cli.resumable_flags(ppo_continuous.Args)
    assert "gamma" not in cli.resumable_flags(sac_continuous.Args)


def test_the_markers_keep_the_help_text(capsys):
    # tyro reads each field's docstring from the source; the markers must not hide it.
    import tyro

    with pytest.raises(SystemExit):
        tyro.cli(sac_continuous.Args, args=["--help"])
    helptext = capsys.readouterr().out
    assert "torch CPU threads" in helptext and "the discount factor gamma" in helptext


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Numbers:
    rate: float = 1.0
    count: int = 1
    fraction: float = 0.5
    optional: float | None = None


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -float("inf")])
def test_non_finite_numbers_are_refused(bad):
    message = error_of(cli.check_numbers, Numbers(rate=bad), positive=("rate",))
    assert "--rate must be a finite number" in message


def test_number_checks():
    assert "--count must be positive" in error_of(cli.check_numbers, Numbers(count=0), positive=("count",))
    assert "must not be negative" in error_of(cli.check_numbers, Numbers(count=-1), non_negative=("count",))
    assert "[0, 1]" in error_of(cli.check_numbers, Numbers(fraction=1.5), unit_interval=("fraction",))
    cli.check_numbers(Numbers(), positive=("rate", "count"), non_negative=("optional",))  # None is fine


# --------------------------------------------------------------------------------------------
# Envs and their state
# --------------------------------------------------------------------------------------------


def test_env_errors_are_one_line():
    assert "HalfCheetah-v4" in error_of(environments.make_env, "HalfCheeta-v4", "SAC")
    assert "SAC needs a continuous (Box) action space" in error_of(
        environments.make_env, "CartPole-v1", "SAC"
    )
    env = environments.make_env("Pendulum-v1", "SAC", bounded=True)
    assert isinstance(env.action_space, gym.spaces.Box)
    env.close()


# Humanoid's and Ant's rewards read positions MuJoCo derives from the state (the centre of mass, the
# torso), before the step: a restore that only recomputed them would pay a different first reward.
@pytest.mark.parametrize("env_id", ["HalfCheetah-v4", "Humanoid-v4", "Ant-v4", "Pendulum-v1"])
def test_env_state_round_trip_continues_the_same_episode(env_id):
    env, twin = gym.make(env_id), gym.make(env_id)
    env.reset(seed=1)
    twin.reset(seed=2)  # somewhere else entirely
    for _ in range(7):
        env.step(env.action_space.sample())
    environments.set_env_state(twin, environments.get_env_state(env))
    actions = [env.action_space.sample() for _ in range(5)]
    for action in actions:
        a, b = env.step(action), twin.step(action)
        assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2:4] == b[2:4]
    assert env.unwrapped.np_random.random() == twin.unwrapped.np_random.random()


def test_vector_env_states_and_reset_flags():
    envs = environments.make_vector_env("Pendulum-v1", 2, "SAC")
    envs.reset(seed=0)
    states = environments.get_env_states(envs)
    assert len(states) == 2 and all(state is not None for state in states)
    done = np.array([True, False])
    assert environments.set_env_states(envs, states, done)
    # The vector env itself must know: env 0's next step is a reset step (reward 0, a new episode).
    rewards = envs.step(np.zeros((2, 1), dtype=np.float32))[1]
    assert rewards[0] == 0.0 and rewards[1] != 0.0
    assert not environments.set_env_states(envs, [None, None], done)  # nothing to restore: say so
    envs.close()


def test_env_workers_step_exactly_as_one_sync_vector_env():
    import tests.toy_envs  # noqa: F401  (registers the toy envs)

    env_id = "tests.toy_envs:Counter-v0"  # episodes of 3, 4 or 5 steps: resets everywhere
    sync = environments.make_vector_env(env_id, 5, "this test")
    workers = environments.make_vector_env(env_id, 5, "this test", workers=3)  # shares of 2, 2 and 1
    try:
        assert workers.counts == [2, 2, 1] and workers.single_action_space == sync.single_action_space
        assert np.array_equal(sync.reset(seed=7)[0], workers.reset(seed=7)[0])
        rng = np.random.default_rng(0)
        for step in range(40):
            actions = rng.uniform(-1, 1, (5, 1)).astype(np.float32)
            for a, b in zip(sync.step(actions)[:4], workers.step(actions)[:4], strict=True):
                assert np.array_equal(a, b), step
        assert environments.get_env_states(workers) == [None] * 5  # a toy env's state is not ours to read
        assert environments.set_env_states(workers, [None] * 5, np.zeros(5, dtype=bool)) is False
        # An env that raises stops the run with its error on one line, not a hung pipe.
        with pytest.raises(RuntimeError, match="an env worker failed: ValueError: action"):
            workers.step(np.full((5, 1), 5.0, dtype=np.float32))
        workers.processes[0].kill()
        workers.processes[0].join()
        with pytest.raises(RuntimeError, match="an env worker died"):
            workers.step(np.zeros((5, 1), dtype=np.float32))
    finally:
        sync.close()
        workers.close()


def test_env_workers_states_round_trip():
    envs = environments.make_vector_env("Pendulum-v1", 5, "this test", workers=2)
    try:
        envs.reset(seed=3)
        actions = np.random.default_rng(0).uniform(-2, 2, (10, 5, 1)).astype(np.float32)
        for step_actions in actions[:5]:
            envs.step(step_actions)
        states = environments.get_env_states(envs)
        assert all(state is not None for state in states)
        first = [envs.step(step_actions)[0] for step_actions in actions[5:]]
        assert environments.set_env_states(envs, states, np.zeros(5, dtype=bool))
        again = [envs.step(step_actions)[0] for step_actions in actions[5:]]
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        # The reset-step flags travel too: env 1 (in the first worker) and env 4 (in the second)
        # start new episodes on the next step, which pays nothing.
        assert environments.set_env_states(envs, states, np.array([False, True, False, False, True]))
        rewards = envs.step(actions[5])[1]
        assert rewards[1] == rewards[4] == 0.0 and np.all(rewards[[0, 2, 3]] != 0.0)
    finally:
        envs.close()


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_env_workers_never_outlive_their_run(start_method):
    # Workers ignore SIGTERM (the parent needs their envs for its checkpoint), so the parent must
    # stop them itself: an error exit must not hang on them, and a parent killed outright must
    # not leave them behind. Whatever multiprocessing starts them with (forkserver is Python
    # 3.14's default on Linux), an idle worker must not take its parent for gone.
    script = (
        "import multiprocessing, sys, time, numpy\n"
        "from actor_critic import cli, environments\n"
        "multiprocessing.set_start_method(sys.argv[2])\n"
        "envs = environments.make_vector_env('Pendulum-v1', 2, 'this test', workers=2)\n"
        "envs.reset(seed=0)\n"
        "time.sleep(2.5)\n"  # idle: a worker looks for its parent once a second
        "envs.step(numpy.zeros((2, 1), dtype=numpy.float32))\n"
        "print(*[process.pid for process in envs.processes], flush=True)\n"
        "cli.fail('a bad input') if sys.argv[1] == 'fail' else time.sleep(60)\n"
    )
    command = [sys.executable, "-c", script]
    failed = subprocess.run(
        [*command, "fail", start_method], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 1 and failed.stderr.strip() == "error: a bad input", failed.stderr

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone, only not yet reaped
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"

    parent = subprocess.Popen([*command, "sleep", start_method], cwd=REPO, stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    parent.kill()
    parent.wait()
    deadline = time.time() + 20
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left


def test_episodes_count_returns_and_reset_steps():
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, float(value), step))

    writer, episodes = Writer(), training.Episodes(2)
    episodes.record(np.array([1.0, 2.0]), np.array([False, False]), 2, writer)
    episodes.record(np.array([1.0, 2.0]), np.array([True, False]), 4, writer)
    assert writer.scalars == [("charts/episodic_return", 2.0, 4), ("charts/episodic_length", 2.0, 4)]
    # The step after a done is a reset step: the new episode starts from zero.
    episodes.record(np.array([0.0, 2.0]), np.array([False, False]), 6, writer)
    assert episodes.returns.tolist() == [0.0, 6.0] and episodes.lengths.tolist() == [0, 3]
    copy = training.Episodes(2)
    copy.load_state_dict(episodes.state_dict())
    assert copy.returns.tolist() == episodes.returns.tolist() and list(copy.recent) == [2.0]


# --------------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------------


def test_save_atomically_keeps_the_old_file_when_a_write_dies(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    checkpoints.save_atomically({"step": 1}, path)

    def dies(obj, f):
        f.write(b"half a file")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_atomically({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}


def a_checkpoint(**changes) -> dict:
    envs = environments.make_vector_env("Pendulum-v1", 1, "SAC")
    record = checkpoints.policy_record(sac_continuous.Args(), "sac", envs, 100, actor={})
    envs.close()
    return {**record, **changes}


def test_load_checkpoint_refuses_what_is_not_ours(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(a_checkpoint(), good)
    assert checkpoints.load_checkpoint(str(good))["global_step"] == 100
    assert "checkpoint not found" in error_of(checkpoints.load_checkpoint, str(tmp_path / "missing.pt"))
    (tmp_path / "text.pt").write_text("not a checkpoint")
    assert "cannot read checkpoint" in error_of(checkpoints.load_checkpoint, str(tmp_path / "text.pt"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    assert "not a checkpoint of this project" in error_of(
        checkpoints.load_checkpoint, str(tmp_path / "foreign.pt")
    )
    torch.save(a_checkpoint(format_version=3), tmp_path / "v3.pt")
    assert "format version 3, enjoy.py reads versions 1 to 2" in error_of(
        checkpoints.load_checkpoint, str(tmp_path / "v3.pt"), reader="enjoy.py"
    )
    damaged = a_checkpoint()
    del damaged["action_low"]
    torch.save(damaged, tmp_path / "damaged.pt")
    assert "no 'action_low'" in error_of(checkpoints.load_checkpoint, str(tmp_path / "damaged.pt"))


def test_loading_a_crafted_file_runs_no_code(tmp_path):
    crafted, marker = crafted_checkpoint(tmp_path)
    message = error_of(checkpoints.load_checkpoint, str(crafted))
    assert "refused to load" in message and "system" in message
    assert not marker.exists()


def a_training_checkpoint(path, **saved_flags) -> str:
    """A training checkpoint file whose run was trained with these flags (and nothing else in it)."""
    record = a_checkpoint(kind="training", args=dataclasses.asdict(sac_continuous.Args(**saved_flags)))
    record["args"]["a_flag_since_removed"] = 3  # an old checkpoint: its value is in the other fields
    torch.save(record, path)
    return str(path)


def test_a_resume_lays_the_saved_flags_under_the_command_line(tmp_path):
    path = a_training_checkpoint(tmp_path / "checkpoint.pt", gamma=0.98, total_timesteps=500, run_name="r")
    args = cli.command_line(
        sac_continuous.Args, ["--resume", path, "--total-timesteps", "900", "--threads", "2"]
    )
    assert (args.gamma, args.total_timesteps, args.threads, args.run_name, args.resume) == (
        0.98,
        900,
        2,
        "r",
        path,
    )
    saved = checkpoints.load_checkpoint(path)
    cli.check_resume(args, saved)  # what may change did; the rest is the run's own
    # From Python, resume_args does what the command line does.
    assert cli.resume_args(sac_continuous.Args, path, total_timesteps=900, threads=2) == args
    # A flag that may not change is refused, from the command line and from Python alike.
    contradiction = cli.command_line(sac_continuous.Args, ["--resume", path, "--gamma", "0.9"])
    assert "trained with --gamma 0.98, not 0.9" in error_of(cli.check_resume, contradiction, saved)
    python_built = sac_continuous.Args(resume=path, gamma=0.98, total_timesteps=500)  # run_name differs
    assert "trained with --run-name r, not None" in error_of(cli.check_resume, python_built, saved)
    # The other algorithm's script, and a policy-only file, are refused before anything parses.
    assert "resume it with sac_continuous.py" in error_of(
        cli.command_line, ppo_continuous.Args, ["--resume", path]
    )
    policy_only = a_checkpoint()
    torch.save(policy_only, tmp_path / "final_model.pt")
    assert "policy only" in error_of(
        cli.command_line, sac_continuous.Args, ["--resume", str(tmp_path / "final_model.pt")]
    )


def test_a_flag_given_on_the_command_line_counts_even_at_its_default(tmp_path):
    # A 500-step run lengthened to the default total (1M here), and its buffer no longer saved:
    # both values are defaults, so only the command line can tell that they were asked for.
    path = a_training_checkpoint(
        tmp_path / "checkpoint.pt", total_timesteps=500, save_buffer=True, gamma=0.98
    )
    argv = ["--resume", path, "--total_timesteps=1000000", "--no-save-buffer", "--no-cuda"]
    args = cli.command_line(sac_continuous.Args, argv)
    assert (args.total_timesteps, args.save_buffer, args.cuda, args.gamma) == (1_000_000, False, False, 0.98)
    # Flags not given keep their saved values, even where those are not the defaults.
    args = cli.command_line(sac_continuous.Args, ["--resume", path])
    assert (args.total_timesteps, args.save_buffer, args.gamma) == (500, True, 0.98)
    # And a flag that may not change is refused even at its default, once it was given.
    gamma_given = cli.command_line(sac_continuous.Args, ["--resume", path, "--gamma", "0.99"])
    message = error_of(cli.check_resume, gamma_given, checkpoints.load_checkpoint(path))
    assert "trained with --gamma 0.98, not 0.99" in message


def test_a_checkpoint_of_format_version_1_is_upgraded_on_load(tmp_path):
    # Version 1 kept the loop's state and the run's record in one "rollout"; version 2 parts them.
    rollout = {"update_count": 7, "obs": torch.ones(3), "wandb_id": "abc", "wall_clock": 1.5, "sessions": []}
    version_1 = a_checkpoint(format_version=1, kind="training", rollout=rollout)
    torch.save(version_1, tmp_path / "v1.pt")
    loaded = checkpoints.load_checkpoint(str(tmp_path / "v1.pt"))
    assert loaded["format_version"] == checkpoints.CHECKPOINT_VERSION == 2 and "rollout" not in loaded
    assert loaded["run"] == {"wandb_id": "abc", "wall_clock": 1.5, "sessions": []}
    assert loaded["loop_state"]["update_count"] == 7 and torch.equal(
        loaded["loop_state"]["obs"], torch.ones(3)
    )
    assert checkpoints.upgrade(loaded) == loaded  # today's version is left as it is


# --------------------------------------------------------------------------------------------
# The run: directory, signals, progress
# --------------------------------------------------------------------------------------------


def test_runs_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    args = sac_continuous.Args(runs_dir=str(tmp_path / "a_file"), run_name="r")
    assert "is a file, not a directory" in error_of(training.Run, args, "sac", None)


def test_one_process_per_run_directory(tmp_path):
    # A second process on the same run (the same --resume twice) would write the same checkpoint.
    args = sac_continuous.Args(runs_dir=str(tmp_path), run_name="r")
    first = training.Run(args, "sac", None)
    first.open_logs(0)
    try:
        script = (
            "import sac_continuous\nfrom actor_critic import training\n"
            f"args = sac_continuous.Args(runs_dir={str(tmp_path)!r}, run_name='r')\n"
            "training.Run(args, 'sac', None).open_logs(0)\n"
        )

        second = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
        assert second.returncode == 1 and second.stderr.strip().endswith(
            "another process is training this run"
        )
    finally:
        first.close()
    again = training.Run(args, "sac", None)  # closed, the run is free again
    again.open_logs(0)
    again.close()


def test_signals_only_set_a_flag_and_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    run = training.Run(sac_continuous.Args(runs_dir=str(tmp_path), run_name="r"), "sac", None)
    run.open_logs(0)
    os.kill(os.getpid(), signal.SIGTERM)
    assert run.stop_signal == [signal.SIGTERM]
    run.close()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_exits_only_once_its_checkpoint_is_written(tmp_path, capsys):
    # A SIGTERM that lands after the loop decided not to checkpoint this step (while it printed
    # progress) must wait for the next step's checkpoint, not announce one that was never written.
    class Envs:
        def close(self):
            pass

    run = training.Run(sac_continuous.Args(runs_dir=str(tmp_path), run_name="r"), "sac", None)
    run.open_logs(0)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        run.exit_if_signalled(100, Envs())  # no checkpoint at step 100: go on
        run.last_checkpoint_step = 200
        with pytest.raises(SystemExit) as raised:
            run.exit_if_signalled(200, Envs())
        assert raised.value.code == 128 + signal.SIGTERM
        assert "checkpoint written at step 200" in capsys.readouterr().out
    finally:
        run.close()


def test_time_left_comes_from_the_recent_rate(tmp_path, monkeypatch, capsys):
    clock = [1000.0]
    monkeypatch.setattr(training.time, "time", lambda: clock[0])
    progress = training.Progress(str(tmp_path), total=1_000_000, start_step=0)
    # Fast random warm-up steps first (5000 in 10 s), then learning at 50 steps/s for two minutes.
    clock[0] += 10
    episodes = training.Episodes(1)
    progress.update(5000, episodes, None, force=False)
    step = 5000
    for _ in range(12):
        clock[0] += 10
        step += 500
        episodes.recent.append(-5.0)
        progress.update(step, episodes, None, force=False)
    record = run_directory.read_progress(str(tmp_path))
    assert record["step"] == step == 11_000 and record["steps_per_s"] == pytest.approx(50, rel=0.01)
    assert record["time_left_s"] == pytest.approx((1_000_000 - step) / 50, rel=0.01)  # ~5.5 h, not 25 min
    assert record["time_left"] == training.format_duration(record["time_left_s"])
    assert "left 5h29m" in capsys.readouterr().out.splitlines()[-1]


def test_read_progress_of_a_run_without_one(tmp_path):
    assert run_directory.read_progress(str(tmp_path)) is None
    (tmp_path / run_directory.PROGRESS).write_text("{half")
    assert run_directory.read_progress(str(tmp_path)) is None
    (tmp_path / run_directory.PROGRESS).write_text(json.dumps({"step": 3}))  # no total: not a record
    assert run_directory.read_progress(str(tmp_path)) is None
    (tmp_path / run_directory.PROGRESS).write_text(json.dumps({"step": 3, "total_timesteps": 9}))
    assert run_directory.read_progress(str(tmp_path)) == {"step": 3, "total_timesteps": 9}


def test_evaluate_plays_seeded_episodes():
    env = gym.make("Pendulum-v1")
    returns, frames = training.evaluate(lambda obs: np.zeros(1, dtype=np.float32), env, 2, seed=5)
    again, _ = training.evaluate(lambda obs: np.zeros(1, dtype=np.float32), env, 2, seed=5)
    assert returns == again and len(returns) == 2 and returns[0] != returns[1] and frames == []


def test_small_helpers():
    assert training.crossed(1000, 1, 1000) and not training.crossed(1001, 1, 1000)
    assert training.crossed(1002, 4, 1000) and not training.crossed(1000, 1, 0)
    assert training.format_duration(59) == "0m59s" and training.format_duration(3 * 3600 + 120) == "3h02m"


def test_a_non_finite_stop_gives_back_the_signal_handlers(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    run = training.Run(sac_continuous.Args(runs_dir=str(tmp_path), run_name="r"), "sac", None)
    run.open_logs(0)
    assert "Last good checkpoint: none" in error_of(run.stop_non_finite, "loss at step 3")
    assert signal.getsignal(signal.SIGINT) is before  # a notebook's Ctrl-C works again


def test_huge_integers_are_checked_without_overflow():
    cli.check_numbers(Numbers(count=10**400), positive=("count",))


def test_the_v4_deprecation_notice_stays_silent():
    # Gymnasium puts its own DeprecationWarning filter in front when it is first imported; the
    # package's filter must come after it, whichever module a script imports first.
    for first in ("actor_critic.cli", "sac_continuous"):
        code = f"import {first}, gymnasium; gymnasium.make('InvertedPendulum-v4').close()"
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0 and "out of date" not in result.stderr, (first, result.stderr)


def test_a_run_directory_deleted_under_a_run_stops_it_in_one_line(tmp_path):
    # Without the check, the next save would quietly make a new, empty folder and carry on there.
    import shutil

    args = sac_continuous.Args(runs_dir=str(tmp_path), run_name="r", env_id="Pendulum-v1", eval_episodes=0)
    run = training.Run(args, "sac", None)
    run.open_logs(0)
    shutil.rmtree(run.dir)
    run.writer.add_scalar("charts/SPS", 1.0, 100)  # TensorBoard has something to write into the void
    envs = environments.make_vector_env("Pendulum-v1", 1, "SAC")
    model = checkpoints.policy_record(args, "sac", envs, 100, actor={})
    envs.close()
    message = error_of(run.save, model, {}, False, torch.device("cpu"))
    assert f"the run directory {run.dir} is gone; training stopped. Last good checkpoint: none" in message
    assert not os.path.exists(run.dir)


def test_tensorboards_writer_thread_fault_raised_again_at_the_next_write_stops_the_run_in_one_line(tmp_path):
    # TensorBoard's thread fails to write into a deleted folder and keeps the error, raising it
    # again from the loop's next add_scalar: that must not escape as a traceback.
    import shutil

    args = sac_continuous.Args(runs_dir=str(tmp_path), run_name="r", env_id="Pendulum-v1", eval_episodes=0)
    run = training.Run(args, "sac", None)
    run.open_logs(0)
    shutil.rmtree(run.dir)
    run.writer.add_scalar("charts/SPS", 1.0, 100)
    deadline = time.time() + 30
    while run.writer_fault is None and time.time() < deadline:  # the thread writes it, and fails
        time.sleep(0.05)
    assert isinstance(run.writer_fault, FileNotFoundError)
    with pytest.raises(FileNotFoundError):  # what the bare SummaryWriter does at the next write
        run.writer.writer.add_scalar("charts/SPS", 2.0, 200)
    run.writer.add_scalar("charts/SPS", 2.0, 200)  # kept, not raised
    message = error_of(run.report, 200, training.Episodes(1), None, False, None)
    assert f"the run directory {run.dir} is gone; training stopped. Last good checkpoint: none" in message


def test_a_fault_in_tensorboards_writer_thread_stops_the_run_in_one_line(tmp_path):
    # TensorBoard writes from a thread of its own: a full disk there must not print that thread's
    # traceback and let training go on; the loop stops at its next report, in one line.
    import threading

    args = sac_continuous.Args(runs_dir=str(tmp_path), run_name="r", env_id="Pendulum-v1", eval_episodes=0)
    run = training.Run(args, "sac", None)
    hook_before = threading.excepthook
    run.open_logs(0)

    def fill_the_disk():
        raise OSError(28, os.strerror(28))

    writer_thread = threading.Thread(target=fill_the_disk)
    writer_thread.start()
    writer_thread.join()
    message = error_of(run.report, 10, training.Episodes(1), None, False, None)
    assert f"cannot write in {run.dir}: No space left on device; training stopped" in message
    assert threading.excepthook is hook_before  # the run put it back as it closed
