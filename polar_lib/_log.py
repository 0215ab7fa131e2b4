"""What polar_lib tells its user: one line on stderr per long or noteworthy action (a model
conversion, a reused run, a resume, a cached evaluation), through the logger ``"polar_lib"``
(silence it with ``logging.getLogger("polar_lib").setLevel(logging.WARNING)``)."""
from __future__ import annotations

import logging
import sys


class _CurrentStderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so ``redirect_stderr`` and notebooks see it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


log = logging.getLogger("polar_lib")
if not log.handlers:
    _handler = _CurrentStderr()
    _handler.setFormatter(logging.Formatter("polar_lib: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False
