"""Running a kernel script compiled and as plain Python (NUMBA_DISABLE_JIT=1), for the
kernel tests that check the two agree."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def compiled_and_pure_python(script: str, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """The array ``script`` saves to ``sys.argv[1]``, run compiled and then as plain Python."""
    outs = []
    for jit in ("0", "1"):
        path = tmp_path / f"out{jit}.npy"
        r = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "NUMBA_DISABLE_JIT": jit})
        assert r.returncode == 0, r.stderr
        outs.append(np.load(path))
    return outs[0], outs[1]
