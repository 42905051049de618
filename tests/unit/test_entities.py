"""Exchange, Queue, binding and Broadcast: defaults, computed arguments, equality, repr.

kombu is imported inside tests only, to prove that what we declare is what kombu declares.
"""

from __future__ import annotations

import copy
import pickle

import pytest

from celeriac.entities import DELIVERY_MODES, Binding, Broadcast, Exchange, Queue, binding


def kombu_declared_arguments(kq):
    """The arguments kombu sends in queue.declare for a kombu Queue (AMQP transports)."""
    from kombu.transport.base import to_rabbitmq_queue_arguments

    return to_rabbitmq_queue_arguments(
        kq.queue_arguments or {},
        expires=kq.expires,
        message_ttl=kq.message_ttl,
        max_length=kq.max_length,
        max_length_bytes=kq.max_length_bytes,
        max_priority=kq.max_priority,
    )


def assert_same_exchange(ours, theirs):
    assert ours.name == theirs.name
    assert ours.type == theirs.type
    assert ours.durable == theirs.durable
    assert ours.auto_delete == theirs.auto_delete
    assert ours.delivery_mode == theirs.delivery_mode
    assert ours.arguments == theirs.arguments
    assert ours.passive == theirs.passive
    assert ours.no_declare == theirs.no_declare


def assert_same_queue(ours, theirs):
    assert ours.name == theirs.name
    assert ours.routing_key == theirs.routing_key
    if theirs.exchange is None:
        assert ours.exchange is None
    else:
        assert_same_exchange(ours.exchange, theirs.exchange)
    assert ours.durable == theirs.durable
    assert ours.exclusive == theirs.exclusive
    assert ours.auto_delete == theirs.auto_delete
    assert ours.no_ack == theirs.no_ack
    assert ours.alias == theirs.alias
    assert ours.binding_arguments == theirs.binding_arguments
    assert ours.consumer_arguments == theirs.consumer_arguments
    assert ours.queue_arguments == kombu_declared_arguments(theirs)


# -- Exchange ------------------------------------------------------------------------------


def test_exchange_defaults():
    e = Exchange()
    assert (e.name, e.type, e.durable, e.auto_delete) == ("", "direct", True, False)
    assert e.delivery_mode is None
    assert e.arguments is None
    assert e.passive is False
    assert e.no_declare is False


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((), {}),
        (("media",), {}),
        (("media", "topic"), {}),
        (("media",), {"type": "fanout", "durable": False, "auto_delete": True}),
        (("media",), {"delivery_mode": "transient"}),
        (("media",), {"delivery_mode": "persistent"}),
        (("media",), {"delivery_mode": 1}),
        (("media",), {"arguments": {"alternate-exchange": "ae"}}),
        (("media",), {"passive": True, "no_declare": True}),
        ((None, None), {"durable": None, "auto_delete": None}),
        (("media", ""), {}),
    ],
)
def test_exchange_same_as_kombu(args, kwargs):
    import kombu

    assert_same_exchange(Exchange(*args, **kwargs), kombu.Exchange(*args, **kwargs))


def test_exchange_delivery_modes():
    assert DELIVERY_MODES == {"transient": 1, "persistent": 2}
    assert Exchange("e", delivery_mode="persistent").delivery_mode == 2
    assert Exchange("e", delivery_mode="transient").delivery_mode == 1
    with pytest.raises(KeyError):
        Exchange("e", delivery_mode="bogus")


def test_exchange_equality_and_hash():
    assert Exchange("a") == Exchange("a", "direct")
    assert Exchange("a") != Exchange("a", "topic")
    assert Exchange("a") != Exchange("b")
    assert Exchange("a") != Exchange("a", durable=False)
    assert Exchange("a") != Exchange("a", auto_delete=True)
    assert Exchange("a") != Exchange("a", delivery_mode=1)
    assert Exchange("a") != Exchange("a", arguments={"x": 1})
    assert Exchange("a") != "a"
    # Hashable by name: equal exchanges hash equal; a set keeps one per equal value.
    assert hash(Exchange("a")) == hash(Exchange("a", "topic"))
    assert len({Exchange("a"), Exchange("a"), Exchange("b")}) == 2


def test_exchange_repr_and_str():
    assert repr(Exchange("media")) == "<Exchange media(direct)>"
    assert repr(Exchange("logs", "topic")) == "<Exchange logs(topic)>"
    assert repr(Exchange()) == "<Exchange ''(direct)>"
    assert str(Exchange("media")) == "Exchange media(direct)"


