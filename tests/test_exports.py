"""Room exports: asking, the job's file and progress, and the download for its user only."""

import datetime
import itertools
import json

import pytest
from bs4 import BeautifulSoup
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from rooms import exports
from rooms.exports import Export
from rooms.models import delete_message, edit_message, post_message
from rooms.notifications import Notification


@pytest.fixture(autouse=True)
def export_dir(settings, tmp_path):
    settings.ROOMCAST_EXPORT_DIR = tmp_path
    settings.ROOMCAST_EXPORT_PROGRESS_INTERVAL = 1.0
    return tmp_path


@pytest.fixture
def chat(make_room, alice, bob):
    room = make_room("Lobby", owner=alice, messages=[(alice, "hello"), (bob, "hi *there*")])
    post_message(room, alice, "third")
    return room


def ask(room, user, fmt="md") -> Export:
    export, _ = exports.request_export(room, user, fmt)
    return export


def control(response) -> BeautifulSoup:
    return BeautifulSoup(response.content.decode(), "html.parser")


@pytest.mark.django_db
def test_request_export_queues_one_job_for_the_export(chat, alice, committed):
    export = committed(ask, chat, alice)
    job = DBTaskResult.objects.get()
    assert (job.task_path, job.args_kwargs["args"]) == ("rooms.tasks.export_room", [str(export.pk)])
    assert Export.objects.get().job_id == str(job.pk)


@pytest.mark.django_db
def test_request_export_while_one_runs_returns_the_running_one(chat, alice, committed):
    first = committed(ask, chat, alice)
    again, started = committed(exports.request_export, chat, alice, "json")
    assert (again.pk, started, DBTaskResult.objects.count()) == (first.pk, False, 1)


@pytest.mark.django_db
def test_request_export_after_the_last_one_finished_starts_another(chat, alice, committed):
    first = committed(ask, chat, alice)
    committed(exports.run, str(first.pk))
    second, started = committed(exports.request_export, chat, alice, "md")
    assert (started, second.pk != first.pk) == (True, True)


@pytest.mark.django_db
def test_run_writes_every_message_as_markdown(chat, alice, committed):
    export = committed(ask, chat, alice)
    assert committed(exports.run, str(export.pk)) == "done"
    text = export.path.read_text()
    assert text.startswith("# Lobby\n\n")
    bodies = [block for block in text.split("\n\n")[1:] if block and not block.startswith("**")]
    assert bodies == ["hello", "hi *there*", "third"]


@pytest.mark.django_db
def test_run_writes_every_message_as_json(chat, alice, bob, committed):
    message = chat.messages.get(seq=2)
    edit_message(message, "edited")
    delete_message(chat.messages.get(seq=3))
    export = committed(ask, chat, alice, "json")
    committed(exports.run, str(export.pk))
    data = json.loads(export.path.read_text())
    rows = [(m["seq"], m["author"], m["body"], m["edited"], m["deleted"]) for m in data["messages"]]
    assert data["room"] == {"title": "Lobby", "slug": chat.slug}
    assert rows == [
        (1, "alice", "hello", False, False),
        (2, "bob", "edited", True, False),
        (3, "alice", "", False, True),
    ]


@pytest.mark.django_db
def test_run_pushes_progress_every_interval_of_its_clock(make_room, alice, committed, broadcasts):
    room = make_room("Big", messages=[(alice, f"m{n}") for n in range(10)])
    export = committed(ask, room, alice)
    ticks = itertools.count(0, 0.5)  # each look at the clock is half a second later
    committed(exports.run, str(export.pk), clock=lambda: next(ticks))
    bars = []
    for broadcast in broadcasts.to(alice):
        fragment = broadcast.fragment()
        if fragment.has_target(f"export-{room.pk}"):
            progress = fragment.target(f"export-{room.pk}").select("progress")
            bars.append(progress[0]["value"] if progress else "done")
    # Started at 0, then a report whenever a second has passed: every 2 messages here.
    assert bars == ["0", "2", "4", "6", "8", "10", "done"]


@pytest.mark.django_db
def test_run_twice_leaves_one_file_and_one_notification(chat, alice, committed, export_dir):
    export = committed(ask, chat, alice)
    committed(exports.run, str(export.pk))
    Export.objects.filter(pk=export.pk).update(state=Export.RUNNING)  # as if re-queued
    committed(exports.run, str(export.pk))
    assert [p.name for p in export_dir.iterdir()] == [f"{export.pk}.md"]
    assert list(Notification.objects.values_list("kind", "url")) == [
        ("export", reverse("export_download", args=[export.pk]))
    ]


