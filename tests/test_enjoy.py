"""Checks of enjoy.py on tiny SAC and PPO runs: scores, files, GIF and video, stages, the tracking
camera, and bad input."""

import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys

import gymnasium as gym
import imageio.v3 as iio
import mujoco
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import enjoy
import ppo_continuous
import sac_continuous
from actor_critic import cli, training
from tests.helpers import TINY_PPO, TINY_SAC, args_factory, crafted_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(width=64, height=48)  # frames this small render in a few milliseconds


# Two tiny runs for the whole module, each with snapshots in models/ and a final evaluation of
# two episodes to compare against, with the `tiny` and `tiny_ppo` fixtures' settings.
@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("sac")
    make = args_factory(sac_continuous.Args, runs, **TINY_SAC)
    args = make(env_id="InvertedPendulum-v4", checkpoint_every=200, eval_episodes=2)
    summary = sac_continuous.train(args)
    return os.path.join(runs, "run"), summary


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("ppo")
    make = args_factory(ppo_continuous.Args, runs, **TINY_PPO)
    args = make(env_id="HalfCheetah-v4", checkpoint_every=256, eval_episodes=2)
    summary = ppo_continuous.train(args)
    return os.path.join(runs, "run"), summary


def play(*paths, **overrides) -> dict:
    return enjoy.main(enjoy.Args(checkpoint=tuple(str(p) for p in paths), **overrides))


def snapshots(run_dir):
    return sorted(
        os.path.join(run_dir, "models", name) for name in os.listdir(os.path.join(run_dir, "models"))
    )


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["sac_run", "ppo_run"])
def test_scores_match_the_runs_own_evaluation(run, request, tmp_path):
    # Same policy, same seeds (the run's evaluation seeds by default), same frozen normalization,
    # one observation at a time: the same returns as the run's final evaluation, bit for bit (a
    # batched forward would round differently, and rounding can change a chaotic episode). For PPO
    # this needs the observation statistics from the checkpoint, used as saved and never updated.
    run_dir, summary = request.getfixturevalue(run)
    path = os.path.join(run_dir, "final_model.pt")
    for drawn in ({"render": False}, {"gif": str(tmp_path / "first.gif"), **SMALL}):  # the first drawn or not
        result = play(path, eval_episodes=2, **drawn)["results"][0]
        assert (result["mean"], result["std"]) == (summary["final_eval_mean"], summary["final_eval_std"])
        assert result["seeds"] == [100_001, 100_002]


def test_score_returns_the_numbers_and_prints_nothing(sac_run, ppo_run, tmp_path, capsys):
    # score() is what tools/check_published.py calls: numbers back, not one character printed (not
    # even the note that a run has fewer snapshots than --stages asks for), and main prints and
    # writes as its JSON exactly these numbers.
    run_dir, summary = sac_run
    args = enjoy.Args(checkpoint=(run_dir,), eval_episodes=2, render=False)
    scores = enjoy.score(args)
    assert capsys.readouterr() == ("", "")
    (result,) = scores.results
    assert (result.mean, result.std) == (summary["final_eval_mean"], summary["final_eval_std"])
    assert result.seeds == [100_001, 100_002] and len(result.returns) == len(result.lengths) == 2
    assert result.path == os.path.join(run_dir, "final_model.pt") and result.algorithm == "sac"
    assert result.steps_per_second > 0 and scores.gif is None and scores.deterministic
    assert enjoy.main(dataclasses.replace(args, json="-")) == scores.to_json()
    printed = capsys.readouterr()
    assert json.loads(printed.out) == scores.to_json()
    assert f"return {result.mean:.2f} ± {result.std:.2f} over 2 episodes" in printed.err

    count = len(snapshots(ppo_run[0]))
    many = dict(checkpoint=(ppo_run[0],), stages=count + 5, eval_episodes=1, max_steps=5)
    drawn = enjoy.score(enjoy.Args(**many, gif=str(tmp_path / "stages.gif"), **SMALL))
    assert capsys.readouterr() == ("", "")
    assert drawn.notes == [f"{ppo_run[0]} has {count} snapshots; drawing all of them"]
    assert [r.global_step for r in drawn.results] == [
        int(os.path.basename(p)[5:13]) for p in snapshots(ppo_run[0])
    ]
    assert drawn.gif == str(tmp_path / "stages.gif") and drawn.gif_frames == 5 // 2 + 1
    assert drawn.gif_bytes == os.path.getsize(drawn.gif) and drawn.gif_fps == pytest.approx(10)
    enjoy.main(enjoy.Args(**many, render=False))
    assert capsys.readouterr().err == f"note: {drawn.notes[0]}\n"  # main prints it, on stderr