def test_exchange_str_matches_kombu():
    import kombu

    for e in [("media",), ("logs", "topic"), ()]:
        assert str(Exchange(*e)) == str(kombu.Exchange(*e))


def test_exchange_ignores_kombu_channel_but_refuses_unknown_keywords():
    assert Exchange("a", channel=None).name == "a"
    with pytest.raises(TypeError, match="durabel"):
        Exchange("a", durabel=False)


def test_exchange_binding():
    e = Exchange("media", "topic")
    b = e.binding("media.video", arguments={"x": 1})
    assert isinstance(b, Binding)
    assert (b.exchange, b.routing_key, b.arguments) == (e, "media.video", {"x": 1})


def test_exchange_arguments_are_copied():
    args = {"a": 1}
    e = Exchange("e", arguments=args)
    args["a"] = 2
    assert e.arguments == {"a": 1}


# -- Queue ---------------------------------------------------------------------------------


def test_queue_defaults_like_kombu():
    q = Queue("default")
    # kombu: no exchange means the nameless direct exchange and an empty routing key; the
    # router then gives the app's default exchange and key (see test_routing).
    assert q.exchange == Exchange("")
    assert q.routing_key == ""
    assert (q.durable, q.exclusive, q.auto_delete, q.no_ack) == (True, False, False, False)
    assert q.queue_arguments == {}
    assert q.binding_arguments is None
    assert q.consumer_arguments is None
    assert q.bindings == set()
    assert q.alias is None
    assert q.no_declare is False


@pytest.mark.parametrize(
    "make",
    [
        lambda Q, E: Q("default"),
        lambda Q, E: Q(),
        lambda Q, E: Q("videos", E("media"), routing_key="media.video"),
        lambda Q, E: Q("videos", E("media"), "media.video"),
        lambda Q, E: Q("x", "ex"),
        lambda Q, E: Q("x", exchange="ex", routing_key="rk"),
        lambda Q, E: Q("t", E("logs", "topic", durable=False), "*.error"),
        lambda Q, E: Q("p", max_priority=10),
        lambda Q, E: Q("p", expires=5, message_ttl=1.5, max_length=3, max_length_bytes=1000),
        lambda Q, E: Q("p", expires=0.0015),
        lambda Q, E: Q("p", queue_arguments={"x-queue-type": "quorum"}),
        lambda Q, E: Q("p", queue_arguments={"x-max-priority": 3}, max_priority=7),
        lambda Q, E: Q("p", queue_arguments={"x-max-priority": 3}),
        lambda Q, E: Q("e", exclusive=True),
        lambda Q, E: Q("e", exclusive=True, auto_delete=False),
        lambda Q, E: Q("e", durable=False, auto_delete=True),
        lambda Q, E: Q("e", durable=None, auto_delete=None, exclusive=None),
        lambda Q, E: Q("n", no_ack=True),
        lambda Q, E: Q("n", no_ack=None),
        lambda Q, E: Q("a", alias="other"),
        lambda Q, E: Q(
            "b", binding_arguments={"x-match": "all"}, consumer_arguments={"x-priority": 5}
        ),
        lambda Q, E: Q(None, None, None),
    ],
)
def test_queue_same_as_kombu(make):
    import kombu

    assert_same_queue(make(Queue, Exchange), make(kombu.Queue, kombu.Exchange))


def test_queue_with_exchange_name_gets_direct_exchange():
    q = Queue("x", "ex")
    assert q.exchange == Exchange("ex", "direct")


def test_queue_arguments_computed():
    q = Queue("p", max_priority=10, expires=5, message_ttl=1.5, max_length=3, max_length_bytes=99)
    assert q.queue_arguments == {
        "x-expires": 5000,
        "x-message-ttl": 1500,
        "x-max-length": 3,
        "x-max-length-bytes": 99,
        "x-max-priority": 10,
    }
    assert (q.max_priority, q.expires, q.message_ttl, q.max_length) == (10, 5.0, 1.5, 3)


def test_queue_arguments_keep_user_arguments_and_computed_win():
    q = Queue(
        "p", queue_arguments={"x-max-priority": 3, "x-dead-letter-exchange": "dlx"}, max_priority=7
    )
    assert q.queue_arguments == {"x-max-priority": 7, "x-dead-letter-exchange": "dlx"}


