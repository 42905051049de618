"""Process and measurement plumbing for the benchmark driver (project .venv, stdlib + redis-py).

Workers run as subprocesses in their own session, so the driver can stop exactly the process
group it started. Completion is read from the counter that `runners/common.py` flushes to
Redis; memory from /proc.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

BENCH = Path(__file__).resolve().parent
RUNNERS = BENCH / "runners"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 7
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
LOG_DIR = Path(tempfile.gettempdir()) / "celeriac-bench-logs"


class BenchError(RuntimeError):
    """A run failed (worker died, timed out, client error): the driver records and goes on."""


def counter_client() -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)


def flush_redis() -> None:
    """Empty the benchmark's own database (db 7) and nothing else."""
    counter_client().flushdb()


def reset_counter() -> None:
    counter_client().delete("bench:done", "bench:first", "bench:last")


# -- processes ---------------------------------------------------------------------------


@dataclass
class Worker:
    """A worker subprocess (and its children) that the driver started."""

    label: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.time)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Warm stop (SIGTERM to the group we started), then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # children a warm stop left behind
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)


def spawn(label: str, argv: list[str], env: dict[str, str], cwd: Path = RUNNERS) -> Worker:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{label.replace('/', '_').replace(' ', '_')}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    started = time.time()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    return Worker(label, proc, log_path, started)


def run_json(argv: list[str], env: dict[str, str], timeout: float, cwd: Path = RUNNERS) -> dict[str, Any]:
    """Run a client command that prints one JSON line; return it."""
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(argv[-4:])}: timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[-4:])}: exit {done.returncode}: {done.stderr[-1500:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"{' '.join(argv[-4:])}: no JSON output: {done.stdout[-500:]} {done.stderr[-1500:]}")
    return json.loads(lines[-1])


def wait_done(n: int, workers: list[Worker], timeout: float, stall: float = 60.0) -> tuple[float, float]:
    """Wait until `n` tasks were counted; return (first task time, last task time), epoch s."""
    client = counter_client()
    deadline = time.time() + timeout
    last_count, last_change = -1, time.time()
    while True:
        count = int(client.get("bench:done") or 0)
        if count >= n:
            break
        now = time.time()
        if count != last_count:
            last_count, last_change = count, now
        for worker in workers:
            if not worker.alive():
                raise BenchError(f"{worker.label}: worker exited ({worker.proc.returncode}) after "
                                 f"{count}/{n} tasks: {worker.log_tail()}")
        if now > deadline or now - last_change > stall:
            raise BenchError(f"{workers[0].label}: {count}/{n} tasks done, stopped waiting "
                             f"(timeout or no progress for {stall:.0f}s): {workers[0].log_tail()}")
        time.sleep(0.005 if count else 0.02)
    first = min(float(v) for v in client.hvals("bench:first"))
    last = max(float(v) for v in client.hvals("bench:last"))
    return first, last


# -- memory ------------------------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_mb(root: int) -> dict[str, float]:
    """RSS and PSS summed over the process tree, in MiB (PSS splits pages a fork shares)."""
    pids = tree_pids(root)
    return {"rss_mb": sum(_status_kb(p, "VmRSS:") for p in pids) / 1024.0,
            "pss_mb": sum(_pss_kb(p) for p in pids) / 1024.0,
            "processes": len(pids)}


# -- statistics and the machine ----------------------------------------------------------


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def machine() -> dict[str, Any]:
    """What this run ran on."""
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    try:
        redis_version = counter_client().info("server")["redis_version"]
    except redis.RedisError:
        redis_version = "unreachable"
    try:
        rabbit = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True,
                                timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rabbit = ""
    try:
        virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        virt = ""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "redis_server": redis_version,
        "rabbitmq_server": rabbit,
        "virtualization": virt,
        "loadavg_at_start": os.getloadavg(),
    }
