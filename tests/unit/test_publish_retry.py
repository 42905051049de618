"""How a client's publish is retried: task_publish_retry(_policy) and apply_async's retry and
retry_policy, merged as Celery merges them."""

from __future__ import annotations

import pytest

from celeriac import Celery
from celeriac.brokers.base import RetryPolicy
from celeriac.exceptions import ImproperlyConfigured
from celeriac.producer import publish_retry


def _app(**settings: object) -> Celery:
    app = Celery("retrying", broker="memory://")
    app.conf.update(settings)
    return app


def test_default_is_celerys_policy() -> None:
    policy = publish_retry(_app())
    assert policy == RetryPolicy(max_retries=3, interval_start=0, interval_step=0.2, interval_max=1)
    assert [policy.delay(n) for n in range(1, 5)] == [0.0, 0.2, 0.4, None]


def test_call_options_merge_over_the_setting() -> None:
    app = _app(task_publish_retry_policy={"max_retries": 5, "interval_start": 0.5, "interval_step": 0.5,
                                          "interval_max": 1})
    assert publish_retry(app).max_retries == 5
    merged = publish_retry(app, policy={"max_retries": 1})
    assert merged == RetryPolicy(max_retries=1, interval_start=0.5, interval_step=0.5, interval_max=1)
    assert publish_retry(app, retry=False).delay(1) is None  # one try only
    assert publish_retry(app, policy={"max_retries": None}).delay(1000) == 1.0  # no end


def test_setting_off_and_changed_at_run_time() -> None:
    app = _app()
    assert publish_retry(app).max_retries == 3
    app.conf.task_publish_retry = False
    assert publish_retry(app).delay(1) is None
    assert publish_retry(app, retry=True).max_retries == 3  # a call may turn it back on
    app.conf.update(task_publish_retry=True, task_publish_retry_policy={"max_retries": 7})
    policy = publish_retry(app)  # keys the setting leaves out are kombu's defaults
    assert policy == RetryPolicy(max_retries=7, interval_start=1, interval_step=1, interval_max=1)


def test_old_uppercase_names() -> None:
    class Config:
        CELERY_TASK_PUBLISH_RETRY = False

    app = Celery("old", broker="memory://")
    app.config_from_object(Config)
    assert publish_retry(app).delay(1) is None


@pytest.mark.parametrize("policy", [{"max_retry": 2}, {"interval_start": "soon"}, {"max_retries": object()}])
def test_a_bad_policy_is_a_clear_error(policy: dict[str, object]) -> None:
    with pytest.raises(ImproperlyConfigured, match="retry policy"):
        publish_retry(_app(), policy=policy)


def test_kombus_other_keys_are_accepted() -> None:
    assert publish_retry(_app(), policy={"retry_errors": (OSError,), "errback": print}).max_retries == 3
