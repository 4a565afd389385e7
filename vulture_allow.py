"""Names vulture (the dead-code check in `make lint`) can't see being used.

Each line names something that *is* used, by a framework or as plain data:
Qt virtual methods, http.server hooks, pytest fixtures found by name, ccxt client
options, and data fields read by tests, benchmarks or `as_dict()`.
"""

# Qt calls these (virtual overrides)
closeEvent  # noqa
columnCount  # noqa
headerData  # noqa
# http.server calls these / reads these class attributes (guard_app/sim/server.py)
daemon_threads  # noqa
allow_reuse_address  # noqa
request_queue_size  # noqa
handle_error  # noqa
protocol_version  # noqa
server_version  # noqa
sys_version  # noqa
log_message  # noqa
do_GET  # noqa
do_POST  # noqa
do_DELETE  # noqa
do_PUT  # noqa
close_connection  # noqa
description  # noqa  argparse parser attribute
# pytest finds these by name
pytestmark  # noqa
pytest_plugins  # noqa
_fresh_rate_limit_budgets  # noqa
_collect_garbage_on_the_gui_thread  # noqa
locked_keyring  # noqa
# keyring backends, configparser, tomlkit, ccxt options
priority  # noqa
optionxform  # noqa
indent  # noqa
enableLastJsonResponse  # noqa
# plain data read through as_dict(), by tests or by benchmarks
taken_at  # noqa
own_rate_limits  # noqa
waited  # noqa
# a Protocol used in a string annotation (guard_app/gui/app.py)
DesktopApiLike  # noqa
