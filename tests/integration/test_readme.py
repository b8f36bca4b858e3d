"""The README's examples, run as written against a real server on its own port: the curl
round trip, then the Python example on the channel it made."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, readme_blocks, start_server

# Where the README's examples expect `make serve`.
README_ADDRESSES = ("http://127.0.0.1:7070", "localhost:7070")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    server = start_server("--data-dir", "none")
    yield server
    server.stop_checked()


def _aimed_at(block: str, server: ServerProcess) -> str:
    for address in README_ADDRESSES:
        scheme = "http://" if address.startswith("http://") else ""
        block = block.replace(address, f"{scheme}127.0.0.1:{server.port}")
    return block


def test_the_curl_round_trip(server: ServerProcess) -> None:
    (block,) = [b for b in readme_blocks("sh") if "curl" in b and "/subscribe" in b]
    script = "set -euo pipefail\n" + _aimed_at(block, server) + "\nwait\n"
    run = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    # The parked poll and the poll with the cursor each print the publication.
    assert run.stdout.count('"data":{"title":"Hello"}') == 2, run.stdout
    assert '"name":"tag:c++"' in run.stdout


def test_the_python_example(server: ServerProcess, tmp_path: Path) -> None:
    (block,) = [b for b in readme_blocks("python") if "pushup.client" in b]
    script = tmp_path / "example.py"
    script.write_text(_aimed_at(block, server))
    # The example subscribes for ever: it has done its part once it printed the message.
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as example:
        try:
            assert example.stdout is not None
            line = example.stdout.readline()
            assert line.strip() == "{'title': 'Hello'}", line + example.stderr.read()
        finally:
            example.kill()
