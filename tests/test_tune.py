"""benchmark.sh --tune: a tiny Optuna study that ends with exactly the trials asked, adds none when
run again and grows with --trials; two tuners sharing one study; a tuner killed mid-trial that
resumes the trial without losing or counting it twice; the pruner stopping a planted bad trial,
which stays resumable; bad spaces in one line; the Slurm path on a real one-node cluster."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import torch

from actor_critic import tune
from actor_critic.algorithms import ALGORITHMS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK = os.path.join(REPO, "benchmark.sh")

ENV = "InvertedDoublePendulum-v4"  # an untrained policy falls within steps: evaluation costs nothing
TINY = "num-steps=256 num-minibatches=2 update-epochs=2 hidden-size=16 eval-episodes=2 eval-every=512"
SPACE = "learning-rate=log:1e-4:1e-2 gamma=0.9:0.99"


def tune_flags(runs_dir, *flags, steps=1024, trials=3, tiny=TINY):
    return [
        "--tune",
        "--algos",
        "ppo",
        "--envs",
        ENV,
        "--steps",
        str(steps),
        "--trials",
        str(trials),
        "--runs-dir",
        str(runs_dir),
        "--set",
        tiny,
        "--space",
        SPACE,
        "--no-default-space",
        *flags,
    ]


def benchmark(*flags, timeout=300, env=None, check=True):
    result = subprocess.run(
        ["bash", BENCHMARK, *flags], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def study_dir(runs_dir):
    return runs_dir / f"{ENV}__ppo__default__tune"


def trials(runs_dir):
    """(number, state, value) of each trial, read from the study's journal as Optuna reads it."""
    config = tune.read_config(str(study_dir(runs_dir)))
    study = tune.load_study(str(study_dir(runs_dir)), config)
    return [(trial.number, trial.state.name, trial.value) for trial in study.get_trials()]


def starts(run_dir):
    return re.findall(r"^# started", open(os.path.join(run_dir, "benchmark.log")).read(), re.M)


def test_two_tuners_share_a_study_that_ends_with_the_trials_asked_and_grows_with_trials(tmp_path):
    runs_dir = tmp_path / "runs"
    flags = tune_flags(runs_dir, "--workers", "1", "--validate-seeds", "7")
    # Two tuners at once (two terminals, two Slurm tasks): one study, 3 trials in all, none twice.
    first = [
        subprocess.Popen(["bash", BENCHMARK, *flags], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in first]
    assert [process.returncode for process in first] == [0, 0], outputs
    assert [(number, state) for number, state, _ in trials(runs_dir)] == [(n, "COMPLETE") for n in range(3)]
    ran = re.findall(r"\] trial (\d+) starts: ", "".join(outputs))
    assert sorted(ran) == ["0", "1", "2"]  # each trial taken by one tuner
    trial_dirs = study_dir(runs_dir) / "trials"
    for number in range(3):
        run_dir = trial_dirs / f"{ENV}__ppo__trial-{number}__1"
        assert json.load(open(run_dir / "summary.json"))["global_step"] == 1024
        assert len(starts(run_dir)) == 1
    # The first trial is the starting setting: --set's values and the script's defaults.
    params = json.load(open(trial_dirs / f"{ENV}__ppo__trial-0__1" / "benchmark.json"))["flags"]
    assert params[-4:] == ["--learning-rate", "0.0003", "--gamma", "0.99"]
    # The validation: the best setting and the starting one, on a seed the study never saw.
    validation = study_dir(runs_dir) / "validation"
    report = open(study_dir(runs_dir) / "report" / "tuning.md").read()
    best = re.search(r"## Best: trial (\d+)", report)[1]
    names = [f"{ENV}__ppo__default__7", f"{ENV}__ppo__tuned-{best}__7", "report"]
    assert sorted(os.listdir(validation)) == names
    assert "| default |" in report and f"| tuned-{best} |" in report
    assert (study_dir(runs_dir) / "report" / "history.png").exists()

    again = benchmark(*flags)  # the same command: nothing new
    assert "] trial" not in again.stdout
    assert len(trials(runs_dir)) == 3
    more = benchmark(*tune_flags(runs_dir, "--workers", "1", "--validate-seeds", "7", trials=4))
    assert re.findall(r"\] trial (\d+) starts: ", more.stdout) == ["3"]
    assert [state for _, state, _ in trials(runs_dir)] == ["COMPLETE"] * 4


def test_a_tuner_killed_mid_trial_resumes_the_trial_without_losing_or_counting_it_twice(tmp_path):
    runs_dir = tmp_path / "runs"
    tiny = TINY.replace("eval-every=512", "eval-every=2048") + " checkpoint-every=1024"
    flags = tune_flags(runs_dir, "--workers", "1", "--no-validate", steps=24576, trials=1, tiny=tiny)
    process = subprocess.Popen(
        ["bash", BENCHMARK, *flags], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    run_dir = study_dir(runs_dir) / "trials" / f"{ENV}__ppo__trial-0__1"
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)  # the tuner and its run, with no chance to checkpoint
    process.wait()
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=True, mmap=True)["global_step"]
    assert 1024 <= killed_at < 24576
    assert [state for _, state, _ in trials(runs_dir)] == ["RUNNING"]  # its worker is gone

    resumed = benchmark(*flags)
    assert "trial 0 resumes (its worker had stopped)" in resumed.stdout
    assert [(number, state) for number, state, _ in trials(runs_dir)] == [(0, "COMPLETE")]
    assert len(starts(run_dir)) == 2 and "--resume" in open(run_dir / "benchmark.log").read()
    assert json.load(open(run_dir / "summary.json"))["global_step"] == 24576


