"""Router: known queues, task_routes in every form, precedence, and the resulting Route.

The parity tests at the end run the same settings through real Celery (a test dependency,
imported inside tests only) and compare what it would publish and declare with ours.
"""

from __future__ import annotations

import contextlib
import re
import sys
import textwrap

import pytest

from celeriac.brokers.base import Route
from celeriac.entities import Broadcast, Exchange, Queue, binding
from celeriac.exceptions import ImproperlyConfigured, QueueNotFound
from celeriac.routing import MapRoute, Router

DEFAULTS = {
    "task_queues": None,
    "task_routes": None,
    "task_default_queue": "celery",
    "task_default_exchange": None,
    "task_default_exchange_type": "direct",
    "task_default_routing_key": None,
    "task_create_missing_queues": True,
    "task_queue_max_priority": None,
    "task_default_priority": None,
}


def make_router(**settings):
    return Router({**DEFAULTS, **settings})


def route_of(router, name="proj.tasks.add", options=None, args=(), kwargs=None, task=None):
    route, _ = router.route(name, args, kwargs or {}, options or {}, task=task)
    return route


def anon(queue):
    """What Celery publishes for a direct queue: the anonymous exchange, key = queue name."""
    return Route(queue=queue, exchange="", routing_key=queue)


# -- known queues --------------------------------------------------------------------------


def test_default_queue_when_task_queues_unset():
    router = make_router()
    assert list(router.queues) == ["celery"]
    q = router.queues["celery"]
    assert q == Queue("celery", Exchange("celery", "direct"), "celery")


def test_router_accepts_a_sparse_mapping():
    router = Router({})
    assert router.queues["celery"] == Queue("celery", Exchange("celery"), "celery")
    assert route_of(router) == anon("celery")


@pytest.mark.parametrize("empty", [None, [], (), {}])
def test_empty_task_queues_means_default_queue(empty):
    assert list(make_router(task_queues=empty).queues) == ["celery"]


def test_default_queue_from_settings():
    router = make_router(
        task_default_queue="work",
        task_default_exchange="wx",
        task_default_exchange_type="topic",
        task_default_routing_key="work.#",
    )
    assert router.queues == {"work": Queue("work", Exchange("wx", "topic"), "work.#")}
    assert router.default_exchange == Exchange("wx", "topic")
    assert router.default_routing_key == "work.#"


def test_default_exchange_and_key_default_to_queue_name():
    router = make_router(task_default_queue="work")
    assert router.queues["work"] == Queue("work", Exchange("work"), "work")


def test_default_queue_type_quorum():
    router = make_router(task_default_queue_type="quorum")
    assert router.queues["celery"].queue_arguments == {"x-queue-type": "quorum"}
    assert make_router(task_default_queue_type="classic").queues["celery"].queue_arguments == {}
    with pytest.raises(ImproperlyConfigured, match="task_default_queue_type"):
        make_router(task_default_queue_type="stream")


def test_task_queues_list_normalised_like_celery():
    router = make_router(
        task_queues=[
            Queue("default"),
            Queue("videos", Exchange("media"), routing_key="media.video"),
            Queue("noex", routing_key="rk"),
            Queue("anon", Exchange(""), "k"),
        ]
    )
    assert list(router.queues) == ["default", "videos", "noex", "anon"]
    # Celery binds a queue that names no exchange/key to the default exchange and key.
    assert router.queues["default"] == Queue("default", Exchange("celery"), "celery")
    assert router.queues["videos"] == Queue("videos", Exchange("media"), "media.video")
    assert router.queues["noex"] == Queue("noex", Exchange("celery"), "rk")
    assert router.queues["anon"] == Queue("anon", Exchange("celery"), "k")


def test_task_queues_single_queue():
    assert list(make_router(task_queues=Queue("only")).queues) == ["only"]


def test_task_queues_objects_are_not_mutated():
    q = Queue("default")
    router = make_router(task_queues=[q], task_queue_max_priority=10)
    assert q.exchange == Exchange("")
    assert q.routing_key == ""
    assert q.queue_arguments == {}
    assert router.queues["default"] is not q


def test_task_queues_dict_form():
    router = make_router(
        task_queues={
            "a": {"exchange": "ax", "exchange_type": "topic", "routing_key": "a.*"},
            "b": {},
            "c": {"binding_key": "bk"},
            "d": None,
            "e": Queue("e-real", Exchange("ex"), "ek"),
        }
    )
    assert router.queues["a"] == Queue("a", Exchange("ax", "topic"), "a.*")
    # Celery's dict form binds a queue with no key by its own name, to the default exchange.
    assert router.queues["b"] == Queue("b", Exchange("celery"), "b")
    assert router.queues["c"] == Queue("c", Exchange("celery"), "bk")
    assert router.queues["d"] == Queue("d", Exchange("celery"), "d")
    # A Queue value is kept under its own name.
    assert router.queues["e-real"] == Queue("e-real", Exchange("ex"), "ek")
    assert "e" not in router.queues


