# Shared settings and helpers for slurm/start.sh and slurm/stop.sh (sourced, not run).
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file

# Pid files, logs and state live where the Debian packages expect them, so `ps`, logs and
# leftovers from a package-started daemon all end up in one place.
MUNGE_PID=/run/munge/munged.pid
MARIADB_PID=/run/mysqld/mysqld.pid
SLURMDBD_PID=/run/slurmdbd.pid
SLURMCTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid

SLURM_LOG_DIR=/var/log/slurm
MARIADB_LOG=/var/log/mysql/error.log
MUNGE_LOG=/var/log/munge/munged.log

log() { echo "[slurm $(date +%H:%M:%S)] $*"; }

die() {
    echo "[slurm] ERROR: $*" >&2
    exit 1
}

# True if the process exists and is not a zombie. Where init is slow to reap (containers whose
# pid 1 is not a real init), a killed daemon stays a zombie for seconds after it exited.
alive() {
    local state
    state=$(awk '{print $3}' /proc/"$1"/stat 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# Print the pid from a pid file if that process is alive and is the expected program.
# A pid file can survive its daemon (kill -9, container restart with a persistent /run) and
# the pid can be reused by another program, so the name is checked, not just the pid.
running_pid() {
    local pidfile=$1 name=$2 pid comm
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] && alive "$pid" || return 1
    comm=$(cat /proc/"$pid"/comm 2>/dev/null) || return 1
    # comm is truncated to 15 characters and may carry a -wlm suffix (Debian alternatives).
    [[ $comm == "${name:0:15}"* || $name == "$comm"* ]] || return 1
    echo "$pid"
}

# Stop a daemon by its pid file: SIGTERM, wait, SIGKILL as a last resort. Idempotent.
stop_daemon() {
    local pidfile=$1 name=$2 wait_s=${3:-20} pid i
    if ! pid=$(running_pid "$pidfile" "$name"); then
        rm -f "$pidfile"
        log "$name: not running"
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$name: still alive after ${wait_s}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}
