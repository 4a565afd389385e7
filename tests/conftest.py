"""Shared pytest fixtures. Each area's fixtures live in tests/fixtures/ and are loaded here."""

pytest_plugins = [
    "tests.fixtures.sim_fixtures",
    "tests.fixtures.keyring_fixtures",
    "tests.fixtures.world",
    "tests.fixtures.postgres_fixtures",
]

# The app's entry points import guard_app.exchanges, which wires ccxt's exchange ids into
# the config check; tests that load configs directly get the same check.
import pytest  # noqa: E402

import guard_app.exchanges  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _fresh_rate_limit_budgets():
    """The rate limiter shares IP budgets process-wide, keyed by host:port; a simulator
    of an earlier test may have had the same port (and told us to back off)."""
    from guard_app.exchanges.ratelimit import reset_shared_budgets

    reset_shared_budgets()
    yield
