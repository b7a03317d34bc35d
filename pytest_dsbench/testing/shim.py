"""An executable that stands in for an engine's Python interpreter, so start mode can launch a fake engine.

``--engine-python PATH`` makes the suite run ``PATH -m vllm.entrypoints... --port N ...``; the shim ignores the
module and serves :mod:`pytest_dsbench.testing.fake_engine` on that port with the given configuration.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any


def write_engine_shim(folder: Path, config: dict[str, Any] | None = None, *, spawn_child: bool = False,
                      name: str = "fake-python", supervisor_exit_delay_s: float | None = None) -> Path:
    """Write an executable shim in ``folder``; ``spawn_child`` also starts a sleeping child in the group.

    ``supervisor_exit_delay_s``: the shim stays the engine's process and serves from a child, as SGLang's launcher
    does; when the child dies the shim waits that long (SGLang's crash diagnostics), then kills itself with
    SIGKILL, so the engine's port refuses connections while its process still runs."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{name}.json"
    config_path.write_text(json.dumps(config or {}), encoding="utf-8")
    python = shlex.quote(sys.executable)
    child = f"{python} -c 'import time; time.sleep(600)' &\n" if spawn_child else ""
    serve = f"{python} -m pytest_dsbench.testing.fake_engine --fake-config @{shlex.quote(str(config_path))} \"$@\""
    if supervisor_exit_delay_s is None:
        run = f"exec {serve}\n"
    else:
        run = (
            f"{serve} &\nwait $!\n"
            f"echo 'supervisor: the server exited; sleeping {supervisor_exit_delay_s:g} s before killing the tree'\n"
            f"sleep {supervisor_exit_delay_s:g}\nkill -KILL $$\n"
        )
    script = (
        "#!/bin/sh\n"
        "# stand-in for an engine interpreter (pytest-dsbench self-tests)\n"
        'case "$1" in -c) exec ' + python + ' "$@";; esac\n'
        + child
        + run
    )
    path = folder / name
    path.write_text(script, encoding="utf-8")
    path.chmod(0o755)
    return path
