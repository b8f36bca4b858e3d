"""The build, pure Python unless PUSHUP_COMPILE=1: then the modules every publication and
poll runs through are compiled with mypyc (`make compiled`; docs/design/compiled-build.md
says why and what it gains). The rest is in pyproject.toml."""

import os

from setuptools import setup

# The request paths (docs/architecture.md, "Request paths, module by module"), under
# src/pushup/. Any module left out runs interpreted, calling and called by the compiled
# ones as before.
COMPILED = [
    "http/reader.py",
    "http/protocol.py",
    "http/eager.py",
    "http/idle.py",
    "http/router.py",
    "http/params.py",
    "http/limits.py",
    "http/publisher.py",
    "http/subscriber.py",
    "http/response.py",
    # Reverse-proxy mode's connection: an interpreted class cannot subclass a compiled
    # one (`HttpConnection`). For the same reason `http/request.py` stays out:
    # `http/forward.py` subclasses its `Request`, and mypyc cannot compile forward.py's
    # async generator.
    "http/proxy.py",
    "core/hub.py",
    "core/fanout.py",
    "core/waiters.py",
    "core/model.py",
    "core/ids.py",
    "engines/memory/engine.py",
    "engines/memory/cache.py",
    "engines/memory/message_log.py",
    "engines/memory/budget.py",
    "engines/memory/durability.py",
    "observe/metrics.py",
]

if os.environ.get("PUSHUP_COMPILE") == "1":
    from mypyc.build import mypycify

    setup(ext_modules=mypycify([f"src/pushup/{path}" for path in COMPILED], opt_level="3"))
else:
    setup()