def test_task_queues_dict_form_bad_option():
    with pytest.raises(ImproperlyConfigured, match="task_queues\\['a'\\]"):
        make_router(task_queues={"a": {"bogus": 1}})


def test_task_queues_must_hold_celeriac_queues():
    with pytest.raises(ImproperlyConfigured, match="from celeriac import Queue"):
        make_router(task_queues=["a"])


def test_task_queues_from_kombu_are_refused():
    import kombu

    with pytest.raises(ImproperlyConfigured):
        make_router(task_queues=[kombu.Queue("a")])


def test_queue_max_priority_fills_in_missing_x_max_priority():
    router = make_router(
        task_queues=[
            Queue("a"),
            Queue("b", max_priority=3),
            Queue("c", queue_arguments={"x-max-priority": 5}),
        ],
        task_queue_max_priority=10,
    )
    assert router.queues["a"].queue_arguments == {"x-max-priority": 10}
    assert router.queues["a"].max_priority == 10
    assert router.queues["b"].queue_arguments == {"x-max-priority": 3}
    assert router.queues["c"].queue_arguments == {"x-max-priority": 5}
    # Queues created on the fly get it too.
    assert router.get_queue("new").queue_arguments == {"x-max-priority": 10}


def test_queue_max_priority_on_default_queue():
    router = make_router(task_queue_max_priority=10)
    assert router.queues["celery"].queue_arguments == {"x-max-priority": 10}


def test_bindings_queue_gets_default_exchange_like_celery():
    media = Exchange("media", "topic")
    router = make_router(task_queues=[Queue("m", [binding(media, "media.*")])])
    q = router.queues["m"]
    assert q.exchange == Exchange("celery")
    assert q.routing_key == "celery"
    assert q.bindings == {binding(media, "media.*")}


# -- get_queue / create missing ------------------------------------------------------------


def test_get_queue_creates_missing_queue():
    router = make_router()
    q = router.get_queue("new")
    assert q == Queue("new", Exchange("new", "direct"), "new")
    assert router.queues["new"] is q
    assert router.get_queue("new") is q


def test_get_queue_missing_refused():
    router = make_router(task_create_missing_queues=False)
    with pytest.raises(QueueNotFound, match="'new' missing from task_queues") as info:
        router.get_queue("new")
    assert isinstance(info.value, KeyError)
    assert "task_create_missing_queues" in str(info.value)
    assert "new" not in router.queues


def test_create_missing_none_means_default_true():
    assert make_router(task_create_missing_queues=None).get_queue("x").name == "x"


def test_missing_queue_exchange_and_queue_type():
    router = make_router(
        task_create_missing_queue_exchange_type="topic",
        task_create_missing_queue_type="quorum",
    )
    q = router.get_queue("new")
    assert q.exchange == Exchange("new", "topic")
    assert q.queue_arguments == {"x-queue-type": "quorum"}
    with pytest.raises(ImproperlyConfigured, match="task_create_missing_queue_type"):
        make_router(task_create_missing_queue_type="bogus")


def test_get_queue_by_alias():
    b = Broadcast("broadcast_tasks")
    router = make_router(task_queues=[Queue("celery"), b])
    assert router.get_queue("broadcast_tasks").name == b.name
    assert router.get_queue(b.name).name == b.name


# -- select_queues (worker -Q) ---------------------------------------------------------------


def test_select_queues_known():
    router = make_router(task_queues=[Queue("a"), Queue("b"), Queue("c")])
    assert [q.name for q in router.select_queues(["c", "a"])] == ["c", "a"]
    assert [q.name for q in router.select_queues("b,a")] == ["b", "a"]
    assert [q.name for q in router.select_queues(" a , b ,")] == ["a", "b"]
    assert [q.name for q in router.select_queues(["a", "a"])] == ["a"]
    assert router.select_queues(["a"])[0] is router.queues["a"]


def test_select_queues_default_is_configured_queues():
    router = make_router(task_queues=[Queue("a"), Queue("b")])
    route_of(router, options={"queue": "made_later"})
    assert "made_later" in router.queues
    assert [q.name for q in router.select_queues()] == ["a", "b"]
    assert [q.name for q in router.select_queues([])] == ["a", "b"]
    assert [q.name for q in router.select_queues("")] == ["a", "b"]


def test_select_queues_creates_missing():
    router = make_router(task_queues=[Queue("a")])
    selected = router.select_queues(["a", "new"])
    assert [q.name for q in selected] == ["a", "new"]
    assert selected[1] == Queue("new", Exchange("new"), "new")
    assert "new" in router.queues


