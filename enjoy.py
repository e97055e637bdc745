"""Watch a trained agent: score it, and save a GIF of its first episode.

    python enjoy.py --checkpoint runs/<run_name>/final_model.pt
    python enjoy.py --checkpoint runs/<run_name> --stages 3     # early, middle, final, side by side

Reads what the training scripts write (final_model.pt, models/step_*.pt, checkpoint.pt), rebuilds
the policy with its algorithm's own loader (actor_critic.algorithms), and plays it. Read top to
bottom: arguments, checkpoints, envs, the camera, episodes, GIF and video, scoring, then the printing.
`score(args)` returns the numbers and prints nothing (tools/check_published.py calls it); `main`
prints them. docs/enjoy.md has more.
"""

from __future__ import annotations

import os
import sys

# Render off-screen when there is no display. MuJoCo picks its OpenGL backend when it is first
# imported, so this comes before any import that could import it. EGL is Linux's; elsewhere
# MuJoCo's own default works without a display.
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, TextIO

import gymnasium as gym
import numpy as np
import torch
import tyro
from PIL import Image, ImageDraw, ImageFont

from actor_critic import checkpoints, cli, run_directory
from actor_critic.algorithms import ALGORITHMS
from actor_critic.cli import fail
from actor_critic.run_directory import FINAL_MODEL

GIF_COLORS = 64  # one palette for the whole GIF; 64 colours look right for these scenes
GIF_MAX_FPS = 16  # by default the GIF keeps just enough frames for this many per simulated second
warnings.filterwarnings("ignore", message=".*is out of date.*")  # the -v4 ids are the default on purpose


@dataclass
class Args:
    checkpoint: tuple[str, ...]
    """checkpoint file(s) (final_model.pt, models/step_*.pt, checkpoint.pt), or a run directory (its
    final_model.pt, or snapshots from its models/ with --stages); several are drawn side by side"""
    stages: int = 0
    """with a run directory: draw N snapshots of models/ side by side (the first, evenly spaced
    ones, the last), to show how the agent improved over training"""
    env_id: str | None = None
    """play in this env instead of the checkpoint's own (its spaces must match)"""
    seed: int | None = None
    """episode i starts from env.reset(seed=seed + i); unset, the run's own evaluation seeds (its
    seed + 100000), so that the score matches the run's eval/episodic_return"""
    eval_episodes: Annotated[int, tyro.conf.arg(aliases=("--episodes",))] = 10
    """the number of episodes to score; the first one is drawn"""
    stochastic: bool = False
    """sample actions from the policy instead of playing its mean (deterministic)"""
    max_steps: int | None = None
    """end each episode after at most this many steps"""
    render: bool = True
    """draw the first episode (--no-render: the score only, nothing drawn)"""
    gif: str | None = None
    """where to write the GIF; unset, next to the checkpoint: <name>.gif, or stages.gif"""
    video: str | None = None
    """also write an mp4 of the first episode, every step, through imageio's ffmpeg plugin"""
    keep_every: int | None = None
    """the GIF keeps every Nth step's frame, its delays real time; unset, the smallest N that gives at
    most 16 frames per simulated second (2 for HalfCheetah, 8 for Walker2d); the video keeps all"""
    fps: float | None = None
    """frames per second of the GIF and the video; unset, real time"""
    width: int = 256
    """frame width in pixels (per checkpoint, when several are drawn side by side)"""
    height: int = 192
    """frame height in pixels"""
    # Not --track: in the training scripts that means Weights & Biases. --track and --no-track, this
    # flag's first spelling, still work.
    follow: Annotated[bool, tyro.conf.arg(aliases=("--track",))] = True
    """MuJoCo envs: the camera follows the agent's root body (--no-follow: the env's own camera;
    --track and --no-track are old spellings)"""
    json: str | None = None
    """write a JSON summary to this path ('-': print it on stdout, and the rest on stderr)"""


