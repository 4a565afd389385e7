"""A simulated trading strategy that keeps opening small positions, so the enforcer has work.

:class:`SimStrategy` runs on its own timer thread. Every ``interval`` seconds it gives each
of its accounts one new small position in a market the account doesn't hold yet: a spot
purchase (base credited, quote debited when there is enough) or a futures position of a
random side. It acts on the exchange state directly, so its trades don't appear in the
order log (which records only what clients send). Given a seed, it is deterministic.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterable
from decimal import Decimal

from guard_app.sim.exchange import SimExchange, SimMarket

__all__ = ["SimStrategy"]

log = logging.getLogger("guard_app.sim.strategy")


class SimStrategy:
    """Opens one small new position per account per tick (see the module docstring)."""

    def __init__(
        self,
        exchange: SimExchange,
        accounts: Iterable[str] | None = None,
        interval: float = 5.0,
        seed: int = 0,
        notional: float = 25.0,
        venues: tuple[str, ...] = ("spot", "swap"),
    ) -> None:
        self.exchange = exchange
        self.accounts = list(accounts) if accounts is not None else list(exchange.accounts)
        unknown = [a for a in self.accounts if a not in exchange.accounts]
        if unknown:
            raise KeyError(f"no account {unknown[0]!r} in the scenario")
        self.interval = interval
        self.notional = Decimal(str(notional))
        self.venues = venues
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.trades = 0

    def _venues_of(self, account: str) -> list[str]:
        """Spot if the account holds any spot balance, swap if it has a futures wallet (or is a
        unified OKX / Bybit account, whose coins are the perpetuals' margin)."""
        venues = []
        if "spot" in self.venues and self.exchange.balances(account):
            venues.append("spot")
        if "swap" in self.venues and (self.exchange.accounts[account].unified
                                      or self.exchange.futures_wallet(account) > 0):
            venues.append("swap")
        return venues

    def step(self) -> list[str]:
        """One tick: returns a line per trade made (also logged)."""
        done = []
        for account in self.accounts:
            venues = self._venues_of(account)
            if not venues:
                continue
            venue = self._rng.choice(venues)
            line = self._trade_spot(account) if venue == "spot" else self._trade_swap(account)
            if line:
                done.append(line)
                log.info("sim strategy: %s", line)
        self.trades += len(done)
        return done

    def _candidates(self, account: str, venue: str) -> list[SimMarket]:
        ex = self.exchange
        if venue == "spot":
            held = set(ex.balances(account))
            return [m for m in ex.spot_markets.values() if m.spec.quote == "USDT" and m.spec.base not in held]
        held_symbols = {p["symbol"] for p in ex.positions(account)}
        return [m for m in ex.swap_markets.values() if m.symbol not in held_symbols]

    def _amount(self, market: SimMarket) -> Decimal:
        qty = market.round_down(self.notional / market.price)
        return max(qty, market.spec.min_qty)

    def _trade_spot(self, account: str) -> str | None:
        options = self._candidates(account, "spot")
        if not options:
            return None
        market = self._rng.choice(sorted(options, key=lambda m: m.symbol))
        qty = self._amount(market)
        cost = qty * market.price
        usdt = self.exchange.balances(account).get("USDT", {}).get("free", 0.0)
        if usdt >= float(cost):
            self.exchange.add_balance(account, "USDT", -cost)
        self.exchange.add_balance(account, market.spec.base, qty)
        return f"{account} bought {qty} {market.spec.base} (~{cost:.2f} USDT)"

    def _trade_swap(self, account: str) -> str | None:
        options = self._candidates(account, "swap")
        if not options:
            return None
        market = self._rng.choice(sorted(options, key=lambda m: m.symbol))
        side = self._rng.choice(("long", "short"))
        qty = self._amount(market)
        # Positions are in the exchange's contracts (OKX: ctVal base units each); at least one.
        contracts = max(qty / self.exchange.contract_size(self.exchange.accounts[account], market), Decimal(1)) \
            if self.exchange.accounts[account].protocol == "okx" else qty
        self.exchange.open_position(account, market.symbol, side, contracts)
        return f"{account} opened {side} {contracts} {market.symbol}"

    def start(self) -> SimStrategy:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sim-strategy", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:  # a strategy bug must not kill the demo's exchange
                log.exception("sim strategy: tick failed, trying again next tick")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
