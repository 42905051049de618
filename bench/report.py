"""Turn a run's JSON into the targets of issue 9 and a markdown report (stdlib only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def find(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    def ok(record: dict[str, Any]) -> bool:
        for key, want in match.items():
            have = record.get(key)
            if key == "config":
                if not str(have).startswith(want):
                    return False
            elif have != want:
                return False
        return True

    return [r for r in records if ok(r)]


def metric(records: list[dict[str, Any]], name: str, **match: Any) -> float | None:
    found = find(records, **match)
    if not found or name not in found[0]["metrics"]:
        return None
    return found[0]["metrics"][name]["median"]


def best(records: list[dict[str, Any]], name: str, **match: Any) -> tuple[float | None, str]:
    """The highest median of `name` among matching records, and that record's config."""
    # "tuned" rows show what a setting buys; the targets are judged on defaults only.
    found = [r for r in find(records, **match) if name in r["metrics"]
             and not str(r["config"]).startswith("tuned")]
    if not found:
        return None, ""
    top = max(found, key=lambda r: r["metrics"][name]["median"])
    return top["metrics"][name]["median"], top["config"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 9's targets, each with the measured figure, the bar, and met / not met."""
    recs = data["records"]
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, bar: float, unit: str, detail: str, higher: bool = True) -> None:
        met = None if value is None else (value >= bar if higher else value <= bar)
        out.append({"target": name, "value": value, "bar": bar, "unit": unit, "met": met,
                    "detail": detail, "higher_is_better": higher})

    drain, drain_cfg = best(recs, "rate", workload="drain", broker="redis", library="celeriac", results="ignored")
    celery_solo = metric(recs, "rate", workload="drain", broker="redis", library="celery", config="-P solo",
                         results="ignored")
    baseline = metric(recs, "rate", workload="drain", broker="redis", library="baseline")
    add("Redis drain, 1 process, results ignored", drain, 16_700, "tasks/s",
        f"celeriac {drain_cfg}; aim 30,000; bare loop {_fmt(baseline)}/s")
    add("... vs Celery -P solo", _ratio(drain, celery_solo), 15, "x", f"Celery -P solo {_fmt(celery_solo)}/s")
    stored, stored_cfg = best(recs, "rate", workload="drain", broker="redis", library="celeriac", results="stored")
    add("Redis drain, results stored in Redis", stored, 10_000, "tasks/s", f"celeriac {stored_cfg}")
    single = metric(recs, "rate", workload="enqueue", broker="redis", library="celeriac", config="single")
    celery_single = metric(recs, "rate", workload="enqueue", broker="redis", library="celery", config="single")
    single_all = metric(recs, "rate_with_startup", workload="enqueue", broker="redis", library="celeriac",
                        config="single")
    add("Enqueue, single delay() calls", single, 10_000, "tasks/s",
        f"start-up apart; with it {_fmt(single_all)}/s" if single_all is not None else "")
    add("... vs Celery single delay()", _ratio(single, celery_single), 4, "x",
        f"Celery {_fmt(celery_single)}/s")
    bulk = metric(recs, "rate", workload="enqueue", broker="redis", library="celeriac", config="bulk")
    bulk_how = next((r.get("how", "") for r in find(recs, workload="enqueue", broker="redis",
                                                     library="celeriac", config="bulk")), "")
    bulk_all = metric(recs, "rate_with_startup", workload="enqueue", broker="redis", library="celeriac",
                      config="bulk")
    add("Bulk enqueue", bulk, 100_000, "tasks/s",
        bulk_how + (f"; start-up apart, with it {_fmt(bulk_all)}/s" if bulk_all is not None else ""))
    p50 = metric(recs, "p50_ms", workload="roundtrip", library="celeriac")
    add("Round trip p50, local Redis", p50, 0.5, "ms", "", higher=False)
    amqp_c, amqp_cfg = best(recs, "rate", workload="drain", broker="amqp", library="celeriac")
    amqp_celery = metric(recs, "rate", workload="drain", broker="amqp", library="celery",
                         config=amqp_cfg.split(" (")[0] or "-P solo")
    add("RabbitMQ drain vs Celery (same pool/acks)", _ratio(amqp_c, amqp_celery), 4, "x",
        f"celeriac {amqp_cfg} {_fmt(amqp_c)}/s vs Celery {_fmt(amqp_celery)}/s" if amqp_c
        else _skip_reason(data, "amqp"))
    if amqp_c and not amqp_cfg.startswith("-P solo"):  # the other pool too: both are shown
        solo_c = metric(recs, "rate", workload="drain", broker="amqp", library="celeriac", config="-P solo")
        solo_celery = metric(recs, "rate", workload="drain", broker="amqp", library="celery", config="-P solo")
        add("... RabbitMQ, -P solo vs Celery -P solo", _ratio(solo_c, solo_celery), 4, "x",
            f"celeriac {_fmt(solo_c)}/s vs Celery {_fmt(solo_celery)}/s")
    sqlite, sqlite_cfg = best(recs, "rate", workload="drain", broker="sqlite", library="celeriac",
                              results="ignored")
    add("SQLite (embedded) drain", sqlite, 5_000, "tasks/s", f"celeriac {sqlite_cfg}")
    slow_c = metric(recs, "rate", workload="slow", library="celeriac")
    slow_celery = metric(recs, "rate", workload="slow", library="celery")
    add("2 ms broker RTT: drain vs Celery", _ratio(slow_c, slow_celery), 10, "x",
        f"celeriac {_fmt(slow_c)}/s vs Celery {_fmt(slow_celery)}/s")
    for key, label in (("-P solo", "solo"), ("-P prefork", "prefork -c 1")):
        ours = metric(recs, "rss_idle_mb", workload="memory", library="celeriac", config=key)
        theirs = metric(recs, "rss_idle_mb", workload="memory", library="celery", config=key)
        add(f"Idle worker RSS vs Celery ({label})", _ratio(ours, theirs), 0.5, "x",
            f"celeriac {_fmt(ours, 1)} MiB vs Celery {_fmt(theirs, 1)} MiB", higher=False)
    for rec in find(recs, workload="memory", library="celeriac"):
        samples = rec.get("samples") or []
        if len(samples) >= 2:
            growth = samples[-1][1] - samples[0][1]
            add(f"Flat memory over {rec['n']:,} tasks ({rec['config'].split(' (')[0]})", growth, 5.0, "MiB",
                f"RSS {samples[0][1]:.1f} MiB after {samples[0][0]:,} tasks, "
                f"{samples[-1][1]:.1f} MiB after {samples[-1][0]:,}", higher=False)
    return out