def test_select_queues_missing_refused():
    router = make_router(task_queues=[Queue("a")], task_create_missing_queues=False)
    with pytest.raises(QueueNotFound, match="'nope'"):
        router.select_queues(["a", "nope"])


def test_select_queues_by_alias():
    b = Broadcast("broadcast_tasks")
    router = make_router(task_queues=[Queue("celery"), b])
    assert [q.name for q in router.select_queues(["celery", "broadcast_tasks"])] == [
        "celery",
        b.name,
    ]


# -- the destination -----------------------------------------------------------------------


def test_default_route():
    router = make_router()
    assert route_of(router) == Route(
        queue="celery", exchange="", routing_key="celery", exchange_type="direct"
    )


def test_tutorial_apply_async_queue_countdown():
    # add.apply_async((2, 2), queue='my_queue', countdown=10)
    router = make_router()
    route, options = router.route("tasks.add", (2, 2), {}, {"queue": "my_queue", "countdown": 10})
    assert route == Route(queue="my_queue", exchange="", routing_key="my_queue")
    assert options["countdown"] == 10
    assert router.queues["my_queue"] == Queue("my_queue", Exchange("my_queue"), "my_queue")


def test_direct_queue_with_own_exchange_still_goes_through_anonymous_exchange():
    router = make_router(
        task_queues=[Queue("videos", Exchange("media"), routing_key="media.video")]
    )
    assert route_of(router, options={"queue": "videos"}) == anon("videos")


def test_queue_object_in_options():
    router = make_router()
    q = Queue("adhoc", Exchange("adhoc-x", "topic"), "adhoc.#")
    assert route_of(router, options={"queue": q}) == Route("adhoc", "adhoc-x", "adhoc.#", "topic")
    assert router.queues["adhoc"] is q


def test_queue_object_in_options_does_not_replace_known_queue():
    router = make_router(task_queues=[Queue("a")])
    known = router.queues["a"]
    route_of(router, options={"queue": Queue("a", Exchange("other"))})
    assert router.queues["a"] is known


def test_unknown_queue_in_options_refused():
    router = make_router(task_create_missing_queues=False)
    with pytest.raises(QueueNotFound, match="'my_queue'"):
        route_of(router, options={"queue": "my_queue"})


def test_default_queue_missing_from_task_queues():
    router = make_router(task_queues=[Queue("a")])
    assert route_of(router) == anon("celery")
    strict = make_router(task_queues=[Queue("a")], task_create_missing_queues=False)
    with pytest.raises(QueueNotFound, match="'celery'"):
        route_of(strict)


def test_explicit_exchange_and_routing_key():
    router = make_router()
    route = route_of(router, options={"exchange": "e", "routing_key": "k"})
    assert route == Route(queue="", exchange="e", routing_key="k", exchange_type="direct")


def test_explicit_exchange_and_key_with_queue():
    router = make_router(task_queues=[Queue("a")])
    route = route_of(router, options={"queue": "a", "exchange": "e", "routing_key": "k"})
    assert route == Route(queue="a", exchange="e", routing_key="k", exchange_type="direct")


def test_direct_routing_key_without_exchange_goes_to_queue():
    # Celery ignores a routing key on a direct queue unless an exchange is given too.
    router = make_router(task_queues=[Queue("a")])
    assert route_of(router, options={"queue": "a", "routing_key": "zzz"}) == anon("a")
    assert route_of(router, options={"routing_key": "zzz"}) == anon("celery")


def test_direct_exchange_without_routing_key_goes_to_default_queue():
    router = make_router()
    assert route_of(router, options={"exchange": "e"}) == anon("celery")
    assert route_of(router, options={"exchange": ""}) == anon("celery")


def test_exchange_object_in_options():
    router = make_router()
    route = route_of(router, options={"exchange": Exchange("logs", "topic")})
    assert route == Route(queue="", exchange="logs", routing_key="", exchange_type="topic")
    route = route_of(router, options={"exchange": Exchange("logs", "topic"), "routing_key": "a.b"})
    assert route == Route(queue="", exchange="logs", routing_key="a.b", exchange_type="topic")


def test_exchange_type_option():
    router = make_router()
    route = route_of(router, options={"exchange": "logs", "exchange_type": "fanout"})
    assert route == Route(queue="", exchange="logs", routing_key="", exchange_type="fanout")


def test_exchange_type_option_on_queue_overrides_queue_exchange_type():
    router = make_router(task_queues=[Queue("t", Exchange("tx", "topic"), "t.#")])
    assert route_of(router, options={"queue": "t", "exchange_type": "direct"}) == anon("t")


# -- topic and fanout ------------------------------------------------------------------------


