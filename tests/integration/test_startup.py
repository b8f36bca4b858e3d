"""What keeps `pushup serve` from starting is one line naming the flag or variable to
change, never a traceback: exit status 2 for a bad value, 1 for the environment (a taken
port, an unknown host, an unusable data directory, a missing extra, Redis out of reach).
And one server per port: a second one is refused, with or without workers, and the
first keeps every request."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ServerProcess, wait_for

DEADLINE_S = 20.0
PUSHUP = (sys.executable, "-m", "pushup")
IN_USE = "is in use on 127.0.0.1 (another server listens there)"


def _pushup(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PUSHUP, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def _error(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The one line an error is: on stderr, nothing else written, the status given."""
    assert result.returncode == status, result
    assert result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def _listener(*, reuseport: bool = False) -> socket.socket:
    """Another program's socket, listening on a free loopback port."""
    sock = socket.socket()
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


# -- the port --------------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "engine"), [(1, "redis"), (2, "redis"), (2, "default")])
def test_a_taken_port_is_one_line(workers: int, engine: str, redis_url: str) -> None:
    # Without --engine, the workers' private nats-server is not even started.
    shared = ("--engine", redis_url) if engine == "redis" else ()
    with _listener() as taken:
        port = taken.getsockname()[1]
        result = _pushup("serve", "--port", str(port), "--workers", str(workers), *shared)
    assert _error(result) == f"Error: --port {port} {IN_USE}"


def test_a_taken_port_from_the_environment_names_the_variable() -> None:
    with _listener() as taken:
        port = taken.getsockname()[1]
        result = _pushup("serve", "--data-dir", "none", env={"PUSHUP_PORT": str(port)})
    assert _error(result) == f"Error: PUSHUP_PORT {port} {IN_USE}"


def test_workers_do_not_join_another_programs_reuseport_group(redis_url: str) -> None:
    """SO_REUSEPORT would let them in: the probe without it refuses the port."""
    with _listener(reuseport=True) as taken:
        port = taken.getsockname()[1]
        result = _pushup("serve", "--port", str(port), "--workers", "2", "--engine", redis_url)
    assert _error(result) == f"Error: --port {port} {IN_USE}"


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Servers a test starts with `_serve`: stopped after it, and none may have logged
    a traceback."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()
    for server in started:
        assert "Traceback" not in server.log(), server.log()


