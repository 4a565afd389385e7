"""ConfigDocument: edits keep the user's comments and order, saves are atomic and validated."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from guard_app.core.config import EXAMPLE_CONFIG, load_config
from guard_app.core.config_writer import NEW_FILE_HEADER, ConfigDocument
from guard_app.core.errors import ConfigError

BOB = {"id": "bob-okx", "user": "bob", "exchange": "okx", "market": "swap",
       "max_positions": 3, "ccxt": {"timeout": 20000}}


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    return path


def test_adding_an_account_keeps_every_comment_and_the_order(example: Path) -> None:
    doc = ConfigDocument.load(example)
    doc.upsert_account(BOB)
    config = doc.save()

    text = example.read_text()
    assert text.startswith(EXAMPLE_CONFIG.split("[accounts.ccxt]")[0])
    for line in EXAMPLE_CONFIG.splitlines():
        if "#" in line:
            assert line.split("#", 1)[1] in text, line
    assert [a.id for a in config.accounts] == ["alice-binance-spot", "bob-okx"]
    assert text.index('id = "alice-binance-spot"') < text.index('id = "bob-okx"')
    assert load_config(example) == config


def test_editing_an_account_in_place_keeps_comments_of_unchanged_keys(example: Path) -> None:
    doc = ConfigDocument.load(example)
    data = doc.account_data("alice-binance-spot")
    assert data is not None
    data["max_positions"] = 5
    del data["max_notional"]
    data["id"] = "alice-main"
    doc.upsert_account(data, replace_id="alice-binance-spot")
    config = doc.save()

    text = example.read_text()
    assert 'id = "alice-main"    # unique; also the keyring username' in text
    assert "max_positions = 5" in text
    assert "max_notional" not in text
    assert "exchange = \"binance\"         # any ccxt exchange id" in text
    assert "# constructor config (urls, options, timeout, ...)" in text  # empty ccxt kept
    assert [a.id for a in config.accounts] == ["alice-main"]
    assert config.account("alice-main").max_notional is None


def test_remove_account_and_user_caps(example: Path) -> None:
    doc = ConfigDocument.load(example)
    doc.upsert_account(BOB)
    doc.set_user_caps("bob", 4, 1000)
    doc.set_user_caps("alice", None)
    assert doc.remove_account("alice-binance-spot") is True
    assert doc.remove_account("nobody") is False
    config = doc.save()

    assert [a.id for a in config.accounts] == ["bob-okx"]
    assert set(config.users) == {"bob"}
    assert config.users["bob"].max_positions == 4
    assert config.users["bob"].max_notional == 1000
    assert "[users.alice]" not in example.read_text()
    assert doc.user_caps("bob") == (4, 1000)


def test_a_new_file_gets_a_header_a_directory_and_a_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "config.toml"
    doc = ConfigDocument.load(path)
    assert not doc.exists
    doc.upsert_account(BOB)
    doc.save()

    text = path.read_text()
    assert text.startswith(f"# {NEW_FILE_HEADER[0]}\n# {NEW_FILE_HEADER[1]}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_config(path).account("bob-okx").market.value == "swap"


def test_save_keeps_the_file_mode_and_leaves_no_temp_files(example: Path) -> None:
    os.chmod(example, 0o640)
    doc = ConfigDocument.load(example)
    doc.upsert_account(BOB)
    doc.save()
    doc.set_user_caps("bob", 2)
    doc.save()
    assert stat.S_IMODE(example.stat().st_mode) == 0o640
    assert sorted(p.name for p in example.parent.iterdir()) == ["config.toml"]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({**BOB, "max_positions": -1}, "accounts[1].max_positions"),
        ({**BOB, "exchange": "binanse"}, "accounts[1].exchange"),
        ({**BOB, "id": "bad id!"}, "accounts[1].id"),
        ({**BOB, "apiKey": "AKIA-not-real"}, "accounts[1].apiKey"),
        ({**BOB, "ccxt": {"secret": "s3cr3t-not-real"}}, "accounts[1].ccxt.secret"),
    ],
)
def test_a_bad_account_is_refused_and_the_file_is_untouched(
    example: Path, change: dict[str, object], key: str
) -> None:
    before = example.read_bytes()
    doc = ConfigDocument.load(example)
    with pytest.raises(ConfigError) as caught:
        doc.upsert_account(change)
    assert caught.value.key == key
    assert "not-real" not in str(caught.value) and "s3cr3t" not in str(caught.value)
    doc.save()  # the refused change never reached the document
    assert example.read_bytes() == before


def test_a_bad_user_name_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    doc = ConfigDocument.load(path)
    doc.upsert_account(BOB)
    doc.save()
    before = path.read_bytes()
    # A user name the loader refuses: set_user_caps validates it before touching anything.
    with pytest.raises(ConfigError) as caught:
        doc.set_user_caps("no spaces allowed", 3)
    assert caught.value.key == "users.no spaces allowed"
    assert path.read_bytes() == before


def test_save_refuses_to_overwrite_a_file_edited_meanwhile(example: Path) -> None:
    doc = ConfigDocument.load(example)
    doc.upsert_account(BOB)
    example.write_text(EXAMPLE_CONFIG + "\n# edited by hand\n")
    with pytest.raises(ConfigError) as caught:
        doc.save()
    assert "changed on disk" in caught.value.problem
    assert example.read_text().endswith("# edited by hand\n")


def test_invalid_toml_is_reported_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[[accounts]\n")
    with pytest.raises(ConfigError) as caught:
        ConfigDocument.load(path)
    assert caught.value.source == str(path)
    assert "not valid TOML" in caught.value.problem


def test_validate_uses_the_loader_rules_for_the_whole_document(example: Path) -> None:
    doc = ConfigDocument.load(example)
    copy = doc.copy()
    copy.upsert_account({**BOB, "id": "alice-binance-spot"}, replace_id="not-there")
    # Same id as an existing account: replaced in place, not duplicated.
    assert [a.id for a in copy.validate().accounts] == ["alice-binance-spot"]
    assert doc.account_ids() == ["alice-binance-spot"]  # the copy is independent
