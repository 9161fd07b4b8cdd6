#!/bin/sh
# Run one Switchboard process: `switchboard <service> [arguments...]` -> `python -m services.<service>`
# (`mock-provider` is `mock_provider`); `switchboard api-keys ...` runs the key commands of the CLI.
set -eu
# The directory holding the services package: the installed project in the image (a checkout in tests).
APP_DIR=${APP_DIR:-$(python -c 'import pathlib, services; print(pathlib.Path(services.__file__).parent.parent)')}

services() {
  for main in "$APP_DIR"/services/*/__main__.py; do
    name=${main%/__main__.py}
    printf ' %s' "${name##*/}"
  done
}

if [ "$#" -eq 0 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  echo "usage: switchboard <service> [arguments...]" >&2
  echo "services:$(services)" >&2
  exit 0
fi

if [ "$1" = "--version" ]; then
  exec python -m services.cli --version
fi

service=$(printf '%s' "$1" | tr - _)
shift
if [ "$service" = "api_keys" ]; then
  exec python -m services.cli api-keys "$@"
fi
case "$service" in
  *[!a-z0-9_]*)
    echo "switchboard: invalid service name '$service'" >&2
    exit 64
    ;;
esac
if [ ! -f "$APP_DIR/services/$service/__main__.py" ]; then
  echo "switchboard: unknown service '$service'; one of:$(services)" >&2
  exit 64
fi
# exec: python replaces this shell (PID 1 in the container) and receives SIGTERM itself.
exec python -m "services.$service" "$@"
