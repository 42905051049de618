"""Consuming from the Redis broker: `RedisSubscription` (a worker's queues, in kombu's
layout, with celeriac's heartbeat and held-tag records) and `FanoutSubscription` (PUB/SUB).
The layout and the ways of fetching are described in `celeriac.brokers.redis`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import redis

from ..redis_link import CONNECTION_ERRORS
from .base import Delivery, Envelope, Subscription
from .base import FanoutSubscription as BaseFanoutSubscription
from .redis_envelope import PRIORITY_STEPS, SEP, decode_envelope, encode_envelope, mark_redelivered

if TYPE_CHECKING:
    from .redis import RedisBroker

__all__ = ["RedisSubscription", "FanoutSubscription"]

logger = logging.getLogger("celeriac.brokers.redis")


class RedisSubscription(Subscription):
    """One consumer of some queues (see the module docstring). Used from one thread."""

    def __init__(self, broker: RedisBroker, queues: list[str], prefetch: int) -> None:
        self.broker = broker
        self.queues = queues
        self.prefetch = prefetch
        self.id = uuid.uuid4().hex
        self.held_key = f"{broker.prefix}_celeriac.held.{self.id}"
        # tag -> (raw envelope, list key, queue name), in delivery order
        self.held: dict[str, tuple[bytes, str, str]] = {}
        self._rotation = 0
        self._next_tick = 0.0
        self._next_due: float | None = None
        self._next_restore = 0.0
        # The fetch path's own connection, kept (no pool checkout per command), and the record
        # of a BRPOP'd message sent on it whose reply is read later (see `_record_later`).
        self._conn: Any = None
        self._pending: tuple[list[str], list[Any], str] | None = None
        # A fetch sent ahead (`ack_and_get_many(ahead=...)`) whose reply is read later, and
        # the deliveries that reply brought, returned first by the next call.
        self._ahead: tuple[list[str], list[Any], list[str], list[str]] | None = None
        self._ready: list[Delivery] = []
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if broker.heartbeat_ttl > 0:
            broker._retry(self.heartbeat)
            self._heartbeat = threading.Thread(target=self._beat, name=f"celeriac-redis-heartbeat-{self.id[:8]}", daemon=True)
            self._heartbeat.start()

    # -- heartbeat --------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Renew this consumer's deadline and the delivery time of the messages it holds.

        One try: the heartbeat thread simply tries again at its next beat.
        """
        b = self.broker
        args: list[Any] = [self.id, b.heartbeat_ttl, time.time(), *list(self.held)]
        b.heartbeat_script(keys=[b.consumers_key, b.index_key], args=args)

    def _beat(self) -> None:
        while not self._stop.wait(self.broker.heartbeat_ttl / 3):
            try:
                self.heartbeat()
            except Exception as exc:  # keep beating: the next try may reach Redis
                logger.warning("Heartbeat of consumer %s failed: %s", self.id, exc)

    # -- fetching ---------------------------------------------------------------------------

    def _keys(self) -> tuple[list[str], list[str]]:
        """List keys in BRPOP order (all queues' step 0, then 3, ...), rotating queues."""
        queues = self.queues
        if len(queues) > 1:
            self._rotation = (self._rotation + 1) % len(queues)
            queues = queues[self._rotation:] + queues[:self._rotation]
        keys = [self.broker.queue_key(q, s) for s in PRIORITY_STEPS for q in queues]
        names = [q for _ in PRIORITY_STEPS for q in queues]
        return keys, names

    def _call(self, *args: Any) -> Any:
        """One command on the subscription's own connection, once the pending reply is read."""
        self._settle()
        if self._conn is None:
            self._conn = self.broker.client.connection_pool.get_connection()
        try:
            self._conn.send_command(*args)
            return self._conn.read_response()
        except redis.ResponseError:
            raise  # an error reply: the connection is in step
        except BaseException:  # replies may be out of step (a signal mid-read): reconnect
            self._conn.disconnect()
            raise

    def _fetch_command(self, limit: int, keys: list[str], names: list[str], extra: Any = "",
                       index: int = 0, acks: Sequence[str] = ()) -> tuple[list[str], list[Any]]:
        """The FETCH script's keys and arguments (see `redis_lua.FETCH`)."""
        b = self.broker
        return ([b.unacked_key, b.index_key, self.held_key, *keys],
                [limit, time.time(), extra, index, *names, *acks])

    def _send_fetch(self, script_keys: list[str], args: list[Any]) -> bool:
        """Send a FETCH on the subscription's connection and leave its reply to read later;
        False when the connection failed (dropped: the FETCH did not run)."""
        if self._conn is None:
            self._conn = self.broker.client.connection_pool.get_connection()
        try:
            self._conn.send_command("EVALSHA", self.broker.fetch_script.sha, len(script_keys), *script_keys, *args)
        except CONNECTION_ERRORS:
            self._conn.disconnect()
            return False
        return True

    def _fetch_call(self, keys: list[str], args: list[Any]) -> Any:
        b = self.broker
        try:
            return self._call("EVALSHA", b.fetch_script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # not run: load it and run it (Redis restarted)
            return b.fetch_script(keys=keys, args=args)

    def _record_later(self, popped: Any, keys: list[str], names: list[str]) -> list[Delivery]:
        """Deliver the message BRPOP took at once; its record in ``unacked`` (the FETCH script)
        is sent now, before the task can run, and its reply read at the next call.

        Saves a round trip between an idle worker's wake-up and the task. The send keeps the
        order: every later command of this subscription runs after the record.
        """
        key, raw = popped[0].decode(), popped[1]
        idx = keys.index(key)
        try:
            envelope = decode_envelope(raw)
        except Exception:
            envelope = None
        tag = envelope.properties.get("delivery_tag") if envelope is not None else None
        if envelope is None or not isinstance(tag, str) or not tag:  # let the script name it, or drop it
            return self._fetch(1, keys, names, popped)
        script_keys, args = self._fetch_command(1, keys, names, raw, idx + 1)
        if not self._send_fetch(script_keys, args):
            return self._fetch(1, keys, names, popped)  # on the pool (raises if Redis is gone)
        self._pending = (script_keys, args, tag)
        self.held[tag] = (raw, key, names[idx])
        info = envelope.properties.get("delivery_info") or {}
        return [Delivery(envelope, names[idx], tag, bool(info.get("redelivered")))]

    def _settle(self) -> None:
        """Read the reply of the record `_record_later` sent (run it again if it was lost), or
        of the fetch sent ahead (its deliveries wait in `_ready`)."""
        if self._ahead is not None:
            self._settle_ahead()
        if self._pending is None:
            return
        script_keys, args, tag = self._pending
        self._pending = None
        b = self.broker
        try:
            out = self._conn.read_response()
        except redis.exceptions.NoScriptError:
            out = b._retry(b.fetch_script, keys=script_keys, args=args)
        except CONNECTION_ERRORS:
            self._conn.disconnect()
            # It may or may not have run: running it again records the same entries.
            out = b._retry(b.fetch_script, keys=script_keys, args=args)
        except BaseException:  # a signal mid-read: the connection is out of step
            self._conn.disconnect()
            raise
        if not out or out[2].decode() != tag:
            logger.error("Recording delivery %s in unacked returned %r", tag, out[:3] if out else out)

    def _fetch(self, limit: int, keys: list[str], names: list[str], popped: Any = None,
               acks: Sequence[str] = ()) -> list[Delivery]:
        extra, index = ("", 0) if popped is None else (popped[1], keys.index(popped[0].decode()) + 1)
        out = self._fetch_call(*self._fetch_command(limit, keys, names, extra, index, acks))
        return self._deliveries(out, keys, names, extra, acks)

    def _deliveries(self, out: list[Any], keys: list[str], names: list[str], extra: Any,
                    acks: Sequence[str]) -> list[Delivery]:
        """The deliveries of a FETCH reply (now held), once its acks are settled."""
        b = self.broker
        for tag in acks:
            self.held.pop(tag, None)
        deliveries = []
        for i in range(0, len(out), 3):
            raw, idx, tag = out[i] or extra, out[i + 1] - 1, out[i + 2].decode()
            try:
                envelope = decode_envelope(raw)
            except Exception as exc:  # not a kombu envelope: Celery drops these too
                logger.error("Dropping undecodable message from %s: %s: %r", names[idx], exc, raw[:200])
                b.restore([(tag, "r", "", "", 0)], self.held_key)
                continue
            self.held[tag] = (raw, keys[idx], names[idx])
            info = envelope.properties.get("delivery_info") or {}
            deliveries.append(Delivery(envelope, names[idx], tag, bool(info.get("redelivered"))))
        return deliveries

    def get_many(self, limit: int, timeout: float) -> list[Delivery]:
        """Return up to `limit` deliveries (one script call), blocking up to `timeout` for one.

        Returns [] at once when `prefetch` deliveries are already held and not yet settled.
        """
        return self.ack_and_get_many((), limit, timeout)

    def ack_and_get_many(self, acks: Sequence[Delivery], limit: int, timeout: float, *,
                         ahead: int = 0) -> list[Delivery]:
        """`ack_many(acks)` and `get_many(limit, timeout)` in one script call (one round trip
        per turn of the worker loop); the acks are settled before any wait.

        `ahead` (see `Subscription.ack_and_get_many`): once deliveries are in hand, a FETCH of
        up to `ahead` more is sent and its reply left to read; the next call returns what it
        brought, and sends the next one with its acks. A worker then runs a batch while Redis
        pops and records the next (bench/: drain, one worker process).
        """
        self._settle()
        tags = [d.tag for d in acks]
        if self._ready:  # returned whatever `limit`: they were asked for within the prefetch
            got, self._ready = self._ready, []
            if not self._fetch_ahead(ahead, tags) and tags:
                self._ack_tags(tags)
            return got
        if self.prefetch:
            limit = min(limit, self.prefetch - len(self.held) + len(tags))
        if limit <= 0:
            self.ack_many(acks)
            return []
        if ahead:  # leave room for the fetch sent ahead
            limit = max(1, limit - ahead)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._maybe_tick()
                keys, names = self._keys()
                got = self._fetch(limit, keys, names, acks=tags)
                tags = []  # settled (a lost reply: sent again after `_recover`; acks are idempotent)
                if got:
                    self._fetch_ahead(ahead, [])
                    return got
                wait = min(deadline - time.monotonic(), 1.0)
                if self._next_due is not None:
                    wait = min(wait, max(self._next_due - time.time(), 0.0) + 0.001)
                if wait < 0.001:
                    return []
                # Not an ack-and-BRPOP write when idle: a worker still busy with this round
                # trip when the next message lands takes it without a sleep and wake-up, which
                # measured faster (sequential delay().get()).
                popped = self._call("BRPOP", *keys, wait)
                if popped:
                    return self._record_later(popped, keys, names)
            except CONNECTION_ERRORS:
                self.broker._retry(self._recover)
            if time.monotonic() >= deadline:
                if tags:
                    self.ack_many(acks)
                return []

    @property
    def in_flight(self) -> int:
        return self._ahead[1][0] if self._ahead is not None else 0  # the FETCH's limit argument

    def _fetch_ahead(self, ahead: int, acks: list[str]) -> bool:
        """Send a FETCH of up to `ahead` deliveries (within the prefetch) with these acks, and
        do not wait for its reply (`_settle_ahead` reads it). False if nothing was sent."""
        if self.prefetch:
            ahead = min(ahead, self.prefetch - len(self.held) + len(acks))
        if ahead <= 0:
            return False
        try:
            self._maybe_tick()
        except CONNECTION_ERRORS:
            return False  # the caller's next command retries until Redis is back
        keys, names = self._keys()
        script_keys, args = self._fetch_command(ahead, keys, names, acks=acks)
        if not self._send_fetch(script_keys, args):
            return False  # not run: the caller acks another way, the next fetch waits
        self._ahead = (script_keys, args, keys, names)
        return True

    def _settle_ahead(self) -> None:
        assert self._ahead is not None
        script_keys, args, keys, names = self._ahead
        self._ahead = None
        b = self.broker
        acks = args[4 + len(names):]
        try:
            out = self._conn.read_response()
        except redis.exceptions.NoScriptError:  # not run (Redis restarted): run it now
            out = b._retry(b.fetch_script, keys=script_keys, args=args)
        except CONNECTION_ERRORS:
            # It may have run: give back what it popped, and ack again (acks are idempotent).
            self._conn.disconnect()
            b._retry(self._recover)
            if acks:
                self._ack_tags(acks)
            return
        except BaseException:  # a signal mid-read: the connection is out of step
            self._conn.disconnect()
            raise
        self._ready.extend(self._deliveries(out, keys, names, "", acks))

    def _recover(self) -> None:
        """After a lost connection: give back what a lost reply popped for us."""
        self._settle()
        b = self.broker
        client: Any = b.client  # replies are bytes (no decode_responses)
        client.ping()
        stray = [t.decode() for t in reversed(client.hkeys(self.held_key)) if t.decode() not in self.held]
        if stray:
            values = client.hmget(b.unacked_key, stray)
            dests = [d.decode() if d else None for d in client.hmget(self.held_key, stray)]
            moved = b.restore(b._requeue_moves(stray, values, dests), self.held_key)
            logger.warning("Gave back %d message(s) whose delivery was cut off", moved)

    def _maybe_tick(self) -> None:
        """Promote due delayed messages; restore expired consumers and timed-out messages."""
        now = time.time()
        if now < self._next_tick and (self._next_due is None or now < self._next_due):
            return
        b = self.broker
        self._next_tick = now + 1.0
        keys = [b.consumers_key, *[b.delayed_key(q) for q in self.queues]]
        args: list[Any] = [now, 1000, SEP, *[b.queue_key(q) for q in self.queues]]
        _promoted, next_due, dead = b.tick_script(keys=keys, args=args)
        self._next_due = float(next_due) if next_due else None
        for consumer in dead:
            if consumer.decode() != self.id:
                b.restore_consumer(consumer.decode())
        if now >= self._next_restore:
            self._next_restore = now + b.restore_interval
            b.restore_visible()

    def set_queues(self, queues: Sequence[str]) -> None:
        """Consume these queues from the next fetch on (add_consumer / cancel_consumer)."""
        self.queues = list(queues)

    # -- settling ---------------------------------------------------------------------------

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Remove deliveries from `unacked` for good: one pipeline."""
        if not deliveries:
            return
        self._settle()
        self._ack_tags([d.tag for d in deliveries])

    def _ack_tags(self, tags: Sequence[str]) -> None:
        b = self.broker
        b._pipe([("zrem", b.index_key, *tags), ("hdel", b.unacked_key, *tags), ("hdel", self.held_key, *tags)])
        for tag in tags:
            self.held.pop(tag, None)

    def reject(self, delivery: Delivery, *, requeue: bool) -> None:
        """Drop a delivery, or put it back at the tail of its list (kombu's requeue)."""
        self._settle()
        raw, list_key, _queue = self.held.pop(delivery.tag, (b"", "", ""))
        if requeue and list_key:
            move = (delivery.tag, "l", list_key, mark_redelivered(raw), 0)
        else:
            move = (delivery.tag, "l", "", "", 0)
        self.broker.restore([move], self.held_key)

    def defer(self, delivery: Delivery, not_before: float) -> None:
        """Move a delivery to its queue's delayed set, due at `not_before` (epoch seconds)."""
        self._settle()
        raw, _list_key, queue = self.held.pop(delivery.tag, (b"", "", delivery.queue))
        if not raw:
            raw = encode_envelope(delivery.envelope, "", queue).encode()
        move = (delivery.tag, "z", self.broker.delayed_key(queue), raw, not_before)
        self.broker.restore([move], self.held_key)

    def defer_many(self, items: Sequence[tuple[Delivery, float]]) -> None:
        """`defer` for many deliveries in one script call per 500."""
        self._settle()
        moves = []
        for delivery, not_before in items:
            raw, _list_key, queue = self.held.pop(delivery.tag, (b"", "", delivery.queue))
            if not raw:
                raw = encode_envelope(delivery.envelope, "", queue).encode()
            moves.append((delivery.tag, "z", self.broker.delayed_key(queue), raw, not_before))
        if moves:
            self.broker.restore(moves, self.held_key)

    def close(self) -> None:
        """Give every delivery not acked back to the head of its list, then unregister."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        b = self.broker
        try:
            self._settle()
        finally:
            if self._conn is not None:
                self._conn.disconnect()
                b.client.connection_pool.release(self._conn)
                self._conn = None
        # Newest first, so the oldest ends up at the head and is served first again.
        moves = [(tag, "r", key, mark_redelivered(raw), 0) for tag, (raw, key, _q) in reversed(self.held.items())]
        try:
            if moves:
                b.restore(moves, self.held_key)
                logger.info("Restoring %d unacknowledged message(s)", len(moves))
            b._pipe([("delete", self.held_key), ("zrem", b.consumers_key, self.id)])
        finally:
            self.held.clear()


class FanoutSubscription(BaseFanoutSubscription):
    """Messages of a fanout exchange (PUB/SUB pattern): broadcast, remote control, events."""

    def __init__(self, broker: RedisBroker, pattern: str) -> None:
        self.broker = broker
        self.pattern = pattern
        self.pubsub = broker.client.pubsub(ignore_subscribe_messages=True)
        broker._retry(self.pubsub.psubscribe, pattern)

    def get(self, timeout: float) -> Envelope | None:
        """The next message, or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self.pubsub.get_message(timeout=max(remaining, 0.0))
            except CONNECTION_ERRORS:
                # redis-py subscribes again on the new connection.
                self.broker._retry(self.pubsub.ping)
                continue
            if message is not None and message["type"] == "pmessage":
                return decode_envelope(message["data"])
            if remaining <= 0:
                return None

    def __iter__(self) -> Iterator[Envelope]:
        while True:
            envelope = self.get(1.0)
            if envelope is not None:
                yield envelope

    def close(self) -> None:
        """Stop listening."""
        self.pubsub.close()
