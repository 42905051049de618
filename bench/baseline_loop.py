"""The "practical ceiling": a bare consumer loop in kombu's Redis layout, no framework.

    python bench/baseline_loop.py fill N     # LPUSH N Celery-style task envelopes to `celery`
    python bench/baseline_loop.py run        # consume forever (the driver stops it)

Each turn pops up to 200 messages with one Lua call that also records them in `unacked` and
`unacked_index` as kombu does, then for each message: json-decode the envelope, base64- and
json-decode the body, look the task up by its header name and call it (a no-op that counts,
as every library's task does), and finally acks the whole batch in one pipeline (ZREM + HDEL).
When the queue is empty it blocks in BRPOP like a worker would. Issue 9 puts this loop at about
39,000 tasks/s on this kind of machine; a framework should cost little on top of it.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent / "runners"))
from common import BROKER_URL, done  # noqa: E402

QUEUE = os.environ.get("BENCH_QUEUE") or "celery"
BATCH = 200

# Pop up to ARGV[1] messages and record each in kombu's unacked hash/zset, atomically.
FETCH = """
local msgs = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if not msgs then return {} end
local hash, zset = {}, {}
for _, m in ipairs(msgs) do
  local tag = cjson.decode(m)['properties']['delivery_tag']
  hash[#hash + 1] = tag
  hash[#hash + 1] = '[' .. m .. ', "", "' .. KEYS[1] .. '"]'
  zset[#zset + 1] = ARGV[2]
  zset[#zset + 1] = tag
end
redis.call('HSET', KEYS[2], unpack(hash))
redis.call('ZADD', KEYS[3], unpack(zset))
return msgs
"""


def noop(i):
    done()


TASKS = {"bench.noop": noop}


def envelope(i: int) -> bytes:
    """A Celery 5.7-shaped task message (protocol v2) in kombu's Redis envelope."""
    task_id = str(uuid.uuid4())
    body = json.dumps([[i], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "bench.noop", "id": task_id, "shadow": None, "eta": None,
                    "expires": None, "group": None, "group_index": None, "retries": 0,
                    "timelimit": [None, None], "root_id": task_id, "parent_id": None,
                    "argsrepr": f"({i},)", "kwargsrepr": "{}", "origin": "bench@localhost",
                    "ignore_result": True, "replaced_task_nesting": 0, "stamped_headers": None,
                    "stamps": {}},
        "properties": {"correlation_id": task_id, "reply_to": "00000000-0000-0000-0000-000000000000",
                       "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": QUEUE},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    }).encode()


def fill(client: redis.Redis, n: int) -> None:
    for start in range(0, n, 2000):
        client.lpush(QUEUE, *(envelope(i) for i in range(start, min(n, start + 2000))))


def handle(messages: list[bytes]) -> list[str]:
    tags = []
    for raw in messages:
        env = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(env["body"]))
        TASKS[env["headers"]["task"]](*args, **kwargs)
        tags.append(env["properties"]["delivery_tag"])
    return tags


def run(client: redis.Redis) -> None:
    fetch = client.register_script(FETCH)
    keys = [QUEUE, "unacked", "unacked_index"]
    while True:
        messages = fetch(keys=keys, args=[BATCH, time.time()])
        if not messages:
            popped = client.brpop([QUEUE], timeout=1)
            if popped is None:
                continue
            client.rpush(QUEUE, popped[1])  # put it back at the head, take it the recorded way
            continue
        tags = handle(messages)
        pipe = client.pipeline(transaction=False)
        pipe.zrem("unacked_index", *tags)
        pipe.hdel("unacked", *tags)
        pipe.execute()


def main(argv: list[str]) -> None:
    client = redis.Redis.from_url(BROKER_URL)
    if argv[:1] == ["fill"]:
        start = time.perf_counter()
        fill(client, int(argv[1]))
        print(json.dumps({"n": int(argv[1]), "seconds": time.perf_counter() - start}), flush=True)
    elif argv[:1] == ["run"]:
        run(client)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
