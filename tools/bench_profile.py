"""Where each process's time goes: ``py-spy record`` on its pid, summarised by function and library.

``--profile DIR`` on the benchmark attaches one py-spy per process (non-blocking sampling, so the
process is not paused, but py-spy itself takes CPU from the same cores: figures of a profiled run
are not the benchmark's figures). The raw collapsed stacks stay in DIR for flame graphs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import asyncpg

# Library of a frame, by the start of its (shortened) file name; first match wins.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("services/", "switchboard"),
    ("shared/", "switchboard"),
    ("aio_pika/", "amqp client"),
    ("aiormq/", "amqp client"),
    ("pamqp/", "amqp client"),
    ("asyncpg/", "postgres client"),
    ("aiohttp/", "http"),
    ("yarl/", "http"),
    ("multidict/", "http"),
    ("pydantic", "pydantic"),
    ("structlog/", "logging"),
    ("logging/", "logging"),
    ("prometheus_client/", "metrics"),
    ("asyncio/", "event loop"),
    ("uvloop/", "event loop"),
)
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise FileNotFoundError("py-spy is not installed: `.venv/bin/pip install -e '.[dev]'`")
    return found


def parse_frame(frame: str) -> tuple[str, str]:
    """``Sender.handle (services/sender/__main__.py:71)`` -> (function, file)."""
    match = FRAME.match(frame)
    return (match["function"], match["file"]) if match else (frame, "")


def category(file: str) -> str:
    for prefix, name in CATEGORIES:
        if file.startswith(prefix) or f"/{prefix}" in file:
            return name
    return "other"


# Leaf frames that stand for the event loop's own C code (uvloop), or for a runnable process
# waiting for a core on a busy machine: reported apart, shares are of the other samples.
LOOP_FRAMES = frozenset({("Runner.run", "asyncio/runners.py"), ("run", "uvloop/__init__.py")})
# Frames on every stack: their inclusive share says nothing.
OUTER_FRAMES = frozenset({"<module>", "run_service", "run_service.<locals>.runner", "main"})


def summarise(raw: str, top: int = 15) -> dict[str, Any]:
    """Self time by library and by function, and inclusive time of Switchboard's own functions (%)."""
    total = loop = 0
    leaf_category: Counter[str] = Counter()
    leaf_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(f) for f in stack.split(";")]
        if frames[-1] in LOOP_FRAMES:
            loop += count
            continue
        total += count
        function, file = frames[-1]
        leaf_category[category(file)] += count
        leaf_function[f"{function} ({file})"] += count
        for name in {
            f"{fn} ({fl})" for fn, fl in frames if category(fl) == "switchboard" and fn not in OUTER_FRAMES
        }:
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "loop_or_waiting_samples": loop,
        "self_by_library_pct": share(leaf_category),
        "self_by_function_pct": share(leaf_function),
        "switchboard_inclusive_pct": share(inclusive),
    }


class QuerySampler:
    """Which statements the bench database's backends are executing, sampled every ``interval_s``
    from ``pg_stat_activity`` (wall time in the database, lock waits included; not CPU)."""

    SQL = (
        "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
        "AND pid <> pg_backend_pid()"
    )

    def __init__(self, database_url: str, interval_s: float = 0.02) -> None:
        self.database_url = database_url
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            while not self._stop.is_set():
                for record in await conn.fetch(self.SQL):
                    self.counts[" ".join(record["query"].split())[:160]] += 1
                self.ticks += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, top: int = 12) -> dict[str, Any]:
        """Idempotent; the figures: per statement, the mean number of backends executing it."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        return {
            "ticks": self.ticks,
            "interval_s": self.interval_s,
            # mean number of backends executing each statement (x wall time = backend-seconds)
            "mean_active_backends": [(q, round(n / self.ticks, 3)) for q, n in self.counts.most_common(top)]
            if self.ticks
            else [],
        }


class Profiler:
    """One ``py-spy record`` per pid, from :meth:`start` until :meth:`stop` (SIGINT makes it write)."""

    def __init__(self, pids: dict[str, int], out_dir: Path, rate: int = 100) -> None:
        self.pids = pids
        self.out_dir = out_dir
        self.rate = rate
        self.running: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}

    def path(self, name: str) -> Path:
        return self.out_dir / f"{name}.txt"

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        binary = py_spy()
        for name, pid in self.pids.items():
            log = (self.out_dir / f"{name}.py-spy.log").open("wb")
            command = [
                binary,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--output",
                str(self.path(name)),
                "--nonblocking",
            ]
            self.running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)

    def stop(self) -> dict[str, Any]:
        for process, _ in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        summaries: dict[str, Any] = {}
        for name, (process, log) in self.running.items():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            log.close()
            path = self.path(name)
            summaries[name] = (
                {**summarise(path.read_text(errors="replace")), "raw": str(path)}
                if path.exists()
                else {"error": f"no output; see {path.with_suffix('.py-spy.log')}"}
            )
        self.running.clear()
        return summaries
