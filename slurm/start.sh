#!/usr/bin/env bash
# Configure and start a single-node SLURM cluster with accounting on this machine:
# munge -> mariadb -> slurmdbd -> slurmctld -> slurmd, each started by hand (no systemd needed)
# and waited for. Run slurm/install.sh first. Idempotent: daemons already running are left alone
# (restarted only when their config file changed), so rerunning on a live cluster returns 0.
#
# Environment (all optional):
#   TOYSWEEP_SLURM_CPUS     CPUs the node advertises (default 8). More than the real cores is
#                           fine (SlurmdParameters=config_overrides): several array tasks then
#                           run at once even on a 2-core machine.
#   TOYSWEEP_SLURM_MEM_MB   memory the node advertises, in MB (default: MemTotal of the machine)
#   TOYSWEEP_SLURM_CLUSTER  cluster name in slurm.conf and accounting (default: toysweep)
#   TOYSWEEP_SLURM_TIMEOUT  seconds to wait for each daemon (default 30)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/common.sh
source "$here/common.sh"

[[ $EUID -eq 0 ]] || die "start.sh must run as root"
for bin in munged mariadbd slurmdbd slurmctld slurmd sinfo sacctmgr; do
    command -v "$bin" >/dev/null || [[ -x /usr/sbin/$bin ]] ||
        die "$bin not found: run slurm/install.sh first"
done
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

