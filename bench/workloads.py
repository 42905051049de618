"""The workloads of issue 9. Each one runs its libraries strictly one after another.

A workload appends records to `Run.records`:
    {"workload", "broker", "library", "config", "results", "n", "metrics": {name: summary}, ...}
where a summary is {"median", "min", "max", "runs"} over the repetitions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from harness import (
    REDIS_URL,
    RUNNERS,
    BenchError,
    flush_redis,
    memory_mb,
    reset_counter,
    run_json,
    spawn,
    summarize,
    wait_done,
)
from libs import BENCH, LIBRARIES, Library, WorkerConfig, python_of

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
SQLITE_DIR = Path(tempfile.gettempdir()) / "celeriac-bench-sqlite"


@dataclass
class Sizes:
    reps: int = 3
    enqueue_n: int = 20_000
    drain_n: int = 20_000
    roundtrip_n: int = 1_000
    memory_n: int = 1_000_000       # celeriac (flat-memory target)
    peer_memory_n: int = 20_000
    backlog_small: int = 10_000
    backlog_big: int = 1_000_000
    scale_n: int = 20_000
    slow_n: int = 2_000
    sqlite_n: int = 20_000
    amqp_n: int = 20_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(reps=1, enqueue_n=2_000, drain_n=2_000, roundtrip_n=200, memory_n=20_000,
                   peer_memory_n=2_000, backlog_small=2_000, backlog_big=50_000, scale_n=2_000,
                   slow_n=500, sqlite_n=2_000, amqp_n=2_000)


@dataclass
class Run:
    sizes: Sizes
    libraries: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def libs(self, *, broker: str = "redis", among: list[str] | None = None) -> list[Library]:
        names = [n for n in self.libraries if among is None or n in among]
        return [LIBRARIES[n] for n in names if broker in LIBRARIES[n].brokers]

    def skip(self, workload: str, reason: str) -> None:
        self.log(f"SKIP {workload}: {reason}")
        self.skipped.append({"workload": workload, "reason": reason})

    def error(self, what: str, exc: Exception) -> None:
        self.log(f"ERROR {what}: {exc}")
        self.errors.append({"what": what, "error": str(exc)[-2000:]})

    def add(self, workload: str, broker: str, lib: Library, config: str, results: str, n: int,
            runs: list[dict[str, float]], **extra: Any) -> dict[str, Any]:
        metrics = {key: summarize([r[key] for r in runs]) for key in runs[0]
                   if isinstance(runs[0][key], int | float)}
        record = {"workload": workload, "broker": broker, "library": lib.name, "config": config,
                  "results": results, "n": n, "metrics": metrics, **extra}
        self.records.append(record)
        shown = {k: round(v["median"], 3) for k, v in metrics.items()}
        self.log(f"  {workload}/{broker} {lib.name} [{config}] results={results} n={n}: {shown}")
        return record


# -- environments -------------------------------------------------------------------------


def env_for(broker_url: str, backend_url: str, queue: str = "") -> dict[str, str]:
    env = dict(os.environ)
    # celeriac runs from the snapshot of src/ taken when the run started (see run.py), so
    # edits made to the tree during a run do not change what is measured half-way.
    path = [str(RUNNERS)] + ([os.environ["BENCH_CELERIAC_SRC"]] if os.environ.get("BENCH_CELERIAC_SRC") else [])
    env.update(BENCH_BROKER_URL=broker_url, BENCH_BACKEND_URL=backend_url,
               BENCH_COUNTER_URL=REDIS_URL, BENCH_QUEUE=queue, PYTHONPATH=os.pathsep.join(path),
               PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    return env


@dataclass
class Target:
    """Where a workload's messages live: the broker URL the worker uses, and how to reset it."""

    name: str
    worker_url: str
    client_url: str
    backend_url: str
    queue: str = ""

    def env(self, *, worker: bool, results: bool) -> dict[str, str]:
        backend = self.backend_url if (results or self.name != "sqlite") else ""
        return env_for(self.worker_url if worker else self.client_url, backend, self.queue)


def redis_target() -> Target:
    return Target("redis", REDIS_URL, REDIS_URL, REDIS_URL)


def sqlite_target() -> Target:
    url = f"sqlite:///{SQLITE_DIR / 'bench.db'}"
    return Target("sqlite", url, url, url)