TOPIC_SETTINGS = {
    "task_queues": [
        Queue("default", routing_key="task.#"),
        Queue("feed_tasks", routing_key="feed.#"),
    ],
    "task_default_queue": "default",
    "task_default_exchange": "tasks",
    "task_default_exchange_type": "topic",
    "task_default_routing_key": "task.default",
}


def test_topic_queues_get_default_topic_exchange():
    router = make_router(**TOPIC_SETTINGS)
    assert router.queues["default"] == Queue("default", Exchange("tasks", "topic"), "task.#")
    assert router.queues["feed_tasks"] == Queue("feed_tasks", Exchange("tasks", "topic"), "feed.#")


def test_topic_route_with_routing_key_override():
    router = make_router(
        **TOPIC_SETTINGS,
        task_routes={
            "feeds.tasks.import_feed": {"queue": "feed_tasks", "routing_key": "feed.import"}
        },
    )
    assert route_of(router, "feeds.tasks.import_feed") == Route(
        queue="feed_tasks", exchange="tasks", routing_key="feed.import", exchange_type="topic"
    )


def test_topic_default_queue_uses_its_binding_key():
    # What Celery does: the queue's own routing key, not task_default_routing_key.
    router = make_router(**TOPIC_SETTINGS)
    assert route_of(router, "other.task") == Route("default", "tasks", "task.#", "topic")


def test_topic_queue_without_key_uses_default_routing_key():
    router = make_router(**TOPIC_SETTINGS)
    assert route_of(router, options={"queue": "feed_tasks", "routing_key": "feed.x"}) == Route(
        "feed_tasks", "tasks", "feed.x", "topic"
    )


def test_topic_explicit_exchange_without_key():
    router = make_router(task_queues=[Queue("t", Exchange("tx", "topic"), "t.#")])
    route = route_of(router, options={"queue": "t", "exchange": "other"})
    assert route == Route(queue="t", exchange="other", routing_key="", exchange_type="topic")


def test_route_to_exchange_only():
    router = make_router(
        task_routes={"t.*": {"exchange": "logs", "exchange_type": "topic", "routing_key": "t.x"}}
    )
    assert route_of(router, "t.a") == Route(
        queue="", exchange="logs", routing_key="t.x", exchange_type="topic"
    )


def test_broadcast_route_by_alias():
    b = Broadcast("broadcast_tasks")
    router = make_router(
        task_queues=[Queue("celery"), b],
        task_routes={
            "tasks.reload_cache": {"queue": "broadcast_tasks", "exchange": "broadcast_tasks"}
        },
    )
    assert route_of(router, "tasks.reload_cache") == Route(
        queue=b.name, exchange="broadcast_tasks", routing_key="", exchange_type="fanout"
    )
    # Without the exchange in the route, the queue's own exchange and key are used.
    assert route_of(router, options={"queue": "broadcast_tasks"}) == Route(
        queue=b.name, exchange="broadcast_tasks", routing_key="celery", exchange_type="fanout"
    )


def test_non_direct_queue_without_exchange_name_uses_default_exchange():
    router = make_router()
    q = Queue("odd", Exchange("", "topic"), "odd.#")
    assert route_of(router, options={"queue": q}) == Route("odd", "celery", "odd.#", "topic")


# -- task_routes forms -----------------------------------------------------------------------


def test_routes_dict_exact_name():
    router = make_router(task_routes={"proj.tasks.add": {"queue": "math"}})
    assert route_of(router, "proj.tasks.add") == anon("math")
    assert route_of(router, "proj.tasks.sub") == anon("celery")


def test_routes_dict_plain_string_value():
    router = make_router(task_routes={"proj.tasks.add": "math", "proj.*": "others"})
    assert route_of(router, "proj.tasks.add") == anon("math")
    assert route_of(router, "proj.tasks.sub") == anon("others")


def test_routes_dict_queue_object_value():
    q = Queue("special", Exchange("sx", "topic"), "s.#")
    router = make_router(task_routes={"a": q, "b": {"queue": q}})
    assert route_of(router, "a") == Route("special", "sx", "s.#", "topic")
    assert route_of(router, "b") == Route("special", "sx", "s.#", "topic")


@pytest.mark.parametrize(
    "name, queue",
    [
        ("proj.tasks.add", "proj"),
        ("proj.tasks.deep.add", "proj"),
        ("users.send_mail", "mail"),
        ("a.b.send_mail", "mail"),
        ("proj.send_mail", "proj"),  # 'proj.*' comes first
        ("send_mail", "celery"),  # '*.send_mail' needs a dot
        ("other.add", "celery"),
    ],
)
def test_routes_globs(name, queue):
    router = make_router(
        task_routes={"proj.*": {"queue": "proj"}, "*.send_mail": {"queue": "mail"}}
    )
    assert route_of(router, name) == anon(queue)


