"""Every code block of README.md and docs/ runs as written, so the docs cannot drift.

- A Python block with test functions is a test module: it runs through pytest in a
  directory of its own, beside a copy of tests/conftest.py (the fixtures the docs name), on
  the default set-up (SQLite, in-memory layer), and every test in it must pass.
- Any other Python block runs in a fresh interpreter with Django set up, on a database that
  `migrate` and `seed_demo` made (so "lobby" and "alice" exist).
- A shell block must parse (`bash -n`); the make targets, `manage.py` commands and
  environment variables it names must exist. The README's steps that can run here run for
  real: the secret key it makes passes `check --deploy`, its `make test PYTEST_ARGS=...` runs
  tests, and its multi-process example (with PostgreSQL) migrates a fresh database and serves.
- A block that cannot run carries `<!-- not-run: why -->` on the line above it and shows up
  here as a skipped test with that reason; never silently.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON = {"python", "py", "python3"}
SHELL = {"sh", "bash", "shell", "console"}
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
SETTINGS = ROOT / "site_config" / "settings.py"
FAST_HASHER = "django.contrib.auth.hashers.MD5PasswordHasher"
# Variables a shell block may set that are read by make or Django itself, not by our settings.
OTHER_VARIABLES = {"CI", "DJANGO_SUPERUSER_PASSWORD", "DJANGO_SETTINGS_MODULE"}

# Blocks of documents that are known not to run as they stand, with why: each named by its
# document and a line of its code (not by line number, which moves whenever the document
# grows above it). Each is expected to fail (strictly: once it runs, the test fails until its
# entry is removed). Prefer fixing the block or marking it `<!-- not-run: why -->`.
KNOWN_FAILING: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    path: Path
    line: int
    language: str
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the not-run reason written above each."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.groups()
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = NOT_RUN.search(before)
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not re.match(rf"^{indent}```\s*$", lines[end]):
            body.append(lines[end])
            end += 1
        code = textwrap.dedent("\n".join(body)) + "\n"
        blocks.append(Block(path, index + 1, language.lower(), code, marker[1] if marker else None))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in read_blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language in PYTHON]
SHELL_BLOCKS = [block for block in ALL_BLOCKS if block.language in SHELL]


def known_failing(block: Block) -> str | None:
    """Why the block is known not to run, if it is."""
    document = str(block.path.relative_to(ROOT))
    for (path, line), why in KNOWN_FAILING.items():
        if path == document and line in block.code:
            return why
    return None


def params(blocks: list[Block]) -> list:
    return [
        pytest.param(
            block,
            id=block.name,
            marks=[pytest.mark.xfail(reason=why, strict=True)] if why else [],
        )
        for block in blocks
        for why in [known_failing(block)]
    ]


def skip_if_not_run(block: Block) -> None:
    if block.not_run:
        pytest.skip(f"{block.name} is marked not-run: {block.not_run}")


def default_env(**extra: str) -> dict[str, str]:
    """The environment of a new user's shell: no service URLs, no CI, no test settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "ROOMCAST_", "PYTEST_"))
        and k not in {"CI"}
    }
    return {**env, **extra}


def run(command: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=kwargs.pop("cwd", ROOT), env=env, capture_output=True, text=True, **kwargs
    )


def is_test_module(code: str) -> bool:
    return bool(re.search(r"^(async\s+)?def test_", code, re.M))


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory) -> dict[str, str]:
    """The environment of a configured site on a fresh SQLite database with the demo data."""
    path = tmp_path_factory.mktemp("docs") / "db.sqlite3"
    env = default_env(DJANGO_DEBUG="1", DATABASE_URL=f"sqlite:///{path}")
    for command in (["migrate", "--no-input"], ["seed_demo"]):
        result = run([sys.executable, "manage.py", *command], env)
        assert result.returncode == 0, result.stderr
    return env


def test_docs_have_code_blocks_to_run():
    assert PYTHON_BLOCKS
    assert SHELL_BLOCKS


def test_known_failing_entries_name_one_block_each():
    for entry in KNOWN_FAILING:
        path, line = entry
        matches = [
            b.name for b in ALL_BLOCKS if str(b.path.relative_to(ROOT)) == path and line in b.code
        ]
        assert len(matches) == 1, f"{entry} names {matches or 'no block'}: update or remove it"


