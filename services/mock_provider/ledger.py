"""The mock provider's ledger of accepted sends, optionally appended to a JSON-lines file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson


class Ledger:
    def __init__(self, path: Path | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.responses: dict[str, dict[str, Any]] = {}
        self.path = path
        self._file = None
        if path is not None:
            if path.exists():
                for line in path.read_bytes().splitlines():
                    if line.strip():
                        self._remember(orjson.loads(line))
            self._file = path.open("ab")

    def _remember(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if not row["replay"] and row.get("response") is not None:
            self.responses[row["idempotency_key"]] = row["response"]

    def record(self, row: dict[str, Any]) -> None:
        self._remember(row)
        if self._file is not None:
            self._file.write(orjson.dumps(row) + b"\n")
            self._file.flush()

    def clear(self) -> None:
        self.rows.clear()
        self.responses.clear()
        if self._file is not None:
            self._file.truncate(0)

    def stats(self) -> dict[str, Any]:
        sends = [r for r in self.rows if not r["replay"]]
        per_log = Counter(r["log_id"] for r in sends if r["log_id"] is not None)
        return {
            "accepted": len(sends),
            "replays": len(self.rows) - len(sends),
            "distinct_logs": len(per_log),
            "duplicate_logs": sum(1 for n in per_log.values() if n > 1),
            "by_channel": dict(Counter(r["channel"] for r in sends)),
            "by_provider": dict(Counter(r["provider"] for r in sends)),
        }

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
