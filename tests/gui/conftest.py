"""GUI test set-up: offscreen Qt, and a factory for enforcer hosts that always stop.

``QT_QPA_PLATFORM`` must be set before Qt is imported, so it is set here at import
time (pytest loads conftest files before the test modules import PySide6).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gc  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QCoreApplication, QEvent  # noqa: E402

from guard_app.core.config import AppConfig  # noqa: E402
from guard_app.core.events import CycleFinished, EnforcerEvent  # noqa: E402
from guard_app.core.secrets import SecretStore  # noqa: E402
from guard_app.gui.enforcer_host import EnforcerHost  # noqa: E402

MakeHost = Callable[..., EnforcerHost]


class EventLog:
    """Every event a host emitted on the GUI thread, for assertions."""

    def __init__(self, host: EnforcerHost) -> None:
        self.events: list[EnforcerEvent] = []
        host.enforcer_event.connect(self.events.append)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def cycles_finished(self) -> int:
        return len(self.of(CycleFinished))


@pytest.fixture
def make_host(qapp: Any) -> Iterator[MakeHost]:
    """``make_host(config, data_dir, secrets, **kw)``: an EnforcerHost closed after the test."""
    hosts: list[EnforcerHost] = []

    def make(config: AppConfig, data_dir: Path, secrets: SecretStore, **kw: Any) -> EnforcerHost:
        host = EnforcerHost(config, data_dir, secrets, **kw)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        assert host.close(timeout=15), "the enforcer thread did not stop"
        host.deleteLater()  # destroyed here, on the GUI thread, with its timers
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture(autouse=True)
def _collect_garbage_on_the_gui_thread(qapp: Any) -> Iterator[None]:
    """Free each test's Qt objects on the GUI thread.

    Left to Python's cyclic garbage collector, they would be freed on whatever thread
    it happens to run (an enforcer or simulator thread), and a QObject with timers
    destroyed off its own thread leaves Qt a dangling timer that crashes a later test.
    """
    yield
    gc.collect()
