#!/usr/bin/env bash
# Make sure the local PostgreSQL and RabbitMQ (with the plugins Switchboard needs) are up.
# Idempotent; safe to run before every make target that talks to them.
set -euo pipefail

log() { printf '\033[36m[services]\033[0m %s\n' "$*" >&2; }

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  pg_up || { log "PostgreSQL is not reachable on 127.0.0.1:5432"; exit 1; }
fi

amqp_up() { rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; }
if ! rabbitmqctl -q status >/dev/null 2>&1; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
  rabbitmqctl -q wait --timeout 60 /var/lib/rabbitmq/mnesia/rabbit@localhost.pid >/dev/null 2>&1 || sleep 5
fi
for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done

wanted="rabbitmq_consistent_hash_exchange rabbitmq_management"
enabled=$(rabbitmq-plugins list -e -m 2>/dev/null || true)
missing=""
for p in $wanted; do grep -qx "$p" <<<"$enabled" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "enabling RabbitMQ plugins:$missing"
  rabbitmq-plugins enable $missing >/dev/null
fi

for _ in $(seq 1 60); do
  curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && amqp_up && break
  sleep 1
done
curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null || { log "RabbitMQ management API is not up"; exit 1; }
log "PostgreSQL and RabbitMQ are ready"
