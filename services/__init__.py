"""Switchboard's processes, one package each: ``python -m services.<name>``."""

import signal
import sys

# A SIGTERM that arrives while a service is still importing must not kill it uncleanly: remember
# it, and let shared.runtime.service.run_service start already stopping (exit 0). Only for `python -m`.
EARLY_STOP: list[int] = []
if sys.argv[:1] == ["-m"]:
    signal.signal(signal.SIGTERM, lambda signum, _frame: EARLY_STOP.append(signum))