def check_args(args: Args) -> None:
    if not args.checkpoint:
        fail("--checkpoint needs at least one path")
    for name in ("eval_episodes", "width", "height", "max_steps", "keep_every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.fps is not None and not 0.01 <= args.fps <= 1000:  # a GIF's delay is 1/100 s to 655 s
        fail(f"--fps must be between 0.01 and 1000, got {args.fps}")
    if args.seed is not None and args.seed < 0:
        fail(f"--seed must not be negative (Gymnasium seeds are), got {args.seed}")
    if args.gif is not None and not args.gif.lower().endswith(".gif"):
        fail(f"--gif must name a .gif file, got {args.gif}")
    if args.stages < 0:
        fail(f"--stages must not be negative, got {args.stages}")
    if args.stages and (len(args.checkpoint) != 1 or not os.path.isdir(args.checkpoint[0])):
        fail("--stages needs exactly one run directory as --checkpoint")
    if args.video and not args.render:
        fail("--video draws the first episode; it cannot go with --no-render")


# ---------------------------------------------------------------------------------------------
# Checkpoints: loaded with weights_only=True, so a file can hold tensors and plain values only and
# loading it never runs code from it.
# ---------------------------------------------------------------------------------------------


def checkpoint_paths(args: Args, notes: list[str]) -> list[str]:
    """The files to play: the paths given, a run directory's final_model.pt, or --stages snapshots.
    What the user should know about the choice is added to `notes`."""
    paths = []
    for path in args.checkpoint:
        if not os.path.exists(path):
            fail(f"no such checkpoint file or run directory: {path}")
        if not os.path.isdir(path):
            paths.append(path)
        elif args.stages:
            snapshots = run_directory.snapshots(path)  # oldest first
            if not snapshots:
                fail(f"{path} has no models/step_*.pt snapshots to draw --stages from")
            if len(snapshots) < args.stages:
                notes.append(f"{path} has {len(snapshots)} snapshots; drawing all of them")
            # The first, evenly spaced ones, and the last: early, middle(s), final (--stages 1: final).
            count = min(args.stages, len(snapshots))
            picks = np.linspace(0, len(snapshots) - 1, count) if count > 1 else [len(snapshots) - 1]
            paths += [snapshots[i] for i in sorted(set(np.round(picks).astype(int).tolist()))]
        elif os.path.isfile(os.path.join(path, FINAL_MODEL)):
            paths.append(os.path.join(path, FINAL_MODEL))
        else:
            fail(f"{path} has no {FINAL_MODEL}; pass a checkpoint file, or --stages N for its snapshots")
    return paths


def load_checkpoint(path: str) -> dict:
    """The checked load (actor_critic.checkpoints), and the policy's own keys for its algorithm."""
    checkpoint = checkpoints.load_checkpoint(path, reader="enjoy.py")  # refuses unknown algorithms
    for key in ALGORITHMS[checkpoint["algorithm"]].policy_keys:
        if key not in checkpoint:
            fail(f"{path} is damaged: it has no '{key}'")
    return checkpoint


# ---------------------------------------------------------------------------------------------
# Envs
# ---------------------------------------------------------------------------------------------


def make_env(env_id: str, path: str, **kwargs) -> gym.Env:
    try:
        return gym.make(env_id, **kwargs)
    except (gym.error.Error, ImportError, AttributeError, TypeError) as error:  # not registered/installed
        reason = cli.first_line(error)
        fail(f"cannot make env '{env_id}' for {path}: {reason[:160]} (is it installed and registered?)")


def check_spaces(env: gym.Env, env_id: str, checkpoint: dict, path: str) -> None:
    """The policy only fits an env with the observation and action spaces it was trained on."""
    trained_on = gym.spaces.Box(
        np.array(checkpoint["action_low"], dtype=np.float32),
        np.array(checkpoint["action_high"], dtype=np.float32),
    )
    obs_shape = tuple(checkpoint["observation_shape"])
    obs_space, act_space = env.observation_space, env.action_space
    fits = (
        isinstance(obs_space, gym.spaces.Box)
        and obs_space.shape == obs_shape
        and isinstance(act_space, gym.spaces.Box)
        and act_space.shape == trained_on.shape
        and np.array_equal(act_space.low, trained_on.low)
        and np.array_equal(act_space.high, trained_on.high)
    )
    if not fits:
        fail(
            f"{env_id} does not fit the policy of {path}: it has observations {obs_space} and actions "
            f"{act_space}; the policy was trained on {checkpoint['env_id']} with observations of shape "
            f"{obs_shape} and actions {trained_on}"
        )


def is_mujoco(env: gym.Env) -> bool:
    return hasattr(env.unwrapped, "model") and hasattr(env.unwrapped, "data")


def env_seconds_per_step(env: gym.Env) -> float:
    """Simulated seconds per env step: what real-time playback is measured against."""
    dt = getattr(env.unwrapped, "dt", None)  # MuJoCo envs and most classic-control ones have it
    return float(dt) if dt else 1.0 / env.metadata.get("render_fps", 30)


# ---------------------------------------------------------------------------------------------
# The camera
# ---------------------------------------------------------------------------------------------


def travelling_root_body(model) -> int | None:
    """The agent's root body, the first jointed body under the world, if it can travel (a free or a
    slide joint): HalfCheetah's torso, the pendulums' cart; not Reacher's arm, fixed at its base."""
    import mujoco

    travels = {int(mujoco.mjtJoint.mjJNT_FREE), int(mujoco.mjtJoint.mjJNT_SLIDE)}
    for body in range(1, model.nbody):
        joints = range(model.body_jntadr[body], model.body_jntadr[body] + model.body_jntnum[body])
        if model.body_parentid[body] == 0 and len(joints) > 0:
            return body if any(int(model.jnt_type[j]) in travels for j in joints) else None
    return None


class FrameSource:
    """Frames of an env, width x height.

    MuJoCo envs whose agent can travel are drawn by MuJoCo's own renderer through a tracking camera
    on the root body: each frame, the camera's look-at point is the centre of mass of the agent's
    body tree, so a running agent stays in the middle of the picture. (Gymnasium 1.4 renders its
    MuJoCo envs with a free camera that stays where the episode began; the trackbodyid in some
    envs' camera settings only acts on a tracking camera.) Distance and angles are the env's own
    default camera's, with a side view from 20 degrees above where the env sets none. Other envs,
    and --no-follow, use env.render(), fitted into width x height.
    """

    def __init__(self, env: gym.Env, width: int, height: int, follow: bool):
        self.env, self.width, self.height, self.renderer = env, width, height, None
        if is_mujoco(env):
            # MuJoCo's default shadow map is 4096 x 4096: drawn in software (no GPU, MUJOCO_GL=egl
            # on Mesa's llvmpipe) it is much of a frame's time at any frame size. One twice the
            # frame's size looks the same in a GIF and draws each frame 1.5-2.5 times as fast.
            quality = env.unwrapped.model.vis.quality
            quality.shadowsize = min(quality.shadowsize, max(1024, 2 * max(width, height)))
        body = travelling_root_body(env.unwrapped.model) if follow and is_mujoco(env) else None
        if body is None:
            return
        import mujoco

        model = env.unwrapped.model
        # MuJoCo's off-screen buffer must hold the frame.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.renderer = mujoco.Renderer(model, height, width)
        self.camera = mujoco.MjvCamera()
        mujoco.mjv_defaultFreeCamera(model, self.camera)
        renderer = getattr(env.unwrapped, "mujoco_renderer", None)
        config = getattr(renderer, "default_cam_config", None) or {}
        self.camera.distance = config.get("distance", self.camera.distance)
        self.camera.azimuth = config.get("azimuth", self.camera.azimuth)
        self.camera.elevation = config.get("elevation", -20.0)
        self.camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        self.camera.trackbodyid = self.body = body
        # A running agent soon leaves the floor's drawn area (HalfCheetah's is 80 m across) and
        # would run on in a grey void. Each frame draws the floor under the agent instead, moved by
        # whole periods of its texture so that the squares stay where they are on the ground.
        self.floors = np.flatnonzero(model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE)
        self.periods = np.ones((len(self.floors), 2))
        for row, geom in enumerate(self.floors):
            material = model.geom_matid[geom]
            if material >= 0 and np.all(model.mat_texrepeat[material] > 0):
                repeat = model.mat_texrepeat[material]
                uniform = model.mat_texuniform[material]  # repeats per metre, or over the whole plane
                self.periods[row] = 1 / repeat if uniform else 2 * model.geom_size[geom, :2] / repeat

    @property
    def needs_render_mode(self) -> bool:
        """Whether frames come from env.render(), which needs the env made with render_mode."""
        return self.renderer is None

    def __call__(self) -> np.ndarray:
        if self.renderer is not None:
            data = self.env.unwrapped.data
            # Only the drawn copy moves: the next physics step recomputes geom_xpos from the model.
            drawn_at = data.geom_xpos[self.floors].copy()
            shift = np.round(data.xpos[self.body, :2] / self.periods) * self.periods
            data.geom_xpos[self.floors, :2] += shift
            self.renderer.update_scene(data, camera=self.camera)
            data.geom_xpos[self.floors] = drawn_at
            return self.renderer.render()
        try:
            frame = self.env.render()
        except (gym.error.Error, ImportError) as error:  # e.g. classic control without pygame
            fail(f"cannot draw {self.env.spec.id}: {error}; --no-render scores without drawing")
        if not isinstance(frame, np.ndarray):
            fail(f"{self.env.spec.id} does not draw rgb_array frames; --no-render scores without drawing")
        if frame.shape[:2] != (self.height, self.width):
            image = Image.fromarray(frame)
            image.thumbnail((self.width, self.height), Image.Resampling.LANCZOS)  # keeps the aspect ratio
            frame = np.asarray(image)
        return frame

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()


def open_env(
    env_id: str, checkpoint: dict, path: str, args: Args, drawn: bool
) -> tuple[gym.Env, FrameSource | None]:
    """The env to play in and, when drawn, its frame source."""
    env = make_env(env_id, path)
    check_spaces(env, env_id, checkpoint, path)
    if not drawn:
        return env, None
    frames = FrameSource(env, args.width, args.height, args.follow)
    if frames.needs_render_mode:  # env.render() draws only what the env was made to draw
        env.close()
        size = {"width": args.width, "height": args.height} if is_mujoco(env) else {}
        env = make_env(env_id, path, render_mode="rgb_array", **size)
        frames = FrameSource(env, args.width, args.height, follow=False)
    return env, frames


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------


def run_episode(
    env: gym.Env,
    policy: Callable[[np.ndarray], np.ndarray],
    seed: int,
    max_steps: int | None,
    frames: FrameSource | None = None,
    every: int = 1,
) -> tuple[float, int, list[np.ndarray]]:
    """One episode: its return, its length, and the frames of steps 0, every, 2 * every, ..."""
    obs, _ = env.reset(seed=seed)
    drawn = [frames()] if frames else []
    episode_return, length, done = 0.0, 0, False
    with torch.inference_mode():  # no autograd bookkeeping: one plain forward per step
        while not done and (max_steps is None or length < max_steps):
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            episode_return += float(reward)
            length += 1
            done = terminated or truncated
            if frames and length % every == 0:
                drawn.append(frames())
    return episode_return, length, drawn


# ---------------------------------------------------------------------------------------------
# GIF and video
# ---------------------------------------------------------------------------------------------


def label(frames: list[np.ndarray], text: str) -> list[np.ndarray]:
    font = ImageFont.load_default(size=max(10, frames[0].shape[0] // 16))
    labelled = []
    for frame in frames:
        image = Image.fromarray(frame)
        ImageDraw.Draw(image).text((4, 2), text, fill="white", font=font, stroke_width=1, stroke_fill="black")
        labelled.append(np.asarray(image))
    return labelled


def side_by_side(panels: list[list[np.ndarray]]) -> list[np.ndarray]:
    """One frame list from several: shorter episodes hold their last frame; heights padded to match."""
    length, height = max(len(p) for p in panels), max(p[0].shape[0] for p in panels)
    padded = [[np.pad(f, ((0, height - f.shape[0]), (0, 0), (0, 0))) for f in p] for p in panels]
    return [np.hstack([p[min(i, len(p) - 1)] for p in padded]) for i in range(length)]


def write_gif(frames: list[np.ndarray], path: str, seconds_per_frame: float) -> tuple[int, int]:
    """Write a GIF; returns its size in bytes and its frame count."""
    # One palette for the whole GIF, from frames spread over the episode, and no dithering: dither
    # noise differs from frame to frame and defeats GIF's frame-to-frame compression.
    sample = np.concatenate(frames[:: max(1, len(frames) // 8)][:8], axis=0)
    # Max-coverage keeps the agent's own colours, which a median cut spends on the floor and the sky.
    no_dither = Image.Dither.NONE
    palette = Image.fromarray(sample).quantize(GIF_COLORS, Image.Quantize.MAXCOVERAGE, dither=no_dither)
    images = [Image.fromarray(f).quantize(palette=palette, dither=no_dither) for f in frames]
    # GIF delays are whole hundredths of a second: spread the rounding so that playback keeps time.
    ticks = np.round(np.arange(len(images) + 1) * seconds_per_frame * 100).astype(int)
    durations = (np.diff(ticks) * 10).tolist()
    # Written beside, then renamed: a write that fails leaves an existing GIF as it was.
    partial = path + ".partial"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        images[0].save(
            partial, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0
        )
        os.replace(partial, path)
    except (OSError, ValueError) as error:
        if os.path.isfile(partial):
            os.remove(partial)
        fail(f"cannot write {path}: {cli.first_line(error)[:160]}")
    with Image.open(path) as written:  # identical consecutive frames are merged: count what was written
        return os.path.getsize(path), written.n_frames


def default_gif_path(paths: list[str], args: Args) -> str:
    """Next to the checkpoint: runs/<run>/final_model.gif; stages.gif for several checkpoints."""
    if args.stages:
        return os.path.join(args.checkpoint[0], "stages.gif")
    if len(paths) > 1:
        return os.path.join(os.path.dirname(paths[0]), "stages.gif")
    return os.path.splitext(paths[0])[0] + ".gif"


def write_video(frames: list[np.ndarray], path: str, fps: float) -> None:
    import imageio

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        imageio.mimwrite(path, frames, fps=fps)
    except (OSError, ValueError) as error:  # an unwritable path, or an extension ffmpeg does not know
        fail(f"cannot write {path}: {cli.first_line(error)}")


# ---------------------------------------------------------------------------------------------
# Scoring: the numbers, and the files drawn; nothing printed (main prints)
# ---------------------------------------------------------------------------------------------


@dataclass
class CheckpointScore:
    """One checkpoint's episodes, and what --json writes for it."""

    path: str
    algorithm: str
    env_id: str
    global_step: int
    seeds: list[int]
    returns: list[float]
    lengths: list[int]
    mean: float
    std: float
    steps_per_second: float | None = None
    """how fast the undrawn episodes were scored, env steps per second (None: none was); not in
    the JSON, whose numbers repeat exactly while speeds do not"""

    def to_json(self) -> dict:
        """Every field, in order, but the speed."""
        return {name: value for name, value in asdict(self).items() if name != "steps_per_second"}


@dataclass
class Scores:
    """What score() returns: each checkpoint's score, and the GIF and video it wrote."""

    deterministic: bool
    results: list[CheckpointScore]
    gif: str | None = None  # None with --no-render
    gif_frames: int | None = None
    gif_bytes: int | None = None
    gif_fps: float | None = None
    video: str | None = None
    video_frames: int | None = None
    notes: list[str] = field(default_factory=list)
    """what the user should know about the checkpoints chosen (main prints them on stderr)"""

    def to_json(self) -> dict:
        """What --json writes (its keys in this order, as always)."""
        summary = {
            "deterministic": self.deterministic,
            "results": [result.to_json() for result in self.results],
            "gif": self.gif,
            "video": self.video,
        }
        if self.gif is not None:
            summary.update(gif_frames=self.gif_frames, gif_bytes=self.gif_bytes)
        return summary


def score(args: Args) -> Scores:
    """Play and score each checkpoint, and write the GIF (and the video) of the first episodes.
    Prints nothing: main prints what it returns, and a tool can use the numbers as they are."""
    check_args(args)
    # These small networks gain nothing from a second thread, which on a busy machine costs a lot.
    torch.set_num_threads(1)
    notes: list[str] = []
    paths = checkpoint_paths(args, notes)
    loaded = [load_checkpoint(path) for path in paths]  # every file checked before any plays
    algorithms = {checkpoint["algorithm"] for checkpoint in loaded}
    panels, results, seconds_per_step, every = [], [], None, args.keep_every
    for path, checkpoint in zip(paths, loaded, strict=True):
        env_id = args.env_id or checkpoint["env_id"]
        if not args.env_id and ":" in str(env_id):
            # gym.make("module:Env-v0") imports that module first: a file must not choose code to run.
            fail(f"{path} names the env {env_id}, which imports a module; pass --env-id {env_id} to allow it")
        # The policy is rebuilt by its algorithm's own loader, the one users call (docs/enjoy.md).
        script = ALGORITHMS[checkpoint["algorithm"]].module()  # its training script, as a module
        policy = script.policy_from_checkpoint(checkpoint, path, device="cpu", stochastic=args.stochastic)
        env, frames = open_env(env_id, checkpoint, path, args, drawn=args.render)
        if seconds_per_step is None:  # the first env sets the clock of the GIF and the video
            seconds_per_step = env_seconds_per_step(env)
            every = every or math.ceil(round(1 / seconds_per_step, 6) / GIF_MAX_FPS)
        seed = args.seed
        if seed is None:  # the run's own evaluation seeds
            saved = checkpoint["args"].get("seed")
            if not isinstance(saved, int) or saved < 0:
                fail(f"{path} is damaged: its seed is {str(saved)[:40]!r}, not a number of 0 or more")
            seed = saved + 100_000
        torch.manual_seed(seed)  # --stochastic repeats too, with the same seed
        step = checkpoint["global_step"]

        seeds = [seed + i for i in range(args.eval_episodes)]
        returns, lengths, scored_steps = [], [], 0
        if frames is not None:  # the first episode is drawn, one step at a time
            episode_return, length, episode_frames = run_episode(
                env, policy, seeds[0], args.max_steps, frames, 1 if args.video else every
            )
            if len(paths) > 1:
                name = f"step {step}" if len(algorithms) == 1 else f"{checkpoint['algorithm']} step {step}"
                panels.append(label(episode_frames, name))
            else:
                panels.append(episode_frames)
            returns.append(episode_return)
            lengths.append(length)
            frames.close()
        # The others are only scored, one after another, one observation at a time as the run's
        # own evaluation plays them: a forward over a batch of observations rounds differently, and
        # in a chaotic env rounding can change an episode (a published HalfCheetah PPO policy
        # scored 6967 from one seed alone and 1451 from it in a batch of ten).
        start = time.perf_counter()
        for episode_seed in seeds[len(returns) :]:
            episode_return, length, _ = run_episode(env, policy, episode_seed, args.max_steps)
            returns.append(episode_return)
            lengths.append(length)
            scored_steps += length
        scored_seconds = time.perf_counter() - start
        env.close()
        results.append(
            CheckpointScore(
                path=path,
                algorithm=checkpoint["algorithm"],
                env_id=env_id,
                global_step=step,
                seeds=seeds,
                returns=returns,
                lengths=lengths,
                mean=float(np.mean(returns)),
                std=float(np.std(returns)),
                steps_per_second=scored_steps / scored_seconds if scored_steps > 0 else None,
            )
        )

    scores = Scores(deterministic=not args.stochastic, results=results, notes=notes)
    if args.render:
        composed = side_by_side(panels)
        if args.video:
            write_video(composed, args.video, args.fps or 1.0 / seconds_per_step)
            scores.video, scores.video_frames = args.video, len(composed)
            composed = composed[::every]  # the video has every step; the GIF every Nth
        gif = args.gif or default_gif_path(paths, args)
        seconds_per_frame = 1.0 / args.fps if args.fps else seconds_per_step * every
        scores.gif_bytes, scores.gif_frames = write_gif(composed, gif, seconds_per_frame)
        scores.gif, scores.gif_fps = gif, 1 / seconds_per_frame
    return scores


# ---------------------------------------------------------------------------------------------
# Main: the scores, printed
# ---------------------------------------------------------------------------------------------


def print_scores(scores: Scores, out: TextIO) -> None:
    """The human-readable lines: each checkpoint's episodes and mean, then the files written."""
    for note in scores.notes:
        print(f"note: {note}", file=sys.stderr)
    mode = "deterministic" if scores.deterministic else "stochastic"
    for r in scores.results:
        print(f"{r.path}: {r.algorithm} on {r.env_id}, step {r.global_step}, {mode} policy", file=out)
        for episode, (episode_return, length) in enumerate(zip(r.returns, r.lengths, strict=True)):
            print(f"  episode {episode + 1:>3}: return {episode_return:10.2f}   length {length}", file=out)
        speed = f", scored at {r.steps_per_second:.0f} steps/s" if r.steps_per_second is not None else ""
        print(f"  return {r.mean:.2f} ± {r.std:.2f} over {len(r.returns)} episodes{speed}", file=out)
    if scores.video is not None:
        print(f"video: {scores.video} ({scores.video_frames} frames)", file=out)
    if scores.gif is not None:
        size = f"{scores.gif_frames} frames, {scores.gif_fps:.1f} fps, {scores.gif_bytes / 1024:.0f} KB"
        print(f"gif: {scores.gif} ({size})", file=out)


def main(args: Args) -> dict:
    """Score, print, and write --json; returns the JSON summary."""
    scores = score(args)
    # With --json -, stdout carries the JSON alone and the human-readable lines go to stderr.
    print_scores(scores, out=sys.stderr if args.json == "-" else sys.stdout)
    summary = scores.to_json()
    if args.json == "-":
        print(json.dumps(summary, indent=2))
    elif args.json:
        try:
            with open(args.json, "w") as f:
                f.write(json.dumps(summary, indent=2) + "\n")
        except OSError as error:  # the scores are printed above, so not lost
            fail(f"cannot write {args.json}: {cli.first_line(error)}")
    return summary


if __name__ == "__main__":
    main(cli.command_line(Args))
