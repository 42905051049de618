"""`make demo`: start a worker, send the tutorial's tasks, print their results, stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CELERIAC = str(Path(sys.executable).with_name("celeriac"))


def main() -> int:
    os.chdir(HERE)
    sys.path.insert(0, str(HERE))
    for stale in HERE.glob("celeriac.db*"):
        stale.unlink()
    print(f"$ celeriac -A tasks worker --loglevel=info   (in {HERE})")
    worker = subprocess.Popen([CELERIAC, "-A", "tasks", "worker", "--loglevel=info"],
                              cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert worker.stdout is not None
    for line in worker.stdout:
        print("  worker |", line.rstrip())
        if "ready." in line:
            break
    else:
        print("the worker did not start", file=sys.stderr)
        return 1

    import threading

    def relay() -> None:
        for line in worker.stdout:  # type: ignore[union-attr]
            print("  worker |", line.rstrip())

    threading.Thread(target=relay, daemon=True).start()

    from tasks import my_task, send_registration_mail

    print(">>> result = my_task.delay(2, 2)")
    result = my_task.delay(2, 2)
    print(f">>> result.id  -> {result.id}")
    print(f">>> result.get(timeout=10)  -> {result.get(timeout=10)}")
    print(f">>> result.state  -> {result.state}")
    print(">>> my_task.apply_async((3, 4), countdown=2)")
    started = time.monotonic()
    later = my_task.apply_async((3, 4), countdown=2)
    print(f">>> later.get(timeout=10)  -> {later.get(timeout=10)} "
          f"(after {time.monotonic() - started:.1f}s)")
    mails = [send_registration_mail.delay(f"user{i}@example.com") for i in range(3)]
    for mail in mails:
        print(f">>> {mail.get(timeout=10)}")
    print(">>> my_task(2, 2)  (a direct call runs here, no broker)  ->", my_task(2, 2))

    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=20)
    time.sleep(0.2)
    print(f"worker stopped (exit code {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