def test_routes_glob_only_star_makes_a_glob():
    # As in Celery: only '*' turns a key into a glob; '?' and '[...]' are literal names.
    router = make_router(task_routes={"a?c": "q1", "[ab]": "q2"})
    assert route_of(router, "abc") == anon("celery")
    assert route_of(router, "a?c") == anon("q1")
    assert route_of(router, "[ab]") == anon("q2")


def test_routes_glob_matches_whole_name():
    router = make_router(task_routes={"proj.*.add": "q"})
    assert route_of(router, "proj.tasks.add") == anon("q")
    assert route_of(router, "proj.tasks.add2") == anon("celery")


def test_routes_regex():
    router = make_router(task_routes={re.compile(r"(video|image)\.tasks\..*"): {"queue": "media"}})
    assert route_of(router, "video.tasks.encode") == anon("media")
    assert route_of(router, "image.tasks.thumb") == anon("media")
    assert route_of(router, "audio.tasks.x") == anon("celery")
    # re.match: anchored at the start only.
    assert route_of(router, "xvideo.tasks.encode") == anon("celery")


def test_routes_exact_name_beats_earlier_patterns():
    router = make_router(
        task_routes={"proj.*": "glob", re.compile("proj"): "regex", "proj.tasks.add": "exact"}
    )
    assert route_of(router, "proj.tasks.add") == anon("exact")
    assert route_of(router, "proj.tasks.sub") == anon("glob")


def test_routes_glob_before_regex_in_insertion_order():
    router = make_router(task_routes={"proj.*": "glob", re.compile(r"proj\..*"): "regex"})
    assert route_of(router, "proj.x") == anon("glob")


def test_routes_regex_before_glob_in_insertion_order():
    router = make_router(task_routes={re.compile(r"proj\..*"): "regex", "proj.*": "glob"})
    assert route_of(router, "proj.x") == anon("regex")


def test_routes_list_of_dicts_in_order():
    router = make_router(
        task_routes=[
            {"a.*": {"queue": "first"}},
            {"a.x": {"queue": "second"}, "b.*": {"queue": "b"}},
        ]
    )
    assert route_of(router, "a.x") == anon("first")
    assert route_of(router, "b.y") == anon("b")
    assert route_of(router, "c") == anon("celery")


def test_routes_tuple_holding_list_of_pairs():
    # The form in Celery's docs, to keep patterns in order.
    router = make_router(
        task_routes=(
            [
                ("feed.tasks.*", {"queue": "feeds"}),
                ("web.tasks.*", {"queue": "web"}),
                (re.compile(r"(video|image)\.tasks\..*"), {"queue": "media"}),
            ],
        )
    )
    assert route_of(router, "feed.tasks.x") == anon("feeds")
    assert route_of(router, "web.tasks.x") == anon("web")
    assert route_of(router, "video.tasks.x") == anon("media")


def test_routes_top_level_list_of_pairs_is_refused():
    with pytest.raises(ImproperlyConfigured, match="pairs"):
        make_router(task_routes=[("feed.tasks.*", {"queue": "feeds"})])


@pytest.mark.parametrize(
    "task_routes, match",
    [
        ({"a": 5}, "a route must be"),
        ({"a": None}, "a route must be"),
        ({5: "q"}, "a key must be"),
        (42, "expected a dict"),
        ([{"a": "q"}, 42], "expected a dict"),
    ],
)
def test_routes_malformed(task_routes, match):
    with pytest.raises(ImproperlyConfigured, match=match):
        make_router(task_routes=task_routes)


def test_routes_function_forms():
    calls = []

    def route_task(name, args, kwargs, options, task=None, **kw):
        calls.append((name, args, kwargs, options, task, kw))
        if name == "none":
            return None
        if name == "string":
            return "video"
        if name == "queue":
            return {"queue": "q"}
        if name == "exchange":
            return {"exchange": "e", "routing_key": "k"}
        if name == "priority":
            return {"queue": "x", "priority": 5}
        return None

    router = make_router(task_routes=(route_task,))
    task = object()
    route, _ = router.route("none", (1, 2), {"k": 3}, {"countdown": 1}, task=task)
    assert route == anon("celery")
    assert calls[-1] == ("none", (1, 2), {"k": 3}, {"countdown": 1}, task, {})
    assert route_of(router, "string") == anon("video")
    assert route_of(router, "queue") == anon("q")
    assert route_of(router, "exchange") == Route("", "e", "k", "direct")
    route, options = router.route("priority", (), {}, {})
    assert route == anon("x")
    assert options["priority"] == 5


def test_routes_single_function_not_in_a_list():
    router = make_router(task_routes=lambda name, args, kwargs, options, task=None, **kw: "q")
    assert route_of(router) == anon("q")


