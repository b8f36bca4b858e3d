"""`python -m examples.chat` (`make demo`): the chat application, and PushUp in front of
it (`--upstream`) so the browser sees one origin, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from types import FrameType


def _ignore_sigint() -> None:
    # A Ctrl-C reaches the whole process group: the children leave it to the launcher,
    # which stops them in order (PushUp first, so no request finds the app gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7070, help="where browsers connect")
    parser.add_argument("--app-port", type=int, default=8000, help="the application's port")
    args = parser.parse_args()
    pushup_url = f"http://127.0.0.1:{args.port}"
    app_url = f"http://127.0.0.1:{args.app_port}"
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    app = subprocess.Popen(
        [
            sys.executable,
            *("-m", "examples.chat.app", "--port", str(args.app_port), "--pushup", pushup_url),
        ],
        preexec_fn=_ignore_sigint,
    )
    pushup = subprocess.Popen(
        [
            sys.executable,
            *("-m", "pushup", "serve", "--port", str(args.port), "--upstream", app_url),
            *("--data-dir", "none"),
        ],
        preexec_fn=_ignore_sigint,
    )
    children = [pushup, app]
    print(f"chat: open {pushup_url}/ in two browser windows; Ctrl-C stops", flush=True)
    while not done.wait(0.5):
        if any(child.poll() is not None for child in children):
            break
    for child in children:
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0 if done.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
