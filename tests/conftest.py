import os

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
# Tiny networks run fastest on one thread, and one thread cannot be starved by the other core.
torch.set_num_threads(1)


@pytest.fixture
def tiny(tmp_path):
    """Args for a quick run in a temporary runs directory; keyword arguments override."""
    from sac_continuous import Args

    def make(**overrides):
        settings = dict(
            env_id="Pendulum-v1",
            total_timesteps=600,
            learning_starts=200,
            batch_size=32,
            hidden_size=32,
            buffer_size=10_000,
            eval_every=0,
            eval_episodes=0,
            checkpoint_every=0,
            runs_dir=str(tmp_path),
            run_name="run",
            cuda=False,
            threads=1,
        )
        settings.update(overrides)
        return Args(**settings)

    return make


@pytest.fixture
def tiny_ppo(tmp_path):
    """Args for a quick PPO run in a temporary runs directory; keyword arguments override."""
    from ppo_continuous import Args

    def make(**overrides):
        settings = dict(
            env_id="Pendulum-v1",
            total_timesteps=1024,
            num_steps=256,
            num_minibatches=4,
            update_epochs=2,
            hidden_size=32,
            eval_every=0,
            eval_episodes=0,
            checkpoint_every=0,
            runs_dir=str(tmp_path),
            run_name="run",
            cuda=False,
            threads=1,
        )
        settings.update(overrides)
        return Args(**settings)

    return make
