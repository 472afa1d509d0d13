"""USD prices per million tokens, so every model call can report its cost and runs can stop at
a cost budget (MLGym's $4 per run).

The built-in table is APPROXIMATE, copied from the providers' public price pages as of
2025-08 (standard tier, short prompts, no batch discounts). Prompt tokens the provider read from
its prompt cache (OpenAI's automatic caching, Gemini's implicit caching) cost the cached rate
where the model has one. Prices change: users override or extend the table with a TOML or JSON
file, merged over the built-ins:

    MLGYM_PRICES=/path/prices.toml   (else ~/.mlgym/prices.toml or prices.json, if present)

    [models."gpt-4o"]          # or in JSON: {"models": {"gpt-4o": {"input": 2.5, "output": 10}}}
    input = 2.5                # USD per 1M prompt tokens
    output = 10.0              # USD per 1M completion tokens (reasoning tokens included)
    cached_input = 1.25        # optional: USD per 1M cached prompt tokens (default: input)

A model with no entry costs 0 and is warned about once per process.
"""

from __future__ import annotations

import json
import os
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlgym import log

logger = log.get(__name__)

PRICES_DATE = "2025-08"


@dataclass(frozen=True)
class Price:
    input: float  # USD per 1M prompt tokens
    output: float  # USD per 1M completion tokens
    cached_input: float | None = None  # USD per 1M cached prompt tokens; None: the input price

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        cached = min(max(cached_tokens, 0), prompt_tokens)
        rate = self.input if self.cached_input is None else self.cached_input
        return ((prompt_tokens - cached) * self.input + cached * rate
                + completion_tokens * self.output) / 1e6


BUILTIN: dict[str, Price] = {
    # OpenAI (cached: automatic prompt caching of prefixes of 1024+ tokens)
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "o1": Price(15.00, 60.00, 7.50),
    "o1-preview": Price(15.00, 60.00, 7.50),
    "o1-mini": Price(1.10, 4.40, 0.55),
    "o3": Price(2.00, 8.00, 0.50),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "o4-mini": Price(1.10, 4.40, 0.275),
    # Google Gemini (API key tier, prompts <= 200k tokens; cached: implicit or explicit caching)
    "gemini-1.5-flash": Price(0.075, 0.30, 0.01875),
    "gemini-1.5-pro": Price(1.25, 5.00, 0.3125),
    "gemini-2.0-flash": Price(0.10, 0.40, 0.025),
    "gemini-2.0-flash-lite": Price(0.075, 0.30),
    "gemini-2.5-flash": Price(0.30, 2.50, 0.075),
    "gemini-2.5-flash-lite": Price(0.10, 0.40, 0.025),
    "gemini-2.5-pro": Price(1.25, 10.00, 0.31),
}

# Dated or numbered snapshots share their family's price: gpt-4o-2024-08-06, gpt-4-0613,
# gemini-1.5-pro-002, gemini-2.0-flash-001, ...-latest. Anything else must be listed exactly,
# so "o3-pro" is never silently priced as "o3".
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{3,4}|latest)$")


class PriceTable:
    """Model name -> Price, with user overrides merged over the built-ins."""

    def __init__(self, prices: Mapping[str, Price] | None = None):
        self._prices: dict[str, Price] = dict(BUILTIN if prices is None else prices)
        self.warned: set[str] = set()  # unknown models already warned about
        self._lock = threading.Lock()

    def set(self, model: str, input: float, output: float,  # noqa: A002
            cached_input: float | None = None) -> None:
        cached = None if cached_input is None else float(cached_input)
        self._prices[model] = Price(float(input), float(output), cached)

    def update_from(self, data: Mapping[str, Any], source: str = "<dict>") -> None:
        """Merge `{"models": {name: {"input": x, "output": y[, "cached_input": z]}}}` (or the
        inner mapping)."""
        models = data.get("models", data)
        if not isinstance(models, Mapping):
            raise ValueError(f"{source}: expected a [models] table")
        for name, entry in models.items():
            try:
                self.set(name, entry["input"], entry["output"], entry.get("cached_input"))
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                raise ValueError(
                    f"{source}: model {name!r} needs numeric 'input' and 'output' "
                    f"(and optionally 'cached_input'; USD per 1M tokens): {exc}"
                ) from None

    def load(self, path: str | Path) -> None:
        path = Path(path)
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            kind = "JSON" if path.suffix == ".json" else "TOML"
            raise ValueError(f"{path}: not valid {kind}: {exc}") from None
        self.update_from(data, str(path))

    def lookup(self, model: str) -> Price | None:
        name = model.removeprefix("models/")
        while True:
            if name in self._prices:
                return self._prices[name]
            shorter = _SNAPSHOT.sub("", name)
            if shorter == name:
                return None
            name = shorter

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, *alt_names: str,
             cached_tokens: int = 0) -> float:
        """USD for one call (`cached_tokens` of the prompt at the cached rate); 0.0 (warned
        once) when no name is in the table."""
        for name in (model, *alt_names):
            price = self.lookup(name) if name else None
            if price is not None:
                return price.cost(prompt_tokens, completion_tokens, cached_tokens)
        with self._lock:
            if model not in self.warned:
                self.warned.add(model)
                logger.warning(
                    "no price for model; its cost counts as 0",
                    model=model,
                    hint="add it to $MLGYM_PRICES or ~/.mlgym/prices.toml (see docs/models.md)",
                )
        return 0.0

    def models(self) -> dict[str, Price]:
        return dict(self._prices)


def user_price_file() -> Path | None:
    """The user's price file: $MLGYM_PRICES, else ~/.mlgym/prices.{toml,json} if present."""
    env = os.environ.get("MLGYM_PRICES")
    if env:
        return Path(env)
    home = Path(os.environ.get("MLGYM_HOME") or Path.home() / ".mlgym")
    for name in ("prices.toml", "prices.json"):
        if (home / name).is_file():
            return home / name
    return None


_default: PriceTable | None = None
_default_lock = threading.Lock()


def default_table() -> PriceTable:
    """The process-wide table: built-ins plus the user's file (loaded once)."""
    global _default
    with _default_lock:
        if _default is None:
            table = PriceTable()
            path = user_price_file()
            if path is not None:
                if not path.is_file():
                    raise FileNotFoundError(f"MLGYM_PRICES names {path}, which does not exist")
                table.load(path)
                logger.info("loaded user prices", path=str(path))
            _default = table
        return _default


def reset_default() -> None:
    """Forget the cached table (tests, or after editing the price file)."""
    global _default
    with _default_lock:
        _default = None
