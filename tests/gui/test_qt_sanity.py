"""Guards against Qt binding bugs that would kill a long-running guard-app.

PySide6 6.12.0 drops a reference to ``True`` on every Python-side ``Signal.emit()``;
the enforcer host and the window emit many signals per cycle, so after some hours
the interpreter aborts with "bool_dealloc". pyproject.toml excludes that release;
this test fails if an installed release has the same bug.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    number = Signal(int)
    flag = Signal(bool)


def test_emitting_signals_does_not_leak_references_to_true(qapp) -> None:
    emitter = _Emitter()
    received: list[object] = []
    emitter.number.connect(received.append)
    emitter.flag.connect(received.append)
    before = sys.getrefcount(True)
    for i in range(200):
        emitter.number.emit(i)
        emitter.flag.emit(False)
    received.clear()
    assert sys.getrefcount(True) - before >= 0
