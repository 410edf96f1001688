#!/usr/bin/env bash
# Install the Debian packages for a single-node SLURM cluster with accounting.
# Run as root on Debian/Ubuntu. Safe to rerun: does nothing when everything is present.
# Configuration and daemons are handled by slurm/start.sh, not here.
set -euo pipefail

PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

if [[ $EUID -ne 0 ]]; then
    echo "install.sh: must run as root (apt-get, daemons)" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg -s also succeeds for removed-but-not-purged packages; check the status line.
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install.sh: all packages already installed: ${PACKAGES[*]}"
    exit 0
fi

echo "install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Package maintainer scripts try to start services; on machines without systemd (containers,
# CI) that fails or hangs. policy-rc.d exit code 101 tells invoke-rc.d not to start anything;
# start.sh starts every daemon by hand. Remove it afterwards only if we created it.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"

echo "install.sh: done"