def test_routes_function_cannot_mutate_callers_options():
    def route_task(name, args, kwargs, options, task=None, **kw):
        options["queue"] = "hijack"
        return None

    router = make_router(task_routes=[route_task])
    options = {"countdown": 1}
    assert route_of(router, options=options) == anon("celery")
    assert options == {"countdown": 1}


def test_routes_function_none_falls_through_to_next_router():
    router = make_router(
        task_routes=[lambda *a, **k: None, {"t": "from_map"}, lambda *a, **k: "never"]
    )
    assert route_of(router, "t") == anon("from_map")
    assert route_of(router, "u") == anon("never")


def test_routes_empty_answer_stops_lookup_and_uses_default():
    router = make_router(task_routes=[lambda *a, **k: {}, lambda *a, **k: "never"])
    assert route_of(router) == anon("celery")


def test_routes_function_bad_answer():
    router = make_router(task_routes=[lambda *a, **k: 42])
    with pytest.raises(ImproperlyConfigured, match="a route must be"):
        route_of(router)


def test_routes_object_with_route_for_task():
    class OldRouter:
        def __init__(self):
            self.calls = []

        def route_for_task(self, task, args=None, kwargs=None):
            self.calls.append((task, args, kwargs))
            return {"queue": "legacy"} if task.startswith("old.") else None

    old = OldRouter()
    router = make_router(task_routes=[old])
    assert route_of(router, "old.x", args=(1,), kwargs={"a": 1}) == anon("legacy")
    assert old.calls == [("old.x", (1,), {"a": 1})]
    assert route_of(router, "new.x") == anon("celery")


def test_routes_unknown_queue_refused_or_created():
    routes = {"a": "nowhere"}
    assert route_of(make_router(task_routes=routes), "a") == anon("nowhere")
    strict = make_router(task_routes=routes, task_create_missing_queues=False)
    with pytest.raises(QueueNotFound, match="'nowhere'"):
        route_of(strict, "a")


# -- routers named by import path ------------------------------------------------------------


