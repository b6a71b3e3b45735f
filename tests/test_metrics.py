"""/metrics: the process's metrics in the Prometheus text format, for staff and listed addresses."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rooms import metrics

pytestmark = pytest.mark.django_db


def samples(response) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, parsed by prometheus-client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


@pytest.fixture
def staff(make_user):
    return make_user("carol", is_staff=True)


def test_metrics_refuses_anonymous_by_default(client):
    assert client.get("/metrics").status_code == 403


def test_metrics_refuses_a_signed_in_non_staff_user(client, alice):
    client.force_login(alice)
    assert client.get("/metrics").status_code == 403


def test_metrics_answers_staff(client, staff):
    client.force_login(staff)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")


def test_metrics_answers_a_listed_address(client, settings):
    settings.ROOMCAST_METRICS_ALLOW = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_metrics_refuses_an_address_outside_the_list(client, settings):
    settings.ROOMCAST_METRICS_ALLOW = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.1").status_code == 403


def test_metrics_ignores_a_forwarded_for_header(client, settings):
    settings.ROOMCAST_METRICS_ALLOW = ["10.0.0.0/8"]
    response = client.get("/metrics", REMOTE_ADDR="192.168.1.1", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert response.status_code == 403


def test_address_allowed_matches_single_ips_and_ipv6():
    assert metrics.address_allowed("127.0.0.1", ["127.0.0.1"])
    assert metrics.address_allowed("::1", ["::1/128"])
    assert not metrics.address_allowed("127.0.0.2", ["127.0.0.1"])


def test_address_allowed_refuses_an_address_that_is_not_an_ip():
    assert not metrics.address_allowed("", ["0.0.0.0/0"])


def test_metrics_exposes_every_roomcast_metric(client, settings):
    settings.ROOMCAST_METRICS_ALLOW = ["127.0.0.1"]
    metrics.SOCKETS_OPEN.labels(kind="room").set(3)
    metrics.SOCKET_CLOSES.labels(kind="room", code="4403").inc()
    metrics.LIMIT_REFUSALS.labels(limit="post_rate").inc()
    metrics.JOBS.labels(task="digest", status="SUCCESSFUL").inc()
    found = samples(client.get("/metrics"))
    assert found[("roomcast_sockets_open", (("kind", "room"),))] == 3
    assert found[("roomcast_socket_closes_total", (("code", "4403"), ("kind", "room")))] >= 1
    assert found[("roomcast_limit_refusals_total", (("limit", "post_rate"),))] >= 1
    assert found[("roomcast_jobs_total", (("status", "SUCCESSFUL"), ("task", "digest")))] >= 1
    names = {name for name, _ in found}
    assert {
        "roomcast_frames_sent_total",
        "roomcast_events_delivered_total",
        "roomcast_outbox_depth",
        "roomcast_outbox_overflows_total",
        "roomcast_catch_up_queries_total",
    } <= names


def test_metrics_include_the_process_figures(client, settings):
    settings.ROOMCAST_METRICS_ALLOW = ["127.0.0.1"]
    names = {name for name, _ in samples(client.get("/metrics"))}
    assert "process_resident_memory_bytes" in names


def test_metrics_show_every_socket_kind_before_any_socket(client, settings):
    settings.ROOMCAST_METRICS_ALLOW = ["127.0.0.1"]
    found = samples(client.get("/metrics"))
    kinds = {dict(labels)["kind"] for name, labels in found if name == "roomcast_sockets_open"}
    assert kinds == {"room", "user", "dashboard"}
