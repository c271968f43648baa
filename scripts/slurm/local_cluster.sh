#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, for testing the Slurm profile (tests/test_slurm.py).
#   local_cluster.sh start DIR   install slurm-wlm + munge if missing (Debian, root), write a one-node
#                                slurm.conf under DIR, start munged, slurmctld and slurmd, wait for the node
#   local_cluster.sh stop DIR    stop exactly the daemons started by `start DIR` (by their pid files)
# Every Slurm command must then see the config: export SLURM_CONF=DIR/slurm.conf. Commands started
# inside jobs (srun) do not get SLURM_CONF, so /etc/slurm/slurm.conf is linked to it while the
# cluster runs (only if that path is free or already one of our links) and unlinked by `stop`.
# No accounting daemon: sacct answers nothing, so the profile is run with --slurm-status-command squeue
# (MinJobAge is raised so squeue still reports finished jobs).
set -euo pipefail
cmd=${1:?usage: local_cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: local_cluster.sh start|stop DIR}")

SYSTEM_CONF=/etc/slurm/slurm.conf

stop() {
  if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$dir/slurm.conf" ]; then
    rm -f "$SYSTEM_CONF"
  fi
  for name in slurmd slurmctld munged; do
    pidfile="$dir/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "need root to apt-get install slurm-wlm munge" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  mkdir -p "$dir"/{spool/ctld,spool/d,log,munge}
  chmod 700 "$dir/munge"
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$dir/slurm.conf" <<CONF
ClusterName=loraflow-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of="$key" status=none
    chmod 400 "$key"
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  munged --force --key-file="$key" --socket=/run/munge/munge.socket.2 --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
  export SLURM_CONF="$dir/slurm.conf"
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  if [ ! -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    ln -sfn "$SLURM_CONF" "$SYSTEM_CONF"
  else
    echo "warning: $SYSTEM_CONF exists; jobs' srun will use it instead of $SLURM_CONF" >&2
  fi
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 120); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle'; then
      echo "slurm up: SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 0.5
  done
  echo "slurm did not come up; logs:" >&2
  tail -n 20 "$dir"/log/*.log >&2 || true
  stop
  exit 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: local_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
