#!/usr/bin/env bash
# Make sure a headless browser for the dashboard's end-to-end test is installed (Debian's chromium).
# Idempotent and quiet when it is already there. Never fails the build: if chromium cannot be
# installed (no root, no package index), it says so and the browser test skips with that reason.
set -uo pipefail

log() { printf '\033[36m[browser]\033[0m %s\n' "$*" >&2; }

BROWSER=${SWITCHBOARD_CHROMIUM:-/usr/bin/chromium}
if [ -x "$BROWSER" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  log "apt-get not available: cannot install chromium; the dashboard browser test will skip"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    log "not root and no passwordless sudo: cannot install chromium; the dashboard browser test will skip"
    exit 0
  fi
fi
log "installing chromium with apt-get (once)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  $SUDO apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed"
fi
if $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
  log "chromium installed: $("$BROWSER" --version 2>/dev/null || echo "$BROWSER")"
else
  log "apt-get install chromium failed; the dashboard browser test will skip"
fi
exit 0
