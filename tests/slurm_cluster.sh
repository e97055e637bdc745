#!/usr/bin/env bash
# Throwaway one-node Slurm cluster for tests: munged, slurmctld and slurmd on
# localhost, with every file (config, key, state, spool, logs, pids) under DIR.
# Needs root (slurmd launches jobs as the submitting user) and Debian's
# slurmctld, slurmd, slurm-client and munge packages; no systemd.
#
#   eval "$(tests/slurm_cluster.sh start DIR)"   # exports SLURM_CONF=DIR/slurm.conf
#   sbatch ...; squeue; ...
#   tests/slurm_cluster.sh stop DIR
#
# Every Slurm command (and the daemons) finds the cluster through SLURM_CONF only,
# so the machine's /etc/slurm and /etc/munge are never used or changed.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
dir=$(realpath -m "$2")  # slurm.conf wants absolute paths
conf=$dir/slurm.conf

# kill -0 also succeeds on zombies, which the daemons become when nobody reaps
# them promptly, so read the state from /proc instead.
alive() { [[ -r /proc/$1/stat ]] && ! grep -q '^[^)]*) Z' "/proc/$1/stat"; }

# A free TCP port, so that we never clash with a real Slurm (6817/6818) or with
# another test cluster: connecting to a free port fails.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    [[ $p != "${1:-}" ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { echo "$p"; return; }
  done
}

stop() {
  # Cancel jobs first so that no job (slurmstepd and its children) outlives
  # slurmd. Only ask a live controller: a dead one makes scancel retry for long.
  if [[ -f $dir/slurmctld.pid ]] && alive "$(cat "$dir/slurmctld.pid")" &&
     SLURM_CONF=$conf timeout 10 scancel --quiet --user=root 2>/dev/null; then
    for _ in $(seq 20); do
      [[ -z $(SLURM_CONF=$conf timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  local name pid
  for name in slurmd slurmctld munged; do  # reverse start order
    [[ -f $dir/$name.pid ]] || continue
    pid=$(cat "$dir/$name.pid")
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
      alive "$pid" && { echo "$name ($pid) ignored SIGTERM, killing" >&2; kill -KILL "$pid" 2>/dev/null || true; }
    fi
    rm -f "$dir/$name.pid"
  done
}

start() {
  [[ $(id -u) == 0 ]] || { echo "$0: must run as root" >&2; exit 1; }
  # A daemon that fails to start must not leave the others running.
  trap 'echo "$0: start failed, logs in $dir/log" >&2; stop' ERR
  # Start from empty state every time: a controller that recovers old state
  # reports the node idle before slurmd has even registered.
  rm -rf "$dir"/{state,spool,log}
  mkdir -p "$dir"/{state,spool,log}
  local host cpus mem ctld_port slurmd_port
  host=$(hostname -s)   # slurmctld only runs on a host named in SlurmctldHost
  cpus=$(nproc)
  # Slurm drains a node that reports less memory than configured: stay below it.
  mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  ctld_port=$(free_port)
  slurmd_port=$(free_port "$ctld_port")

  # MUNGE with its own key and socket. --force: munged refuses a socket whose
  # parent directories are not world-executable (mktemp -d gives 0700); only
  # root talks to it here, so that check does not matter.
  mungekey --create --force --keyfile="$dir/munge.key"
  munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed"

  : >"$dir/plugstack.conf"  # keep /etc/slurm/plugstack.conf out of it
  cat >"$conf" <<EOF
ClusterName=testcluster
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
# No cgroups, no accounting: works in containers and needs no slurmdbd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# CR_CPU: a CPU is the unit handed out, so 1-CPU tasks can share the node
# (memory is not a consumable: jobs without --mem don't take the whole node).
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Bring the node back by itself if it went down (e.g. slurmd was slow to answer).
ReturnToService=2
KillWait=5
# sbatch --wait polls after 2, 8, 32, 32... s, but never longer than half of MinJobAge (300 s by
# default): keeping finished jobs 10 s caps the poll at 8 s, which saves the test 20 s of waiting.
MinJobAge=10
# The default MailProg (/bin/mail) is not installed: slurmctld logs an error.
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  # Both daemonize and write their pid files; -N names the node explicitly.
  slurmctld -f "$conf"
  slurmd -f "$conf" -N "$host"

  # Ready when the node reports idle; on failure show why and clean up.
  local state=""
  for _ in $(seq 60); do
    state=$(SLURM_CONF=$conf timeout 5 sinfo -h -N -o %t 2>/dev/null || true)
    [[ $state == idle ]] && { echo "export SLURM_CONF=$conf"; return; }
    sleep 1
  done
  {
    echo "$0: node not idle after 60s (state: '${state:-no answer}'); daemon logs:"
    for f in "$dir"/log/*.log; do echo "==== $f"; tail -n 30 "$f"; done
  } >&2
  stop
  exit 1
}

case $1 in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
