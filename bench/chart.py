"""Draw a run's JSON as one PNG (runs in bench/.venvs/tools, which has matplotlib).

    python bench/chart.py bench/results/latest.json bench/results/latest.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

COLORS = {"celeriac": "#2a9d8f", "baseline": "#8d99ae", "celery": "#e76f51", "dramatiq": "#f4a261",
          "rq": "#e9c46a", "huey": "#6d597a", "arq": "#457b9d"}


def _short(config: str) -> str:
    return config.split(" (")[0]


def _bars(ax, rows, title, unit, log=True):
    if not rows:
        ax.set_visible(False)
        return
    labels = [label for label, _, _, _ in rows]
    values = [v for _, v, _, _ in rows]
    errs = [[v - lo for _, v, lo, _ in rows], [hi - v for _, v, _, hi in rows]]
    colors = [COLORS.get(label.split(" ")[0], "#999999") for label in labels]
    y = range(len(rows))
    ax.barh(list(y), values, xerr=errs, color=colors, capsize=2)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.0f}" if v >= 10 else f" {v:.2f}", va="center", fontsize=6)


def _rows(records, metric, label):
    out = []
    for r in records:
        m = r["metrics"].get(metric)
        if m:
            out.append((label(r), m["median"], m["min"], m["max"]))
    return out


def main(src: str, dest: str) -> None:
    data = json.loads(Path(src).read_text())
    recs = data["records"]
    fig, axes = plt.subplots(3, 2, figsize=(13, 13))
    _bars(axes[0][0], _rows([r for r in recs if r["workload"] == "drain" and r["broker"] == "redis"],
                            "rate", lambda r: f"{r['library']} {_short(r['config'])}, results {r['results']}"),
          "Drain N no-op tasks, 1 worker process, Redis", "tasks/s (log)")
    _bars(axes[0][1], _rows([r for r in recs if r["workload"] == "enqueue"], "rate",
                            lambda r: f"{r['library']} {r['config']} ({r['broker']})"),
          "Enqueue from one client", "tasks/s (log)")
    _bars(axes[1][0], _rows([r for r in recs if r["workload"] == "roundtrip"], "p50_ms",
                            lambda r: f"{r['library']} p50")
          + _rows([r for r in recs if r["workload"] == "roundtrip"], "p99_ms", lambda r: f"{r['library']} p99"),
          "Round trip delay().get(), warm worker", "ms (log)")
    _bars(axes[1][1], _rows([r for r in recs if r["workload"] in ("slow",) or
                             (r["workload"] == "drain" and r["broker"] in ("sqlite", "amqp"))], "rate",
                            lambda r: f"{r['library']} {_short(r['config'])}, {r['broker']}"
                            + (f", results {r['results']}" if r["workload"] == "drain" else "")),
          "Other brokers: SQLite, RabbitMQ, Redis + 2 ms RTT", "tasks/s (log)")
    _bars(axes[2][0], _rows([r for r in recs if r["workload"] == "memory"], "rss_idle_mb",
                            lambda r: f"{r['library']} {_short(r['config'])} idle")
          + _rows([r for r in recs if r["workload"] == "memory"], "rss_after_mb",
                  lambda r: f"{r['library']} {_short(r['config'])} after {r['n']:,}"),
          "Worker RSS (process tree)", "MiB", log=False)
    _bars(axes[2][1], _rows([r for r in recs if r["workload"] in ("backlog", "processes")], "rate",
                            lambda r: f"{r['library']} {_short(r['config'])}, N={r['n']:,}"),
          "Scale: backlog size and worker processes", "tasks/s (log)")
    m = data["machine"]
    fig.suptitle(f"celeriac vs peers — {m['nproc']} CPUs {m['cpu']}, {m['ram_gib']} GiB, Redis "
                 f"{m['redis_server']}, Python {m['python']} — {data['started']} — median of "
                 f"{data['sizes']['reps']} (bars: min–max)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(dest, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
