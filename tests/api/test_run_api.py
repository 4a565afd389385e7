"""The remote API of a real ``guard-app run --api`` process, driven over plain HTTP.

The enforcer runs against the simulator with keys in the real keyring; the API token
is made with ``guard-app api token`` like a user would. Every status code of the
contract, the kill switch end to end, the journal, the metrics, TLS, rotation, and a
search for the token in every file and every output.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from guard_app.core.secrets import SecretStore
from guard_app.core.state import StateStore
from tests.api.helpers import RunningGuard, call, free_port, start_guard, wait_for
from tests.fixtures.world import World, sim_account

pytestmark = pytest.mark.keyring


def api_table(port: int, **extra: str) -> str:
    lines = ["", "[api]", "enabled = true", f'listen = "127.0.0.1:{port}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def make_token(world: World, *args: str) -> str:
    result = world.cli("api", "token", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, "the token is printed alone on one line"
    token = lines[0]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", token)
    assert token not in result.stderr
    world.extra_outputs.append(result.stderr)
    return token


@pytest.fixture
def api_token_store(secret_store: SecretStore) -> Iterator[SecretStore]:
    """The keyring with no API token before the test, and none left after it."""
    secret_store.delete(SecretStore.API_TOKEN_USERNAME)
    yield secret_store
    secret_store.delete(SecretStore.API_TOKEN_USERNAME)


@pytest.fixture
def trading_world(world: World, api_token_store: SecretStore) -> Iterator[World]:
    """alice (spot, 3 positions) and bob (spot, 1 position) on one simulator."""
    sim = world.start_sim([
        sim_account("al", spot={"USDT": 10, "BTC": 0.001, "ETH": 0.01, "SOL": 1.0}),
        sim_account("bo", spot={"USDT": 10, "ETH": 0.01}),
    ])
    world.write_config([world.account("al-spot", sim, "al"),
                        world.account("bo-spot", sim, "bo", user="bob")], interval=60)
    world.extra_outputs = []  # type: ignore[attr-defined]
    world.api_port = free_port()  # type: ignore[attr-defined]
    with world.config_path.open("a") as f:
        f.write(api_table(world.api_port))  # type: ignore[attr-defined]
    yield world


@pytest.fixture
def running(trading_world: World, tmp_path: Path) -> Iterator[RunningGuard]:
    world = trading_world
    world.token = make_token(world)  # type: ignore[attr-defined]
    guard = start_guard(world.config_path, world.data_dir, world.api_port, tmp_path,  # type: ignore[attr-defined]
                        extra_args=())  # [api] enabled = true is enough
    yield guard
    guard.stop()


def assert_error(answer, status: int) -> None:  # type: ignore[no-untyped-def]
    assert answer.status == status, (answer.status, answer.body)
    doc = answer.json()
    assert set(doc) == {"error"} and doc["error"] and "\n" not in doc["error"]
    assert "set-cookie" not in answer.headers
    assert not any(h.startswith("access-control-") for h in answer.headers)


def test_token_is_created_once_and_rotated(world: World, api_token_store: SecretStore) -> None:
    world.extra_outputs = []  # type: ignore[attr-defined]
    first = make_token(world)
    again = world.cli("api", "token")
    assert again.returncode == 2
    assert "--rotate" in again.stderr and again.stdout == ""
    assert first not in again.stderr
    assert api_token_store.get_api_token() == first
    second = make_token(world, "--rotate")
    assert second != first and api_token_store.get_api_token() == second


def test_run_with_the_api_and_no_token_exits_2_before_reading_any_account(
    trading_world: World,
) -> None:
    sim = trading_world.sims[0]
    before = sim.exchange.requests_served
    result = trading_world.cli("run", "--api")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "guard-app api token" in lines[0]
    assert sim.exchange.requests_served == before


def test_a_non_loopback_listen_without_tls_exits_2_naming_the_key(
    trading_world: World,
) -> None:
    text = trading_world.config_path.read_text().replace("127.0.0.1:", "0.0.0.0:")
    trading_world.config_path.write_text(text)
    result = trading_world.cli("run", "--api")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "api.listen" in lines[0]


def test_every_status_code_of_the_contract(running: RunningGuard, trading_world: World) -> None:
    token = trading_world.token  # type: ignore[attr-defined]
    flag_path = "/api/v1/users/alice/forced_unwind"

    health = running.call("GET", "/healthz")
    assert health.status == 200 and health.json() == {"ok": True}
    # authentication first, whatever the path
    for method, path in (("GET", "/api/v1/status"), ("GET", "/nowhere"), ("POST", flag_path),
                         ("GET", "/metrics"), ("POST", "/healthz"), ("OPTIONS", flag_path)):
        assert_error(running.call(method, path), 401)
    assert_error(running.call("GET", "/api/v1/status", token="wrong-" + token[6:]), 401)
    assert_error(running.call("GET", "/api/v1/status", token=token.upper()), 401)
    assert_error(running.call("GET", "/nowhere", token=token), 404)
    assert_error(running.call("GET", "/api/v1/users/mallory/forced_unwind", token=token), 404)
    assert_error(running.call("POST", "/api/v1/users/mallory/forced_unwind", token=token), 404)
    put = running.call("PUT", flag_path, token=token)
    assert_error(put, 405)
    assert set(put.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST", "DELETE"}
    assert_error(running.call("POST", "/healthz", token=token), 405)
    assert_error(running.call("POST", flag_path, token=token, body=b"{not json"), 400)
    assert_error(running.call("POST", flag_path, token=token, body=b"[1, 2]"), 400)
    assert_error(running.call("POST", flag_path, token=token, body=b'{"reason": 5}'), 400)
    big = json.dumps({"reason": "x" * (65 * 1024)}).encode()
    assert_error(running.call("POST", flag_path, token=token, body=big), 413)
    # nothing of the above changed a flag
    assert StateStore(trading_world.data_dir).flag("alice") is None

    status = running.call("GET", "/api/v1/status", token=token,
                          headers={"Origin": "https://evil.example"})
    assert status.status == 200
    assert "set-cookie" not in status.headers
    assert not any(h.startswith("access-control-") for h in status.headers)
    assert token not in status.text
    doc = status.json()
    assert set(doc) == {"users", "accounts", "enforcer"}
    assert set(doc["users"]) == {"alice", "bob"}
    assert set(doc["enforcer"]) == {"running", "paused", "last_cycle_at", "next_cycle_in"}
    assert doc["enforcer"]["running"] is True and doc["enforcer"]["paused"] is False
    assert [a["id"] for a in doc["accounts"]] == ["al-spot", "bo-spot"]

    never = running.call("GET", flag_path, token=token)
    assert never.status == 200
    assert never.json() == {"user": "alice", "forced_unwind": False, "since": None, "by": None,
                            "reason": None}


def test_post_closes_the_users_positions_delete_stops_and_the_journal_says_who(
    running: RunningGuard, trading_world: World,
) -> None:
    token = trading_world.token  # type: ignore[attr-defined]
    sim = trading_world.sims[0]
    flag_path = "/api/v1/users/alice/forced_unwind"
    # the first cycle has read both accounts
    wait_for(lambda: all(a["position_count"] is not None for a in
                         running.call("GET", "/api/v1/status", token=token).json()["accounts"]),
             "the first cycle's reads")

    on = running.call("POST", flag_path, token=token,
                      body=json.dumps({"reason": "risk desk: limit breach"}).encode(),
                      headers={"Content-Type": "application/json",
                               "X-Forwarded-For": "203.0.113.9"})
    assert on.status == 200
    flag = on.json()
    assert flag["user"] == "alice" and flag["forced_unwind"] is True
    assert flag["by"] == "api" and flag["reason"] == "risk desk: limit breach"
    assert flag["since"].endswith("Z")

    wait_for(lambda: set(sim.exchange.balances("al")) == {"USDT"}, "alice's spot to be flat")
    assert "ETH" in sim.exchange.balances("bo"), "bob is not alice"
    got = running.call("GET", flag_path, token=token).json()
    assert got == flag

    off = running.call("DELETE", flag_path, token=token)
    assert off.status == 200 and off.json()["forced_unwind"] is False
    assert off.json()["by"] == "api"

    store = StateStore(trading_world.data_dir)
    entries = store.entries(kinds=["unwind_on", "unwind_off"], newest_first=False)
    assert [e.kind for e in entries] == ["unwind_on", "unwind_off"]
    for entry in entries:
        assert entry.data["by"] == "api"
        assert entry.data["address"] == "127.0.0.1"  # the socket's peer, not X-Forwarded-For

    # off means off: once a cycle has started after the flag went off, a new position of
    # alice stays open through the next cycle
    off_id = entries[-1].id
    wait_for(lambda: store.entries(kinds=["cycle_start"], after_id=off_id, limit=1),
             "a cycle started after the flag went off")
    mark = store.entries(limit=1)[0].id
    filled_before = len(store.entries(kinds=["order_filled"], limit=1000))
    sim.exchange.add_balance("al", "ETH", 0.01)
    # a wake through the API (turning bob's never-set flag off) runs a cycle now
    assert running.call("DELETE", "/api/v1/users/bob/forced_unwind", token=token).status == 200
    wait_for(lambda: any("ETH" in json.dumps(e.data) for e in store.entries(
        kinds=["snapshot"], account_id="al-spot", after_id=mark)), "alice's re-read")
    assert "ETH" in sim.exchange.balances("al")
    assert len(store.entries(kinds=["order_filled"], limit=1000)) == filled_before

    # the metrics agree with the journal (scraped once the last cycle is in both)
    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        text = running.call("GET", "/metrics", token=token).text
        got = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
        cycles = len(store.entries(kinds=["cycle_end"], limit=1000))
        return got if got[("guard_cycle_duration_seconds_count", ())] == cycles else None

    samples = wait_for(scrape, "the metrics to count every journaled cycle")
    families = {f.name: f for f in text_string_to_metric_families(
        running.call("GET", "/metrics", token=token).text)}
    filled = len(store.entries(kinds=["order_filled"], account_id="al-spot", limit=1000))
    assert filled == 3
    assert samples[("guard_orders_total", (("account", "al-spot"), ("result", "filled")))] == filled
    assert samples[("guard_orders_total", (("account", "al-spot"), ("result", "rejected")))] == 0
    assert samples[("guard_orders_total", (("account", "bo-spot"), ("result", "filled")))] == 0
    interventions = len(store.entries(kinds=["intervention"], limit=1000))
    assert samples[("guard_interventions_total", ())] == interventions >= 1
    assert samples[("guard_forced_unwind_activations_total", ())] == 1
    assert samples[("guard_user_forced_unwind", (("user", "alice"),))] == 0
    assert samples[("guard_user_forced_unwind", (("user", "bob"),))] == 0
    assert samples[("guard_account_up", (("account", "al-spot"),))] == 1
    assert samples[("guard_account_positions", (("account", "bo-spot"),))] == 1
    assert samples[("guard_account_over_cap", (("account", "al-spot"),))] == 0
    last_end = store.entries(kinds=["cycle_end"], limit=1)[0]
    assert abs(samples[("guard_last_cycle_timestamp_seconds", ())] - last_end.ts) < 5
    assert "guard_time_to_under_cap_seconds" in families
    assert families["guard_cycle_duration_seconds"].type == "histogram"


def test_wrong_tokens_get_429_for_that_address_only(
    running: RunningGuard, trading_world: World,
) -> None:
    token = trading_world.token  # type: ignore[attr-defined]
    for _ in range(10):
        assert_error(running.call("GET", "/api/v1/status", token="guess", source="127.0.0.1"), 401)
    blocked = running.call("GET", "/api/v1/status", token=token, source="127.0.0.1")
    assert_error(blocked, 429)
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    # another address (127.0.0.2 is loopback too) is served as usual
    other = running.call("GET", "/api/v1/status", token=token, source="127.0.0.2")
    assert other.status == 200
    # health checks stay open
    assert running.call("GET", "/healthz", source="127.0.0.1").status == 200


def test_rotating_the_token_locks_the_old_one_out_of_the_running_process(
    running: RunningGuard, trading_world: World,
) -> None:
    old = trading_world.token  # type: ignore[attr-defined]
    assert running.call("GET", "/api/v1/status", token=old).status == 200
    new = make_token(trading_world, "--rotate")
    wait_for(lambda: running.call("GET", "/metrics", token=old).status == 401,
             "the old token to be refused")
    assert running.call("GET", "/metrics", token=new).status == 200


def test_the_token_is_in_no_file_and_no_output(
    running: RunningGuard, trading_world: World, tmp_path: Path,
) -> None:
    token = trading_world.token  # type: ignore[attr-defined]
    flag_path = "/api/v1/users/alice/forced_unwind"
    running.call("POST", flag_path, token=token)
    running.call("POST", flag_path, token=token + "x")
    running.call("DELETE", flag_path, token=token)
    running.call("GET", "/api/v1/status", token=token)
    status = trading_world.cli("status", "--json")
    assert running.stop() == 0
    outputs = [running.output(), status.stdout, status.stderr,
               *trading_world.extra_outputs]  # type: ignore[attr-defined]
    for text in outputs:
        assert token not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), f"token found in {path}"


def test_tls_with_a_certificate_the_test_makes(
    trading_world: World, tmp_path: Path,
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    with trading_world.config_path.open("a") as f:
        f.write(f"tls_cert = {json.dumps(str(cert_path))}\ntls_key = {json.dumps(str(key_path))}\n")
    token = make_token(trading_world)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    guard = start_guard(trading_world.config_path, trading_world.data_dir,
                        trading_world.api_port, tmp_path, tls=client)  # type: ignore[attr-defined]
    try:
        assert guard.call("GET", "/api/v1/status", token=token).status == 200
        # plain HTTP to the TLS port gets no API answer
        with pytest.raises(Exception):  # noqa: B017 - any failure: reset, bad status line
            answer = call(guard.port, "GET", "/healthz")
            assert answer.status != 200
            raise ConnectionError(answer.status)
        # a client that doesn't trust the certificate is refused by its own TLS check
        with pytest.raises(ssl.SSLError):
            call(guard.port, "GET", "/healthz", tls=ssl.create_default_context())
    finally:
        assert guard.stop() == 0


def test_a_busy_port_or_a_missing_certificate_exits_2_naming_the_key(
    trading_world: World, tmp_path: Path,
) -> None:
    make_token(trading_world)
    sim = trading_world.sims[0]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", trading_world.api_port))  # type: ignore[attr-defined]
        busy.listen()
        result = trading_world.cli("run", "--api")
    assert result.returncode == 2
    assert "api.listen" in result.stderr and "Traceback" not in result.stderr
    with trading_world.config_path.open("a") as f:
        f.write(f"tls_cert = {json.dumps(str(tmp_path / 'nope.pem'))}\n"
                f"tls_key = {json.dumps(str(tmp_path / 'nope.key'))}\n")
    before = sim.exchange.requests_served
    result = trading_world.cli("run", "--api")
    assert result.returncode == 2
    assert "api.tls_cert" in result.stderr and "Traceback" not in result.stderr
    assert sim.exchange.requests_served == before
