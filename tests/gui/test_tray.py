"""The tray: worst state → icon and tooltip, notices, and the menu's actions.

Offscreen there is no system tray, so the icon is never shown; its state, tooltip,
menu and notification log are still real and tested here. The window is a small
stand-in; the unwind requests go to the app's shared Actions, recorded here (the real
confirmation has its own tests).
"""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QWidget

from guard_app.core.events import Heartbeat
from guard_app.gui.actions import Actions
from guard_app.gui.dashboard_model import DashboardModel
from guard_app.gui.enforcer_host import EnforcerHost
from guard_app.gui.model.dashboard import Notice
from guard_app.gui.tray import Tray
from tests.fixtures.world import World, sim_account
from tests.gui.conftest import EventLog, MakeHost

pytestmark = [pytest.mark.gui, pytest.mark.keyring]


class WindowStandIn(QWidget):
    """The window the tray shows before asking."""


class RecordingActions(Actions):
    """The app's actions, recording what the tray asked to confirm (and confirming nothing)."""

    def __init__(self, host: EnforcerHost, model: DashboardModel) -> None:
        super().__init__(host, model)
        self.requests: list[tuple[str, str]] = []

    def request_unwind(self, user: str, *, source: str = "window") -> bool:
        self.requests.append(("on", user))
        return False

    def request_unwind_off(self, user: str, *, source: str = "window") -> bool:
        self.requests.append(("off", user))
        return False


def two_users(world: World, interval: float = 60.0, alice_spot: dict | None = None):
    sim = world.start_sim([
        sim_account("a", spot=alice_spot or {"USDT": 500, "BTC": 0.001}),
        sim_account("b", spot={"USDT": 500, "ETH": 0.01}),
    ])
    config = world.write_config([
        world.account("alice-spot", sim, "a", user="alice", max_positions=2),
        world.account("bob-spot", sim, "b", user="bob", max_positions=2),
    ], interval=interval)
    return sim, config


@pytest.fixture
def window(qtbot) -> WindowStandIn:
    w = WindowStandIn()
    qtbot.addWidget(w)
    return w


def test_icon_and_tooltip_follow_the_worst_state_over_cap_and_back(
        qtbot, world: World, make_host: MakeHost, window: WindowStandIn) -> None:
    over = {"USDT": 500, "BTC": 0.001, "ETH": 0.01, "SOL": 0.1, "BNB": 0.02}  # 4 > cap 2
    sim, config = two_users(world, interval=1.0, alice_spot=over)
    host = make_host(config, world.data_dir, world.secrets)
    model = DashboardModel(host)
    tray = Tray(window, host, model)
    seen: list[tuple[str, str, str]] = []
    model.worst_state_changed.connect(
        lambda s: seen.append((s, tray.icon_name, tray.toolTip())))
    assert tray.state == "pending" and tray.icon_name == "tray-ok"

    host.start()
    qtbot.waitUntil(lambda: bool(seen) and seen[-1][0] == "ok" and any(
        s == "over_cap" for s, _, _ in seen), timeout=15_000)

    states = [s for s, _, _ in seen]
    assert states.index("over_cap") < len(states) - 1
    _, icon, tip = next(x for x in seen if x[0] == "over_cap")
    assert icon == "tray-over-cap"
    assert "alice-spot over cap 4/2" in tip and "bob-spot" not in tip
    assert tray.icon_name == "tray-ok"
    assert "all under their caps" in tray.toolTip()
    assert {o.symbol for o in sim.exchange.orders if o.accepted} == {"SOL/USDT", "BNB/USDT"}
    # the model's notice about alice went out as a notification
    assert any("alice-spot" in title + text for title, text in tray.notifications)


def test_menu_offers_unwind_per_user_through_the_window_and_pause(
        qtbot, world: World, make_host: MakeHost, window: WindowStandIn) -> None:
    _sim, config = two_users(world)
    host = make_host(config, world.data_dir, world.secrets)
    model = DashboardModel(host)
    actions = RecordingActions(host, model)
    tray = Tray(window, host, model, actions)

    names = [a.objectName() for a in tray.menu.actions() if a.objectName()]
    assert names == ["tray-show", "tray-unwind-alice", "tray-unwind-bob", "tray-pause",
                     "tray-quit"]
    tray.action("tray-unwind-bob").trigger()
    assert actions.requests == [("on", "bob")]
    assert window.isVisible()  # the confirmation needs the window in front

    host.start()
    host.set_forced_unwind("bob", True, by="test")
    # The menu follows the enforcer's announcement of the stored flag.
    qtbot.waitUntil(lambda: tray.action("tray-unwind-off-bob") is not None, timeout=10_000)
    off = tray.action("tray-unwind-off-bob")
    assert off is not None and tray.action("tray-unwind-bob") is None
    assert off.text() == "Turn off unwind bob…"
    off.trigger()
    assert actions.requests[-1] == ("off", "bob")

    tray.action("tray-pause").trigger()
    assert host.paused and tray.action("tray-resume") is not None
    assert "paused" in tray.toolTip()
    tray.action("tray-resume").trigger()
    assert not host.paused and tray.action("tray-pause") is not None

    with qtbot.waitSignal(tray.quit_requested, timeout=1_000):
        tray.action("tray-quit").trigger()


def test_notices_stalls_and_crashes_reach_the_tray(
        qtbot, world: World, make_host: MakeHost, window: WindowStandIn) -> None:
    _sim, config = two_users(world)
    host = make_host(config, world.data_dir, world.secrets)
    model = DashboardModel(host)
    tray = Tray(window, host, model)

    model.notice.emit(Notice("unwind_started", "Forced unwind started",
                             "alice: closing 3 positions", None, "alice"))
    assert tray.notifications[-1] == ("Forced unwind started", "alice: closing 3 positions")

    host.stalled.emit(20.0)
    assert tray.icon_name == "tray-error"
    assert "not responding (20 s)" in tray.toolTip()
    assert tray.notifications[-1][0] == "Enforcer stalled"
    host.enforcer_event.emit(Heartbeat(next_cycle_in=5.0, paused=False))
    assert tray.icon_name == "tray-ok" and "not responding" not in tray.toolTip()

    host.crashed.emit("RuntimeError: boom")
    assert tray.icon_name == "tray-error"
    assert tray.notifications[-1] == ("Enforcer crashed",
                                      "RuntimeError: boom. guard-app is restarting it.")


def test_a_real_stall_turns_the_tray_red(
        qtbot, world: World, make_host: MakeHost, window: WindowStandIn) -> None:
    _sim, config = two_users(world)
    host = make_host(config, world.data_dir, world.secrets, stall_after=1.0)
    model = DashboardModel(host)
    tray = Tray(window, host, model)
    log = EventLog(host)
    host.start()
    qtbot.waitUntil(lambda: log.cycles_finished() >= 1, timeout=10_000)
    assert tray.icon_name == "tray-ok"
    loop = host._worker.loop

    with qtbot.waitSignal(host.stalled, timeout=5_000):
        loop.call_soon_threadsafe(__import__("time").sleep, 2.0)

    assert tray.icon_name == "tray-error"
    qtbot.waitUntil(lambda: tray.icon_name == "tray-ok", timeout=5_000)
