"""Running the real console script as a user or a script would: in a pipe, in a terminal of
a given width (a pseudo-terminal), with stdin written line by line."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

DIGITNET = Path(sys.executable).with_name("digitnet")


def env(**extra) -> dict:
    """The environment of a run: no colour unless asked, no model from the caller's shell."""
    e = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100", **{k: str(v) for k, v in extra.items()}}
    e.pop("DIGITNET_MODEL", None) if "DIGITNET_MODEL" not in extra else None
    return e


def run(args, cwd=None, input=None, **extra) -> subprocess.CompletedProcess:
    """The console script in a pipe: (returncode, stdout bytes, stderr text)."""
    return subprocess.run([str(DIGITNET), *map(str, args)], input=input, capture_output=True, timeout=120,
                          cwd=cwd, env=env(**extra))


def run_in_terminal(args, columns: int, cwd=None, **extra) -> tuple[int, str]:
    """The console script with stdout and stderr on a pseudo-terminal ``columns`` wide:
    (exit code, everything it wrote, as text)."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    e = env(COLUMNS=columns, **extra)
    p = subprocess.Popen([str(DIGITNET), *map(str, args)], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                         cwd=cwd, env=e, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            p.kill()
            raise TimeoutError("the command did not finish")
        try:
            data = os.read(master, 65536)
        except OSError:            # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