HOST=$(hostname -s)
CPUS=${TOYSWEEP_SLURM_CPUS:-8}
MEM_MB=${TOYSWEEP_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)}
CLUSTER=${TOYSWEEP_SLURM_CLUSTER:-toysweep}
TIMEOUT=${TOYSWEEP_SLURM_TIMEOUT:-30}
[[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "TOYSWEEP_SLURM_CPUS must be a positive integer, got '$CPUS'"
[[ $MEM_MB =~ ^[1-9][0-9]*$ ]] || die "TOYSWEEP_SLURM_MEM_MB must be a positive integer, got '$MEM_MB'"
# Without a default, CR_Core_Memory gives every job the whole node's memory and jobs then
# run one at a time; split the memory evenly across the advertised CPUs instead.
DEF_MEM_PER_CPU=$((MEM_MB / CPUS))
# Accounting stores cluster names in lower case; keep slurm.conf and sacctmgr in agreement.
CLUSTER=${CLUSTER,,}
[[ $CLUSTER =~ ^[a-z0-9_-]+$ ]] || die "TOYSWEEP_SLURM_CLUSTER must be [a-z0-9_-], got '$CLUSTER'"

DB_NAME=slurm_acct_db
DB_USER=slurm

t_start=$SECONDS

# Poll a command until it succeeds; on timeout print the daemon's log tail and fail.
# Usage: wait_for <what> <logfile> <command...>
wait_for() {
    local what=$1 logfile=$2
    shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "[slurm] ERROR: $what not ready after ${TIMEOUT}s (check: $*)" >&2
            if [[ -r $logfile ]]; then
                echo "[slurm] last lines of $logfile:" >&2
                tail -n 30 "$logfile" >&2
            fi
            exit 1
        fi
        sleep 0.2
    done
}

# Write a file only if its content differs; report via exit status whether it changed, so a
# running daemon is restarted only when its configuration really changed.
write_if_changed() {
    local path=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        chmod "$mode" "$path"
        return 1
    fi
    install -m "$mode" -o root -g root "$tmp" "$path"
    rm -f "$tmp"
    return 0
}

# --- 0. host name ----------------------------------------------------------------------------
# slurmctld and slurmd find each other through SlurmctldHost/NodeName, i.e. the short host
# name; containers often have a host name that resolves to nothing.
if ! getent hosts "$HOST" >/dev/null; then
    log "adding '$HOST' to /etc/hosts (it did not resolve)"
    echo "127.0.0.1 $HOST  # added by slurm/start.sh" >>/etc/hosts
fi

# --- 1. munge --------------------------------------------------------------------------------
munge_ok() { munge -n | unmunge >/dev/null; }
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /etc/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "munge: creating key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
# munged refuses a key that others can read or that it does not own.
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if munge_ok >/dev/null 2>&1; then
    log "munge: already running"
else
    rm -f "$MUNGE_PID"
    log "munge: starting"
    # --force: a socket left behind by a killed munged would otherwise block the start.
    runuser -u munge -- /usr/sbin/munged --force ||
        { tail -n 20 "$MUNGE_LOG" >&2 || true; die "munged failed to start"; }
    wait_for "munge" "$MUNGE_LOG" munge_ok
fi

# --- 2. mariadb (accounting storage) ----------------------------------------------------------
mariadb_ok() { mariadb-admin --protocol=socket ping; }
install -d -o mysql -g mysql -m 0755 /run/mysqld
install -d -o mysql -g adm -m 2750 /var/log/mysql
# Loopback only: the database is reached by slurmdbd on this machine and nothing else.
write_if_changed /etc/mysql/mariadb.conf.d/90-toysweep-slurm.cnf 0644 <<'EOF' || true
# Written by slurm/start.sh: accounting database for the local SLURM cluster.
[mysqld]
bind-address = 127.0.0.1
# slurmdbd logs an error below half of the values the SLURM accounting guide recommends
# (1 GiB pool); pool pages are only allocated as the small database uses them.
innodb_buffer_pool_size = 512M
innodb_lock_wait_timeout = 900
EOF
if mariadb_ok >/dev/null 2>&1; then
    log "mariadb: already running"
else
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "mariadb: initialising data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    rm -f "$MARIADB_PID"
    log "mariadb: starting"
    # mariadbd does not daemonise itself: detach it from this shell and its session.
    setsid -f /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
        --pid-file="$MARIADB_PID" --log-error="$MARIADB_LOG" </dev/null >/dev/null 2>&1
    wait_for "mariadb" "$MARIADB_LOG" mariadb_ok
fi

# Reuse the stored password so that slurmdbd.conf does not change between runs.
DB_PASS=$(sed -n 's/^StoragePass=//p' /etc/slurm/slurmdbd.conf 2>/dev/null || true)
if [[ -z $DB_PASS ]]; then
    DB_PASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
fi
# Root logs in through the unix socket (Debian's default); statements are idempotent.
mariadb --protocol=socket <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF

# --- 3. configuration files -------------------------------------------------------------------
install -d -m 0755 /etc/slurm "$SLURM_LOG_DIR" /var/spool/slurmctld /var/spool/slurmd

dbd_changed=0
# slurmdbd refuses a config that others can read (it holds the database password).
write_if_changed /etc/slurm/slurmdbd.conf 0600 <<EOF && dbd_changed=1
# Written by slurm/start.sh. Accounting daemon for the local single-node cluster.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$SLURMDBD_PID
LogFile=$SLURM_LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF

conf_changed=0
write_if_changed /etc/slurm/slurm.conf 0644 <<EOF && conf_changed=1
# Written by slurm/start.sh: single-node cluster for trying the SLURM path locally.
# Edit slurm/start.sh, not this file (it is rewritten on every start).
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds (default 120) before it may start again; 30 s keeps
# submitit's preemption/timeout requeue quick to try while leaving job launches ample margin.
AuthInfo=cred_expire=30
MpiDefault=none
# slurmctld refuses to start without a mail program; nobody reads mail here.
MailProg=/bin/true
# No cgroups: containers and CI machines often cannot delegate them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
# A node that was down (e.g. after stop.sh/start.sh) comes back by itself once slurmd answers.
ReturnToService=2
# Trust NodeName's CPUs/RealMemory below over the detected hardware, so the node can
# advertise more CPUs than it has and several small jobs run at once.
SlurmdParameters=config_overrides
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$SLURM_LOG_DIR/slurmctld.log
SlurmdLogFile=$SLURM_LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
# Jobs whose begin time passes (e.g. requeued jobs) start at the next scheduling pass; the
# defaults (60 s main loop, 30 s backfill) are tuned for big clusters, not a single node.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
# Batch jobs may be requeued (submitit requeues preempted/timed-out jobs with scontrol requeue).
JobRequeue=1
# Finished jobs stay visible to squeue/scontrol for 5 minutes; sacct keeps them for good.
MinJobAge=300
# Seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit.
KillWait=10
InactiveLimit=0
Waittime=0
# Accounting: without it submitit cannot tell that a job died without writing its result.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# --- 4. slurmdbd ------------------------------------------------------------------------------
dbd_ok() { sacctmgr -n -P show cluster format=cluster; }
if pid=$(running_pid "$SLURMDBD_PID" slurmdbd) && ((dbd_changed)); then
    log "slurmdbd: config changed, restarting"
    stop_daemon "$SLURMDBD_PID" slurmdbd
fi
if pid=$(running_pid "$SLURMDBD_PID" slurmdbd); then
    log "slurmdbd: already running (pid $pid)"
else
    rm -f "$SLURMDBD_PID"
    log "slurmdbd: starting"
    slurmdbd || die "slurmdbd failed to start; see $SLURM_LOG_DIR/slurmdbd.log"
fi
wait_for "slurmdbd" "$SLURM_LOG_DIR/slurmdbd.log" dbd_ok
# slurmctld would register the cluster itself; doing it here makes the end state certain.
if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    log "slurmdbd: adding cluster $CLUSTER"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# --- 5. slurmctld and slurmd ------------------------------------------------------------------
ctld_ok() { scontrol ping | grep -q 'UP'; }
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1; }
node_up() {
    # idle on a fresh cluster; mixed/allocated/completing when jobs survived a restart.
    [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]
}

if ((conf_changed)); then
    # Node CPUs/memory and most other settings need a daemon restart, not just reconfigure.
    for d in slurmd:"$SLURMD_PID" slurmctld:"$SLURMCTLD_PID"; do
        if running_pid "${d#*:}" "${d%%:*}" >/dev/null; then
            log "${d%%:*}: slurm.conf changed, restarting"
            stop_daemon "${d#*:}" "${d%%:*}"
        fi
    done
fi

if pid=$(running_pid "$SLURMCTLD_PID" slurmctld); then
    log "slurmctld: already running (pid $pid)"
else
    rm -f "$SLURMCTLD_PID"
    log "slurmctld: starting"
    # Default start recovers saved state: jobs queued before a stop.sh survive a restart.
    slurmctld || die "slurmctld failed to start; see $SLURM_LOG_DIR/slurmctld.log"
fi
wait_for "slurmctld" "$SLURM_LOG_DIR/slurmctld.log" ctld_ok

if pid=$(running_pid "$SLURMD_PID" slurmd); then
    log "slurmd: already running (pid $pid)"
else
    rm -f "$SLURMD_PID"
    log "slurmd: starting"
    slurmd || die "slurmd failed to start; see $SLURM_LOG_DIR/slurmd.log"
fi
# Asks slurmd itself: a restarted slurmctld may report the node idle from saved state before
# slurmd has registered.
wait_for "slurmd" "$SLURM_LOG_DIR/slurmd.log" scontrol show slurmd

# A node left DOWN/DRAINED by an earlier failure does not always return by itself.
deadline=$((SECONDS + TIMEOUT))
resumed=0
until node_up; do
    state=$(node_state)
    if ((!resumed)) && [[ $state =~ ^(down|drained|draining|drain)\*?$ ]] &&
        running_pid "$SLURMD_PID" slurmd >/dev/null; then
        log "node $HOST is '$state': resuming it"
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
        resumed=1
    fi
    if ((SECONDS >= deadline)); then
        echo "[slurm] ERROR: node $HOST is '${state:-unknown}', not idle, after ${TIMEOUT}s" >&2
        scontrol show node "$HOST" 2>/dev/null | grep -E 'State|Reason' >&2 || true
        for f in slurmd slurmctld; do
            echo "[slurm] last lines of $SLURM_LOG_DIR/$f.log:" >&2
            tail -n 20 "$SLURM_LOG_DIR/$f.log" >&2 || true
        done
        exit 1
    fi
    sleep 0.2
done

wait_for "cluster $CLUSTER in accounting" "$SLURM_LOG_DIR/slurmctld.log" \
    bash -c "sacctmgr -n -P show cluster format=cluster | grep -qx '$CLUSTER'"

log "cluster '$CLUSTER' up in $((SECONDS - t_start))s: node $HOST $(node_state)," \
    "CPUs=$CPUS RealMemory=${MEM_MB}MB DefMemPerCPU=${DEF_MEM_PER_CPU}MB, partition debug"
