"""The ``guard-app`` command: the desktop app by default, headless subcommands otherwise.

Contract (docs/cli.md): ``run [--once] [--api]``, ``api token [--rotate]``,
``status [--json]``, ``unwind USER [--yes|--off]``, ``keys set|delete ACCOUNT``,
``state password``, ``state copy --to URL``, ``demo``, ``sim``; ``--config`` and
``--data-dir`` before or
after the subcommand. Exit codes: 0 ok, 1 an account failed (``run --once``,
``status``) or a confirmation was declined, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from guard_app import APP_NAME, ExitCode, __version__

EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.FAILED
EXIT_USAGE = ExitCode.USAGE

log = logging.getLogger("guard_app")


class UsageError(Exception):
    """Bad usage or config: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The subcommand's copies use SUPPRESS so they don't overwrite values given
    # before the subcommand: both `guard-app --config X run` and `run --config X` work.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", type=Path, metavar="PATH", default=default,
                        help="config file (default: the platform config dir)")
    parser.add_argument("--data-dir", type=Path, metavar="PATH", default=default,
                        help="state and journal directory (default: the platform data dir)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="more detail in the log")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=APP_NAME,
        description="Keeps every exchange account under its position caps and gives each "
        "user a confirmed Forced Unwind. Without a subcommand, opens the desktop app.",
    )
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p, suppress=True)
        return p

    add("gui", "open the desktop app (the default)")
    add("demo", "open the app on a built-in simulated exchange")
    run = add("run", "run the enforcer without a window")
    run.add_argument("--once", action="store_true", help="one cycle, then exit (1 if any account failed)")
    run.add_argument("--api", action="store_true",
                     help="serve the remote API too (whatever [api] enabled says)")
    status = add("status", "read every account now: positions, caps, flags")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    unwind = add("unwind", "turn a user's forced unwind on (or off with --off)")
    unwind.add_argument("user")
    unwind.add_argument("--yes", action="store_true", help="don't ask for confirmation")
    unwind.add_argument("--off", action="store_true", help="turn the forced unwind off")
    unwind.add_argument("--reason", default="", help="why (kept in the journal)")
    keys = add("keys", "store or delete an account's API keys in the OS keyring")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True,
                                   parser_class=_Parser)
    for action, text in (("set", "store keys (JSON on stdin when not a terminal)"),
                         ("delete", "delete the stored keys")):
        k = keys_sub.add_parser(action, help=text, description=text)
        _common(k, suppress=True)
        k.add_argument("account")
    api = add("api", "the remote-control API")
    api_sub = api.add_subparsers(dest="api_command", metavar="ACTION", required=True,
                                 parser_class=_Parser)
    token_help = "create the API token (printed once) or replace it with --rotate"  # noqa: S105
    api_token = api_sub.add_parser("token", help=token_help, description=token_help)
    _common(api_token, suppress=True)
    api_token.add_argument("--rotate", action="store_true",
                           help="replace the token; the old one stops working at once")
    state = add("state", "the desk's shared state database (PostgreSQL)")
    state_sub = state.add_subparsers(dest="state_command", metavar="ACTION", required=True,
                                     parser_class=_Parser)
    pw = state_sub.add_parser("password", help="store the database password in the OS keyring "
                              "(asks on a terminal, reads stdin otherwise)",
                              description="store the database password in the OS keyring")
    _common(pw, suppress=True)
    copy = state_sub.add_parser("copy", help="copy this SQLite state into PostgreSQL",
                                description="copy this SQLite state (flags, journal, cycle ids) "
                                "into an empty PostgreSQL database")
    _common(copy, suppress=True)
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://USER@HOST/DB")
    sim = add("sim", "run the exchange simulator on 127.0.0.1")
    from guard_app.sim.cli import add_sim_arguments

    add_sim_arguments(sim)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    # ccxt and aiohttp talk a lot at DEBUG and may echo request details.
    for noisy in ("ccxt", "aiohttp", "asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config_path(args: argparse.Namespace) -> Path:
    from guard_app.core.paths import default_config_path

    return args.config or default_config_path()


def _data_dir(args: argparse.Namespace) -> Path:
    from guard_app.core.paths import default_data_dir

    return args.data_dir or default_data_dir()


def _load_config(args: argparse.Namespace) -> Any:
    import guard_app.exchanges  # noqa: F401 - wires ccxt's exchange ids into the config check
    from guard_app.core.config import load_config
    from guard_app.core.errors import ConfigError

    try:
        return load_config(_config_path(args))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _open_state(args: argparse.Namespace, config: Any = None) -> Any:
    """The state store the config selects (``[state] url``), else the data dir's SQLite."""
    from guard_app.core.errors import StateError
    from guard_app.core.state import open_state

    try:
        return open_state(_data_dir(args), config.state if config is not None else None)
    except StateError as exc:
        raise UsageError(str(exc)) from None


# -- commands -------------------------------------------------------------------------


def _api_service(args: argparse.Namespace, config: Any) -> Any:
    """The remote API's service when it is on (``--api`` or ``[api] enabled``), else None.

    No token stored is bad usage (exit 2), found before any account is read.
    """
    if args.once or not (args.api or config.api.enabled):
        return None
    from guard_app.api import ApiService
    from guard_app.core.errors import SecretStoreError
    from guard_app.core.secrets import SecretStore

    store = SecretStore()
    try:
        token = store.get_api_token()
        state = _open_state(args)
        try:
            active = sorted(state.forced_unwind_flags())
        finally:
            state.close()
    except SecretStoreError as exc:
        raise UsageError(f"the remote API can't read its token: {exc}") from None
    if token is None:
        raise UsageError("the remote API is on but no API token is stored: create one with "
                         "'guard-app api token'")
    return ApiService(config, _data_dir(args), store.get_api_token, token, active)


def cmd_run(args: argparse.Namespace) -> int:
    from guard_app.core.enforcer import Enforcer
    from guard_app.exchanges import make_broker

    config = _load_config(args)
    _open_state(args, config).close()  # an unusable state database stops us here, loudly
    api = _api_service(args, config)
    enforcer = Enforcer(config, _data_dir(args), observers=api.observers if api else (),
                        broker_factory=make_broker)

    async def main() -> int:
        if args.once:
            try:
                report = await enforcer.run_cycle()
            finally:
                await enforcer.aclose()
            return EXIT_OK if report.ok else EXIT_FAILED
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, enforcer.stop)
        if api is not None:
            from guard_app.api import ApiStartError

            api.bind(enforcer)
            try:
                await api.start()
            except ApiStartError as exc:
                await enforcer.aclose()
                raise UsageError(str(exc)) from None
        try:
            await enforcer.run()
        finally:
            if api is not None:
                await api.stop()
        return EXIT_OK

    return asyncio.run(main())