@pytest.fixture
def router_module(tmp_path, monkeypatch):
    source = textwrap.dedent(
        """
        IMPORTED = True

        def route_task(name, args, kwargs, options, task=None, **kw):
            if name.startswith("feed."):
                return {"queue": "feeds"}
            return None

        class OldStyle:
            def route_for_task(self, task, args=None, kwargs=None):
                return "old" if task == "legacy" else None

        not_a_router = 42
        """
    )
    (tmp_path / "celeriac_test_routers.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "celeriac_test_routers"
    sys.modules.pop("celeriac_test_routers", None)


@pytest.mark.parametrize("sep", [":", "."])
def test_routes_import_path(router_module, sep):
    router = make_router(task_routes=(f"{router_module}{sep}route_task",))
    # Imported lazily: the router module may import the app that builds the Router.
    assert router_module not in sys.modules
    assert route_of(router, "feed.update") == anon("feeds")
    assert router_module in sys.modules
    assert route_of(router, "other") == anon("celery")


def test_routes_single_import_path(router_module):
    router = make_router(task_routes=f"{router_module}.route_task")
    assert route_of(router, "feed.x") == anon("feeds")


def test_routes_import_path_old_style_class_is_instantiated(router_module):
    router = make_router(task_routes=[f"{router_module}:OldStyle"])
    assert route_of(router, "legacy") == anon("old")
    assert route_of(router, "other") == anon("celery")


@pytest.mark.parametrize(
    "path",
    [
        "celeriac_no_such_module:route",
        "celeriac_test_routers:missing",
        "nodots",
        "celeriac_test_routers.not_a_router",
    ],
)
def test_routes_import_path_errors(router_module, path):
    router = make_router(task_routes=[path])
    with pytest.raises(ImproperlyConfigured, match="task_routes"):
        route_of(router)


# -- precedence ------------------------------------------------------------------------------


def test_call_queue_beats_task_routes():
    router = make_router(task_routes={"t": {"queue": "routed"}})
    assert route_of(router, "t", options={"queue": "explicit"}) == anon("explicit")


def test_task_own_queue_beats_task_routes():
    # The caller merges the task's own options (Task.queue) under the call's.
    router = make_router(task_routes={"t": {"queue": "routed"}})
    assert route_of(router, "t", options={"queue": "task_attr"}) == anon("task_attr")


def test_task_routes_beat_default_queue():
    router = make_router(task_routes={"t": {"queue": "routed"}})
    assert route_of(router, "t") == anon("routed")


def test_none_options_do_not_override_route():
    router = make_router(task_routes={"t": {"queue": "routed", "priority": 4}})
    route, options = router.route("t", (), {}, {"queue": None, "priority": None, "countdown": None})
    assert route == anon("routed")
    assert options["priority"] == 4
    assert "countdown" not in options


def test_call_options_merge_key_by_key_over_route():
    # As Celery's lpmerge: the route's other keys stay when the call names another queue.
    router = make_router(
        task_queues=[
            Queue("t", Exchange("tx", "topic"), "t.#"),
            Queue("u", Exchange("tx", "topic"), "u.#"),
        ],
        task_routes={"job": {"queue": "t", "routing_key": "t.special", "priority": 3}},
    )
    route, options = router.route("job", (), {}, {"queue": "u"})
    assert route == Route("u", "tx", "t.special", "topic")
    assert options["priority"] == 3


def test_route_extra_options_returned():
    router = make_router(task_routes={"t": {"queue": "q", "serializer": "pickle", "expires": 5}})
    _, options = router.route("t", (), {}, {"expires": 10})
    assert options["serializer"] == "pickle"
    assert options["expires"] == 10


def test_returned_options_drop_destination_keys():
    router = make_router(task_routes={"t": {"queue": "q", "exchange_type": "direct"}})
    _, options = router.route("t", (), {}, {"exchange": None, "routing_key": None, "countdown": 3})
    assert options == {"countdown": 3, "priority": None}


def test_callers_options_not_mutated():
    router = make_router()
    options = {"queue": "a", "priority": None}
    router.route("t", (), {}, options)
    assert options == {"queue": "a", "priority": None}


# -- priority and delivery mode ------------------------------------------------------------


@pytest.mark.parametrize(
    "call, route_priority, default, expected",
    [
        (9, 5, 1, 9),
        (0, 5, 1, 0),
        (None, 5, 1, 5),
        (None, None, 1, 1),
        (None, None, None, None),
        (7, None, None, 7),
    ],
)
def test_priority_precedence(call, route_priority, default, expected):
    route = {"queue": "q"} if route_priority is None else {"queue": "q", "priority": route_priority}
    router = make_router(task_routes={"t": route}, task_default_priority=default)
    _, options = router.route("t", (), {}, {"priority": call})
    assert options["priority"] == expected


def test_delivery_mode_from_queue_exchange():
    router = make_router(task_queues=[Queue("fast", Exchange("fast", delivery_mode="transient"))])
    _, options = router.route("t", (), {}, {"queue": "fast"})
    assert options["delivery_mode"] == 1
    _, options = router.route("t", (), {}, {"queue": "fast", "delivery_mode": 2})
    assert options["delivery_mode"] == 2
    _, options = router.route("t", (), {}, {})
    assert "delivery_mode" not in options


# -- MapRoute directly -----------------------------------------------------------------------


def test_map_route_returns_fresh_dicts():
    m = MapRoute({"a": {"queue": "q"}})
    first = m("a")
    first["queue"] = "changed"
    assert m("a") == {"queue": "q"}
    assert m("b") is None
    assert "a" in repr(m)


def test_map_route_from_pairs():
    m = MapRoute([("a.*", "q"), (re.compile("b"), {"queue": "r"})])
    assert m("a.x") == {"queue": "q"}
    assert m("bb") == {"queue": "r"}


# -- parity with real Celery ---------------------------------------------------------------


class _FakeProducer:
    """Records what Celery's send_task_message would publish."""

    def __init__(self):
        self.calls = []
        self.connection = self

    def _reraise_as_library_errors(self):
        return contextlib.nullcontext()

    def publish(self, body, **kwargs):
        self.calls.append(kwargs)


def _celery_app(make_settings):
    import kombu
    from celery import Celery
    from kombu.common import Broadcast as KBroadcast

    app = Celery(set_as_current=False, broker="memory://")
    app.conf.update(make_settings(kombu.Queue, kombu.Exchange, KBroadcast))
    return app


def _celery_publish(make_settings, name, options):
    app = _celery_app(make_settings)
    producer = _FakeProducer()
    app.send_task(name, (1,), {}, producer=producer, **options)
    sent = producer.calls[-1]
    exchange = getattr(sent["exchange"], "name", sent["exchange"])
    return exchange, sent["routing_key"] or "", sent.get("priority")


def _route_fn(name, args, kwargs, options, task=None, **kw):
    if name == "fn.str":
        return "fnq"
    if name == "fn.dict":
        return {"queue": "fnq", "priority": 6}
    if name == "fn.exchange":
        return {"exchange": "ex", "routing_key": "rk"}
    return None


PARITY_SETTINGS = {
    "defaults": lambda Q, E, B: {},
    "routes": lambda Q, E, B: {
        "task_routes": (
            {
                "exact.t": {"queue": "exactq"},
                "glob.*": "globq",
                re.compile(r"re\..*"): {"queue": "req", "priority": 2},
            },
            _route_fn,
        )
    },
    "topic": lambda Q, E, B: {
        "task_queues": [Q("default", routing_key="task.#"), Q("feed_tasks", routing_key="feed.#")],
        "task_default_queue": "default",
        "task_default_exchange": "tasks",
        "task_default_exchange_type": "topic",
        "task_default_routing_key": "task.default",
        "task_routes": {"feeds.*": {"queue": "feed_tasks", "routing_key": "feed.import"}},
    },
    "mixed": lambda Q, E, B: {
        "task_queues": [
            Q("celery"),
            Q("videos", E("media"), routing_key="media.video"),
            Q("logs", E("logx", "topic"), routing_key="log.#"),
            B("bcast_ex", "bq"),
        ],
        "task_queue_max_priority": 10,
        "task_routes": {
            "v.*": "videos",
            "l.*": {"queue": "logs"},
            "b.*": {"queue": "bcast_ex", "exchange": "bcast_ex"},
        },
    },
}

PARITY_CALLS = [
    ("defaults", "t", {}),
    ("defaults", "t", {"queue": "my_queue", "countdown": 10}),
    ("defaults", "t", {"priority": 7}),
    ("defaults", "t", {"exchange": "e"}),
    ("defaults", "t", {"exchange": "e", "routing_key": "k"}),
    ("defaults", "t", {"routing_key": "k"}),
    ("routes", "exact.t", {}),
    ("routes", "glob.x", {}),
    ("routes", "re.x", {}),
    ("routes", "re.x", {"priority": 9}),
    ("routes", "re.x", {"queue": "override"}),
    ("routes", "fn.str", {}),
    ("routes", "fn.dict", {}),
    ("routes", "fn.exchange", {}),
    ("routes", "nothing", {}),
    ("topic", "feeds.import", {}),
    ("topic", "other", {}),
    ("topic", "other", {"queue": "feed_tasks"}),
    ("topic", "other", {"queue": "feed_tasks", "routing_key": "feed.x"}),
    ("mixed", "v.x", {}),
    ("mixed", "l.x", {}),
    ("mixed", "l.x", {"routing_key": "log.special"}),
    ("mixed", "b.x", {}),
    ("mixed", "v.x", {"exchange": "media", "routing_key": "media.video"}),
    ("mixed", "other", {"queue": "new_one"}),
]


@pytest.mark.parametrize("settings_key, name, options", PARITY_CALLS)
def test_route_same_as_celery(settings_key, name, options):
    make_settings = PARITY_SETTINGS[settings_key]
    router = make_router(**make_settings(Queue, Exchange, Broadcast))
    route, ours = router.route(name, (1,), {}, dict(options))
    exchange, routing_key, priority = _celery_publish(make_settings, name, dict(options))
    assert (route.exchange, route.routing_key) == (exchange, routing_key)
    assert ours["priority"] == priority


def assert_same_declaration(ours, theirs):
    """Our queue declares what Celery's kombu queue declares."""
    from kombu.transport.base import to_rabbitmq_queue_arguments

    assert (ours.name, ours.routing_key) == (theirs.name, theirs.routing_key)
    assert (ours.exchange.name, ours.exchange.type) == (theirs.exchange.name, theirs.exchange.type)
    assert (ours.exchange.durable, ours.exchange.auto_delete) == (
        theirs.exchange.durable,
        theirs.exchange.auto_delete,
    )
    assert (ours.durable, ours.exclusive, ours.auto_delete) == (
        theirs.durable,
        theirs.exclusive,
        theirs.auto_delete,
    )
    assert ours.alias == theirs.alias
    assert ours.queue_arguments == to_rabbitmq_queue_arguments(
        theirs.queue_arguments or {},
        expires=theirs.expires,
        message_ttl=theirs.message_ttl,
        max_length=theirs.max_length,
        max_length_bytes=theirs.max_length_bytes,
        max_priority=theirs.max_priority,
    )


@pytest.mark.parametrize("settings_key", list(PARITY_SETTINGS))
def test_queues_same_as_celery(settings_key):
    make_settings = PARITY_SETTINGS[settings_key]
    router = make_router(**make_settings(Queue, Exchange, Broadcast))
    celery_queues = dict(_celery_app(make_settings).amqp.queues)
    assert list(router.queues) == list(celery_queues)
    for name, theirs in celery_queues.items():
        assert_same_declaration(router.queues[name], theirs)


def test_missing_queue_same_as_celery():
    settings = lambda Q, E, B: {"task_queue_max_priority": 5}  # noqa: E731
    app = _celery_app(settings)
    router = make_router(**settings(Queue, Exchange, Broadcast))
    assert_same_declaration(router.get_queue("brand_new"), app.amqp.queues["brand_new"])
