"""The API's parts in one process: the [api] config, the wrong-token limiter, and the
server on a real enforcer's loop (healthz 503 once the loop is gone, a chunked body over
the limit, cap recovery in the metrics)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from guard_app.api import ApiService
from guard_app.api.auth import BadTokenLimiter, TokenKeeper, new_token
from guard_app.core.config import parse_config
from guard_app.core.enforcer import Enforcer
from guard_app.core.errors import ConfigError, SecretStoreError
from guard_app.exchanges import make_broker
from tests.api.helpers import free_port
from tests.fixtures.world import World, sim_account

# ---- [api] in the config -------------------------------------------------------------


@pytest.mark.parametrize(("table", "host", "port"), [
    ("", "127.0.0.1", 8787),
    ('listen = "127.0.0.5:9000"', "127.0.0.5", 9000),
    ('listen = "[::1]:8787"', "::1", 8787),
    ('listen = "localhost:1234"', "localhost", 1234),
    ('listen = "10.1.2.3:443"\ntls_cert = "c.pem"\ntls_key = "k.pem"', "10.1.2.3", 443),
])
def test_api_listen_addresses_that_are_accepted(table: str, host: str, port: int) -> None:
    api = parse_config(f"[api]\nenabled = true\n{table}\n").api
    assert (api.enabled, api.host, api.port) == (True, host, port)


@pytest.mark.parametrize(("table", "key"), [
    ('listen = "0.0.0.0:8787"', "api.listen"),
    ('listen = "[::]:8787"', "api.listen"),
    ('listen = "192.168.1.5:8787"', "api.listen"),
    ('listen = "example.com:8787"', "api.listen"),
    ('listen = "127.0.0.1"', "api.listen"),
    ('listen = "127.0.0.1:0"', "api.listen"),
    ('listen = "::1:8787"', "api.listen"),
    ('listen = "10.0.0.1:443"\ntls_cert = "c.pem"', "api.tls_key"),
    ('tls_key = "k.pem"', "api.tls_cert"),
    ('enabled = "yes"', "api.enabled"),
    ("token = 'x'", "api.token"),
])
def test_bad_api_tables_name_the_key(table: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[api]\n{table}\n")
    assert info.value.key == key


def test_no_account_may_take_the_api_tokens_keyring_entry() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[[accounts]]\nid = "api-token"\nuser = "a"\nexchange = "binance"\n'
                     "max_positions = 1\n")
    assert info.value.key == "accounts[0].id"


# ---- tokens and the limiter ----------------------------------------------------------


def test_tokens_are_long_url_safe_and_compared_whole() -> None:
    token = new_token()
    assert len(token) >= 32 and token.replace("-", "").replace("_", "").isalnum()
    keeper = TokenKeeper(lambda: token, token)
    assert keeper.check(token)
    assert not keeper.check(token[:-1]) and not keeper.check(token + "a")
    assert not keeper.check("") and not keeper.check(None)
    assert token not in repr(keeper)


def test_a_keyring_hiccup_keeps_the_current_token_and_a_removed_one_refuses_all() -> None:
    stored: list[str | None] = ["first"]

    def read() -> str | None:
        if stored[0] == "fail":
            raise SecretStoreError("the keyring is locked")
        return stored[0]

    keeper = TokenKeeper(read, "first")
    stored[0] = "fail"
    keeper.refresh()
    assert keeper.check("first")
    stored[0] = "second"
    keeper.refresh()
    assert not keeper.check("first") and keeper.check("second")
    stored[0] = None
    keeper.refresh()
    assert not keeper.check("second") and not keeper.has_token


def test_the_limiter_blocks_after_ten_wrong_tokens_until_a_quiet_minute() -> None:
    now = [1000.0]
    limiter = BadTokenLimiter(clock=lambda: now[0])
    for _ in range(9):
        limiter.wrong_token("10.0.0.1")
        now[0] += 1
    assert limiter.retry_after("10.0.0.1") is None
    limiter.wrong_token("10.0.0.1")  # the 10th within a minute
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") is None  # others unaffected
    now[0] += 30
    assert limiter.retry_after("10.0.0.1") == 30
    limiter.wrong_token("10.0.0.1")  # still guessing: the quiet minute starts again
    now[0] += 59
    assert limiter.retry_after("10.0.0.1") == 1
    now[0] += 1
    assert limiter.retry_after("10.0.0.1") is None


def test_wrong_tokens_spread_over_more_than_a_minute_never_block() -> None:
    now = [0.0]
    limiter = BadTokenLimiter(clock=lambda: now[0])
    for _ in range(100):
        limiter.wrong_token("10.0.0.1")
        now[0] += 7.0  # 9 per minute at most
        assert limiter.retry_after("10.0.0.1") is None


# ---- the server on a real enforcer's loop --------------------------------------------


class Harness:
    def __init__(self, service: ApiService, enforcer: Enforcer, base: str, token: str) -> None:
        self.service, self.enforcer, self.base, self.token = service, enforcer, base, token
        self.http = aiohttp.ClientSession()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.get(self.base + path, headers=headers, **kw) as r:
            body = await (r.json() if r.content_type == "application/json" else r.text())
            return r.status, body

    async def until(self, what: str, predicate: Any, deadline: float = 30.0) -> Any:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while True:
            value = await predicate()
            if value:
                return value
            assert loop.time() < end, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _harness(world: World, interval: float = 60) -> AsyncIterator[Harness]:
    config = world.write_config(
        [world.account("c-spot", world.sims[0], "c", max_positions=1)], interval=interval)
    port = free_port()
    config = parse_config(world.config_path.read_text()
                          + f'\n[api]\nlisten = "127.0.0.1:{port}"\n')
    token = new_token()
    service = ApiService(config, world.data_dir, lambda: token, token, [])
    enforcer = Enforcer(config, world.data_dir, observers=service.observers,
                        broker_factory=make_broker)
    service.bind(enforcer)
    await service.start()
    harness = Harness(service, enforcer, f"http://127.0.0.1:{port}", token)
    try:
        yield harness
    finally:
        await harness.http.close()
        await service.stop()


def test_healthz_is_503_once_the_enforcer_loop_has_ended(world: World) -> None:
    world.start_sim([sim_account("c", spot={"USDT": 10})])

    async def scenario() -> None:
        async with _harness(world) as h:
            run = asyncio.create_task(h.enforcer.run())

            async def healthy() -> bool:
                async with h.http.get(h.base + "/healthz") as r:
                    return r.status == 200 and await r.json() == {"ok": True}

            await h.until("healthz 200", healthy)
            h.enforcer.stop()
            await run  # EnforcerStopped: the view knows the loop is gone
            async with h.http.get(h.base + "/healthz") as r:
                assert r.status == 503 and await r.json() == {"ok": False}
            status, doc = await h.get("/api/v1/status")
            assert status == 200 and doc["enforcer"]["running"] is False

    asyncio.run(scenario())


def test_a_chunked_body_over_64_kib_is_413_and_changes_nothing(world: World) -> None:
    world.start_sim([sim_account("c", spot={"USDT": 10})])

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"reason": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    async def scenario() -> None:
        async with _harness(world) as h:
            async with h.http.post(h.base + "/api/v1/users/alice/forced_unwind", data=chunks(),
                                   headers={"Authorization": f"Bearer {h.token}"}) as r:
                assert r.status == 413
                assert "64 KiB" in (await r.json())["error"]
            status, flag = await h.get("/api/v1/users/alice/forced_unwind")
            assert status == 200 and flag["forced_unwind"] is False

    asyncio.run(scenario())


def test_status_and_metrics_follow_a_cap_breach_and_its_recovery(world: World) -> None:
    sim = world.start_sim([sim_account("c", spot={"USDT": 10, "BTC": 0.001, "ETH": 0.01})])

    async def scenario() -> None:
        async with _harness(world, interval=1) as h:
            status, doc = await h.get("/api/v1/status")
            (account,) = doc["accounts"]
            assert account["position_count"] is None and "not read" in account["error"]
            run = asyncio.create_task(h.enforcer.run())

            async def recovered() -> dict[str, float] | None:
                _, text = await h.get("/metrics")
                samples = {s.name: s.value for f in text_string_to_metric_families(text)
                           for s in f.samples if not s.labels or
                           s.labels.get("account") == "c-spot" and "result" not in s.labels}
                return samples if samples.get("guard_time_to_under_cap_seconds_count") else None

            samples = await h.until("back under cap in the metrics", recovered)
            assert samples["guard_account_positions"] == 1
            assert samples["guard_account_over_cap"] == 0
            assert samples["guard_interventions_total"] >= 1
            assert samples["guard_time_to_under_cap_seconds_sum"] > 0
            status, doc = await h.get("/api/v1/status")
            (account,) = doc["accounts"]
            assert account["error"] is None and account["position_count"] == 1
            assert account["over_cap"] is False and account["read_at"].endswith("Z")
            assert doc["enforcer"]["last_cycle_at"].endswith("Z")
            assert 0 <= doc["enforcer"]["next_cycle_in"] <= 1
            h.enforcer.stop()
            await run
            assert len(sim.exchange.orders) == 1  # the smaller position, once

    asyncio.run(scenario())
