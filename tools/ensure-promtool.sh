#!/usr/bin/env bash
# Make sure `promtool` (Debian's prometheus package) is installed, for the alert-rule test.
# Idempotent and quiet when it is already there. Never fails the build: if it cannot be installed
# (no root, no package index), it says so and the promtool test skips with that reason.
set -uo pipefail

log() { printf '\033[36m[promtool]\033[0m %s\n' "$*" >&2; }

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "apt-get not available: cannot install promtool; the alert-rule test will skip"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    log "not root and no passwordless sudo: cannot install promtool; the alert-rule test will skip"
    exit 0
  fi
fi
log "installing promtool (Debian package prometheus) with apt-get (once)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  $SUDO apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed"
fi
# policy-rc.d 101: the package's post-install must not start a Prometheus server on this machine.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=""
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null && $SUDO chmod 0755 "$POLICY" && ADDED_POLICY=1
fi
if $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
  log "promtool installed: $(promtool --version 2>&1 | head -1)"
else
  log "apt-get install prometheus failed; the alert-rule test will skip"
fi
if [ -n "$ADDED_POLICY" ]; then $SUDO rm -f "$POLICY"; fi
exit 0