def one_by_one(path, env_id, seeds, max_steps):
    """The reference: each episode alone, from reset(seed), one observation at a time."""
    algorithm = torch.load(path, weights_only=True)["algorithm"]
    policy = (sac_continuous if algorithm == "sac" else ppo_continuous).load_policy(path)
    env = gym.make(env_id)
    returns, lengths = [], []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        episode_return, length, done = 0.0, 0, False
        while not done and length < max_steps:
            with torch.inference_mode():  # the policy hands back numpy, which needs no autograd
                action = policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(episode_return)
        lengths.append(length)
    env.close()
    return returns, lengths, policy


# The SAC run's pendulum falls after 9 or 10 steps. The PPO run's HalfCheetah policy plays
# Walker2d (the same spaces), where it falls after different numbers of steps, or reaches
# --max-steps, and where every action changes the reward.
@pytest.mark.parametrize("run, env_id", [("sac_run", "InvertedPendulum-v4"), ("ppo_run", "Walker2d-v4")])
def test_every_episode_is_the_one_played_alone(run, env_id, request, tmp_path):
    path = os.path.join(request.getfixturevalue(run)[0], "final_model.pt")
    seeds, max_steps = list(range(40, 47)), 120
    returns, lengths, _ = one_by_one(path, env_id, seeds, max_steps)
    assert len(set(lengths)) > 1  # episodes end at different steps
    kwargs = dict(env_id=env_id, eval_episodes=7, seed=40, max_steps=max_steps)
    for result in (
        play(path, render=False, **kwargs)["results"][0],
        play(path, gif=str(tmp_path / "first.gif"), **kwargs, **SMALL)["results"][0],
    ):
        assert (result["returns"], result["lengths"], result["seeds"]) == (returns, lengths, seeds)


def test_ppo_uses_the_saved_observation_statistics(ppo_run, tmp_path):
    run_dir, _ = ppo_run
    checkpoint = torch.load(os.path.join(run_dir, "final_model.pt"), weights_only=True)
    assert checkpoint["obs_rms"] is not None
    without = tmp_path / "without_obs_rms.pt"
    torch.save({**checkpoint, "obs_rms": None}, without)  # what a --no-norm-obs run saves
    kwargs = dict(eval_episodes=1, max_steps=100, render=False)
    with_stats = play(os.path.join(run_dir, "final_model.pt"), **kwargs)["results"][0]["returns"]
    without_stats = play(without, **kwargs)["results"][0]["returns"]
    assert with_stats != without_stats
    # Playing does not touch the file's statistics (they stay frozen).
    again = torch.load(os.path.join(run_dir, "final_model.pt"), weights_only=True)["obs_rms"]
    assert torch.equal(again["mean"], checkpoint["obs_rms"]["mean"])


@pytest.mark.parametrize("run", ["sac_run", "ppo_run"])
def test_every_kind_of_file(run, request):
    run_dir, _ = request.getfixturevalue(run)
    kwargs = dict(eval_episodes=1, max_steps=50, render=False)
    files = [os.path.join(run_dir, "final_model.pt"), os.path.join(run_dir, "checkpoint.pt"), run_dir]
    results = [play(path, **kwargs)["results"][0] for path in files + snapshots(run_dir)]
    # final_model.pt, checkpoint.pt and the run directory hold the same, final policy.
    assert results[0]["returns"] == results[1]["returns"] == results[2]["returns"]
    steps = [int(os.path.basename(path)[5:13]) for path in snapshots(run_dir)]  # step_00000200.pt
    assert [result["global_step"] for result in results[3:]] == steps and len(steps) >= 3


