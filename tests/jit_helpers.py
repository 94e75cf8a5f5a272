"""Running a network's cost and gradient compiled and as plain Python (NUMBA_DISABLE_JIT=1),
for the kernel tests that check the two agree."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

_SCRIPT = """\
import sys, numpy as np
sys.path.insert(0, {here!r})
{imports}
from digitnet.conv_kernels import set_threads
set_threads(2)
rng = np.random.default_rng(4)
x = rng.random((6, 242)).astype(np.float32); y = rng.integers(0, 3, 6)
c, g, a = {call}
np.save(sys.argv[1], np.concatenate([[c], g, a.ravel()]))
"""


def assert_compiled_matches_python(tmp_path, imports: str, call: str) -> None:
    """``call`` (an expression giving (cost, gradient, outputs) for inputs x (6, 242) and
    labels y in 0…2, after ``imports``) gives the same numbers compiled and as plain Python."""
    outs = []
    for jit in ("0", "1"):
        path = tmp_path / f"out{jit}.npy"
        script = _SCRIPT.format(here=HERE, imports=imports, call=call)
        r = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "NUMBA_DISABLE_JIT": jit})
        assert r.returncode == 0, r.stderr
        outs.append(np.load(path))
    assert np.abs(outs[0]).max() > 0
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-7)