def test_queue_arguments_do_not_alias_the_callers_dict():
    args = {"x-queue-type": "quorum"}
    q = Queue("q", queue_arguments=args, max_priority=5)
    assert args == {"x-queue-type": "quorum"}
    assert q.queue_arguments == {"x-queue-type": "quorum", "x-max-priority": 5}


def test_queue_type_convenience():
    assert Queue("q", queue_type="quorum").queue_arguments == {"x-queue-type": "quorum"}
    assert Queue("q", queue_type="quorum").queue_type == "quorum"
    assert Queue("q").queue_type is None


def test_queue_exclusive_implies_auto_delete():
    assert Queue("q", exclusive=True).auto_delete is True


def test_queue_with_bindings_has_no_main_exchange():
    media = Exchange("media", "topic")
    bindings = [binding(media, "media.video"), binding(media, "media.image")]
    q = Queue("media", bindings=bindings)
    assert q.exchange is None
    assert q.bindings == set(bindings)
    # kombu's other spelling: the bindings in place of the exchange.
    assert Queue("media", bindings).bindings == set(bindings)
    assert Queue("media", bindings).exchange is None


def test_queue_bindings_same_as_kombu():
    import kombu

    ours = Queue("m", [binding(Exchange("media", "topic"), "media.*")])
    theirs = kombu.Queue("m", [kombu.binding(kombu.Exchange("media", "topic"), "media.*")])
    assert ours.exchange is None and theirs.exchange is None
    (b,) = ours.bindings
    (kb,) = theirs.bindings
    assert b.routing_key == kb.routing_key
    assert_same_exchange(b.exchange, kb.exchange)


def test_binding_equality_and_repr():
    e = Exchange("media", "topic")
    assert binding(e, "a") == Binding(e, "a")
    assert binding(e, "a") != binding(e, "b")
    assert binding(e, "a") != "a"
    assert len({binding(e, "a"), binding(e, "a")}) == 1
    assert repr(binding(e, "media.video")) == "<binding: media->media.video>"
    assert repr(Binding()) == "<binding: ->>"


def test_binding_repr_matches_kombu():
    import kombu

    ours = binding(Exchange("media", "topic"), "media.video")
    theirs = kombu.binding(kombu.Exchange("media", "topic"), "media.video")
    assert repr(ours) == repr(theirs)


def test_queue_repr():
    q = Queue("videos", Exchange("media"), routing_key="media.video")
    assert repr(q) == "<Queue videos -> <Exchange media(direct)> -> media.video>"
    assert repr(Queue("default")) == "<Queue default -> <Exchange ''(direct)> -> >"
    q = Queue("m", bindings=[binding(Exchange("media"), "media.video")])
    assert repr(q) == "<Queue m -> [<binding: media->media.video>]>"


def test_queue_repr_matches_kombu_without_unbound():
    import kombu

    cases = [
        lambda Q, E: Q("videos", E("media"), routing_key="media.video"),
        lambda Q, E: Q("default"),
        lambda Q, E: Q("t", E("logs", "topic"), "a.#"),
    ]
    for make in cases:
        assert repr(make(Queue, Exchange)) == repr(make(kombu.Queue, kombu.Exchange)).replace(
            "unbound ", ""
        )


def test_queue_equality():
    base = Queue("v", Exchange("media"), "media.video")
    assert base == Queue("v", Exchange("media"), "media.video")
    assert base == Queue("v", "media", "media.video")
    assert base != Queue("w", Exchange("media"), "media.video")
    assert base != Queue("v", Exchange("media", "topic"), "media.video")
    assert base != Queue("v", Exchange("media"), "media.audio")
    assert base != Queue("v", Exchange("media"), "media.video", max_priority=10)
    assert base != Queue("v", Exchange("media"), "media.video", durable=False)
    assert base != Queue("v", Exchange("media"), "media.video", exclusive=True)
    assert base != Queue("v", Exchange("media"), "media.video", auto_delete=True)
    assert base != Queue("v", Exchange("media"), "media.video", binding_arguments={"a": 1})
    assert base != Queue("v", Exchange("media"), "media.video", consumer_arguments={"a": 1})
    assert base != "v"


def test_queue_hashable_by_name():
    assert hash(Queue("v")) == hash(Queue("v", "other", "rk"))
    assert hash(Queue("v")) != hash(Exchange("v"))
    assert {Queue("a"): 1}[Queue("a")] == 1
    assert len({Queue("a"), Queue("a"), Queue("b")}) == 2