def test_a_seeded_evaluation_repeats_exactly(ppo_run):
    final = os.path.join(ppo_run[0], "final_model.pt")
    kwargs = dict(eval_episodes=2, max_steps=100, render=False, seed=7)
    first, second = play(final, **kwargs), play(final, **kwargs)
    assert first["results"][0]["returns"] == second["results"][0]["returns"]
    assert first["results"][0]["seeds"] == [7, 8]
    sampled = [play(final, stochastic=True, **kwargs)["results"][0]["returns"] for _ in range(2)]
    assert sampled[0] == sampled[1]  # sampling repeats with the seed too
    assert sampled[0] != first["results"][0]["returns"]
    assert play(final, stochastic=True, **kwargs)["deterministic"] is False


def test_env_override_with_matching_spaces(sac_run):
    result = play(sac_run[0], env_id="InvertedPendulum-v5", eval_episodes=1, render=False)["results"][0]
    assert result["env_id"] == "InvertedPendulum-v5" and result["lengths"][0] >= 1


# --------------------------------------------------------------------------------------------
# GIF, video, JSON
# --------------------------------------------------------------------------------------------


def gif_frames(path):
    with Image.open(path) as gif:
        return [
            (np.asarray(frame.convert("RGB")), frame.info["duration"])
            for frame in ImageSequence.Iterator(gif)
        ]


def test_gif_next_to_the_checkpoint(ppo_run, capsys):
    run_dir, _ = ppo_run
    # HalfCheetah steps 0.05 s: the default keeps every 2nd frame, 10 per second, real time.
    summary = play(run_dir, eval_episodes=1, max_steps=40, **SMALL)
    gif = os.path.join(run_dir, "final_model.gif")
    assert summary["gif"] == gif and os.path.getsize(gif) == summary["gif_bytes"]
    frames = gif_frames(gif)
    assert len(frames) == summary["gif_frames"] == 40 // 2 + 1
    assert frames[0][0].shape == (48, 64, 3)
    assert [duration for _, duration in frames] == [100] * len(frames)
    assert f"{len(frames)} frames, 10.0 fps" in capsys.readouterr().out
    # --keep-every and --fps. At 30 fps a frame lasts 33.3 ms, which GIF's whole hundredths of a
    # second cannot hold: the delays alternate between 30 and 40 ms and add up to the right time.
    summary = play(run_dir, eval_episodes=1, max_steps=40, keep_every=4, fps=30, gif=gif, **SMALL)
    frames = gif_frames(gif)
    assert len(frames) == 40 // 4 + 1
    assert sum(duration for _, duration in frames) == round(len(frames) / 30 * 100) * 10
    assert {duration for _, duration in frames} <= {30, 40}