def _provenance(data: dict[str, Any]) -> str:
    """Which celeriac code was measured, and which workloads were re-measured later."""
    src = data.get("celeriac_src") or {}
    text = (f"celeriac measured from a snapshot of src/ (sha256 {src.get('sha256', '?')}, on commit "
            f"{src.get('commit', '?')})." if src else "")
    for rerun in data.get("reruns", []):
        rsrc = rerun.get("celeriac_src") or {}
        text += (f" Workloads {', '.join(rerun['workloads'])} re-measured {rerun['started']} "
                 f"(`{rerun['command'].split(' --reason')[0]}`; celeriac snapshot {rsrc.get('sha256', '?')}): "
                 f"{rerun.get('reason') or 'no reason given'}.")
    return text.strip()


def _skip_reason(data: dict[str, Any], workload: str) -> str:
    for skip in data.get("skipped", []):
        if skip["workload"].startswith(workload):
            return f"skipped: {skip['reason']}"
    return "not measured"


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if digits == 0 and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{max(digits, 2 if abs(value) < 10 else 1)}f}"


def _cell(summary: dict[str, float] | None, digits: int = 0) -> str:
    if summary is None:
        return ""
    if summary["runs"] == 1:
        return _fmt(summary["median"], digits)
    return f"{_fmt(summary['median'], digits)} ({_fmt(summary['min'], digits)}–{_fmt(summary['max'], digits)})"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    recs = data["records"]
    lines = [
        f"# Benchmark run {data['started']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}, {m['virtualization'] or 'bare metal?'}), "
        f"{m['ram_gib']} GiB RAM, Linux {m['kernel']}, Python {m['python']}, Redis {m['redis_server']}"
        + (f", RabbitMQ {m['rabbitmq_server']}" if m.get("rabbitmq_server") else "")
        + f"; load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}.",
        "",
        f"Command: `{data['command']}` ({data['duration_s'] / 60:.1f} min). "
        f"Repetitions: {data['sizes']['reps']}; cells show the median (min–max) over them.",
        "",
        _provenance(data),
        "",
        "Versions: " + "; ".join(f"{lib} {', '.join(f'{k} {v}' for k, v in vers.items())}"
                                 for lib, vers in data["versions"].items()) + ".",
        "",
        "Configuration: one worker process per library unless stated; no-op task taking one "
        "int argument; Redis 127.0.0.1:6379 db 7 (FLUSHDB before every repetition); every "
        "library's worker logs at WARNING. " + " ".join(
            f"{lib}: {'; '.join(notes)}." for lib, notes in data["notes"].items() if notes),
        "",
        "## Targets (issue 9)",
        "",
    ]
    rows = []
    for t in data["targets"]:
        status = {True: "met", False: "**not met**", None: "not measured"}[t["met"]]
        cmp = ">=" if t["higher_is_better"] else "<="
        rows.append([t["target"], f"{_fmt(t['value'], 2 if t['unit'] in ('x', 'ms', 'MiB') else 0)} {t['unit']}",
                     f"{cmp} {_fmt(t['bar'], 2 if t['bar'] < 10 else 0)} {t['unit']}", status, t["detail"]])
    lines += _table(["target", "measured", "bar", "status", "detail"], rows)

    def section(title: str, note: str, headers: list[str], picked: list[dict[str, Any]], cols: list[tuple[str, int]]) -> None:
        if not picked:
            return
        lines.extend([f"## {title}", "", note, ""])
        rows = []
        for r in picked:
            row = [r["library"], r["config"]]
            if "results" in headers:
                row.append(r["results"])
            if "broker" in headers:
                row.append(r["broker"])
            row.append(f"{r['n']:,}")
            row += [_cell(r["metrics"].get(name), digits) for name, digits in cols]
            rows.append(row)
        lines.extend(_table(headers, rows))

    section("Enqueue (one client process)",
            "Rate = tasks/s over the client's wall time for N sends; start-up = the first send (one "
            "task the same way, before the N: imports and connecting), reported apart as the drain "
            "does; with start-up = N + 1 tasks over both.",
            ["library", "mode", "broker", "N", "tasks/s", "seconds", "start-up s", "tasks/s with start-up"],
            find(recs, workload="enqueue"), [("rate", 0), ("seconds", 2), ("startup_s", 3), ("rate_with_startup", 0)])
    how = {f"{r['library']}": r.get("how") for r in find(recs, workload="enqueue", config="bulk")}
    if how:
        lines.extend(["Bulk paths: " + "; ".join(f"{k}: `{v}`" for k, v in how.items() if v) + ".", ""])
    section("Drain (one worker process)",
            "Rate = tasks/s from the first task done to the last; start-up = worker spawn to first "
            "task done; RSS = the worker's process tree after the drain.",
            ["library", "worker", "results", "broker", "N", "tasks/s", "start-up s", "total s", "RSS MiB"],
            [r for r in recs if r["workload"] == "drain"],
            [("rate", 0), ("startup_s", 2), ("total_s", 2), ("rss_after_mb", 1)])
    section("Round trip (delay().get(), one after another, warm worker)", "Milliseconds.",
            ["library", "worker", "N", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            find(recs, workload="roundtrip"), [("p50_ms", 3), ("p90_ms", 3), ("p99_ms", 3), ("max_ms", 2)])
    section("Memory", "RSS/PSS of the worker's process tree (MiB): idle 5 s after start, and after N tasks "
            "fed in chunks while it runs.",
            ["library", "worker", "N", "RSS idle", "PSS idle", "RSS after", "PSS after", "RSS peak"],
            find(recs, workload="memory"),
            [("rss_idle_mb", 1), ("pss_idle_mb", 1), ("rss_after_mb", 1), ("pss_after_mb", 1), ("rss_peak_mb", 1)])
    section("Scale: backlog size", "Drain rate with a small and a big backlog (flat is the goal).",
            ["library", "worker", "N", "tasks/s", "start-up s", "RSS MiB"],
            find(recs, workload="backlog"), [("rate", 0), ("startup_s", 2), ("rss_after_mb", 1)])
    section("Scale: worker processes", "N tasks drained by k worker processes on the 2 cores (rate over all).",
            ["library", "workers", "N", "tasks/s"], find(recs, workload="processes"), [("rate", 0)])
    slow = find(recs, workload="slow")
    if slow:
        rtt = slow[0].get("rtt", {})
        section("Slow broker (Redis through a proxy adding 1 ms each way)",
                f"PING: {rtt.get('direct_ms', 0):.3f} ms direct, {rtt.get('proxied_ms', 0):.3f} ms through "
                "the proxy. The proxy is a Python asyncio process on the same 2 cores.",
                ["library", "worker", "N", "tasks/s", "start-up s"], slow, [("rate", 0), ("startup_s", 2)])
    if data.get("skipped"):
        lines.extend(["## Skipped", ""] + [f"- {s['workload']}: {s['reason']}" for s in data["skipped"]] + [""])
    if data.get("errors"):
        lines.extend(["## Errors", ""] + [f"- {e['what']}: `{e['error'][:300]}`" for e in data["errors"]] + [""])
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    data = json.loads(Path(argv[0]).read_text())
    data["targets"] = targets(data)
    print(markdown(data))


if __name__ == "__main__":
    main(sys.argv[1:])
