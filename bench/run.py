"""celeriac's side-by-side benchmark suite (issue 9): `make bench` runs this.

    .venv/bin/python bench/run.py                       # everything, full size (~40 min)
    .venv/bin/python bench/run.py --quick               # small N, 1 repetition
    .venv/bin/python bench/run.py --only celeriac,celery --workload drain

Peers are installed into bench/.venvs/<name> (see venvs.py); celeriac runs from the project's
.venv. Libraries run strictly one at a time. A full run writes bench/results/latest.{json,md,png};
--quick writes quick.*, and a run narrowed with --only/--workload writes partial.*, so neither
overwrites the published figures unless --out says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import report  # noqa: E402
import venvs  # noqa: E402
from libs import LIBRARIES, ORDER  # noqa: E402
from workloads import WORKLOADS, Run, Sizes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="celeriac vs Celery, Dramatiq, RQ, Huey, arq")
    parser.add_argument("--quick", action="store_true", help="small N, one repetition")
    parser.add_argument("--only", help=f"comma-separated libraries (default: {','.join(ORDER)})")
    parser.add_argument("--workload", help=f"comma-separated workloads (default: {','.join(WORKLOADS)})")
    parser.add_argument("--reps", type=int, help="repetitions per measurement")
    parser.add_argument("--n", type=int, help="override N of every workload except the 1M ones")
    parser.add_argument("--out", help="output path prefix (default: results/latest, quick or partial)")
    parser.add_argument("--no-install", action="store_true", help="do not create/update bench venvs")
    parser.add_argument("--update", metavar="JSON",
                        help="re-measure the selected workloads x libraries and replace just those "
                             "records in an earlier run's JSON (e.g. results/latest.json)")
    parser.add_argument("--reason", default="", help="why (recorded with --update)")
    parser.add_argument("--render", metavar="JSON",
                        help="measure nothing: re-render the .md, .png (and the doc, for latest) from a JSON")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        data["targets"] = report.targets(data)
        write_outputs(Path(args.render).resolve().with_suffix(""), data, print)
        return 0
    libraries = [name.strip() for name in args.only.split(",")] if args.only else list(ORDER)
    workloads = [name.strip() for name in args.workload.split(",")] if args.workload else list(WORKLOADS)
    for name in libraries:
        if name not in LIBRARIES:
            raise SystemExit(f"unknown library {name!r}: choose from {', '.join(ORDER)}")
    for name in workloads:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}: choose from {', '.join(WORKLOADS)}")
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.reps:
        sizes.reps = args.reps
    if args.n:
        for f in dataclasses.fields(sizes):
            if f.name.endswith("_n") and f.name not in ("memory_n",):
                setattr(sizes, f.name, args.n)
    if args.out:
        prefix = Path(args.out)
    elif args.quick:
        prefix = RESULTS / "quick"
    elif args.only or args.workload:
        prefix = RESULTS / "partial"
    else:
        prefix = RESULTS / "latest"

    lock = acquire_lock()  # noqa: F841 - held until the process exits
    try:
        harness.counter_client().ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means no benchmark
        raise SystemExit(f"Redis at {harness.REDIS_URL} is not reachable: {exc}") from exc
    for name in libraries:
        if not args.no_install and name not in ("celeriac", "baseline"):
            venvs.ensure(name)
    if not args.no_install:
        venvs.ensure("tools")

    run = Run(sizes=sizes, libraries=libraries)
    celeriac_src = snapshot_celeriac(run) if "celeriac" in libraries else {}
    started = time.time()
    data = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": " ".join([".venv/bin/python bench/run.py", *map(shlex.quote, argv)]),
        "machine": harness.machine(),
        "versions": {name: venvs.versions(name) for name in libraries if name != "baseline"},
        "commit": _commit(),
        "celeriac_src": celeriac_src,
        "sizes": dataclasses.asdict(sizes),
        "libraries": libraries,
        "workloads": workloads,
        "notes": {name: LIBRARIES[name].notes for name in libraries},
    }
    run.log(f"machine: {data['machine']}")
    try:
        for name in workloads:
            WORKLOADS[name](run)
    except KeyboardInterrupt:
        run.log("interrupted: writing what was measured")
    finally:
        harness.flush_redis()
    data.update(duration_s=time.time() - started, records=run.records, skipped=run.skipped,
                errors=run.errors)
    if args.update:
        prefix = Path(args.update).with_suffix("")
        data = merge_into(json.loads(Path(args.update).read_text()), data, args.reason)
    data["targets"] = report.targets(data)
    write_outputs(prefix, data, run.log)
    print(report.markdown(data))
    return 1 if run.errors else 0


def write_outputs(prefix: Path, data: dict, log: object) -> None:
    """prefix.json, prefix.md, prefix.png; and the doc's tables when prefix is results/latest."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path = prefix.with_suffix(".json")
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    prefix.with_suffix(".md").write_text(report.markdown(data) + "\n")
    png = prefix.with_suffix(".png")
    tools = venvs.python_for("tools")
    if not tools.exists():  # --no-install before `make bench` ever built it: keep the figures
        log(f"chart skipped: no {tools} (run once without --no-install, or --render later)")  # type: ignore[operator]
    else:
        chart = subprocess.run([str(tools), str(Path(__file__).parent / "chart.py"), str(json_path), str(png)],
                               capture_output=True, text=True)
        if chart.returncode != 0:
            log(f"chart failed: {chart.stderr[-800:]}")  # type: ignore[operator]
    log(f"wrote {json_path}, {prefix.with_suffix('.md')}, {png}")  # type: ignore[operator]
    if prefix == RESULTS / "latest":
        update_doc(report.markdown(data))


