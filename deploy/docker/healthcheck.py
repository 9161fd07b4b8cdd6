"""Container health check: GET /healthz on the process's metrics port.

A process without a metrics port (a one-shot job such as ``admin migrate``) has nothing to
answer and counts as healthy while it runs.
"""

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("SWITCHBOARD_METRICS_PORT", "0").strip() or "0"
    if port == "0":
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
