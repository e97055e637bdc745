"""The algorithms this project trains, one entry each: every reader of runs and checkpoints (resume,
enjoy.py, plot.py, sweeps, tuning, the tools) takes its list from here.

To add an algorithm: write its script at the repository's root (ALGORITHM, Args, check_args,
train, load_policy and policy_from_checkpoint), add it below, and name it in pyproject.toml's
py-modules (the editable install maps only the modules listed there).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from types import ModuleType

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Algorithm:
    name: str
    script: str  # the training script, at the repository's root
    policy_keys: tuple[str, ...]  # what its policy files hold besides the common keys

    @property
    def module_name(self) -> str:
        return self.script.removesuffix(".py")

    @property
    def script_path(self) -> str:
        return os.path.join(REPO_ROOT, self.script)

    def module(self) -> ModuleType:
        """The training script as a module (its Args, check_args, train, load_policy...)."""
        return importlib.import_module(self.module_name)


ALGORITHMS = {
    "sac": Algorithm("sac", "sac_continuous.py", policy_keys=("actor",)),
    "ppo": Algorithm("ppo", "ppo_continuous.py", policy_keys=("agent", "obs_rms")),
}