def cmd_status(args: argparse.Namespace) -> int:
    from guard_app.core.status import read_all, status_document
    from guard_app.exchanges import make_broker

    config = _load_config(args)
    state = _open_state(args, config)
    try:
        flags = state.forced_unwind_flags()
        holders = state.lease_holders()
    finally:
        state.close()
    from guard_app.core.secrets import SecretStore

    statuses = asyncio.run(read_all(config, SecretStore(), make_broker))
    doc = status_document(config, flags, statuses, holders)
    _add_limitations(doc)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_status(doc)
    return EXIT_FAILED if any(a["error"] for a in doc["accounts"]) else EXIT_OK


def _add_limitations(doc: dict[str, Any]) -> None:
    """Say plainly, per account, what guard-app cannot do on that exchange (additive
    ``limitations`` field of status --json): better read now than found on a bad day."""
    from guard_app.exchanges.catalog import describe_capabilities

    for account in doc["accounts"]:
        caps = describe_capabilities(account["exchange"], account["market"])
        account["limitations"] = list(caps.problems)


def _print_status(doc: dict[str, Any]) -> None:
    for user, info in doc["users"].items():
        flag = (f"FORCED UNWIND ON since {info['since']} by {info['by']}"
                if info["forced_unwind"] else "forced unwind off")
        print(f"{user}: {flag}")
        for a in (a for a in doc["accounts"] if a["user"] == user):
            cap = f"{a['max_positions']}"
            if a["error"]:
                print(f"  {a['id']:<28} ERROR  {a['error']}")
                continue
            state = "OVER CAP" if a["over_cap"] else "ok"
            notional = f"{a['notional']:,.2f} {a['quote']}"
            if a["max_notional"] is not None:
                notional += f" / {a['max_notional']:,.0f}"
            print(f"  {a['id']:<28} {state:<8} {a['position_count']}/{cap} positions, {notional}")
            for p in a["positions"]:
                print(f"      {p['symbol']:<18} {p['side']:<5} {p['amount']:>14g}  "
                      f"{p['value']:>12,.2f} {a['quote']}")
            for d in a["dust"]:
                print(f"      {d['symbol']:<18} dust  {d['amount']:>14g}  ({d['reason']})")
            for d in a["unpriced"]:
                print(f"      {d['symbol']:<18} unpriced {d['amount']:>11g}  ({d['reason']})")
        for a in (a for a in doc["accounts"] if a["user"] == user):
            for problem in a.get("limitations", ()):
                print(f"  {a['id']:<28} note: {problem}")


