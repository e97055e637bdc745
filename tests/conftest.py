import os
import shutil
import subprocess

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
# Tiny networks run fastest on one thread, and one thread cannot be starved by the other core.
torch.set_num_threads(1)

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


@pytest.fixture
def tiny(tmp_path):
    from sac_continuous import Args

    return args_factory(Args, tmp_path, **TINY_SAC)


@pytest.fixture
def tiny_ppo(tmp_path):
    from ppo_continuous import Args

    return args_factory(Args, tmp_path, **TINY_PPO)


# Slurm: a real one-node cluster (Debian's slurm-wlm and munge; .ci/run installs them)
@pytest.fixture
def slurm_cluster(tmp_path_factory):
    if shutil.which("slurmctld") is None and not os.environ.get("CI"):
        pytest.skip("Slurm is not installed here (.ci/run installs it: slurmctld slurmd slurm-client munge)")
    cluster_dir = tmp_path_factory.mktemp("slurm")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm_cluster.sh")
    started = subprocess.run(["bash", script, "start", str(cluster_dir)], capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield {**os.environ, "SLURM_CONF": str(cluster_dir / "slurm.conf")}
    finally:
        subprocess.run(["bash", script, "stop", str(cluster_dir)], capture_output=True)
