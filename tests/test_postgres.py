"""PostgreSQL through DATABASE_URL: the whole suite runs on it when it is set."""

import threading

import pytest
from django.db import connection

from rooms.models import Message, post_message

pytestmark = pytest.mark.postgres


def test_postgres_is_the_database(database_url):
    assert connection.vendor == "postgresql"


@pytest.mark.django_db(transaction=True)
def test_postgres_concurrent_posts_get_distinct_contiguous_seqs(database_url, room, alice):
    def post_many():
        try:
            for n in range(10):
                post_message(room, alice, f"m{n}")
        finally:
            connection.close()

    threads = [threading.Thread(target=post_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seqs = sorted(Message.objects.filter(room=room).values_list("seq", flat=True))
    assert seqs == list(range(1, 41))