@pytest.mark.parametrize("block", params(PYTHON_BLOCKS))
def test_python_block_runs(block, tmp_path, demo_database):
    skip_if_not_run(block)
    if is_test_module(block.code):
        shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
        module = tmp_path / "test_block.py"
        module.write_text(block.code)
        result = run(
            [sys.executable, "-m", "pytest", str(module), "-q", "-p", "no:cacheprovider"]
            + ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)],
            default_env(DJANGO_SECRET_KEY="docs", DJANGO_SSL_REDIRECT="0", PYTHONPATH=str(ROOT))
            | {"DJANGO_ALLOWED_HOSTS": "testserver,localhost,127.0.0.1"}
            # As `make test` runs tests: the fixtures' users get a fast password hash.
            | {"DJANGO_PASSWORD_HASHERS": FAST_HASHER},
        )
        tests = len(re.findall(r"^(?:async\s+)?def test_", block.code, re.M))
        summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        assert result.returncode == 0 and re.match(rf"{tests} passed in ", summary), (
            f"{block.name} as a test module:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    else:
        script = "import django\ndjango.setup()\n" + block.code
        result = run(
            [sys.executable, "-c", script],
            demo_database | {"DJANGO_SETTINGS_MODULE": "site_config.settings"},
        )
        assert result.returncode == 0, f"{block.name}:\n{result.stderr[-3000:]}"


def settings_variables() -> set[str]:
    """Every environment variable that site_config/settings.py reads."""
    text = SETTINGS.read_text()
    return set(
        re.findall(r"(?:env_bool|env_list|os\.environ\.get)\(\s*\"([A-Z][A-Z0-9_]+)\"", text)
        + re.findall(r"env=\"([A-Z][A-Z0-9_]+)\"", text)
    )


def make_variables() -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)\s*\??:?=", (ROOT / "Makefile").read_text(), re.M))


def logical_lines(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]


@pytest.mark.parametrize("block", params(SHELL_BLOCKS))
def test_shell_block_names_what_exists(block):
    skip_if_not_run(block)
    syntax = run(["bash", "-n"], default_env(), input=block.code)
    assert syntax.returncode == 0, f"{block.name}: {syntax.stderr}"
    known = settings_variables() | make_variables() | OTHER_VARIABLES
    for line in logical_lines(block.code):
        if line.startswith("#") or not line:
            continue
        for name in re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]+)=", line):
            assert name in known, f"{block.name}: {name} is read by nothing ({line!r})"
        for target in re.findall(r"(?:^|[\s;&])make\s+([a-z][\w-]*)", line):
            dry = run(["make", "-n", target], default_env())
            assert dry.returncode == 0, f"{block.name}: make {target}: {dry.stderr}"
        for command in re.findall(r"manage\.py\s+([a-z_]+)", line):
            found = run(
                [sys.executable, "manage.py", "help", command], default_env(DJANGO_DEBUG="1")
            )
            assert found.returncode == 0, f"{block.name}: manage.py {command}: {found.stderr}"


def readme_table_variables() -> set[str]:
    """The variables in the first column of the README's settings table."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| variable ") :]
    table = table[: table.index("\n\n")]
    return {
        name
        for row in table.splitlines()[2:]
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])
    }


def test_readme_settings_table_lists_only_variables_the_settings_read():
    unknown = readme_table_variables() - settings_variables()
    assert not unknown, f"in the README's table but read by nothing: {unknown}"


def multi_process_block() -> Block:
    (block,) = [b for b in SHELL_BLOCKS if b.path == ROOT / "README.md" and "createdb" in b.code]
    return block


def exported(block: Block, *names: str) -> dict[str, str]:
    """The values the block's `export` lines give these variables, evaluated by bash."""
    exports = "\n".join(line for line in logical_lines(block.code) if line.startswith("export "))
    script = exports + "\n" + "\n".join(f'printf "%s\\0" "${name}"' for name in names)
    result = run(["bash", "-c", script], default_env())
    assert result.returncode == 0, result.stderr
    return dict(zip(names, result.stdout.split("\0"), strict=False))


