"""Edit the config file in place: add, replace or remove accounts and per-user caps.

The accounts dialog uses this instead of rewriting the file from the dataclasses, so
the user's comments, key order and formatting survive (tomlkit keeps them). Every
change is checked with the loader's own rules (``parse_config`` / ``validate_account``)
before anything is written, and the file is replaced atomically (temp file in the same
directory, fsync, ``os.replace``): a crash mid-save leaves the old file or the new one,
never half of one. Key material is never written here: the loader refuses credential
fields, so an account mapping carrying them can't be saved.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AoT, Table
from tomlkit.toml_document import TOMLDocument

from guard_app.core.config import AppConfig, parse_config, validate_account, validate_user
from guard_app.core.errors import ConfigError

NEW_FILE_HEADER = (
    "guard-app configuration: your exchange accounts and their position caps.",
    "API keys are not stored here; they live in your OS keyring.",
)
NEW_FILE_MODE = 0o600


class ConfigDocument:
    """One config file opened for editing, comments and order kept.

    Changes are made in memory; ``save()`` validates the whole document with the
    loader's rules and writes it atomically. ``save()`` refuses to overwrite a file that
    changed on disk since it was loaded (someone edited it by hand meanwhile).
    """

    def __init__(self, path: Path, document: TOMLDocument, original_text: str | None) -> None:
        self.path = path
        self._doc = document
        self._original = original_text

    # ---- loading ----

    @classmethod
    def load(cls, path: Path) -> ConfigDocument:
        """Open ``path`` for editing; a missing file starts a new document with a header."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path, _new_document(), None)
        except UnicodeDecodeError as exc:
            raise ConfigError("", f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                              str(path)) from None
        except OSError as exc:
            raise ConfigError("", f"can't read the config file: {exc.strerror or exc}",
                              str(path)) from None
        return cls(path, _parse(text, str(path)), text)

    def copy(self) -> ConfigDocument:
        """An independent copy (for trying a change without touching this one)."""
        return ConfigDocument(self.path, _parse(self.as_text(), str(self.path)), self._original)

    @property
    def exists(self) -> bool:
        """Whether the file existed when it was loaded."""
        return self._original is not None

    def as_text(self) -> str:
        return self._doc.as_string()

    # ---- reading ----

    def account_ids(self) -> list[str]:
        return [str(t.get("id", "")) for t in self._account_tables()]

    def account_data(self, account_id: str) -> dict[str, Any] | None:
        """The ``[[accounts]]`` table with this id as plain Python values, or None."""
        index = self._index_of(account_id)
        if index is None:
            return None
        plain: dict[str, Any] = _plain(self._account_tables()[index])
        return plain

    def user_caps(self, user: str) -> tuple[Any, Any]:
        """``(max_positions, max_notional)`` of ``[users.USER]`` (None where not set)."""
        users = self._doc.get("users")
        table = users.get(user) if isinstance(users, Mapping) else None
        if not isinstance(table, Mapping):
            return None, None
        return _plain(table.get("max_positions")), _plain(table.get("max_notional"))

    # ---- changing ----

    def upsert_account(self, data: Mapping[str, Any], *, replace_id: str | None = None) -> None:
        """Add an account, or replace the one with id ``replace_id`` (or ``data["id"]``).

        ``replace_id`` is the account's id before an edit that renames it. The table
        keeps its place in the file and the comments of keys whose value didn't change.
        Raises ConfigError (key ``accounts[N].<key>``) when the account breaks a rule.
        """
        data = {k: v for k, v in data.items() if v is not None}
        if not data.get("ccxt"):
            data.pop("ccxt", None)
        tables = self._account_tables()
        index = self._index_of(replace_id) if replace_id is not None else None
        if index is None and isinstance(data.get("id"), str):
            index = self._index_of(data["id"])
        position = len(tables) if index is None else index
        validate_account(data, f"accounts[{position}]")

        if index is None:
            aot = self._doc.get("accounts")
            if not isinstance(aot, AoT):
                aot = tomlkit.aot()
                self._doc.append("accounts", aot)
            table = _table_from(data)
            if len(aot) and not aot.as_string().endswith("\n\n"):
                table.trivia.indent = "\n"  # a blank line between account tables
            aot.append(table)
            return
        table = tables[index]
        for key in list(table.keys()):
            if key == "ccxt" and "ccxt" not in data and not _plain(table[key]):
                continue  # an empty [accounts.ccxt] the user wrote (with its comments)
            if key not in data:
                del table[key]
        for key, value in data.items():
            if key in table and _plain(table[key]) == _plain(value):
                continue  # unchanged: keep its formatting and comment
            table[key] = value

    def remove_account(self, account_id: str) -> bool:
        """Remove the account with this id; True if there was one."""
        index = self._index_of(account_id)
        if index is None:
            return False
        aot = self._doc["accounts"]
        assert isinstance(aot, AoT)  # noqa: S101 - _index_of found it in an AoT
        del aot[index]
        if not len(aot):
            del self._doc["accounts"]
        return True

    def set_user_caps(self, user: str, max_positions: Any, max_notional: Any = None) -> None:
        """Set ``[users.USER]`` caps; both None removes the table."""
        values = {"max_positions": max_positions, "max_notional": max_notional}
        values = {k: v for k, v in values.items() if v is not None}
        validate_user(user, values)
        users = self._doc.get("users")
        if not values:
            if isinstance(users, Table) and user in users:
                del users[user]
                if not len(users):
                    del self._doc["users"]
            return
        if not isinstance(users, Table):
            users = tomlkit.table(is_super_table=True)
            self._doc.append("users", users)
        table = users.get(user)
        if not isinstance(table, Table):
            table = tomlkit.table()
            users.append(user, table)
        for key in ("max_positions", "max_notional"):
            if key not in values:
                if key in table:
                    del table[key]
            elif _plain(table.get(key)) != values[key]:
                table[key] = values[key]

    def set_api_enabled(self, enabled: bool) -> None:
        """Set ``[api] enabled``, creating the table (other ``[api]`` keys are kept)."""
        api = self._doc.get("api")
        if not isinstance(api, Table):
            api = tomlkit.table()
            self._doc.append("api", api)
        if _plain(api.get("enabled")) != enabled:
            api["enabled"] = enabled

    # ---- validating and saving ----

    def validate(self) -> AppConfig:
        """The document as the loader sees it; ConfigError names the offending key."""
        return parse_config(self.as_text(), str(self.path))

    def save(self) -> AppConfig:
        """Validate, then write the file atomically. Returns the config as saved.

        Nothing is written when validation fails or the file changed on disk since it
        was loaded (ConfigError either way).
        """
        config = self.validate()
        target = _real_target(self.path)
        current = _read_or_none(target)
        if current != self._original:
            raise ConfigError(
                "",
                "the config file changed on disk since it was opened (edited by hand?): "
                "nothing was saved; close and reopen the accounts dialog to see the new file",
                str(self.path),
            )
        text = self.as_text()
        _atomic_write(target, text)
        self._original = text
        return config

    # ---- helpers ----

    def _account_tables(self) -> list[Table]:
        aot = self._doc.get("accounts")
        if not isinstance(aot, AoT):
            return []
        return list(aot.body)

    def _index_of(self, account_id: str | None) -> int | None:
        for index, table in enumerate(self._account_tables()):
            if table.get("id") == account_id:
                return index
        return None


def _new_document() -> TOMLDocument:
    doc = tomlkit.document()
    for line in NEW_FILE_HEADER:
        doc.add(tomlkit.comment(line))
    doc.add(tomlkit.nl())
    return doc


def _parse(text: str, source: str) -> TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", source) from None


def _plain(value: Any) -> Any:
    """tomlkit items as plain Python values (dict, list, str, int, ...)."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _table_from(data: Mapping[str, Any]) -> Table:
    table = tomlkit.table()
    for key, value in data.items():
        table.append(key, value)
    return table


def _real_target(path: Path) -> Path:
    # Replace the file a symlink points at, not the link itself.
    return path.resolve() if path.is_symlink() else path


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""  # unreadable now: certainly not what was loaded


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and os.replace."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = NEW_FILE_MODE
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ConfigError("", f"can't write the config file: {exc.strerror or exc}",
                          str(path)) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError("", f"can't write the config file: {exc.strerror or exc}; "
                              f"the old file is unchanged", str(path)) from None
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable (POSIX); Windows can't open directories.
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