def test_video_and_json(ppo_run, tmp_path):
    final = os.path.join(ppo_run[0], "final_model.pt")
    video, gif, summary_path = tmp_path / "episode.mp4", tmp_path / "episode.gif", tmp_path / "s.json"
    summary = play(
        final, eval_episodes=2, max_steps=30, video=str(video), gif=str(gif), json=str(summary_path), **SMALL
    )
    assert iio.imread(video).shape == (30 + 1, 48, 64, 3)  # every step, and the start
    assert iio.immeta(video)["fps"] == pytest.approx(20)
    assert len(gif_frames(gif)) == 30 // 2 + 1  # the GIF still keeps every 2nd frame
    written = json.loads(summary_path.read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["video"] == str(video) and written["gif"] == str(gif)
    (result,) = written["results"]
    assert result["algorithm"] == "ppo" and result["env_id"] == "HalfCheetah-v4"
    assert len(result["returns"]) == 2 and result["lengths"] == [30, 30]


def test_json_on_stdout_and_no_render_writes_no_gif(sac_run, capsys):
    run_dir, _ = sac_run
    before = set(os.listdir(run_dir))
    summary = play(run_dir, eval_episodes=2, render=False, json="-")
    captured = capsys.readouterr()
    assert json.loads(captured.out) == json.loads(json.dumps(summary))  # stdout holds the JSON alone
    assert "± " in captured.err and "episode   1" in captured.err
    assert summary["gif"] is None and set(os.listdir(run_dir)) == before


def test_stages_side_by_side(ppo_run, tmp_path):
    run_dir, _ = ppo_run
    steps = [int(os.path.basename(p)[5:13]) for p in snapshots(run_dir)]
    summary = play(run_dir, stages=3, eval_episodes=1, max_steps=20, **SMALL)
    assert summary["gif"] == os.path.join(run_dir, "stages.gif")
    # Early, middle, final: the first snapshot, one between, the last.
    picked = [r["global_step"] for r in summary["results"]]
    assert picked[0] == steps[0] and picked[-1] == steps[-1] and len(picked) == 3
    final_only = play(run_dir, stages=1, eval_episodes=1, max_steps=5, render=False)["results"]
    assert [r["global_step"] for r in final_only] == [steps[-1]]
    frames = gif_frames(summary["gif"])
    assert frames[0][0].shape == (48, 3 * 64, 3) and len(frames) == 20 // 2 + 1
    # Several files work the same way; a shorter episode holds its last frame.
    two = play(*snapshots(run_dir)[:2], eval_episodes=1, max_steps=20, gif=str(tmp_path / "two.gif"), **SMALL)
    assert gif_frames(two["gif"])[0][0].shape == (48, 2 * 64, 3)
    assert enjoy.side_by_side([[np.zeros((2, 2, 3))] * 3, [np.ones((2, 2, 3))]])[2][0, 3, 0] == 1


# --------------------------------------------------------------------------------------------
# The camera follows the agent
# --------------------------------------------------------------------------------------------


def agent_pixels(frame):
    """HalfCheetah's body is tan (0.8, 0.6, 0.4); the floor is grey-green and black, the sky grey."""
    red, blue = frame[..., 0].astype(int), frame[..., 2].astype(int)
    return np.argwhere(red - blue > 40)


def test_the_camera_follows_a_running_cheetah():
    # The same run of HalfCheetah-v4, pushed forward at 2 m/s with a fixed action for 300 steps
    # (30 m), drawn by enjoy's tracking camera and by the env's own camera (what --no-follow uses).
    # The check that the agent stays near the centre is the one that fails for the env's camera.
    width, height = 96, 72
    tracked_env = gym.make("HalfCheetah-v4")
    own_env = gym.make("HalfCheetah-v4", render_mode="rgb_array", width=width, height=height)
    tracked = enjoy.FrameSource(tracked_env, width, height, follow=True)
    own = enjoy.FrameSource(own_env, width, height, follow=False)
    assert not tracked.needs_render_mode and own.needs_render_mode
    centres, own_counts = [], []
    for env in (tracked_env, own_env):
        env.reset(seed=0)
    for step in range(301):
        if step % 30 == 0:
            pixels = agent_pixels(tracked())
            assert len(pixels) > 30, f"the agent is not in the tracked frame at step {step}"
            centres.append(pixels.mean(axis=0))
            own_counts.append(len(agent_pixels(own())))
        for env in (tracked_env, own_env):
            env.unwrapped.data.qvel[0] = 2.0
            env.step(np.full(6, 0.3, dtype=np.float32))
    assert tracked_env.unwrapped.data.qpos[0] > 25  # it did travel
    centres = np.array(centres)
    assert np.all(np.abs(centres[:, 1] - width / 2) < width / 8), centres  # columns: near the middle
    assert np.all(np.abs(centres[:, 0] - height / 2) < height / 4), centres  # rows
    assert own_counts[0] > 30 and own_counts[-1] == 0  # the env's own camera sees it, then loses it
    for closable in (tracked, own, tracked_env, own_env):
        closable.close()


def test_the_shadow_map_is_sized_to_the_frame():
    # MuJoCo's 4096 x 4096 default is much of a frame's time in software rendering; enjoy.py draws
    # one twice the frame's size, at least 1024, and never enlarges a model's own smaller one.
    for (width, height), expected in (((256, 192), 1024), ((1280, 720), 2560)):
        env = gym.make("HalfCheetah-v4")
        assert env.unwrapped.model.vis.quality.shadowsize == 4096
        frames = enjoy.FrameSource(env, width, height, follow=True)
        assert env.unwrapped.model.vis.quality.shadowsize == expected
        assert frames().shape == (height, width, 3)
        frames.close()
        env.close()
    env = gym.make("HalfCheetah-v4", render_mode="rgb_array", width=64, height=48)
    env.unwrapped.model.vis.quality.shadowsize = 512
    frames = enjoy.FrameSource(env, 64, 48, follow=False)
    env.reset(seed=0)
    assert env.unwrapped.model.vis.quality.shadowsize == 512 and frames().shape == (48, 64, 3)
    frames.close()
    env.close()


def test_the_floor_goes_on_where_a_fast_agent_runs():
    # 100 m out, past the edge of HalfCheetah's drawn floor (40 m from the origin): the ground
    # below the agent is still the checkered floor, dark and light squares, not a smooth grey void.
    env = gym.make("HalfCheetah-v4")
    env.reset(seed=0)
    source = enjoy.FrameSource(env, 96, 72, follow=True)
    data = env.unwrapped.data
    data.qpos[0] = 100.0
    mujoco.mj_forward(env.unwrapped.model, data)
    ground = source()[54:].astype(int).sum(axis=-1) / 3  # the bottom quarter, grey levels
    assert (ground < 60).mean() > 0.1 and (ground > 150).mean() > 0.1, np.percentile(ground, [5, 50, 95])
    source.close()
    env.close()


def test_the_env_own_camera_and_fitted_frames(ppo_run):
    # --no-follow draws through env.render(), made at the asked size.
    summary = play(ppo_run[0], eval_episodes=1, max_steps=10, follow=False, **SMALL)
    assert gif_frames(summary["gif"])[0][0].shape == (48, 64, 3)
    # A frame of another size (classic-control envs draw 500 x 500) is fitted, keeping its aspect.
    env = gym.make("HalfCheetah-v4", render_mode="rgb_array")  # 480 x 480
    env.reset(seed=0)
    frames = enjoy.FrameSource(env, 64, 48, follow=False)
    assert frames().shape == (48, 48, 3)
    env.close()


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def expect_error(*fragments, paths, **overrides):
    with pytest.raises(SystemExit) as raised:
        play(*paths, **{"eval_episodes": 1, "render": False, **overrides})
    message = str(raised.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bad_input(sac_run, tmp_path):
    run_dir, _ = sac_run
    final = os.path.join(run_dir, "final_model.pt")
    expect_error("no such checkpoint", paths=[tmp_path / "missing.pt"])
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint at all")
    expect_error("cannot read", paths=[text])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    expect_error("not a checkpoint of this project (sac_continuous.py or ppo_continuous.py)", paths=[foreign])
    data = open(final, "rb").read()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    expect_error("cannot read", paths=[truncated])
    # Corrupted: garbage in the pickled structure, or in the weights (0xFF bytes read as NaN).
    corrupted = bytearray(data)
    start = data.find(b"data.pkl") + 100
    corrupted[start : start + 200] = b"\xab" * 200
    (tmp_path / "corrupted.pt").write_bytes(corrupted)
    expect_error("cannot read", paths=[tmp_path / "corrupted.pt"])
    checkpoint = torch.load(final, weights_only=True)
    weights = {
        **checkpoint["actor"],
        "head.weight": torch.full_like(checkpoint["actor"]["head.weight"], np.nan),
    }
    torch.save({**checkpoint, "actor": weights}, tmp_path / "nan.pt")
    expect_error("damaged", "non-finite", paths=[tmp_path / "nan.pt"])
    torch.save({**checkpoint, "actor": {}}, tmp_path / "empty.pt")
    expect_error("damaged", paths=[tmp_path / "empty.pt"])
    torch.save({**checkpoint, "args": {**checkpoint["args"], "seed": "x"}}, tmp_path / "seed.pt")
    expect_error("damaged: its seed is 'x'", paths=[tmp_path / "seed.pt"])
    # An env that is not registered (or not installed), and one whose spaces do not fit.
    torch.save({**checkpoint, "env_id": "NoSuchEnv-v0"}, tmp_path / "unknown_env.pt")
    expect_error("cannot make env 'NoSuchEnv-v0'", paths=[tmp_path / "unknown_env.pt"])
    # An env id that imports a module: a file may not choose it, the user may (and it is missing).
    torch.save({**checkpoint, "env_id": "this:Env-v0"}, tmp_path / "imports.pt")
    expect_error("names the env this:Env-v0, which imports a module", paths=[tmp_path / "imports.pt"])
    torch.save({**checkpoint, "env_id": "no_such_module:Env-v0"}, tmp_path / "missing_module.pt")
    missing_module = dict(paths=[tmp_path / "missing_module.pt"], env_id="no_such_module:Env-v0")
    expect_error("cannot make env 'no_such_module:Env-v0'", **missing_module)
    expect_error(
        "HalfCheetah-v4 does not fit the policy",
        "InvertedPendulum-v4",
        paths=[final],
        env_id="HalfCheetah-v4",
    )
    # Arguments that do not make sense.
    expect_error("--stages needs exactly one run directory", paths=[final], stages=3)
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    expect_error("no final_model.pt", paths=[empty_run])
    expect_error("no models/step_*.pt", paths=[empty_run], stages=2)
    expect_error("--eval-episodes must be at least 1", paths=[final], eval_episodes=0)
    expect_error("--seed must not be negative", paths=[final], seed=-1)
    for fps in (0.001, float("inf"), float("nan")):
        expect_error("--fps must be between 0.01 and 1000", paths=[final], fps=fps)
    expect_error("--gif must name a .gif file", paths=[final], gif=str(tmp_path / "out.txt"))
    expect_error("cannot write", paths=[final], json=str(tmp_path / "no_such_dir" / "scores.json"))


def test_a_crafted_pickle_is_refused_not_executed(tmp_path):
    crafted, marker = crafted_checkpoint(tmp_path)
    expect_error("refused to load", "system", paths=[crafted])  # it names what it would have called
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def test_follow_and_its_old_spelling_track_mean_the_same():
    # --follow was first named --track, which in the training scripts means Weights & Biases; the
    # old spelling still works, --no-track too, and both set the same field.
    def parse(*flags):
        return cli.command_line(enjoy.Args, ["--checkpoint", "run", *flags])

    following, not_following = parse(), dataclasses.replace(parse(), follow=False)
    assert following.follow is True
    assert parse("--follow") == parse("--track") == following
    assert parse("--no-follow") == parse("--no-track") == not_following
    assert parse("--no-track", "--follow") == following  # the last one given wins, whichever spelling


def test_command_line(sac_run, tmp_path):
    # Headless by default: no DISPLAY and no MUJOCO_GL, and it still draws.
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MUJOCO_GL")}
    gif = tmp_path / "cli.gif"
    ok = subprocess.run(
        [sys.executable, "enjoy.py", "--checkpoint", sac_run[0], "--episodes", "2", "--max-steps", "30"]
        + ["--width", "64", "--height", "48", "--gif", str(gif)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("episode ") == 2 and " ± " in ok.stdout and gif.exists()
    bad = subprocess.run(
        [sys.executable, "enjoy.py", "--checkpoint", str(tmp_path / "missing.pt")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        f"error: no such checkpoint file or run directory: {tmp_path / 'missing.pt'}"
    ]
    # A plain pickle: torch's warning about its protocol is not printed above the one line.
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    bad = subprocess.run(
        [sys.executable, "enjoy.py", "--checkpoint", str(plain)], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        f"error: cannot read checkpoint {plain}: not a pickle of tensors and plain values"
    ]


# --------------------------------------------------------------------------------------------
# A trained agent in a user's own code
# --------------------------------------------------------------------------------------------


def docs_snippet() -> str:
    """The first Python block of docs/enjoy.md's section on using a trained agent."""
    text = open(os.path.join(REPO, "docs", "enjoy.md")).read()
    section = text.split("## Use a trained agent in your own code", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_docs_snippet_runs_and_plays_what_enjoy_plays():
    result = subprocess.run(
        [sys.executable, "-c", docs_snippet()], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    snippet_return = float(result.stdout.split("return ")[-1])
    published = os.path.join(REPO, "runs", "published", "Walker2d-v4__sac__default__1", "final_model.pt")
    scored = play(published, seed=0, eval_episodes=1, render=False)["results"][0]["returns"][0]
    assert snippet_return == pytest.approx(scored, abs=0.05)  # the snippet prints one decimal
    assert snippet_return > 1000  # a trained walker, not a fallen one


@pytest.mark.parametrize("module", [sac_continuous, ppo_continuous])
def test_load_policy_takes_one_observation_or_a_batch(module, request):
    run_dir, summary = request.getfixturevalue(f"{module.ALGORITHM}_run")
    policy = module.load_policy(os.path.join(run_dir, "final_model.pt"))
    env = gym.make(summary["env_id"])
    obs, _ = env.reset(seed=0)
    one, batch = policy(obs), policy(np.stack([obs, obs]))
    assert one.shape == env.action_space.shape and batch.shape == (2, *env.action_space.shape)
    assert np.array_equal(batch[0], one) or np.allclose(batch[0], one, atol=1e-6)
    other = "ppo" if module is sac_continuous else "sac"
    with pytest.raises(SystemExit, match=f"is a {module.ALGORITHM} checkpoint, not {other}"):
        (ppo_continuous if module is sac_continuous else sac_continuous).load_policy(
            os.path.join(run_dir, "final_model.pt")
        )


def test_check_published_says_which_cpu_a_differing_run_was_evaluated_on(sac_run, tmp_path):
    # Four copies of one run: as it is, and with a final evaluation it cannot score, recorded as
    # made on another CPU, on an unrecorded one, and on this one (which rounding cannot explain).
    run_dir, _ = sac_run
    folder = tmp_path / "published"
    recorded_cpu = {
        "as_is": None,
        "other_cpu": "Some Other CPU",
        "unrecorded": "",
        "own_cpu": training.cpu_name(),
    }
    for name, cpu in recorded_cpu.items():
        shutil.copytree(run_dir, folder / name)
        summary = json.loads((folder / name / "summary.json").read_text())
        if cpu is not None:
            summary["final_eval_mean"] += 1.0
            if cpu:
                summary["sessions"][-1]["cpu"] = cpu
            else:
                del summary["sessions"]
        (folder / name / "summary.json").write_text(json.dumps(summary))
    check = os.path.join(REPO, "tools", "check_published.py")
    result = subprocess.run([sys.executable, check, str(folder)], capture_output=True, text=True, timeout=300)
    lines = {
        line.split()[1].rstrip(":"): line
        for line in result.stdout.splitlines()
        if line[:4] in ("ok  ", "DIFF")
    }
    assert result.returncode == 1 and "1 of 4 score exactly" in result.stdout, result.stdout + result.stderr
    assert lines["as_is"].startswith("ok ")
    assert f"(evaluated on Some Other CPU; this CPU: {training.cpu_name()})" in lines["other_cpu"]
    assert "(its CPU is not recorded;" in lines["unrecorded"]
    assert "on its own kind of CPU" in lines["own_cpu"]


def test_a_gif_write_that_fails_leaves_the_old_gif_as_it_was(tmp_path, monkeypatch):
    frames = [np.full((8, 8, 3), value, dtype=np.uint8) for value in (0, 80, 160)]
    path = str(tmp_path / "agent.gif")
    enjoy.write_gif(frames, path, 0.05)
    before = open(path, "rb").read()

    def dies_halfway(image, target, *args, **kwargs):
        open(target, "wb").write(b"GIF89a")  # a truncated start, then the error
        raise ValueError("the write died")

    monkeypatch.setattr(Image.Image, "save", dies_halfway)
    with pytest.raises(SystemExit) as raised:
        enjoy.write_gif(frames, path, 0.05)
    assert str(raised.value.code) == f"error: cannot write {path}: the write died"
    assert open(path, "rb").read() == before and sorted(os.listdir(tmp_path)) == ["agent.gif"]