def test_queue_refuses_unknown_keywords_and_ignores_channel():
    assert Queue("a", channel=None, on_declared=None).name == "a"
    with pytest.raises(TypeError, match="max_priorty"):
        Queue("a", max_priorty=10)


def test_queue_options_after_routing_key_are_keyword_only():
    # kombu's fourth positional is `channel`: refuse it rather than take it as `durable`.
    with pytest.raises(TypeError):
        Queue("a", "e", "rk", False)  # type: ignore[misc]


def test_queue_copy_and_pickle():
    q = Queue("v", Exchange("media", "topic"), "media.#", max_priority=5, alias="vid")
    c = copy.copy(q)
    assert c == q and c is not q
    p = pickle.loads(pickle.dumps(q))
    assert p == q
    assert p.alias == "vid"
    assert repr(p) == repr(q)


# -- Queue.from_dict (task_queues in dict form) -----------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("a", {}),
        ("a", {"exchange": "ax", "exchange_type": "topic", "routing_key": "a.*"}),
        ("a", {"exchange": "ax", "binding_key": "bk", "routing_key": "rk"}),
        ("a", {"durable": False, "auto_delete": True}),
        ("a", {"durable": False, "exchange_durable": True, "queue_auto_delete": True}),
        ("a", {"queue_durable": False, "exchange_auto_delete": True}),
        ("a", {"delivery_mode": "transient", "exchange_arguments": {"x": 1}}),
        ("a", {"max_priority": 10, "expires": 60, "message_ttl": 5, "max_length": 7}),
        ("a", {"queue_arguments": {"x-queue-type": "quorum"}, "no_ack": True, "alias": "al"}),
        ("a", {"exclusive": True, "consumer_arguments": {"x-priority": 1}}),
    ],
)
def test_queue_from_dict_same_as_kombu(name, options):
    import kombu

    assert_same_queue(Queue.from_dict(name, **options), kombu.Queue.from_dict(name, **options))


def test_queue_from_dict_accepts_an_exchange_object():
    q = Queue.from_dict("a", exchange=Exchange("ax", "fanout"), routing_key="k")
    assert q.exchange == Exchange("ax", "fanout")
    assert q.routing_key == "k"


def test_queue_from_dict_refuses_unknown_keys():
    with pytest.raises(TypeError, match="bogus"):
        Queue.from_dict("a", bogus=1)


# -- Broadcast -----------------------------------------------------------------------------


def test_broadcast_defaults():
    b = Broadcast("broadcast_tasks")
    assert isinstance(b, Queue)
    assert b.name.startswith("bcast.") and len(b.name) == len("bcast.") + 36
    assert b.queue == b.name
    assert b.alias == "broadcast_tasks"
    assert b.exchange == Exchange("broadcast_tasks", "fanout")
    assert b.auto_delete is True
    assert b.routing_key == ""
    assert Broadcast("x").name != Broadcast("x").name


def test_broadcast_named_queue_and_unique():
    b = Broadcast("bc", "myq")
    assert (b.name, b.queue, b.alias) == ("myq", "myq", "bc")
    u = Broadcast("bc", queue="myq", unique=True)
    assert u.name.startswith("myq.") and u.name != "myq"
    assert Broadcast("bc", unique=True).name.startswith("bcast.")


def test_broadcast_options():
    e = Exchange("custom", "fanout", durable=False)
    b = Broadcast("bc", "q", exchange=e, alias="al", auto_delete=False, max_priority=3)
    assert b.exchange is e
    assert b.alias == "al"
    assert b.auto_delete is False
    assert b.queue_arguments == {"x-max-priority": 3}


def test_broadcast_same_as_kombu():
    from kombu import Exchange as KExchange
    from kombu.common import Broadcast as KBroadcast

    assert_same_queue(Broadcast("bc", "myq"), KBroadcast("bc", "myq"))
    assert_same_queue(
        Broadcast("bc", "myq", exchange=Exchange("e", "fanout"), alias="al", auto_delete=False),
        KBroadcast("bc", "myq", exchange=KExchange("e", "fanout"), alias="al", auto_delete=False),
    )
    ours, theirs = Broadcast("bc"), KBroadcast("bc")
    assert ours.name.split(".")[0] == theirs.name.split(".")[0] == "bcast"


def test_broadcast_repr():
    assert repr(Broadcast("bc", "q")) == "<Queue q -> <Exchange bc(fanout)> -> >"