def test_readme_secret_key_passes_check_deploy():
    """The README's way of making a key gives one `check --deploy` accepts (no W009)."""
    env = exported(multi_process_block(), "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS")
    result = run([sys.executable, "manage.py", "check", "--deploy"], default_env(**env))
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_readme_secret_keys_differ_per_run():
    first = exported(multi_process_block(), "DJANGO_SECRET_KEY")["DJANGO_SECRET_KEY"]
    second = exported(multi_process_block(), "DJANGO_SECRET_KEY")["DJANGO_SECRET_KEY"]
    assert len(first) >= 50
    assert first != second


def test_readme_pytest_args_example_runs_tests_on_the_default_setup():
    readme = (ROOT / "README.md").read_text()
    (args,) = re.findall(r'make test PYTEST_ARGS="([^"]+)"', readme)
    result = run(["make", "test", f"PYTEST_ARGS={args}"], default_env())
    assert result.returncode == 0, result.stdout[-3000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed[1]) > 0, result.stdout[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_multi_process_example_runs(database_url, redis_url, tmp_path):
    """The multi-process steps as written, on a fresh database and two free ports."""
    block = multi_process_block()
    server = urlsplit(database_url)
    name = f"rc_ops_docs_{secrets.token_hex(4)}"
    ports = (free_port(), free_port())
    script = block.code
    for old, new in (
        ("5432/roomcast", f"5432/{name}"),
        ("-U postgres roomcast", f"-U postgres {name}"),
        ("-p 8001", f"-p {ports[0]}"),
        ("-p 8002", f"-p {ports[1]}"),
        ("127.0.0.1:5432", f"{server.hostname}:{server.port or 5432}"),
    ):
        assert old in script, f"the README's example no longer has {old!r}"
        script = script.replace(old, new)
    probes = "\n".join(
        f"for i in $(seq 100); do curl -fs -o /dev/null -H 'Host: chat.example.com' "
        f"http://127.0.0.1:{port}/healthz && break;"
        f" sleep 0.2; done\n"
        # No -f: /readyz may answer 503 before a worker has beaten. Each answer goes to its
        # own file: the example's background processes print to the same stdout meanwhile.
        f"curl -sS -o {tmp_path / f'readyz-{port}.json'} -H 'Host: chat.example.com'"
        f" http://127.0.0.1:{port}/readyz"
        for port in ports
    )
    cleanup = (
        "trap 'kill $(jobs -p) 2>/dev/null; wait; "
        f"dropdb -h {server.hostname} -U postgres --if-exists {name}' EXIT\n"
    )
    result = run(
        ["bash", "-c", "set -euo pipefail\n" + cleanup + script + probes],
        default_env(ROOMCAST_REDIS_PREFIX="rc_ops_docs"),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    answers = [json.loads((tmp_path / f"readyz-{port}.json").read_text()) for port in ports]
    assert [answer["checks"]["database"] for answer in answers] == ["ok", "ok"]
    assert [answer["checks"]["redis"] for answer in answers] == ["ok", "ok"]


def requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_requirements_are_pinned_exactly(name):
    loose = [
        line
        for line in requirement_lines(name)
        if not line.startswith("-r ") and not re.fullmatch(r"[A-Za-z0-9_.\[\],-]+==[\w.]+", line)
    ]
    assert loose == []


def test_runtime_requirements_leave_out_test_and_lint_tools():
    names = {re.split(r"[\[=]", line)[0].lower() for line in requirement_lines("requirements.txt")}
    assert not names & {"pytest", "pytest-django", "hypothesis", "playwright", "ruff", "mypy"}


def test_make_run_installs_only_the_runtime_requirements():
    # -B: as on a fresh machine, where nothing is installed yet.
    recipe = run(["make", "-n", "-B", "run"], default_env()).stdout
    assert "-r requirements.txt" in recipe
    assert "requirements-dev.txt" not in recipe


@pytest.mark.parametrize("target", ["test", "lint"])
def test_make_test_and_lint_add_the_dev_requirements(target):
    recipe = run(["make", "-n", "-B", target], default_env()).stdout
    assert "-r requirements-dev.txt" in recipe
