"""``[enforcer] fast_interval_seconds``: the keep-flat cadence (docs/enforcement.md rule 14)."""

from __future__ import annotations

import pytest

from guard_app.core.config import parse_config
from guard_app.core.errors import ConfigError, ErrorKind

ACCOUNT = """
[[accounts]]
id = "a-spot"
user = "alice"
exchange = "binance"
max_positions = 3
"""


def test_default_is_two_seconds() -> None:
    config = parse_config(ACCOUNT)
    assert config.enforcer.fast_interval_seconds == 2.0
    assert config.enforcer.fast_interval == 2.0


def test_never_slower_than_the_normal_interval() -> None:
    config = parse_config("[enforcer]\ninterval_seconds = 1\nfast_interval_seconds = 5\n" + ACCOUNT)
    assert config.enforcer.fast_interval == 1.0


@pytest.mark.parametrize(("value", "problem"), [
    ("0.2", "must be at least 1 second"),
    ('"fast"', "enforcer.fast_interval_seconds"),
])
def test_too_fast_or_not_a_number_is_refused_naming_the_key(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[enforcer]\nfast_interval_seconds = {value}\n" + ACCOUNT)
    assert caught.value.key == "enforcer.fast_interval_seconds"
    assert problem in str(caught.value)
    assert caught.value.kind is ErrorKind.CONFIG
