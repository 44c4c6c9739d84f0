#!/usr/bin/env bash
# A throwaway single-node SLURM on this machine for tests/test_slurm.py (Debian 12, root).
#   cluster.sh start DIR   installs munge and SLURM if missing, writes /etc/slurm/slurm.conf and
#                          gres.conf, starts the daemons (state, logs and pid files in DIR) and
#                          waits until the node is idle
#   cluster.sh stop DIR    stops the daemons that start started, by their pid files, and removes
#                          the configuration it wrote
# The configuration has to be in /etc/slurm: the SLURM executor drops SLURM_CONF from the
# environment of the job steps it starts. The node has the partitions `cpu` and `gpu` that
# profiles/slurm names, and two fake GPUs (plain files; slurmd logs that they are not devices), so
# jobs asking for `--gpus=1` are scheduled as on a GPU node.
set -euo pipefail

action=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")
conf=/etc/slurm
marker="# written by crossdisc tests/slurm/cluster.sh"

stop() {
  if [ -f "$dir/slurmctld.pid" ]; then  # jobs left by a failed test: their processes outlive slurmd
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
  for daemon in slurmd slurmctld munged; do
    [ -f "$dir/$daemon.pid" ] || continue
    pid=$(cat "$dir/$daemon.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    rm -f "$dir/$daemon.pid"
  done
  for file in slurm.conf gres.conf; do
    if head -1 "$conf/$file" 2>/dev/null | grep -qxF "$marker"; then rm -f "$conf/$file"; fi
  done
}

start() {
  if [ -f "$conf/slurm.conf" ] && ! head -1 "$conf/slurm.conf" | grep -qxF "$marker"; then
    echo "cluster.sh: $conf/slurm.conf exists and is not ours: not replacing this machine's SLURM" >&2
    exit 1
  fi
  if ! command -v slurmctld >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      munge slurmctld slurmd slurm-client >/dev/null
  fi
  rm -rf "$dir/state" "$dir/spool"
  mkdir -p "$dir/state" "$dir/spool" "$dir/fake-gpu"
  touch "$dir/fake-gpu/0" "$dir/fake-gpu/1"
  # `slurmd -C` prints e.g. "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105"
  local node cpus memory
  node=$(slurmd -C | head -1)
  cpus=$(grep -o 'CPUs=[0-9]*' <<<"$node" | cut -d= -f2)
  memory=$(grep -o 'RealMemory=[0-9]*' <<<"$node" | cut -d= -f2)
  trap 'stop' EXIT  # a start that fails leaves nothing running
  cat >"$conf/slurm.conf" <<EOF
$marker
ClusterName=crossdisc-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# no cgroups on these machines
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job with no memory request takes the whole node
DefMemPerCPU=500
# no slurmdbd: sacct cannot answer, so clients ask squeue, which must remember finished jobs
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
# a job is requeued only when it asked to be (sbatch --requeue: slurm-requeue in profiles/slurm)
JobRequeue=0
ReturnToService=2
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
  cat >"$conf/gres.conf" <<EOF
$marker
NodeName=localhost Name=gpu File=$dir/fake-gpu/[0-1]
EOF
  if ! munge -n >/dev/null 2>&1; then  # a munged already running is not ours to start or stop
    install -d -o munge -g munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    cp /run/munge/munged.pid "$dir/munged.pid"
  fi
  slurmctld
  slurmd -N localhost
  local state=""
  for _ in $(seq 120); do
    state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    echo "cluster.sh: node state '$state' after 60 s, not idle" >&2
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    exit 1
  fi
  trap - EXIT
}

case $action in
  start) start ;;
  stop) stop ;;
  *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
