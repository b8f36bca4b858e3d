"""`pushup serve --workers N` without --engine: the workers share a private nats-server
that the supervisor starts before them, with its JetStream store in --data-dir, and
stops after them. What one worker does, the next request sees on another; a restart
keeps what was acknowledged; a nats-server that dies stops the whole in one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import ServerProcess, wait_for
from tests.workerprocs import (
    DEADLINE_S,
    alive,
    children,
    get,
    nats_pid,
    pool,
    spread,
    start_workers,
    supervisors,
    worker_pids,
)

__all__ = ["pool", "supervisors"]  # fixtures


def _fact(server: ServerProcess, name: str) -> str:
    """One fact of the supervisor's text banner."""
    found = re.search(rf"(?m)^  {name}: +(.*)$", server.log())
    assert found, server.log()
    return found[1]


def _publish(client: httpx.Client, channel: str, data: str) -> str:
    answer = client.post("/publish", json={"channels": [channel], "data": data})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def test_workers_share_channels_and_publications_through_their_nats_server(
    supervisors: list[ServerProcess], pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    server = start_workers(supervisors, "--workers", "2", "--data-dir", str(tmp_path / "data"))
    assert "a private nats-server" in _fact(server, "engine")
    assert _fact(server, "data dir") == str(tmp_path / "data")
    a, b = worker_pids(server)
    held = spread(server, [a, b], {a: 2, b: 2})
    (on_a, also_on_a), (on_b, also_on_b) = held[a][:2], held[b][:2]
    # A channel made by one worker is known to the other at its very next request.
    for maker, user in ((on_a, on_b), (on_b, on_a), (also_on_a, also_on_b)):
        maker.request("POST", "/channels", body=b"{}")
        made = maker.getresponse()
        assert made.status == 201
        channel = json.loads(made.read())["id"]
        status, info = get(user, f"/channels/{channel}")
        assert status == 200, info

    _, now = get(on_a, f"/subscribe?channels={channel}&timeout=0")
    parked = pool.submit(get, on_a, f"/subscribe?channels={channel}&since={now['cursor']}")
    wait_for(
        lambda: get(also_on_a, f"/channels/{channel}")[1]["local_subscribers"] == 1,
        timeout=DEADLINE_S,
        what="the poll to park on worker A",
    )
    on_b.request("POST", "/publish", body=json.dumps({"channels": [channel], "data": "to A"}))
    published = on_b.getresponse()
    assert published.status == 201
    message_id = json.loads(published.read())["id"]
    status, body = parked.result(timeout=DEADLINE_S)
    assert status == 200, body
    assert [(m["id"], m["data"]) for m in body["messages"]] == [(message_id, "to A")]
    for conns in held.values():
        for conn in conns:
            conn.close()


def test_a_restart_keeps_what_was_acknowledged_and_the_nats_server_goes_with_the_stop(
    supervisors: list[ServerProcess], tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    first = start_workers(supervisors, "--workers", "2", "--data-dir", data_dir)
    pids = [*worker_pids(first), nats_pid(first)]
    client = first.client()
    channel = str(client.post("/channels", json={}).json()["id"])
    kept = _publish(client, channel, "kept")
    # The store is this supervisor's alone.
    taken = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PUSHUP_DATA_DIR": data_dir},
    )
    assert taken.returncode == 1, taken
    (line,) = taken.stderr.splitlines()
    assert line.startswith(f"Error: PUSHUP_DATA_DIR {data_dir} cannot be used: "), line
    assert f"in use by another pushup server (pid {first.proc.pid})" in line

    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    assert not any(alive(pid) for pid in pids)

    second = start_workers(supervisors, "--workers", "2", "--data-dir", data_dir)
    client = second.client()
    answer = client.get("/subscribe", params={"channels": channel, "timeout": 0})
    assert answer.status_code == 200, answer.text
    assert [(m["id"], m["data"]) for m in answer.json()["messages"]] == [(kept, "kept")]
    # Ids keep growing across the restart.
    assert int(_publish(client, channel, "after")) > int(kept)
    assert int(client.post("/channels", json={}).json()["id"]) > int(channel)


def test_a_nats_server_that_dies_stops_the_supervisor_in_one_line(
    supervisors: list[ServerProcess],
) -> None:
    server = start_workers(supervisors, "--workers", "2")
    assert _fact(server, "data dir").startswith("none: ")
    store = re.search(r"JetStream in (\S+)", _fact(server, "engine"))
    assert store and Path(store[1]).is_dir()
    workers, nats = worker_pids(server), nats_pid(server)
    os.kill(nats, signal.SIGKILL)
    assert server.proc.wait(timeout=30) == 1
    errors = [line for line in server.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1, server.log()
    assert f"nats-server (pid {nats}) was killed by SIGKILL" in errors[0]
    assert not any(alive(pid) for pid in workers)
    assert children(server.proc.pid) == []
    # With --data-dir none its store was temporary.
    assert not Path(store[1]).exists()


def test_a_store_nats_server_cannot_use_is_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "nats").mkdir(parents=True)
    (data_dir / "nats" / "jetstream").write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PUSHUP_DATA_DIR": str(data_dir)},
    )
    assert result.returncode == 1, result
    # Said once, with nats-server's own reason (the last line of its log).
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"Error: PUSHUP_DATA_DIR {data_dir} cannot be used: nats-server exited with code 1: [FTL] "
    ), line
    assert "storage directory is not a directory" in line


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_workers_without_the_nats_extra_is_one_line(how: str, tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "nats.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'nats'\", name='nats')\n"
    )
    args, env = (["--workers", "2"], {}) if how == "flag" else ([], {"PUSHUP_WORKERS": "2"})
    path = os.environ.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(shim), path])},
    )
    assert result.returncode == 1, result
    given_as = "--workers" if how == "flag" else "PUSHUP_WORKERS"
    assert result.stderr.splitlines() == [
        f"Error: {given_as} 2 without --engine needs the nats extra (nats is missing): "
        "pip install 'pushup[nats]'"
    ]