def amqp_target(lib: Library) -> Target:
    return Target("amqp", AMQP_URL, AMQP_URL, REDIS_URL, queue=f"bench.{lib.name}")


def prepare(target: Target, lib: Library) -> None:
    """Empty everything a previous run left: db 7, the SQLite file, the AMQP queue."""
    flush_redis()
    if target.name == "sqlite":
        shutil.rmtree(SQLITE_DIR, ignore_errors=True)
        SQLITE_DIR.mkdir(parents=True)
    if target.name == "amqp":
        try:
            client(lib, target, ["purge"], results=False, timeout=60)
        except BenchError:
            pass  # the queue does not exist yet


def client(lib: Library, target: Target, args: list[str], *, results: bool, timeout: float) -> dict[str, Any]:
    if lib.name == "baseline":
        argv = [python_of(lib), str(BENCH / "baseline_loop.py"), *args]
    else:
        argv = [python_of(lib), str(RUNNERS / "client.py"), lib.name, *args]
    return run_json(argv, target.env(worker=False, results=results), timeout)


def fill(lib: Library, target: Target, n: int, results: bool) -> dict[str, Any]:
    if lib.name == "baseline":
        return client(lib, target, ["fill", str(n)], results=False, timeout=120 + n / 500)
    flags = ["--bulk"] + (["--results"] if results else [])
    return client(lib, target, ["enqueue", str(n), *flags], results=results, timeout=120 + n / 200)


def start_workers(lib: Library, cfg: WorkerConfig, target: Target, results: bool, procs: int,
                  tag: str) -> list[Any]:
    env = target.env(worker=True, results=results)
    return [spawn(f"{tag}-{lib.name}-{cfg.key}-{i}", cfg.argv(i, target.worker_url), env)
            for i in range(procs)]


def drain_once(lib: Library, cfg: WorkerConfig, target: Target, n: int, results: bool,
               procs: int = 1, tag: str = "drain") -> dict[str, float]:
    """Fill the queue with n no-op tasks, start the worker(s), time until the last task ran."""
    prepare(target, lib)
    fill(lib, target, n, results)
    reset_counter()
    workers = start_workers(lib, cfg, target, results, procs, tag)
    try:
        first, last = wait_done(n, workers, timeout=120 + n / 50)
        memory = memory_mb(workers[0].proc.pid)
    finally:
        for worker in workers:
            worker.stop()
    started = min(w.started for w in workers)
    return {"rate": (n - 1) / max(last - first, 1e-9), "startup_s": first - started,
            "drain_s": last - first, "total_s": last - started, "total_rate": n / (last - started),
            "rss_after_mb": memory["rss_mb"], "pss_after_mb": memory["pss_mb"]}


def _repeat(run: Run, what: str, reps: int, once: Any) -> list[dict[str, float]]:
    out = []
    for rep in range(reps):
        try:
            out.append(once())
        except (BenchError, redis.RedisError, OSError, subprocess.SubprocessError) as exc:
            run.error(f"{what} rep {rep + 1}", exc)
    return out


# -- 1. enqueue ---------------------------------------------------------------------------


def enqueue_once(lib: Library, target: Target, n: int, mode: str, info: dict[str, Any]) -> dict[str, float]:
    prepare(target, lib)
    out = client(lib, target, ["enqueue", str(n)] + (["--bulk"] if mode == "bulk" else []),
                 results=False, timeout=120 + n / 100)
    info["how"] = out["how"]
    return {"rate": out["rate"], "seconds": out["seconds"], "startup_s": out["startup_s"],
            "rate_with_startup": out["rate_with_startup"]}


def enqueue(run: Run) -> None:
    n = run.sizes.enqueue_n
    run.log(f"workload enqueue: {n} tasks from one client process")
    cases = [(lib, redis_target()) for lib in run.libs() if lib.name != "baseline"]
    cases += [(lib, sqlite_target()) for lib in run.libs(broker="sqlite", among=["celeriac"])]
    for lib, target in cases:
        for mode in ("single", "bulk"):
            info: dict[str, Any] = {}
            runs = _repeat(run, f"enqueue {lib.name} {target.name} {mode}", run.sizes.reps,
                           lambda lib=lib, target=target, mode=mode, info=info:
                           enqueue_once(lib, target, n, mode, info))
            if runs:
                run.add("enqueue", target.name, lib, mode, "n/a", n, runs, how=info.get("how", ""))


