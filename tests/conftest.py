"""Shared pytest fixtures. Each area's fixtures live in tests/fixtures/ and are loaded here."""

pytest_plugins = [
    "tests.fixtures.sim_fixtures",
    "tests.fixtures.keyring_fixtures",
    "tests.fixtures.world",
    "tests.fixtures.postgres_fixtures",
]

# The app's entry points import guard_app.exchanges, which wires ccxt's exchange ids into
# the config check; tests that load configs directly get the same check.
import guard_app.exchanges  # noqa: E402,F401