def _serve(started: list[ServerProcess], *flags: str) -> ServerProcess:
    """`pushup serve --port 0 ...` on its own port, claimed as users' servers claim
    theirs (not the inherited socket of `start_server`); its banner tells the port."""
    with tempfile.NamedTemporaryFile(prefix="pushup-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [*PUSHUP, "serve", "--port", "0", *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, 0, log.name)
    started.append(server)

    def port() -> int | None:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{server.log()}")
        found = re.search(r"(?:listening|serving) on http://127\.0\.0\.1:(\d+)", server.log())
        return int(found[1]) if found else None

    server.port = wait_for(port, timeout=DEADLINE_S, what="the server to serve")
    return server


def _health_requests(server: ServerProcess) -> int:
    """How many GET /health the server (all its workers) counted, from its /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
    for labels, value in re.findall(r"^pushup_request_seconds_count\{(.*)\} (\S+)$", text, re.M):
        if {'worker="all"', 'route="/health"', 'method="GET"'} <= set(labels.split(",")):
            return int(float(value))
    return 0


def _mode(name: str, redis_url: str) -> tuple[str, ...]:
    return ("--data-dir", "none") if name == "single" else ("--workers", "2", "--engine", redis_url)


@pytest.mark.parametrize("second", ["single", "workers"])
@pytest.mark.parametrize("first", ["single", "workers"])
def test_a_second_server_on_the_port_is_refused_and_the_first_keeps_every_request(
    first: str, second: str, servers: list[ServerProcess], redis_url: str
) -> None:
    server = _serve(servers, *_mode(first, redis_url))
    result = _pushup("serve", "--port", str(server.port), *_mode(second, redis_url))
    assert _error(result) == f"Error: --port {server.port} {IN_USE}"
    before = _health_requests(server)
    for _ in range(20):  # each on a new connection, which a second server could take
        assert httpx.get(f"{server.url}/health", timeout=10.0).status_code == 200
    # Workers share their figures within a second or so.
    wait_for(
        lambda: _health_requests(server) == before + 20,
        timeout=DEADLINE_S,
        what="the first server to have counted all 20 requests",
    )


def test_two_supervisors_starting_at_once_do_not_share_the_port(
    servers: list[ServerProcess], redis_url: str
) -> None:
    """Both would pass the probe before either's workers listen: the lock settles it."""
    with _listener() as free:
        port = free.getsockname()[1]
    procs = [
        subprocess.Popen(
            [*PUSHUP, "serve", "--port", str(port), "--workers", "2", "--engine", redis_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        refused = wait_for(
            lambda: [proc for proc in procs if proc.poll() is not None],
            timeout=DEADLINE_S,
            what="one of them to give up",
        )
        (loser,) = refused
        winner = next(proc for proc in procs if proc is not loser)
        _, errors = loser.communicate(timeout=DEADLINE_S)
        assert loser.returncode == 1
        assert errors.strip() == f"Error: --port {port} {IN_USE}"
        wait_for(lambda: _healthy(port), timeout=DEADLINE_S, what="the other to serve")
        assert winner.poll() is None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.communicate(timeout=DEADLINE_S)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


# -- the host --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unknown_host_is_one_line(workers: int, redis_url: str) -> None:
    result = _pushup(
        "serve", "--host", "nosuchhost.invalid", "--workers", str(workers), "--engine", redis_url
    )
    assert _error(result).startswith("Error: --host nosuchhost.invalid is not a known host name (")


def test_a_host_of_this_machine_only() -> None:
    result = _pushup("serve", "--host", "192.0.2.1", "--data-dir", "none")  # TEST-NET-1
    assert _error(result).startswith("Error: --host 192.0.2.1 is no address of this machine (")


def test_a_number_that_is_no_address_is_a_bad_value() -> None:
    result = _pushup("serve", "--host", "999.1.1.1")
    line = _error(result, status=2)
    assert line == "Error: --host must be an IP address or a host name, not '999.1.1.1'"


# -- the data directory ------------------------------------------------------------------


def test_a_data_directory_that_cannot_be_made_is_one_line() -> None:
    line = _error(_pushup("serve", "--port", "0", "--data-dir", "/proc/pushup"))
    assert line.startswith("Error: --data-dir /proc/pushup cannot be made ("), line


def test_a_file_is_no_data_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    line = _error(_pushup("serve", "--port", "0", env={"PUSHUP_DATA_DIR": str(tmp_path / "file")}))
    assert line == f"Error: PUSHUP_DATA_DIR {tmp_path / 'file'} is not a directory"


def test_a_data_directory_that_cannot_be_written_is_one_line() -> None:
    # The tests run as root, whom permissions do not stop: /proc/self refuses anyone.
    line = _error(_pushup("serve", "--port", "0", "--data-dir", "/proc/self"))
    assert line.startswith("Error: --data-dir /proc/self is not writable ("), line


# -- Redis and the extras ------------------------------------------------------------------


def _without(module: str, tmp_path: Path) -> dict[str, str]:
    """An environment in which importing `module` fails as if it were not installed."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / f"{module}.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {module!r}'!r}, name={module!r})\n"
    )
    return {"PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_redis_without_the_redis_extra_is_one_line(workers: str, tmp_path: Path) -> None:
    result = _pushup(
        "serve",
        "--port",
        "0",
        "--workers",
        workers,
        "--engine",
        "redis://:hunter2@127.0.0.1:1/0",
        env=_without("redis", tmp_path),
    )
    assert _error(result) == (
        "Error: --engine redis://127.0.0.1:1/0 needs the redis extra (redis is missing): "
        "pip install 'pushup[redis]'"
    )


def test_redis_out_of_reach_is_one_line_without_the_password() -> None:
    result = _pushup("serve", "--port", "0", "--engine", "redis://:hunter2@127.0.0.1:1/0")
    line = _error(result)
    assert line.startswith("Error: --engine redis://127.0.0.1:1/0 cannot be used: "), line
    assert "cannot reach Redis" in line


def test_the_benchmark_without_the_bench_extra_is_one_line(tmp_path: Path) -> None:
    result = _pushup("bench", "fanout", "--quiet", env=_without("rich", tmp_path))
    assert _error(result) == (
        "Error: the benchmark needs the bench extra (rich is missing): pip install 'pushup[bench]'"
    )
