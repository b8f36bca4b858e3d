"""PushUp with its journal on, as a benchmark target: what persistence costs.

The plain `pushup` target runs with `--data-dir none`, so it measures the server alone;
this one journals to a fresh data directory of its own (removed when it stops), as
`pushup serve` does by default.
"""

from __future__ import annotations

import shutil
import tempfile

from pushup.bench.targets.pushup import PushUpTarget


class PushUpJournalTarget(PushUpTarget):
    name = "pushup-journal"

    def __init__(self, host: str = "127.0.0.1", extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(host, extra_args)
        self._base_args = extra_args
        self._data_dir: str | None = None

    def start(self) -> None:
        # Made here, not in __init__: load-generator processes build targets too, only
        # for their request codec.
        self._data_dir = tempfile.mkdtemp(prefix="pushup-bench-data-")
        # The last --data-dir wins over the plain target's `none`.
        self._extra_args = ("--data-dir", self._data_dir, *self._base_args)
        try:
            super().start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        super().stop()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
