#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests in tests/test_slurm.py
# (CI runs it as root after installing Debian's slurmctld, slurmd, slurm-client
# and munge). Idempotent: a cluster that already answers is left as it is.
# Prints one line; exit 0 when `sinfo` shows the node idle, else 1 with the reason.
set -u
say() { echo "start_cluster: $*"; }
[ "$(id -u)" = 0 ] || { say "needs root (it writes /etc/slurm and starts daemons)"; exit 1; }
for tool in slurmctld slurmd munged sbatch; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { say "$tool not installed (apt-get install slurmctld slurmd slurm-client munge)"; exit 1; }
done
export PATH="$PATH:/usr/sbin"
# Each pytest worker runs this script: one at a time, or two would start two controllers.
# The daemons it starts must not inherit fd 9 (each gets 9>&-): they would hold the lock for
# as long as they live, and the next worker's run of this script would wait on it forever.
exec 9>/tmp/sweeplab-slurm-start.lock
flock -w 120 9 || { say "another start of the cluster held its lock for 120 s"; exit 1; }
host=$(hostname -s)
# nproc honours OMP_NUM_THREADS (the test suite sets it to 1): count the CPUs this process may use.
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
  have=$(sinfo -h -o %c 2>/dev/null | head -1)
  if [ "$have" = "$cpus" ]; then say "cluster already up ($have CPUs)"; exit 0; fi
  say "cluster up with $have CPUs, this machine has $cpus: restarting it"
  scontrol shutdown >/dev/null 2>&1; pkill -x slurmd; pkill -x slurmctld
  for _ in $(seq 20); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
fi
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
state=/var/lib/slurm-sweeplab

# munge: a key only munge can read, and its daemon
mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 \
  || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged 9>&- || { say "munged did not start"; exit 1; }

mkdir -p /etc/slurm "$state/ctld" "$state/d" /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
# Written by sweeplab's tests/slurm/start_cluster.sh: one node, no cgroups, no accounting.
ClusterName=sweeplab
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=30
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# -c: no job of an earlier run (its saved state outlives the machine's processes) comes back into the queue.
pgrep -x slurmctld >/dev/null || slurmctld -c 9>&- || { say "slurmctld did not start (see /var/log/slurm/slurmctld.log)"; exit 1; }
pgrep -x slurmd >/dev/null || slurmd 9>&- || { say "slurmd did not start (see /var/log/slurm/slurmd.log)"; exit 1; }
for _ in $(seq 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then say "one node ($host, $cpus CPUs) idle in partition debug"; exit 0; fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1
  sleep 1
done
say "the node did not come up: $(sinfo -h -o '%t %E' 2>&1 | head -1)"
exit 1
