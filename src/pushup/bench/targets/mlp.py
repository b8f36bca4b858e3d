"""The paper's MLP baseline (`pushup.bench.mlp_server`) as a benchmark target.

It speaks PushUp's API subset with the same JSON, so it reuses PushUp's request bytes
and response parsing; only the process started differs.
"""

from __future__ import annotations

import subprocess
import sys

from pushup.bench.targets.process import listening_socket, wait_until_serving
from pushup.bench.targets.pushup import PushUpTarget


class MlpTarget(PushUpTarget):
    """A thread-per-request long-polling server: one thread parked per poll."""

    name = "mlp"

    def start(self) -> None:
        sock = listening_socket(self.host)
        self.port = sock.getsockname()[1]
        args = [sys.executable, "-m", "pushup.bench.mlp_server", "--fd", str(sock.fileno())]
        self._proc = subprocess.Popen([*args, *self._extra_args], pass_fds=[sock.fileno()])
        sock.close()
        wait_until_serving(self.host, self.port, "/health", self._proc)
