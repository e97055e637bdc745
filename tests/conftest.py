import os
import shutil
import subprocess

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

# The fixtures below make their Args from these.
from tests.helpers import TINY, TINY_PPO, TINY_SAC, args_factory  # noqa: E402

# Tiny networks run fastest on one thread, and one thread cannot be starved by the other core.
torch.set_num_threads(1)


@pytest.fixture
def tiny(tmp_path):
    from sac_continuous import Args

    return args_factory(Args, tmp_path, **TINY_SAC)


@pytest.fixture
def tiny_ppo(tmp_path):
    from ppo_continuous import Args

    return args_factory(Args, tmp_path, **TINY_PPO)


@pytest.fixture
def tiny_for(tmp_path):
    """tiny_for("sac") is `tiny`, tiny_for("ppo") `tiny_ppo`: for the tests of every algorithm."""
    from actor_critic.algorithms import ALGORITHMS

    def make(algorithm):
        return args_factory(ALGORITHMS[algorithm].module().Args, tmp_path, **TINY[algorithm])

    return make


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
