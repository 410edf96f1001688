#!/usr/bin/env bash
# Stop the local SLURM cluster started by slurm/start.sh, in reverse start order, by pid file.
# Idempotent: daemons that are not running are skipped. Jobs still running keep their
# slurmstepd and are picked up again by slurmd after the next start.sh; queued jobs are kept
# in slurmctld's saved state.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/common.sh
source "$here/common.sh"

[[ $EUID -eq 0 ]] || die "stop.sh must run as root"

stop_daemon "$SLURMD_PID" slurmd
stop_daemon "$SLURMCTLD_PID" slurmctld
stop_daemon "$SLURMDBD_PID" slurmdbd
# InnoDB flushes on SIGTERM; give it longer than the others before SIGKILL.
stop_daemon "$MARIADB_PID" mariadbd 60
stop_daemon "$MUNGE_PID" munged
log "stopped"
