"""Tasks for bench/canvas/run_canvas.py (celeriac only)."""

import os

from celeriac import Celery

URL = os.environ.get("CANVAS_URL", "redis://127.0.0.1:6379/7")
app = Celery("canvasbench", broker=URL, backend=URL)


@app.task
def add(a, b):
    return a + b


@app.task
def tsum(values):
    return sum(values)