# -- 2. drain -----------------------------------------------------------------------------


def drain(run: Run) -> None:
    run.log(f"workload drain: {run.sizes.drain_n} queued no-op tasks, one worker process")
    target = redis_target()
    for lib in run.libs():
        n = max(1, int(run.sizes.drain_n * lib.drain_share))
        for cfg in lib.configs:
            for results in ((False, True) if lib.results else (False,)):
                runs = _repeat(run, f"drain {lib.name} {cfg.key} results={results}", run.sizes.reps,
                               lambda lib=lib, cfg=cfg, results=results, n=n: drain_once(lib, cfg, target, n, results))
                if runs:
                    run.add("drain", "redis", lib, cfg.label, "stored" if results else "ignored", n, runs)


# -- 3. round trip ------------------------------------------------------------------------


def roundtrip(run: Run) -> None:
    n = run.sizes.roundtrip_n
    run.log(f"workload roundtrip: {n} sequential delay().get() with a warm worker")
    target = redis_target()
    for lib in run.libs():
        if lib.name == "baseline":
            continue
        cfg = lib.configs[0]

        def once(lib: Library = lib, cfg: WorkerConfig = cfg) -> dict[str, float]:
            prepare(target, lib)
            workers = start_workers(lib, cfg, target, True, 1, "roundtrip")
            try:
                out = client(lib, target, ["roundtrip", str(n)], results=True, timeout=120 + n * 0.2)
            finally:
                for worker in workers:
                    worker.stop()
            return {k: out[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")}

        runs = _repeat(run, f"roundtrip {lib.name}", run.sizes.reps, once)
        if runs:
            run.add("roundtrip", "redis", lib, cfg.label, "stored", n, runs)


# -- 4. memory ----------------------------------------------------------------------------


def memory(run: Run) -> None:
    run.log("workload memory: worker RSS idle, and after many tasks")
    target = redis_target()
    for lib in run.libs():
        if lib.name == "baseline":
            continue
        for cfg in lib.configs:
            if cfg.label.startswith("tuned"):
                continue
            # The 1,000,000-task run (flat-memory target) for celeriac's fastest pool only.
            n = run.sizes.memory_n if (lib.name, cfg) == ("celeriac", lib.configs[0]) else run.sizes.peer_memory_n
            try:
                record = memory_once(lib, cfg, target, n)
            except (BenchError, redis.RedisError, OSError, subprocess.SubprocessError) as exc:
                run.error(f"memory {lib.name} {cfg.key}", exc)
                continue
            samples = record.pop("samples")
            run.add("memory", "redis", lib, cfg.label, "ignored", n, [record], samples=samples)


def memory_once(lib: Library, cfg: WorkerConfig, target: Target, n: int) -> dict[str, Any]:
    prepare(target, lib)
    reset_counter()
    workers = start_workers(lib, cfg, target, False, 1, "memory")
    worker = workers[0]
    try:
        time.sleep(5.0)  # start-up done, connections open, idle
        if not worker.alive():
            raise BenchError(f"{worker.label}: exited at start: {worker.log_tail()}")
        idle = memory_mb(worker.proc.pid)
        samples: list[tuple[int, float]] = []
        filled = 0
        chunk = 100_000
        client_counter = redis.Redis.from_url(REDIS_URL)
        while filled < n:
            size = min(chunk, n - filled)
            fill(lib, target, size, False)
            filled += size
            # Let the worker catch up before the next chunk so the queue stays bounded.
            deadline = time.time() + 120 + size / 50
            while int(client_counter.get("bench:done") or 0) < filled - chunk // 2:
                if time.time() > deadline or not worker.alive():
                    raise BenchError(f"{worker.label}: no progress: {worker.log_tail()}")
                time.sleep(0.05)
            samples.append((int(client_counter.get("bench:done") or 0), memory_mb(worker.proc.pid)["rss_mb"]))
        wait_done(n, workers, timeout=120 + n / 50)
        time.sleep(1.0)
        after = memory_mb(worker.proc.pid)
        samples.append((n, after["rss_mb"]))
    finally:
        worker.stop()
    peak = max(rss for _, rss in samples)
    return {"rss_idle_mb": idle["rss_mb"], "pss_idle_mb": idle["pss_mb"], "rss_after_mb": after["rss_mb"],
            "pss_after_mb": after["pss_mb"], "rss_peak_mb": max(peak, after["rss_mb"]),
            "processes": idle["processes"], "samples": samples}


# -- 5. scale -----------------------------------------------------------------------------


def scale(run: Run) -> None:
    sizes = run.sizes
    run.log(f"workload scale: backlog {sizes.backlog_small} vs {sizes.backlog_big}; 1/2/4 processes")
    target = redis_target()
    for lib in run.libs(among=["celeriac", "baseline"]):
        cfg = lib.configs[0]
        for n, reps in ((sizes.backlog_small, sizes.reps), (sizes.backlog_big, 1)):
            runs = _repeat(run, f"backlog {lib.name} {n}", reps,
                           lambda lib=lib, cfg=cfg, n=n: drain_once(lib, cfg, target, n, False, tag="backlog"))
            if runs:
                run.add("backlog", "redis", lib, cfg.label, "ignored", n, runs)
    for lib in run.libs(among=["celeriac", "celery"]):
        cfg = lib.configs[0]
        for procs in (1, 2, 4):
            runs = _repeat(run, f"processes {lib.name} x{procs}", sizes.reps,
                           lambda lib=lib, cfg=cfg, procs=procs: drain_once(
                               lib, cfg, target, sizes.scale_n, False, procs=procs, tag="procs"))
            if runs:
                run.add("processes", "redis", lib, f"{procs} x {cfg.label}", "ignored", sizes.scale_n,
                        runs, processes=procs)


# -- 6. slow broker -----------------------------------------------------------------------


def slow(run: Run) -> None:
    n = run.sizes.slow_n
    run.log(f"workload slow: {n} tasks through a proxy adding 1 ms each way")
    proxy = subprocess.Popen([sys.executable, str(BENCH / "proxy.py"), "--target", "127.0.0.1:6379",
                              "--delay", "0.001"], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        line = proxy.stdout.readline() if proxy.stdout else ""
        if not line.startswith("PORT "):
            run.skip("slow", f"the proxy did not start: {line!r}")
            return
        port = int(line.split()[1])
        rtt = _measure_rtt(port)
        run.log(f"  proxy on 127.0.0.1:{port}: PING {rtt['direct_ms']:.3f} ms direct, "
                f"{rtt['proxied_ms']:.3f} ms through the proxy")
        url = f"redis://127.0.0.1:{port}/7"
        target = Target("redis-2ms", url, REDIS_URL, REDIS_URL)
        for lib in run.libs():
            cfg = lib.configs[0]
            n = max(1, int(run.sizes.slow_n * lib.drain_share))
            runs = _repeat(run, f"slow {lib.name}", run.sizes.reps,
                           lambda lib=lib, cfg=cfg, n=n: drain_once(lib, cfg, target, n, False, tag="slow"))
            if runs:
                run.add("slow", "redis+2ms", lib, cfg.label, "ignored", n, runs, rtt=rtt)
    finally:
        os.killpg(proxy.pid, 15)
        proxy.wait(10)


def _measure_rtt(port: int) -> dict[str, float]:
    out = {}
    for key, p in (("direct_ms", 6379), ("proxied_ms", port)):
        client = redis.Redis(host="127.0.0.1", port=p, db=7)
        client.ping()
        samples = []
        for _ in range(200):
            start = time.perf_counter()
            client.ping()
            samples.append(time.perf_counter() - start)
        samples.sort()
        out[key] = samples[len(samples) // 2] * 1000
        client.close()
    return out


# -- SQLite and RabbitMQ ------------------------------------------------------------------


def sqlite(run: Run) -> None:
    n = run.sizes.sqlite_n
    run.log(f"workload sqlite: {n} queued tasks in the embedded SQLite broker")
    target = sqlite_target()
    for lib in run.libs(broker="sqlite"):
        for cfg in lib.configs:
            for results in (False, True):
                runs = _repeat(run, f"sqlite {lib.name} {cfg.key} results={results}", run.sizes.reps,
                               lambda lib=lib, cfg=cfg, results=results: drain_once(
                                   lib, cfg, target, n, results, tag="sqlite"))
                if runs:
                    run.add("drain", "sqlite", lib, cfg.label, "stored" if results else "ignored", n, runs)


def amqp_problem() -> str | None:
    """Why celeriac cannot run on RabbitMQ yet, or None."""
    path = BENCH.parent / "src" / "celeriac" / "brokers" / "amqp.py"
    if not path.exists():
        return "src/celeriac/brokers/amqp.py does not exist yet"
    check = subprocess.run([str(BENCH.parent / ".venv" / "bin" / "python"), "-c",
                            "import celeriac.brokers.amqp as m; m.AMQPBroker"],
                           capture_output=True, text=True, timeout=60, env=env_for(AMQP_URL, ""))
    if check.returncode != 0:
        return f"celeriac.brokers.amqp does not import: {check.stderr.strip().splitlines()[-1:]}"
    return None


def amqp(run: Run) -> None:
    n = run.sizes.amqp_n
    run.log(f"workload amqp: {n} queued tasks on RabbitMQ")
    problem = amqp_problem()
    for lib in run.libs(broker="amqp"):
        if lib.name == "celeriac" and problem:
            run.skip("amqp/celeriac", problem)
            continue
        target = amqp_target(lib)
        for cfg in lib.configs:
            runs = _repeat(run, f"amqp {lib.name} {cfg.key}", run.sizes.reps,
                           lambda lib=lib, cfg=cfg, target=target: drain_once(
                               lib, cfg, target, n, False, tag="amqp"))
            if runs:
                run.add("drain", "amqp", lib, cfg.label, "ignored", n, runs)


# -- profile ----------------------------------------------------------------------------


def profile(run: Run) -> None:
    """py-spy on a celeriac `-P solo` worker draining Redis: where the time goes."""
    from venvs import VENVS

    py_spy = VENVS / "tools" / "bin" / "py-spy"
    if "celeriac" not in run.libraries:
        return
    if not py_spy.exists():
        run.skip("profile", "py-spy is not installed in bench/.venvs/tools")
        return
    lib, target = LIBRARIES["celeriac"], redis_target()
    n = run.sizes.drain_n * 3
    run.log(f"workload profile: py-spy on celeriac -P solo draining {n} tasks")
    for results in (False, True):
        raw = Path(tempfile.gettempdir()) / f"celeriac-bench-profile-{int(results)}.txt"
        raw.unlink(missing_ok=True)
        try:
            prepare(target, lib)
            fill(lib, target, n, results)
            reset_counter()
            workers = start_workers(lib, lib.configs[0], target, results, 1, "profile")
            wait_done(1, workers, timeout=60)  # attach once start-up is over: profile the drain only
            spy = subprocess.Popen([str(py_spy), "record", "-r", "250", "--nonblocking", "-f", "raw",
                                    "-o", str(raw), "-p", str(workers[0].proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
            try:
                first, last = wait_done(n, workers, timeout=120 + n / 50)
            finally:
                workers[0].stop()
                try:
                    spy.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(spy.pid, 9)
            top = summarize_profile(raw.read_text() if raw.exists() else "")
        except (BenchError, redis.RedisError, OSError, subprocess.SubprocessError) as exc:
            run.error(f"profile celeriac results={results}", exc)
            continue
        run.add("profile", "redis", lib, lib.configs[0].label, "stored" if results else "ignored", n,
                [{"rate": (n - 1) / max(last - first, 1e-9)}], profile=top)


def summarize_profile(collapsed: str, limit: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count

    def top(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [(name, round(100.0 * count / total, 1)) for name, count in ranked]

    return {"samples": total, "self_pct": top(own) if total else [],
            "inclusive_pct": top(inclusive) if total else []}


def _frame_name(frame: str) -> str:
    # py-spy frames look like "function (path/to/file.py:123)"; keep "function (file.py)".
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    if name.startswith("process ") or name.startswith("thread "):
        return ""
    return f"{name} ({path})" if path else name


WORKLOADS = {"enqueue": enqueue, "drain": drain, "roundtrip": roundtrip, "memory": memory,
             "scale": scale, "slow": slow, "sqlite": sqlite, "amqp": amqp, "profile": profile}