def made_by_hand(runs_dir, flags):
    """The study these flags make, begun in-process (tune.json and an empty journal), for a test to
    plant trials in before the tuner runs."""
    config = tune.study_config(tune.parse_options([flag for flag in flags if flag != "--tune"]))
    directory = str(study_dir(runs_dir))
    os.makedirs(directory)
    tune.run_directory.write_json_atomically(config, os.path.join(directory, tune.CONFIG))
    return tune.load_study(directory, config), config


def test_the_pruner_stops_a_planted_bad_trial_which_stays_resumable(tmp_path):
    import optuna

    runs_dir = tmp_path / "runs"
    tiny = TINY.replace("eval-every=512", "eval-every=1024")
    steps = 65536
    flags = tune_flags(runs_dir, "--workers", "1", "--no-validate", steps=steps, trials=6, tiny=tiny)
    # Five trials that scored far above anything this run can reach, at every step it reports.
    study, config = made_by_hand(runs_dir, flags)
    for _ in range(5):
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning-rate": 3e-4, "gamma": 0.99},
                distributions=tune.distributions(config),
                value=1e6,
                intermediate_values={step: 1e6 for step in range(256, steps + 1, 256)},
            )
        )
    result = benchmark(*flags)
    assert re.search(r"trial 5: pruned at [\d,]+ steps", result.stdout), result.stdout
    assert trials(runs_dir)[5][1] == "PRUNED"
    run_dir = study_dir(runs_dir) / "trials" / f"{ENV}__ppo__trial-5__1"
    assert not (run_dir / "summary.json").exists()
    # SIGTERM made it write its checkpoint: the run resumes like any interrupted one.
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=True, mmap=True)["global_step"]
    assert steps // 4 <= stopped_at < steps
    assert "trial 5    pruned" in benchmark(*flags, "--status").stdout


def test_a_combination_the_script_refuses_fails_its_trial_and_the_study_goes_on(tmp_path):
    runs_dir = tmp_path / "runs"
    flags = tune_flags(runs_dir, "--workers", "1", "--no-validate", trials=2)
    flags[flags.index(SPACE)] = "num-steps=8,256 num-minibatches=2,8"  # each alone is accepted
    study, _ = made_by_hand(runs_dir, flags)
    # 8 steps in 8 minibatches: minibatches of one step, which ppo_continuous.py refuses.
    study.enqueue_trial({"num-steps": "8", "num-minibatches": "8"})
    study.enqueue_trial({"num-steps": "256", "num-minibatches": "2"})
    result = benchmark(*flags)
    assert "trial 0: refused (InvertedDoublePendulum-v4__ppo__trial-0__1: " in result.stdout
    assert [state for _, state, _ in trials(runs_dir)] == ["FAIL", "COMPLETE"]
    status = benchmark(*flags, "--status").stdout
    assert "trial 0    fail" in status and "2 of 2 trials: 1 fail, 1 complete" in status
    assert "best so far: trial 1, " in status


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--space", "learning-rate"], "'learning-rate' is not NAME=RANGE"),
        (["--space", "learning-rate=log:0:1"], "learning-rate=log:0:1: a log range must be above 0"),
        (["--space", "gamma=0.99:0.9"], "gamma=0.99:0.9: LOW must be below HIGH"),
        (["--space", "gamma=a:b"], "gamma=a:b: the bounds must be numbers"),
        (["--space", "update-epochs=1:4"], "update-epochs takes integers: int:LOW:HIGH"),
        (["--space", "learnig-rate=log:1e-5:1e-3"], "--learnig-rate is not a flag of ppo_continuous.py"),
        (["--space", "activation=tanh,sigmoid"], "activation=sigmoid: activation is one of tanh, relu, elu"),
        (["--space", "seed=int:1:5"], "--seed is set by the sweep itself"),
        (["--space", "num-steps=int:1:256"], "--space: num-steps=1: "),  # the script refuses 1 step
        (["--algos", "sac ppo"], "--tune tunes one algorithm at a time"),
        (["--grid", "gamma=0.9,0.99"], "--tune searches --space, not a --grid"),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--validate-seeds", "1"], "--validate-seeds must be seeds the study never saw"),
        (["--study", "../x"], "--study '../x' must be one name"),
        (["--study", ".."], "--study '..' must be one name, a folder inside --runs-dir"),
        (["--study=-x"], "--study '-x' must be one name"),
        (["--label", "../x"], "--label '../x' must be one name, a folder inside --runs-dir"),
        (["--envs", "Walker2d-v4 Pendulum-v1"], "no reference score to normalize Pendulum-v1 by"),
        (["--validate-seeds", " "], "--validate-seeds is empty: give seeds, or --no-validate"),
    ],
)
def test_bad_input_is_one_line_before_anything_starts(tmp_path, flags, message):
    runs_dir = tmp_path / "runs"
    argv = [flag for flag in tune_flags(runs_dir) if flag != "--tune"]  # a flag given again wins
    with pytest.raises(SystemExit) as error:
        tune.main(argv + flags)
    assert message in str(error.value), str(error.value)
    assert not runs_dir.exists()


