#!/usr/bin/env bash
# Make sure wrk (the HTTP load generator of the api-single benchmark scenario) is installed, from
# Debian's packages. Idempotent and quiet when it is already there. Exits 1 when it cannot be
# installed (no apt-get, not root and no passwordless sudo): `make bench` then says why.
set -uo pipefail

log() { printf '\033[36m[wrk]\033[0m %s\n' "$*" >&2; }

WRK=${SWITCHBOARD_WRK:-wrk}
if command -v "$WRK" >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "apt-get not available: install wrk by hand (the api-single scenario needs it)"
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    log "not root and no passwordless sudo: cannot install wrk (the api-single scenario needs it)"
    exit 1
  fi
fi
log "installing wrk with apt-get (once)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache policy wrk 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  $SUDO apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed"
fi
if $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1; then
  log "wrk installed: $(command -v wrk)"
  exit 0
fi
log "apt-get install wrk failed"
exit 1
