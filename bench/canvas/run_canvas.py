"""Canvas figures for issue 6: publish a group of 10,000; run a chord of 10,000 end to end.

    .venv/bin/python bench/canvas/run_canvas.py            # Redis db 7 (FLUSHDB first)

One `celeriac worker -P threads -c 4` process does the work. Not collected by pytest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = 10_000


def main() -> None:
    sys.path.insert(0, str(HERE))
    import redis

    redis.Redis.from_url("redis://127.0.0.1:6379/7").flushdb()
    from canvas_tasks import add, app, tsum

    from celeriac import chord, group

    started = time.perf_counter()
    result = group(add.s(i, i) for i in range(N)).apply_async()
    publish = time.perf_counter() - started
    celeriac = str(Path(sys.executable).with_name("celeriac"))
    worker = subprocess.Popen([celeriac, "-A", "canvas_tasks", "worker", "-P", "threads", "-c", "4",
                               "-l", "warning"], cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)})
    try:
        started = time.perf_counter()
        assert result.get(timeout=300) == [i + i for i in range(N)]
        group_join = time.perf_counter() - started
        started = time.perf_counter()
        body = chord((add.s(i, i) for i in range(N)), tsum.s())()
        assert body.get(timeout=300) == sum(i + i for i in range(N))
        chord_total = time.perf_counter() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        app.close()
    print(f"group of {N:,}: published in {publish:.2f} s; all joined {group_join:.2f} s after the worker started")
    print(f"chord of {N:,}: end to end {chord_total:.2f} s (one join in the backend)")


if __name__ == "__main__":
    main()
