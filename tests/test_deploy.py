"""The deployment example (docs/deploy/) as its real tools read it: nginx and systemd.

nginx's own `-t` validates the site configuration, then a real nginx with that very file
(only ports and certificate paths changed) serves two daphne processes: probes over plain
HTTP, the site over HTTPS with the forwarded protocol trusted, and a WebSocket upgrade.
`systemd-analyze verify` checks the units. Outside CI a missing tool skips, saying which
package brings it; under CI=true it fails (.ci/run installs nginx).
"""

import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path

import pytest
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "docs" / "deploy"
SITE_CONF = DEPLOY / "nginx" / "roomcast.conf"
UNITS = DEPLOY / "systemd"
HOST = "chat.example.com"


def tool(name: str, package: str) -> str:
    """The path of a command-line tool; skip without it, but fail in CI."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        message = f"{name} is not installed (apt-get install -y {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run this test")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout}s")


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for chat.example.com, in place of Let's Encrypt's."""
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [tool("openssl", "openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes"]
        + ["-subj", f"/CN={HOST}", "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def nginx_conf(directory: Path, ports: dict[str, int] | None = None) -> Path:
    """nginx.conf around the example site file: the file as written, but for the certificate
    paths (and the ports, when given); logs, pid and temporary files in `directory`."""
    site = SITE_CONF.read_text()
    cert, key = self_signed_certificate(directory)
    site = site.replace(f"/etc/letsencrypt/live/{HOST}/fullchain.pem", str(cert))
    site = site.replace(f"/etc/letsencrypt/live/{HOST}/privkey.pem", str(key))
    for old, new in (ports or {}).items():
        site, count = re.subn(rf"(?<=[ :]){old}(?=[; ])", str(new), site)
        assert count, f"port {old} is not in {SITE_CONF.name}"
    (directory / "roomcast.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = directory / "nginx.conf"
    conf.write_text(
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'};\n"
        + ("user root;\n" if os.geteuid() == 0 else "")
        + "events {}\n"
        f"http {{ access_log off; {temp} include {directory / 'roomcast.conf'}; }}\n"
    )
    return conf


def test_nginx_accepts_the_example_configuration(tmp_path):
    nginx = tool("nginx", "nginx")
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(nginx_conf(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_nginx_example_forwards_websocket_upgrades_and_the_protocol():
    site = SITE_CONF.read_text()
    ws = site[site.index("location /ws/") :]
    ws = ws[: ws.index("}")]
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in ws


def test_nginx_example_outwaits_daphnes_pings():
    """Idle sockets stay open: nginx waits longer than daphne's ping interval and timeout."""
    site = SITE_CONF.read_text()
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", site)[1])
    unit = (UNITS / "roomcast-web@.service").read_text()
    interval = int(re.search(r"--ping-interval (\d+)", unit)[1])
    ping_timeout = int(re.search(r"--ping-timeout (\d+)", unit)[1])
    assert timeout > interval + ping_timeout


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Two daphne processes started as the web unit starts them, behind the example nginx."""
    nginx = tool("nginx", "nginx")
    directory = tmp_path_factory.mktemp("deploy")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))},
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_TRUST_X_FORWARDED_PROTO": "1",
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        "REDIS_URL": "",
    }
    for command in (["migrate", "--no-input"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            text=True,
            capture_output=True,
        )
    exec_start = re.search(r"^ExecStart=(.*)$", (UNITS / "roomcast-web@.service").read_text(), re.M)
    processes = []
    ports = {"8001": free_port(), "8002": free_port(), "80": free_port(), "443": free_port()}
    try:
        for instance in ("8001", "8002"):
            command = exec_start[1].replace("/opt/roomcast", str(ROOT))
            command = command.replace("%i", str(ports[instance])).split()
            processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            wait_for_port(ports[instance], processes[-1])
        conf = nginx_conf(directory, ports)
        processes.append(
            subprocess.Popen([nginx, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"])
        )
        wait_for_port(ports["443"], processes[-1])
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def https(port: int) -> HTTPSConnection:
    return HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context(), timeout=10)


def test_deployment_answers_probes_over_plain_http_whatever_the_host(deployment):
    http = HTTPConnection("127.0.0.1", deployment["80"], timeout=10)
    http.request("GET", "/healthz", headers={"Host": "10.0.0.5"})
    response = http.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"status": "ok"})


def test_deployment_redirects_plain_http_pages_to_https(deployment):
    http = HTTPConnection("127.0.0.1", deployment["80"], timeout=10)
    http.request("GET", "/rooms/lobby/", headers={"Host": HOST})
    response = http.getresponse()
    assert (response.status, response.getheader("Location")) == (
        301,
        f"https://{HOST}/rooms/lobby/",
    )


def test_deployment_serves_pages_over_https_without_a_redirect_loop(deployment):
    connection = https(deployment["443"])
    connection.request("GET", "/rooms/lobby/", headers={"Host": HOST})
    response = connection.getresponse()
    assert response.status == 200
    # Django sends HSTS only on requests it sees as secure: the forwarded protocol is trusted.
    assert response.getheader("Strict-Transport-Security").startswith("max-age=")


def test_deployment_hides_metrics_from_the_outside(deployment):
    connection = https(deployment["443"])
    connection.request("GET", "/metrics", headers={"Host": HOST})
    assert connection.getresponse().status == 404


def test_deployment_upgrades_websockets_through_nginx(deployment):
    sock = socket.create_connection(("127.0.0.1", deployment["443"]), timeout=10)
    with connect(
        f"wss://{HOST}:{deployment['443']}/ws/rooms/lobby/",
        sock=sock,
        ssl=ssl._create_unverified_context(),
        server_hostname=HOST,
        origin=f"https://{HOST}",
        open_timeout=10,
    ) as websocket:
        assert websocket.response.status_code == 101


def verify_units(*names: str, directory: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` on the example units, installed at this checkout's path."""
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/opt/roomcast", str(ROOT))
        (directory / unit.name).write_text(text)
    for name in names:
        template = re.sub(r"@[^.]+\.", "@.", name)
        if template != name:
            shutil.copy(directory / template, directory / name)
    return subprocess.run(
        [tool("systemd-analyze", "systemd"), "verify", "--man=no"]
        + [str(directory / name) for name in names],
        capture_output=True,
        text=True,
    )


def test_systemd_units_verify_cleanly(tmp_path):
    result = verify_units(
        "roomcast-web@8001.service",
        "roomcast-worker@1.service",
        "roomcast.target",
        directory=tmp_path,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_systemd_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a unit whose server is missing does not verify."""
    verify_units("roomcast-web@8001.service", directory=tmp_path)
    unit = tmp_path / "roomcast-web@8001.service"
    unit.write_text(unit.read_text().replace(".venv/bin/daphne", ".venv/bin/no-such-server"))
    result = subprocess.run(
        [tool("systemd-analyze", "systemd"), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "no-such-server" in result.stderr
