"""Shared pytest fixtures. Each area's fixtures live in tests/fixtures/ and are loaded here."""

pytest_plugins = [
    "tests.fixtures.sim_fixtures",
    "tests.fixtures.keyring_fixtures",
    "tests.fixtures.world",
]
