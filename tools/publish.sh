#!/usr/bin/env bash
# Copy what the repository keeps of finished benchmark runs into a folder under runs/: per run its
# TensorBoard events, summary.json, benchmark.json and final_model.pt (the policy alone, no replay
# buffer or optimizer); then the plots and the table (plot.py) and, for seed 1 of each algorithm,
# env and setting, a GIF of three training stages side by side (enjoy.py); for runs/published,
# docs/provenance.md again (tools/provenance.py).
#
#   bash tools/publish.sh [--only GLOB] [--no-gifs] SOURCE_RUNS_DIR [DEST]
#
# SOURCE_RUNS_DIR is a benchmark.sh --runs-dir; unfinished runs are left out. DEST defaults to
# runs/published. --only keeps the runs whose name matches GLOB (e.g. 'HalfCheetah-v4__ppo__*');
# --no-gifs copies the runs without drawing GIFs (a hyperparameter study's runs).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage="usage: bash tools/publish.sh [--only GLOB] [--no-gifs] SOURCE_RUNS_DIR [DEST]"
only='*' gifs=1
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --only) only=${2:?$usage}; shift 2 ;;
    --no-gifs) gifs=0; shift ;;
    *) echo "error: unknown option $1; $usage" >&2; exit 2 ;;
  esac
done
# Paths as the caller wrote them, from where the caller is; then work from the repository root.
source_dir=$(realpath -m -- "${1:?$usage}")
dest=$(realpath -m -- "${2:-$repo/runs/published}")
[[ -d $source_dir ]] || { echo "error: $1 is not a directory; $usage" >&2; exit 2; }
[[ $source_dir != "$dest" ]] || { echo "error: SOURCE_RUNS_DIR and DEST are one folder; $usage" >&2; exit 2; }
cd "$repo"
mkdir -p "$dest/gifs"
for run in "$source_dir"/*__*__*__*/; do
  name=$(basename "$run")
  # shellcheck disable=SC2053  # GLOB is a pattern on purpose
  [[ $name == $only ]] || continue
  [[ -f $run/summary.json ]] || { echo "skipped (not finished): $name"; continue; }
  # A run published again replaces its copy: an older copy's event files would join its curves.
  rm -rf -- "${dest:?}/$name"
  mkdir -p "$dest/$name"
  cp "$run"/events.out.tfevents.* "$run/summary.json" "$run/benchmark.json" "$run/final_model.pt" "$dest/$name/"
  if [[ $gifs == 1 && $name == *__1 && ! -f $dest/gifs/${name%__1}.gif ]]; then
    # 10 s of simulated time (HalfCheetah: 200 steps, Walker2d: 1250) of the first, middle and last
    # snapshot, 160x120 each: about 1-2 MB.
    steps=$(python -c "import gymnasium as gym, json, sys
print(round(10 / gym.make(json.load(open(sys.argv[1]))['env_id']).unwrapped.dt))" "$run/benchmark.json")
    MUJOCO_GL=${MUJOCO_GL:-egl} python enjoy.py --checkpoint "$run" --stages 3 --episodes 1 --max-steps "$steps" \
      --width 160 --height 120 --gif "$dest/gifs/${name%__1}.gif" | tail -2
  fi
done
python plot.py "$dest" --out "$dest/report" > /dev/null
if [[ $(realpath "$dest") == $(realpath runs/published) ]]; then  # where each run ran, from its files
  python tools/provenance.py "$dest" --markdown docs/provenance.md > /dev/null
fi
du -sh "$dest"
