"""/healthz and /readyz: cheap JSON probes for load balancers, with no secrets in them."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from rooms import health
from rooms.workers import Worker

pytestmark = pytest.mark.django_db


def count_workers_none() -> int:
    return 0


def count_workers_two() -> int:
    return 2


def test_healthz_answers_ok_without_io(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_is_not_cached(client):
    assert "no-cache" in client.get("/healthz")["Cache-Control"]


@pytest.fixture
def live_worker(settings):
    """A worker that has just written its heartbeat, as its loop does."""
    settings.ROOMCAST_JOB_LEASE = 30
    worker = Worker(worker_id="w1")
    worker.beat(force=True)
    return worker


def test_readyz_reports_each_check_on_the_embedded_default(client, settings, live_worker):
    settings.REDIS_URL = ""
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "skipped", "workers": "ok"},
    }


def test_readyz_reports_workers_unknown_without_a_worker_check(client, settings):
    settings.REDIS_URL = ""
    settings.ROOMCAST_WORKER_CHECK = ""
    response = client.get("/readyz")
    assert (response.status_code, response.json()["checks"]["workers"]) == (200, "unknown")


def test_readyz_fails_with_no_worker_heartbeat(client, settings):
    settings.REDIS_URL = ""
    response = client.get("/readyz")
    assert (response.status_code, response.json()["status"]) == (503, "fail")
    assert response.json()["checks"]["workers"] == "fail"


def test_readyz_fails_when_the_only_heartbeat_is_stale(client, settings):
    settings.REDIS_URL = ""
    settings.ROOMCAST_JOB_LEASE = 30
    # Last seen 91 s ago: more than three lease periods (the worker died without a word).
    Worker(worker_id="dead", clock=lambda: timezone.now() - timedelta(seconds=91)).beat()
    response = client.get("/readyz")
    assert (response.status_code, response.json()["checks"]["workers"]) == (503, "fail")


def test_readyz_fails_after_the_worker_stops_cleanly(client, settings, live_worker):
    settings.REDIS_URL = ""
    live_worker.forget()
    assert client.get("/readyz").status_code == 503


def test_readyz_worker_check_is_one_query(settings, live_worker, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert health.check_workers() == "ok"


def test_readyz_fails_when_the_database_is_unreachable(client, settings, monkeypatch):
    settings.REDIS_URL = ""

    def broken(*args, **kwargs):
        raise connection.Database.OperationalError("password=hunter2 host=db.internal")

    monkeypatch.setattr(health.connection, "cursor", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "fail"
    assert response.json()["checks"]["database"] == "fail: OperationalError"


def test_readyz_keeps_error_messages_out_of_the_body(client, settings, monkeypatch):
    def broken(*args, **kwargs):
        raise connection.Database.OperationalError("password=hunter2 host=db.internal")

    monkeypatch.setattr(health.connection, "cursor", broken)
    body = client.get("/readyz").content.decode()
    assert "hunter2" not in body
    assert "db.internal" not in body


def test_readyz_fails_when_redis_is_unreachable(client, settings):
    # A port nothing listens on: the connection is refused at once.
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "fail: ConnectionError"


def test_readyz_fails_without_a_live_worker(client, settings):
    settings.REDIS_URL = ""
    settings.ROOMCAST_WORKER_CHECK = "tests.test_health.count_workers_none"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["workers"] == "fail"


def test_readyz_passes_with_live_workers(client, settings):
    settings.REDIS_URL = ""
    settings.ROOMCAST_WORKER_CHECK = "tests.test_health.count_workers_two"
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["workers"] == "ok"


def test_readyz_checks_the_real_redis(client, settings, redis_url):
    settings.REDIS_URL = redis_url
    assert client.get("/readyz").json()["checks"]["redis"] == "ok"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_plain_http_when_ssl_redirect_is_on(client, settings, path, live_worker):
    settings.SECURE_SSL_REDIRECT = True
    settings.REDIS_URL = ""
    assert client.get(path).status_code == 200


def test_pages_still_redirect_to_https_when_ssl_redirect_is_on(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/")
    assert response.status_code == 301
    assert response["Location"].startswith("https://")


def test_readyz_refuses_post(client):
    assert client.post("/readyz").status_code == 405
