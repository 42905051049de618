"""The client side of a benchmark, run in the library's own venv.

    python client.py LIB enqueue N [--results] [--bulk]
    python client.py LIB roundtrip N
    python client.py LIB purge

Prints one JSON line: what was done and how long it took. An enqueue first sends one task the
same way and times it apart (start-up: imports and connecting), then times the N sends.
"""

from __future__ import annotations

import importlib
import json
import sys
import time


def main(argv: list[str]) -> None:
    lib, action = argv[0], argv[1]
    n = int(argv[2]) if len(argv) > 2 else 0
    module = importlib.import_module(f"{lib}_bench")
    out: dict = {"library": lib, "action": action, "n": n}
    if action == "enqueue":
        results, bulk = "--results" in argv, "--bulk" in argv
        # Start-up apart, as the drain reports it: the first send (one task, the same path)
        # pays the library's lazy imports and its first connection, once per process.
        start = time.perf_counter()
        module.enqueue(1, results, bulk)
        out["startup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        out["how"] = module.enqueue(n, results, bulk)
        out["seconds"] = time.perf_counter() - start
        out["rate"] = n / out["seconds"] if out["seconds"] else 0.0
        out["rate_with_startup"] = (n + 1) / (out["seconds"] + out["startup_s"])
    elif action == "roundtrip":
        out.update(module.roundtrip(n))
    elif action == "purge":
        module.purge()
    else:
        raise SystemExit(f"unknown action {action!r}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
