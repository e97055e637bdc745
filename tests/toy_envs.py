"""Tiny environments whose transitions and values are known exactly, for the tests.

Registered on import, so a subprocess can make them by id: `--env-id tests.toy_envs:Counter-v0`.
"""

import gymnasium as gym
import numpy as np


class CounterEnv(gym.Env):
    """Observation [t, episode, end, terminates]; reward 1 per step; action checked, else ignored.

    `t` counts the steps of this episode and `episode` the resets of this env, so a stored
    transition spans a boundary exactly when next_obs is not (t + 1, same episode). Each episode
    draws `end` from `ends`; it terminates when t reaches `end`, unless the time limit truncates it
    first. `constant_obs` hides all of that behind an all-zero observation, for value tests.
    """

    def __init__(
        self,
        ends=(3, 4, 7),
        constant_obs=False,
        show_episode=True,
        low=-1.0,
        high=1.0,
        reward=1.0,
        bad_reward_at=None,
    ):
        self.ends, self.constant_obs, self.show_episode = ends, constant_obs, show_episode
        self.reward, self.bad_reward_at, self.total_steps = reward, bad_reward_at, 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        low, high = np.atleast_1d(np.float32(low)), np.atleast_1d(np.float32(high))
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.episode = -1

    def _obs(self):
        if self.constant_obs:
            return np.zeros(4, np.float32)
        episode = self.episode if self.show_episode else 0
        return np.array([self.t, episode, self.end or 0, self.end is not None], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        self.end = int(self.np_random.choice(self.ends)) if self.ends else None
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(np.asarray(action, dtype=np.float32)):
            raise ValueError(f"action {action} outside {self.action_space}")
        self.t += 1
        self.total_steps += 1
        reward = np.inf if self.total_steps == self.bad_reward_at else self.reward
        terminated = self.end is not None and self.t >= self.end
        return self._obs(), reward, terminated, False, {}


# Episodes end by termination at t=3 or 4, or by truncation at t=5 (draws of 7 never terminate).
gym.register("Counter-v0", entry_point=CounterEnv, max_episode_steps=5)
# Known values with reward 1 and gamma 0.5: a truncated episode is endless in principle, so with a
# constant observation Q = 1 / (1 - 0.5) = 2 everywhere; treating truncation as an end gives ~1.67.
gym.register(
    "ConstantTruncated-v0",
    entry_point=CounterEnv,
    max_episode_steps=5,
    kwargs={"ends": (), "constant_obs": True},
)
# Terminates at t=3: Q(t=0,1,2) = 1.75, 1.5, 1.0 with gamma 0.5.
gym.register(
    "Terminating-v0",
    entry_point=CounterEnv,
    max_episode_steps=50,
    kwargs={"ends": (3,), "show_episode": False},
)
# Asymmetric bounds, one of them excluding zero; the env raises on any action outside them.
gym.register(
    "AsymmetricBounds-v0",
    entry_point=CounterEnv,
    max_episode_steps=20,
    kwargs={"ends": (), "low": [-3.0, 0.5], "high": [-1.0, 2.0]},
)
# An infinite reward at the 300th step makes the losses non-finite.
gym.register(
    "InfiniteReward-v0",
    entry_point=CounterEnv,
    max_episode_steps=20,
    kwargs={"ends": (), "bad_reward_at": 300},
)

# The values that reward 1 per step and gamma 0.5 imply, as (observations, values) per env id. A
# value network or critic trained on these envs must learn them; a wrong rule at episode
# boundaries moves them (see the registrations above).
KNOWN_VALUES = {
    "tests.toy_envs:ConstantTruncated-v0": ([[0, 0, 0, 0]], [2.0]),
    "tests.toy_envs:Terminating-v0": ([[0, 0, 3, 1], [1, 0, 3, 1], [2, 0, 3, 1]], [1.75, 1.5, 1.0]),
}
