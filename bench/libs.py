"""The libraries under test: how to start each one's worker, and what each can be run on.

Every worker runs with its library's defaults except where a note says otherwise; all log
at WARNING (no per-task log lines), as Celery and celeriac do by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from venvs import PROJECT_PYTHON, VENVS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass(frozen=True)
class WorkerConfig:
    """One way to run a library's worker as ONE worker process (plus its pool children)."""

    key: str
    label: str
    argv: Callable[[int, str], list[str]]  # (worker index, broker URL) -> argv


@dataclass(frozen=True)
class Library:
    name: str
    configs: list[WorkerConfig]          # the first is its fastest single-process setup
    brokers: frozenset[str] = frozenset({"redis"})
    results: bool = True                 # can run the "results stored" drain
    notes: list[str] = field(default_factory=list)
    python: Path | None = None
    drain_share: float = 1.0             # fraction of the drain N (keeps the slowest peer's runs short)

    def config(self, key: str) -> WorkerConfig:
        return next(c for c in self.configs if c.key == key)


def _bin(venv: str, name: str) -> str:
    return str(VENVS / venv / "bin" / name)


def _celeriac(pool: list[str]) -> Callable[[int, str], list[str]]:
    exe = str(PROJECT_PYTHON.parent / "celeriac")
    return lambda i, url: [exe, "-A", "celeriac_bench", "worker", "-l", "WARNING", "-n", f"w{i}@%h", *pool]


def _celery(pool: list[str]) -> Callable[[int, str], list[str]]:
    exe = _bin("celery", "celery")
    return lambda i, url: [exe, "-A", "celery_bench", "worker", "-l", "WARNING", "-n", f"w{i}@%h", *pool]


LIBRARIES: dict[str, Library] = {
    "celeriac": Library(
        "celeriac",
        [WorkerConfig("solo", "-P solo", _celeriac(["-P", "solo"])),
         WorkerConfig("prefork", "-P prefork -c 1 (default pool)", _celeriac(["-P", "prefork", "-c", "1"])),
         WorkerConfig("solo-p256", "tuned: -P solo --prefetch-multiplier 256",
                      _celeriac(["-P", "solo", "--prefetch-multiplier", "256"]))],
        brokers=frozenset({"redis", "sqlite", "amqp"}),
        notes=["default prefetch multiplier (4) except the row marked tuned, which is not used for the targets"],
        python=PROJECT_PYTHON,
    ),
    "celery": Library(
        "celery",
        [WorkerConfig("solo", "-P solo", _celery(["-P", "solo"])),
         WorkerConfig("prefork", "-P prefork -c 1", _celery(["-P", "prefork", "-c", "1"]))],
        brokers=frozenset({"redis", "amqp"}),
        notes=["defaults otherwise (gossip, mingle, heartbeat on; prefetch multiplier 4)"],
    ),
    "dramatiq": Library(
        "dramatiq",
        [WorkerConfig("p1t8", "1 process, 8 threads (default threads)",
                      lambda i, url: [_bin("dramatiq", "dramatiq"), "dramatiq_bench",
                                      "--processes", "1", "--threads", "8"])],
    ),
    "rq": Library(
        "rq",
        [WorkerConfig("simple", "SimpleWorker (no fork per job)",
                      lambda i, url: [_bin("rq", "rq"), "worker", "-w", "rq.worker.SimpleWorker",
                                      "--url", url, "--logging_level", "WARNING", "default"])],
        notes=["RQ's default Worker forks per job; SimpleWorker is its fastest single process",
               "drained with a quarter of N (it is ~50x slower)"],
        drain_share=0.25,
    ),
    "huey": Library(
        "huey",
        [WorkerConfig("t1", "1 worker thread (default)",
                      lambda i, url: [_bin("huey", "huey_consumer"), "huey_bench.huey", "-w", "1",
                                      "-k", "thread", "-q"])],
        brokers=frozenset({"redis", "sqlite"}),
        notes=["RedisHuey(notify_result=True); results stored only for tasks returning non-None"],
    ),
    "arq": Library(
        "arq",
        [WorkerConfig("async", "asyncio, max_jobs=10, poll_delay=10 ms",
                      lambda i, url: [_bin("arq", "python"), "arq_bench.py"])],
        notes=["poll_delay 0.01 s (default 0.5 s); result wait polls every 1 ms"],
    ),
    "baseline": Library(
        "baseline",
        [WorkerConfig("loop", "bare loop (200/Lua call, json, no-op, pipelined ack)",
                      lambda i, url: [str(PROJECT_PYTHON), str(BENCH / "baseline_loop.py"), "run"])],
        results=False,
        notes=["not a library: bench/baseline_loop.py, the practical ceiling of issue 9"],
        python=PROJECT_PYTHON,
    ),
}

ORDER = ["celeriac", "baseline", "celery", "dramatiq", "rq", "huey", "arq"]
PEERS = ["celery", "dramatiq", "rq", "huey", "arq"]


def python_of(lib: Library) -> str:
    return str(lib.python or VENVS / lib.name / "bin" / "python")