def suite_workload(record: dict) -> str:
    """The --workload name that produced a record."""
    if record["workload"] in ("backlog", "processes"):
        return "scale"
    if record["workload"] == "drain" and record["broker"] in ("sqlite", "amqp"):
        return record["broker"]
    return record["workload"]


def merge_into(old: dict, new: dict, reason: str) -> dict:
    """Replace the records of the re-run (workload, library) pairs; keep the rest of `old`."""
    redone = {(w, lib) for w in new["workloads"] for lib in new["libraries"]}
    kept = [r for r in old["records"] if (suite_workload(r), r["library"]) not in redone]
    old["records"] = kept + new["records"]
    prefixes = tuple(f"{name} {lib} " for w, lib in redone for name in ERROR_NAMES.get(w, (w,)))
    old["errors"] = [e for e in old.get("errors", []) if not e["what"].startswith(prefixes)]
    old["errors"] += new["errors"]
    old["skipped"] = [s for s in old.get("skipped", []) if s["workload"].split("/")[0] not in new["workloads"]]
    old["skipped"] += new["skipped"]
    old.setdefault("reruns", []).append({
        "started": new["started"], "command": new["command"], "workloads": new["workloads"],
        "libraries": new["libraries"], "reason": reason, "celeriac_src": new.get("celeriac_src", {}),
        "loadavg_at_start": new["machine"]["loadavg_at_start"]})
    return old


#: How workloads.py names the errors of a workload ("<name> <library> ...").
ERROR_NAMES = {"scale": ("backlog", "processes"), "profile": ("profile",)}


LOCK_PATH = Path("/tmp/celeriac-bench.lock")


def acquire_lock() -> object:
    """One benchmark run at a time on this machine: two runs would share db 7 and its counter.

    The lock is a file lock (it survives FLUSHDB); a second run waits for the first.
    """
    import fcntl

    handle = open(LOCK_PATH, "a+")  # noqa: SIM115 - kept open for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"[bench] another benchmark run holds {LOCK_PATH}; waiting for it to finish "
              "(runs share Redis db 7 and must not overlap)", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def snapshot_celeriac(run: Run, tries: int = 20) -> dict[str, str]:
    """Copy src/celeriac aside and measure that copy; retry while the tree does not run.

    Other engineers edit src/ while a run goes on: a snapshot keeps every celeriac figure of
    one run on the same code. A smoke drain (100 tasks, -P solo and prefork) must pass first;
    a tree caught half-way through an edit is retried every 30 s.
    """
    import hashlib
    import os
    import shutil
    import tempfile

    from libs import LIBRARIES as LIBS
    from workloads import drain_once, redis_target

    dest = Path(tempfile.gettempdir()) / "celeriac-bench-src"
    lib = LIBS["celeriac"]
    for attempt in range(1, tries + 1):
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(venvs.ROOT / "src" / "celeriac", dest / "celeriac",
                        ignore=shutil.ignore_patterns("__pycache__"))
        os.environ["BENCH_CELERIAC_SRC"] = str(dest)
        digest = hashlib.sha256()
        for path in sorted((dest / "celeriac").rglob("*.py")):
            digest.update(path.read_bytes())
        try:
            for cfg in lib.configs[:2]:
                drain_once(lib, cfg, redis_target(), 100, False, tag="smoke")
        except harness.BenchError as exc:
            run.log(f"celeriac snapshot {attempt} does not run ({str(exc)[-300:]}); retrying in 30 s")
            time.sleep(30)
            continue
        run.log(f"measuring celeriac from a snapshot of src/ (sha256 {digest.hexdigest()[:12]})")
        return {"snapshot": str(dest), "sha256": digest.hexdigest()[:12], "commit": _commit()}
    raise SystemExit("celeriac's tree did not pass the smoke drain; not benchmarking a broken tree")


DOC = venvs.ROOT / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- bench:latest:begin -->", "<!-- bench:latest:end -->"


def update_doc(table: str) -> None:
    """Put the latest tables between the markers of docs/PERFORMANCE.md (the analysis stays)."""
    if not DOC.exists():
        return
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    title, body = table.split("\n", 1)
    body = f"Run started {title.removeprefix('# Benchmark run ')}.\n" + body.replace("\n## ", "\n### ")
    DOC.write_text(f"{head}{BEGIN}\n{body.strip()}\n{END}{tail}")


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return head + ("+uncommitted changes in src/" if dirty else "")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