@pytest.mark.django_db
def test_run_after_the_user_lost_access_fails_the_export(make_room, alice, bob, committed):
    room = make_room("Private", owner=alice, is_private=True)
    room.members.add(bob)
    export = committed(ask, room, bob)
    room.members.remove(bob)
    assert committed(exports.run, str(export.pk)) == "failed"
    assert Export.objects.get().error == "You can no longer read this room."


@pytest.mark.django_db
def test_export_control_post_starts_an_export_and_shows_its_bar(client, chat, alice):
    client.force_login(alice)
    response = client.post(
        reverse("export_control", args=[chat.slug]), {"format": "json"}, HTTP_HX_REQUEST="true"
    )
    root = control(response).select_one(f"#export-{chat.pk}")
    assert (root["hx-swap-oob"], root.select_one("progress")["value"]) == ("true", "0")
    assert Export.objects.get().format == "json"


@pytest.mark.django_db
def test_export_control_post_with_an_unknown_format_stores_nothing(client, chat, alice):
    client.force_login(alice)
    response = client.post(
        reverse("export_control", args=[chat.slug]), {"format": "exe"}, HTTP_HX_REQUEST="true"
    )
    assert control(response).select_one(".export-error").get_text() == "Choose Markdown or JSON."
    assert Export.objects.count() == 0


@pytest.mark.django_db
def test_export_control_of_a_private_room_is_404_for_others(client, make_room, alice, bob):
    room = make_room("Private", owner=alice, is_private=True)
    client.force_login(bob)
    response = client.post(reverse("export_control", args=[room.slug]), {"format": "md"})
    assert (response.status_code, Export.objects.count()) == (404, 0)


@pytest.mark.django_db
def test_download_gives_the_file_to_the_user_who_asked(client, chat, alice, committed):
    export = committed(ask, chat, alice)
    committed(exports.run, str(export.pk))
    client.force_login(alice)
    response = client.get(reverse("export_download", args=[export.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{chat.slug}.md"'
    assert b"".join(response.streaming_content).decode() == export.path.read_text()


@pytest.mark.django_db
def test_download_is_404_for_another_user(client, chat, alice, bob, committed):
    export = committed(ask, chat, alice)
    committed(exports.run, str(export.pk))
    client.force_login(bob)
    assert client.get(reverse("export_download", args=[export.pk])).status_code == 404


@pytest.mark.django_db
def test_download_of_an_expired_export_is_gone(client, chat, alice, committed):
    export = committed(ask, chat, alice)
    committed(exports.run, str(export.pk))
    Export.objects.update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    client.force_login(alice)
    assert client.get(reverse("export_download", args=[export.pk])).status_code == 410


@pytest.mark.django_db
def test_delete_expired_removes_the_file(chat, alice, committed):
    export = committed(ask, chat, alice)
    committed(exports.run, str(export.pk))
    later = timezone.now() + datetime.timedelta(seconds=exports.settings.ROOMCAST_EXPORT_TTL + 1)
    assert exports.delete_expired(now=later) == 1
    assert (export.path.exists(), Export.objects.get().state) == (False, "expired")


@pytest.mark.django_db
def test_run_removes_the_partial_file_of_a_run_whose_worker_died(chat, alice, committed):
    export = committed(ask, chat, alice)
    stale = export.path.with_name(f"{export.path.name}.0badf00d.part")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("half")
    committed(exports.run, str(export.pk))
    assert sorted(p.name for p in export.path.parent.iterdir()) == [export.path.name]


@pytest.mark.django_db
def test_run_reads_the_room_in_chunks_and_writes_every_message(
    make_room, alice, committed, monkeypatch
):
    monkeypatch.setattr(exports, "CHUNK", 2)
    room = make_room("Five", messages=[(alice, f"m{n}") for n in range(5)])
    export = committed(ask, room, alice, "json")
    committed(exports.run, str(export.pk))
    data = json.loads(export.path.read_text())
    assert [m["body"] for m in data["messages"]] == ["m0", "m1", "m2", "m3", "m4"]


@pytest.mark.parametrize("state", ["running", "done", "failed"])
def test_pushed_export_control_passes_the_live_fragment_check(state):
    from django.template.loader import render_to_string

    from rooms.checks import check_fragment
    from rooms.fragments import LiveFragment
    from rooms.models import Room

    room = Room(pk=1, slug="lobby", title="Lobby")
    export = Export(room=room, state=state, done=5, total=10, expires_at=timezone.now())
    fragment = LiveFragment(
        "export_control",
        exports.CONTROL,
        "export-1",
        "true",
        "an export moves",
        lambda: render_to_string(exports.CONTROL, {"room": room, "export": export}),
    )
    assert check_fragment(fragment) == []
