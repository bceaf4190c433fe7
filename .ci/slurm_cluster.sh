#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for CI and for local tests of slurm/profile.yaml.
#
#   .ci/slurm_cluster.sh start    install slurm-wlm + munge if missing, write the configuration,
#                                 start munged, slurmctld and slurmd, wait until the node is idle
#   .ci/slurm_cluster.sh stop     cancel the cluster's jobs, stop the daemons this script started
#   .ci/slurm_cluster.sh status   print the daemons and `sinfo`; exit 0 when up, 3 when down
#
# Runs as root on Debian/Ubuntu (CI runs as root in a fresh machine). Everything it writes lives
# in the state folder ${MGSD_SLURM_DIR:-/tmp/mgsd-slurm} (configuration, spool, logs, pid files,
# fake GPU devices), except for three symlinks /etc/slurm/{slurm,gres,cgroup}.conf that point
# into it: every Slurm client reads /etc/slurm/slurm.conf unless SLURM_CONF is set, and the
# Snakemake job step strips SLURM_* variables before its nested `srun`, so SLURM_CONF alone
# would not reach it. `stop` removes those links again. An existing regular /etc/slurm/slurm.conf
# (a real cluster) is never overwritten.
#
# The node: the machine's CPUs and memory (override with MGSD_SLURM_CPUS, MGSD_SLURM_MEM_MB;
# SlurmdParameters=config_overrides lets a CI machine declare more than it has), and
# MGSD_SLURM_GPUS (default 2) GPUs as GRES, backed by fake character devices (mknod c 1 3, i.e.
# /dev/null), so that `--gpus=N` schedules and Slurm sets CUDA_VISIBLE_DEVICES. One partition,
# MGSD_SLURM_PARTITION_NAME (default `debug`), is the default partition.
# There is no accounting database, so `sacct` knows nothing: Snakemake must be run with
# `--slurm-status-command squeue` (MinJobAge is raised so that finished jobs stay in squeue).
set -euo pipefail

STATE_DIR=${MGSD_SLURM_DIR:-/tmp/mgsd-slurm}
PARTITION_NAME=${MGSD_SLURM_PARTITION_NAME:-debug}
START_TIMEOUT_S=${MGSD_SLURM_TIMEOUT:-60}
NODE=$(hostname -s)

CONF_DIR="$STATE_DIR/etc"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/log"
MUNGE_DIR="$STATE_DIR/munge" # owned by the munge user: munged writes its pid and log here
CONF_FILES=(slurm.conf gres.conf cgroup.conf)
# pid file per daemon; munged's pid file exists only when this script started munged
declare -A PID_FILES=(
    [munged]="$MUNGE_DIR/munged.pid"
    [slurmctld]="$RUN_DIR/slurmctld.pid"
    [slurmd]="$RUN_DIR/slurmd.pid"
)

log() { echo "slurm_cluster: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts slurmd)"
}

install_packages() {
    local missing=0 tool
    for tool in munged mungekey slurmctld slurmd sbatch sinfo squeue scancel srun; do
        command -v "$tool" >/dev/null || missing=1
    done
    ((missing)) || return 0
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and no apt-get to install them"
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    install -d -m 0755 "$LOG_DIR"
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
        >"$LOG_DIR/apt.log" 2>&1; then
        tail -n 30 "$LOG_DIR/apt.log" >&2
        die "could not install slurm-wlm and munge (log: $LOG_DIR/apt.log)"
    fi
}

# pid from a daemon's pid file if that process is alive, else nothing
live_pid() {
    local file=${PID_FILES[$1]} pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating a munge key"
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    # the package's postinst may leave the key root-owned; munged refuses a key it cannot own
    chown munge:munge /etc/munge/munge.key
    chmod 0600 /etc/munge/munge.key
    if live_pid munged >/dev/null; then
        return 0
    elif munge_works; then
        log "munged already running (not started by this script): using it"
        return 0
    fi
    # /run/munge is a tmpfs folder systemd would create; a container has no systemd
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 "$MUNGE_DIR"
    runuser -u munge -- munged --pid-file="${PID_FILES[munged]}" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
    wait_for "munged" munge_works 10
}

# wait_for NAME COMMAND SECONDS: poll COMMAND every 0.5 s
wait_for() {
    local name=$1 check=$2 seconds=$3 i
    for ((i = 0; i < seconds * 2; i++)); do
        "$check" && return 0
        sleep 0.5
    done
    log "$name did not come up within ${seconds}s"
    dump_logs
    return 1
}

node_cpus() { slurmd -C | sed -n 's/.*\bCPUs=\([0-9]\+\).*/\1/p' | head -n 1; }
node_mem_mb() { slurmd -C | sed -n 's/.*\bRealMemory=\([0-9]\+\).*/\1/p' | head -n 1; }

