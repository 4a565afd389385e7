"""The remote API in the desktop app: the host serves it on the enforcer's loop, and the
status strip's panel shows where, turns it on, copies the address and rotates the token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtGui import QGuiApplication

from guard_app.api.desktop import DesktopApi
from guard_app.core.config import parse_config
from guard_app.core.secrets import SecretStore
from guard_app.gui.api_panel import ApiPanel
from tests.api.helpers import call, free_port, wait_for
from tests.fixtures.world import World, sim_account
from tests.gui.conftest import MakeHost

pytestmark = [pytest.mark.gui, pytest.mark.keyring]


@pytest.fixture
def no_token(secret_store: SecretStore) -> Iterator[SecretStore]:
    secret_store.delete(SecretStore.API_TOKEN_USERNAME)
    yield secret_store
    secret_store.delete(SecretStore.API_TOKEN_USERNAME)


def _world(world: World, enabled: bool) -> tuple[Any, int]:
    sim = world.start_sim([sim_account("g", spot={"USDT": 10, "ETH": 0.01})])
    world.write_config([world.account("g-spot", sim, "g")])
    port = free_port()
    with world.config_path.open("a") as f:
        f.write(f'\n[api]\nenabled = {"true" if enabled else "false"}\n'
                f'listen = "127.0.0.1:{port}"\n')
    return parse_config(world.config_path.read_text(), str(world.config_path)), port


def test_turn_on_copy_address_and_rotate_from_the_window(
    world: World, no_token: SecretStore, make_host: MakeHost, qtbot: Any,
) -> None:
    config, port = _world(world, enabled=False)
    api = DesktopApi(config, world.data_dir, no_token, world.config_path)
    host = make_host(config, world.data_dir, no_token, companions=[api])
    panel = ApiPanel(api)
    qtbot.addWidget(panel)
    host.start()
    assert panel.label.text() == "API off"
    with pytest.raises(OSError):
        call(port, "GET", "/healthz")  # off means not listening

    panel.turn_on_button.click()
    assert panel.token_dialog is not None  # no token was stored: one was made, shown once
    token = panel.token_dialog.field.text()
    assert no_token.get_api_token() == token
    assert parse_config(world.config_path.read_text()).api.enabled is True
    url = f"http://127.0.0.1:{port}"
    qtbot.waitUntil(lambda: panel.label.text() == f"API on at {url}", timeout=15000)
    assert not panel.turn_on_button.isVisible()
    assert call(port, "GET", "/api/v1/status", token=token).status == 200

    panel.copy_button.click()
    assert QGuiApplication.clipboard().text() == url

    panel.rotate_now()
    new = panel.token_dialog.field.text()
    assert new != token and no_token.get_api_token() == new
    wait_for(lambda: call(port, "GET", "/metrics", token=token).status == 401,
             "the old token to be refused")
    assert call(port, "GET", "/metrics", token=new).status == 200


def test_enabled_without_a_token_runs_the_enforcer_and_says_why(
    world: World, no_token: SecretStore, make_host: MakeHost, qtbot: Any,
) -> None:
    config, port = _world(world, enabled=True)
    api = DesktopApi(config, world.data_dir, no_token, world.config_path)
    host = make_host(config, world.data_dir, no_token, companions=[api])
    panel = ApiPanel(api)
    qtbot.addWidget(panel)
    host.start()
    qtbot.waitUntil(lambda: "guard-app api token" in panel.label.text(), timeout=15000)
    assert panel.label.text().startswith("API off: no API token")
    assert host.alive
    with pytest.raises(OSError):
        call(port, "GET", "/healthz")
