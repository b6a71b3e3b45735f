"""Fixtures for the multi-process tests: they need the real PostgreSQL and Redis."""

import pytest

from tests.integration.servers import Database, RedisServer, Site


@pytest.fixture
def postgres_database(database_url):
    """A fresh PostgreSQL database for the test's server processes, dropped afterwards."""
    database = Database(database_url)
    database.create()
    yield database.url
    database.drop()


@pytest.fixture
def site(postgres_database, redis_url):
    """Roomcast on the machine's PostgreSQL and Redis; start servers with site.start_server()."""
    site = Site(postgres_database, redis_url)
    yield site
    site.stop()


@pytest.fixture
def private_redis(redis_url):
    """A Redis server of the test's own (it may be stopped); needs REDIS_URL like the others."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def site_on_private_redis(postgres_database, private_redis):
    site = Site(postgres_database, private_redis.url)
    yield site
    site.stop()