# gpu_files: makes MGSD_SLURM_GPUS (default 2) device files, sets GPU_FILES (the gres.conf
# File= list) and GPU_COUNT. Slurm only hands the files out and sets CUDA_VISIBLE_DEVICES to
# their indices, so on a machine with real GPUs these indices still name real GPUs 0..N-1.
gpu_files() {
    local devices=() i
    [[ ${MGSD_SLURM_GPUS:-2} =~ ^[1-9][0-9]*$ ]] ||
        die "MGSD_SLURM_GPUS must be a positive integer, got '${MGSD_SLURM_GPUS}'"
    install -d -m 0755 "$STATE_DIR/dev"
    for ((i = 0; i < ${MGSD_SLURM_GPUS:-2}; i++)); do
        # char device 1,3 is /dev/null
        [[ -c $STATE_DIR/dev/nvidia$i ]] || mknod "$STATE_DIR/dev/nvidia$i" c 1 3
        devices+=("$STATE_DIR/dev/nvidia$i")
    done
    GPU_COUNT=${#devices[@]}
    GPU_FILES=$(
        IFS=,
        echo "${devices[*]}"
    )
}

write_config() {
    local cpus mem_mb def_mem
    cpus=${MGSD_SLURM_CPUS:-$(node_cpus)}
    mem_mb=${MGSD_SLURM_MEM_MB:-$(node_mem_mb)}
    [[ $cpus =~ ^[0-9]+$ && $mem_mb =~ ^[0-9]+$ ]] ||
        die "could not read CPUs ($cpus) / memory ($mem_mb) from 'slurmd -C'"
    def_mem=$((mem_mb / cpus))
    gpu_files
    install -d -m 0755 "$CONF_DIR" "$RUN_DIR" "$LOG_DIR" "$STATE_DIR/ctld" "$STATE_DIR/slurmd"

    cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by .ci/slurm_cluster.sh: a one-node test cluster, not for production.
ClusterName=mgsd
# name(address): the node is reached on 127.0.0.1 whatever the hostname resolves to
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=${PID_FILES[slurmctld]}
SlurmdPidFile=${PID_FILES[slurmd]}
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in a container: track processes by parent pid, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
GresTypes=gpu
ReturnToService=2
# trust the node line below (a CI machine may declare more CPUs than it has)
SlurmdParameters=config_overrides
# no sacct here: finished jobs must stay visible to squeue long enough for Snakemake's status
# checks (the executor falls back to sacct when MinJobAge < 3 x its first status interval)
MinJobAge=900
InactiveLimit=0
KillWait=30
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$GPU_COUNT State=UNKNOWN
PartitionName=$PARTITION_NAME Nodes=$NODE Default=YES MaxTime=7-00:00:00 State=UP
EOF
    echo "NodeName=$NODE Name=gpu File=$GPU_FILES" >"$CONF_DIR/gres.conf"
    cat >"$CONF_DIR/cgroup.conf" <<EOF
# Written by .ci/slurm_cluster.sh. Unused: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none.
CgroupPlugin=autodetect
EOF
    link_config
}

link_config() {
    local name target
    install -d -m 0755 /etc/slurm
    for name in "${CONF_FILES[@]}"; do
        target=/etc/slurm/$name
        if [[ -e $target && ! -L $target ]]; then
            die "$target exists and is not a link made by this script:" \
                "not overwriting a real cluster's configuration"
        fi
        ln -sfn "$CONF_DIR/$name" "$target"
    done
}

unlink_config() {
    local name target
    for name in "${CONF_FILES[@]}"; do
        target=/etc/slurm/$name
        if [[ -L $target && $(readlink "$target") == "$CONF_DIR/$name" ]]; then
            rm -f "$target"
        fi
    done
}

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }
node_idle() { [[ $(node_state) == idle ]]; }
ctld_answers() { scontrol ping 2>/dev/null | grep -q UP; }

dump_logs() {
    local file
    for file in "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log "$MUNGE_DIR"/munged.log; do
        [[ -f $file ]] || continue
        echo "----- last lines of $file -----" >&2
        tail -n 40 "$file" >&2
    done
    scontrol show node "$NODE" >&2 2>/dev/null || true
}

start() {
    require_root
    if live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null && munge_works; then
        log "already running (state folder $STATE_DIR)"
        status
        return 0
    fi
    if live_pid slurmctld >/dev/null || live_pid slurmd >/dev/null; then
        log "partly running: restarting"
        stop
    fi
    local t0=$SECONDS
    install_packages
    write_config
    start_munged
    slurmctld -f "$CONF_DIR/slurm.conf"
    wait_for slurmctld ctld_answers 20
    slurmd -f "$CONF_DIR/slurm.conf"
    if ! wait_for "node $NODE (idle)" node_idle "$START_TIMEOUT_S"; then
        die "cluster did not start; daemons left running, run '$0 stop' to stop them"
    fi
    log "up in $((SECONDS - t0))s: node $NODE, partition $PARTITION_NAME," \
        "$GPU_COUNT GPU(s), state folder $STATE_DIR"
    sinfo -N -o "%N %P %T %c %m %G" >&2
}

stop_daemon() {
    local name=$1 pid i
    pid=$(live_pid "$name") || {
        rm -f "${PID_FILES[$name]}"
        return 0
    }
    kill -TERM "$pid"
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name ($pid) ignored SIGTERM for 30s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "${PID_FILES[$name]}"
    log "stopped $name ($pid)"
}

cancel_jobs() {
    local jobs i
    jobs=$(squeue -h -o %i 2>/dev/null) || return 0
    [[ -n $jobs ]] || return 0
    log "cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086  # one argument per job id
    scancel --full $jobs 2>/dev/null || true
    # give slurmstepd time to kill the job processes before slurmd goes away
    for ((i = 0; i < 60; i++)); do
        [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
        sleep 0.5
    done
}

stop() {
    require_root
    if live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null; then
        cancel_jobs
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    unlink_config
}

status() {
    local name pid up=1
    for name in munged slurmctld slurmd; do
        if pid=$(live_pid "$name"); then
            echo "$name: running (pid $pid)"
        elif [[ $name == munged ]] && munge_works; then
            echo "munged: running (not started by this script)"
        else
            echo "$name: not running"
            up=0
        fi
    done
    if ((up)) && sinfo -N -o "%N %P %T %c %m %G" 2>/dev/null; then
        squeue 2>/dev/null || true
        return 0
    fi
    return 3
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
