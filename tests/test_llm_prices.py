"""The price table: built-ins, snapshot names, user files merged over the built-ins."""

from __future__ import annotations

import json

import pytest

from mlgym.agents.llm import prices
from mlgym.agents.llm.prices import Price, PriceTable


def test_builtin_prices_and_snapshot_names():
    t = PriceTable()
    assert t.lookup("gpt-4o") == Price(2.5, 10.0, 1.25)
    assert t.lookup("gpt-4o-2024-08-06") == t.lookup("gpt-4o")
    assert t.lookup("gpt-4o-mini-2024-07-18") == Price(0.15, 0.6, 0.075)  # not gpt-4o's price
    assert t.lookup("models/gemini-1.5-pro-002") == t.lookup("gemini-1.5-pro")
    assert t.lookup("o3-pro") is None  # a different product, never priced as "o3"
    assert t.cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(2.5 + 1.0)


def test_unknown_model_costs_zero_and_warns_once():
    t = PriceTable()
    assert t.cost("my-local-llama", 1000, 1000) == 0.0
    assert t.cost("my-local-llama", 5, 5) == 0.0
    assert t.warned == {"my-local-llama"}
    assert t.cost("alias", 1_000_000, 0, "gpt-4o") == pytest.approx(2.5)  # an alternative name


@pytest.fixture
def fresh_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MLGYM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLGYM_PRICES", raising=False)
    prices.reset_default()
    yield tmp_path
    prices.reset_default()


def test_user_toml_merges_over_builtins(fresh_default, monkeypatch):
    path = fresh_default / "prices.toml"
    path.write_text('[models."gpt-4o"]\ninput = 3\noutput = 12\n\n'
                    '[models."llama3.1:8b"]\ninput = 0.0\noutput = 0.0\n')
    monkeypatch.setenv("MLGYM_PRICES", str(path))
    t = prices.default_table()
    assert t.lookup("gpt-4o") == Price(3.0, 12.0)
    assert t.lookup("llama3.1:8b") == Price(0.0, 0.0)
    assert t.lookup("gemini-2.0-flash") == prices.BUILTIN["gemini-2.0-flash"]
    assert prices.default_table() is t  # loaded once


def test_home_json_file_is_found(fresh_default):
    home = fresh_default / "home"
    home.mkdir()
    (home / "prices.json").write_text(json.dumps({"models": {"my-model": {"input": 1, "output": 2}}}))
    assert prices.default_table().lookup("my-model") == Price(1.0, 2.0)


def test_bad_user_files_are_clear_errors(fresh_default, monkeypatch):
    missing = fresh_default / "nope.toml"
    monkeypatch.setenv("MLGYM_PRICES", str(missing))
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        prices.default_table()
    bad = fresh_default / "bad.toml"
    bad.write_text('[models."x"]\ninput = "cheap"\noutput = 1\n')
    with pytest.raises(ValueError, match="'x' needs numeric"):
        PriceTable().load(bad)
    broken = fresh_default / "broken.toml"
    broken.write_text("[models\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        PriceTable().load(broken)