def cmd_unwind(args: argparse.Namespace) -> int:
    config = _load_config(args)
    user = args.user
    if user not in config.user_names:
        known = ", ".join(config.user_names) or "none configured"
        raise UsageError(f"unknown user {user!r} (users: {known})")
    from guard_app.core.errors import StateError

    accounts = [a.id for a in config.accounts_of(user)]
    state = _open_state(args, config)
    try:
        if args.off:
            state.set_forced_unwind(user, False, by="cli", reason=args.reason)
            print(f"forced unwind OFF for {user}: caps are enforced as usual again")
            return EXIT_OK
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError(
                    f"refusing to turn on forced unwind for {user} without confirmation: "
                    "no terminal to ask on (add --yes)"
                )
            print(f"Forced unwind closes EVERY position of {user} at market on: "
                  f"{', '.join(accounts) or 'no accounts'}.")
            print("It stays on until someone turns it off.")
            answer = input(f"Type the user name ({user}) to confirm: ").strip()
            if answer != user:
                print("Not confirmed: nothing changed.")
                return EXIT_FAILED
        state.set_forced_unwind(user, True, by="cli", reason=args.reason)
    except StateError as exc:  # e.g. the desk's database is unreachable: nothing changed
        print(f"{APP_NAME}: {exc}; the forced unwind was NOT changed", file=sys.stderr)
        return EXIT_FAILED
    finally:
        state.close()
    print(f"forced unwind ON for {user} ({len(accounts)} accounts): a running guard-app "
          "picks it up within a second; turn it off with "
          f"'guard-app unwind {user} --off'")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    from guard_app.core.errors import SecretStoreError
    from guard_app.core.secrets import ApiKeys, SecretStore
    from guard_app.exchanges.catalog import needs_passphrase

    config = _load_config(args)
    try:
        account = config.account(args.account)
    except KeyError:
        raise UsageError(
            f"no account {args.account!r} in {_config_path(args)} "
            f"(accounts: {', '.join(a.id for a in config.accounts) or 'none'})"
        ) from None
    store = SecretStore()
    try:
        if args.keys_command == "delete":
            deleted = store.delete(account.id)
            print(f"{account.id}: keys deleted" if deleted else f"{account.id}: no keys were stored")
            return EXIT_OK
        if sys.stdin.isatty():
            needs_password = needs_passphrase(account.exchange)
            api_key = getpass.getpass(f"{account.id} API key: ").strip()
            secret = getpass.getpass(f"{account.id} secret: ").strip()
            password = (getpass.getpass(f"{account.id} passphrase: ").strip() or None
                        if needs_password else None)
            keys = ApiKeys(api_key, secret, password)
        else:
            raw = sys.stdin.read()
            try:
                keys = ApiKeys.from_json(raw, account.id)
            except SecretStoreError as exc:
                raise UsageError(
                    f"{account.id}: expected JSON {{\"apiKey\": ..., \"secret\": ...}} on stdin ({exc})"
                ) from None
        if not keys.api_key or not keys.secret:
            raise UsageError(f"{account.id}: API key and secret are both required")
        store.set(account.id, keys)
    except SecretStoreError as exc:
        print(f"{APP_NAME}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{account.id}: keys stored in the OS keyring")
    return EXIT_OK