def test_bad_input_from_the_command_line_is_one_line_and_a_changed_study_is_refused(tmp_path):
    runs_dir = tmp_path / "runs"
    result = benchmark(*tune_flags(runs_dir, "--space", "gamma=1:0"), check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["error: --space: gamma=1:0: LOW must be below HIGH"]
    made_by_hand(runs_dir, tune_flags(runs_dir))
    other = benchmark(*tune_flags(runs_dir, steps=2048), check=False)
    assert other.returncode != 0
    assert "holds another study (its envs differ)" in other.stderr and len(other.stderr.splitlines()) == 1


def test_a_space_reads_as_optuna_distributions_and_trials_spell_values_exactly():
    assert tune.parse_param("a", "log:1e-5:1e-3").distribution().log
    assert tune.parse_param("a", "int:2:8").distribution().high == 8
    assert tune.parse_param("a", "log-int:1:64").distribution().log
    assert tune.parse_param("a", "tanh,elu").distribution().choices == ("tanh", "elu")
    assert tune.parse_param("a", "0.9:0.99").kind == "float"
    config = {
        "set": "gamma=0.99 num-envs=4",
        "space": {"gamma": "0.9:0.999", "learning-rate": "log:1e-5:1e-3"},
    }
    value = 0.1 + 0.2  # 0.30000000000000004: the run must get this float, not a rounded one
    assert tune.trial_settings(config, {"gamma": 0.95, "learning-rate": value}) == (
        "gamma=0.95 num-envs=4 learning-rate=0.30000000000000004"
    )
    assert tune.spelled((512, 256)) == "512x256" and tune.spelled(True) == "true"
    # The starting setting: --set's value where set, else the script's default, if inside the space.
    start = tune.starting_values(
        {"algo": "ppo", **config, "space": {**config["space"], "clip-coef": "0.25:0.3"}}
    )
    assert start == {"gamma": 0.99, "learning-rate": 3e-4}


def test_the_default_space_leaves_out_what_set_fixes_and_space_adds_to_it():
    space = tune.study_space("ppo", "gamma=0.9:0.95 ent-coef=0:0.01", {"learning-rate": "1e-4"}, True)
    assert "learning-rate" not in space and space["gamma"] == "0.9:0.95" and space["ent-coef"] == "0:0.01"
    assert "gae-lambda" in space
    assert tune.study_space("ppo", "gamma=0.9:0.95", {}, False) == {"gamma": "0.9:0.95"}
    for algo in ("ppo", "sac"):  # each default space is valid for its script
        module = ALGORITHMS[algo].module()
        tune.make_space(algo, module.TUNING_SPACE, {})


def test_slurm_workers_share_one_study_on_a_real_cluster(tmp_path, slurm_cluster):
    runs_dir = tmp_path / "runs"
    flags = tune_flags(
        runs_dir,
        "--slurm",
        "--workers",
        "2",
        "--sbatch-args=--wait",
        "--partition",
        "debug",
        "--validate-seeds",
        "5",
    )
    result = benchmark(*flags, env=slurm_cluster)
    assert "submitting 2 workers as one array job" in result.stdout
    assert [(number, state) for number, state, _ in trials(runs_dir)] == [(n, "COMPLETE") for n in range(3)]
    slurm_dir = study_dir(runs_dir) / "slurm"
    logs = [open(slurm_dir / name).read() for name in os.listdir(slurm_dir) if name.endswith(".out")]
    assert len(logs) == 2
    assert sorted(re.findall(r"\] trial (\d+) starts: ", "".join(logs))) == ["0", "1", "2"]
    validation = study_dir(runs_dir) / "validation"
    report = open(study_dir(runs_dir) / "report" / "tuning.md").read()
    best = re.search(r"## Best: trial (\d+)", report)[1]
    for label in ("default", f"tuned-{best}"):
        assert (validation / f"{ENV}__ppo__{label}__5" / "summary.json").exists()
    assert f"| tuned-{best} |" in report
