"""What more than one test file uses: reading checkpoints and runs, one-line errors, starting a
training script as a process, crafted checkpoints, the known-values check. Fixtures are in
conftest.py."""

import importlib
import os
import pickle
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from actor_critic import checkpoints
from tests.toy_envs import KNOWN_VALUES  # importing it registers the toy envs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------------------------
# Quick runs
# --------------------------------------------------------------------------------------------


# What every quick run shares: a small network, no evaluation or periodic checkpoint unless a test
# asks, the CPU, one thread.
QUICK = dict(
    env_id="Pendulum-v1",
    hidden_size=32,
    eval_every=0,
    eval_episodes=0,
    checkpoint_every=0,
    run_name="run",
    cuda=False,
    threads=1,
)


def args_factory(args_class, runs_dir, **algorithm_defaults):
    """Build Args for a quick run in `runs_dir`; keyword arguments of the returned maker override."""

    def make(**overrides):
        return args_class(**{**QUICK, "runs_dir": str(runs_dir), **algorithm_defaults, **overrides})

    return make


# The algorithms' own settings of a quick run.
TINY_SAC = dict(total_timesteps=600, learning_starts=200, batch_size=32, buffer_size=10_000)
TINY_PPO = dict(total_timesteps=1024, num_steps=256, num_minibatches=4, update_epochs=2)
TINY = {"sac": TINY_SAC, "ppo": TINY_PPO}


# --------------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------------


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def run_dir(args):
    return os.path.join(args.runs_dir, args.run_name)


def scalar_steps(directory, tag):
    events = EventAccumulator(directory)
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


# --------------------------------------------------------------------------------------------
# Bad input ends in one line
# --------------------------------------------------------------------------------------------


def error_of(function, *args, **kwargs) -> str:
    """The one line a bad input ends with."""
    with pytest.raises(SystemExit) as raised:
        function(*args, **kwargs)
    message = str(raised.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def expect_error(args, *fragments, run=None):
    """Training with `args` (by the train of the script `args` come from, unless `run` is given)
    stops with one line that holds every fragment; returns the line."""
    run = run or importlib.import_module(type(args).__module__).train
    message = error_of(run, args)
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------------------------
# A crafted checkpoint
# --------------------------------------------------------------------------------------------


class RunsCode:
    """Unpickling this would call os.system: a crafted 'checkpoint'."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(directory):
    """A 'checkpoint' whose unpickling would create a marker file: (its path, the marker)."""
    marker, crafted = directory / "code_ran", directory / "crafted.pt"
    payload = {"format": checkpoints.CHECKPOINT_FORMAT, "payload": RunsCode(marker)}
    torch.save(payload, crafted, pickle_module=pickle)
    return crafted, marker


# --------------------------------------------------------------------------------------------
# Training checkpoints compared
# --------------------------------------------------------------------------------------------


def assert_same_training_state(a, b):
    """Two training checkpoints of one algorithm hold the same networks (and statistics)."""
    assert a["algorithm"] == b["algorithm"]
    if a["algorithm"] == "sac":
        for key in ("actor", "qf", "qf_target"):
            for name, tensor in a[key].items():
                assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs"
        assert torch.equal(a["log_alpha"], b["log_alpha"])
    elif a["algorithm"] == "ppo":
        for name, tensor in a["agent"].items():
            assert torch.equal(tensor, b["agent"][name]), f"agent.{name} differs"
        for key in ("mean", "var"):
            assert torch.equal(a["obs_rms"][key], b["obs_rms"][key])
            assert torch.equal(a["return_rms"][key], b["return_rms"][key])
    else:
        raise AssertionError(f"no comparison written for {a['algorithm']} checkpoints")


def assert_learns_known_values(train_fn, make_args, estimate, **settings):
    """Train on the toy envs whose values are known (gamma 0.5) and compare what was learned."""
    for env_id, (observations, expected) in KNOWN_VALUES.items():
        args = make_args(env_id=env_id, run_name=env_id.split(":")[1], gamma=0.5, **settings)
        train_fn(args)
        learned = estimate(load(os.path.join(run_dir(args), "checkpoint.pt")), observations)
        assert torch.allclose(learned, torch.tensor(expected), atol=0.1), (env_id, learned)


# --------------------------------------------------------------------------------------------
# A training script as a process
# --------------------------------------------------------------------------------------------


def command_line(settings):
    """{"env-id": "Hopper-v4", "cuda": False, ...} as flags: --env-id Hopper-v4 --no-cuda ..."""
    flags = []
    for key, value in settings.items():
        if isinstance(value, bool):
            flags.append(f"--{key}" if value else f"--no-{key}")
        else:
            flags += [f"--{key}", str(value)]
    return flags


def start(script, args_list, **kwargs):
    """Start `script` (sac_continuous.py, ppo_continuous.py) with these flags."""
    return subprocess.Popen(
        [sys.executable, script, *args_list],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def wait_for_step(path, step, process, timeout=300):
    """Wait until the checkpoint at `path` has reached `step`. Every read while the run writes
    must find a whole file (checkpoints are renamed into place): only a missing one is waited for."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if load(path)["global_step"] >= step:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    raise TimeoutError(path)