def cmd_api(args: argparse.Namespace) -> int:
    """``api token [--rotate]``: the token goes to stdout alone, once, and nowhere else."""
    from guard_app.api.auth import new_token
    from guard_app.core.errors import SecretStoreError
    from guard_app.core.secrets import SecretStore

    store = SecretStore()
    try:
        if store.get_api_token() is not None and not args.rotate:
            raise UsageError("an API token exists already and was left as it is: "
                             "'guard-app api token --rotate' replaces it")
        token = new_token()
        store.set_api_token(token)
    except SecretStoreError as exc:
        print(f"{APP_NAME}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(token, flush=True)
    print(f"{APP_NAME}: API token {'replaced' if args.rotate else 'created'} and kept in the OS "
          "keyring; it is shown only this once"
          + ("; a running guard-app refuses the old one within a second" if args.rotate else ""),
          file=sys.stderr)
    return EXIT_OK


def cmd_state(args: argparse.Namespace) -> int:
    from guard_app.core.errors import ConfigError, SecretStoreError, StateError
    from guard_app.core.secrets import SecretStore

    if args.state_command == "password":
        if sys.stdin.isatty():
            password = getpass.getpass("state database password: ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("no password given: nothing stored")
        try:
            SecretStore().set_state_password(password)
        except SecretStoreError as exc:
            print(f"{APP_NAME}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print("state database password stored in the OS keyring (entry 'state-db')")
        return EXIT_OK
    from guard_app.core.config import validate_state
    from guard_app.core.state import SqliteStateStore, open_state

    try:
        target_config = validate_state({"url": args.to})
    except ConfigError as exc:
        raise UsageError(f"--to: {exc.problem}") from None
    try:
        with SqliteStateStore(_data_dir(args)) as source:
            dump = source.dump()
        with open_state(_data_dir(args), target_config) as target:
            target.load(dump)
            where = target.location
    except StateError as exc:
        print(f"{APP_NAME}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    active = sum(1 for f in dump.flags if f.active)
    print(f"copied {len(dump.flags)} flags ({active} on), {len(dump.journal)} journal entries "
          f"and cycle ids up to {dump.cycle_id} into {where}; point [state] url at it now")
    return EXIT_OK


def cmd_gui(args: argparse.Namespace, *, demo: bool = False) -> int:
    try:
        from guard_app.gui.app import run_app
    except ImportError as exc:
        if demo:
            from guard_app.demo import run_headless_demo

            print(f"{APP_NAME}: the desktop app can't start ({exc}); running the headless demo",
                  file=sys.stderr)
            return int(run_headless_demo(args))
        print(f"{APP_NAME}: the desktop app can't start ({exc}); "
              "use 'guard-app run' for the enforcer without a window", file=sys.stderr)
        return EXIT_USAGE
    from guard_app.api.desktop import DesktopApi

    return int(run_app(args, demo=demo, api_factory=DesktopApi))


def cmd_sim(args: argparse.Namespace) -> int:
    from guard_app.sim.cli import run_sim

    return int(run_sim(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(bool(getattr(args, "verbose", False)))
    command = args.command or "gui"
    try:
        if command == "run":
            return cmd_run(args)
        if command == "status":
            return cmd_status(args)
        if command == "unwind":
            return cmd_unwind(args)
        if command == "keys":
            return cmd_keys(args)
        if command == "api":
            return cmd_api(args)
        if command == "state":
            return cmd_state(args)
        if command == "sim":
            return cmd_sim(args)
        if command == "demo":
            return cmd_gui(args, demo=True)
        return cmd_gui(args)
    except UsageError as exc:
        print(f"{APP_NAME}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
