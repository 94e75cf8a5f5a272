"""Atomic writes: the new file appears whole, or the old one stays."""

from __future__ import annotations

import pytest

from digitnet.atomic import atomic_write


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(ZeroDivisionError):
        with atomic_write(target) as f:
            f.write(b"half")
            1 / 0
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
