"""Fault injection for the exchange simulator: error statuses, dropped connections, latency.

A :class:`Fault` matches requests by path prefix (and optionally HTTP method), fires with a
probability and/or for the next ``count`` matching requests, and then does one of:

- ``status``: answer with an HTTP status (429, 418, 503, ...) and a Binance-like body,
  with a ``Retry-After`` header when given;
- ``drop``: close the connection without answering (the request is not processed);
- ``drop_after``: process the request (an order *is* placed) and then close the
  connection without answering, so the client can't know the order's fate;
- ``latency``: wait ``delay`` seconds, then answer normally.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Fault", "FaultBook", "FAULT_KINDS"]

FAULT_KINDS = ("status", "drop", "drop_after", "latency")


@dataclass
class Fault:
    """One injected fault rule (see the module docstring)."""

    path_prefix: str = ""
    kind: str = "status"
    status: int = 503
    retry_after: int | None = None
    probability: float = 1.0
    count: int | None = None
    delay: float = 0.0
    method: str | None = None
    body: str | None = None
    fired: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {self.kind!r}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"fault probability must be between 0 and 1, got {self.probability}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"fault count must be zero or positive, got {self.count}")
        # OKX and Bybit refuse an order inside an HTTP 200 answer: a 200 needs its body.
        lowest = 200 if self.body is not None else 400
        if self.kind == "status" and not lowest <= self.status <= 599:
            raise ValueError(f"fault status must be an HTTP error status (400-599), or 200-599 "
                             f"with a body, got {self.status}")
        if self.method is not None:
            self.method = self.method.upper()

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def matches(self, method: str, path: str) -> bool:
        if self.exhausted:
            return False
        if self.method is not None and self.method != method.upper():
            return False
        return path.startswith(self.path_prefix)

    def response_body(self) -> bytes:
        """The body sent for a ``status`` fault: what Binance sends for that status."""
        if self.body is not None:
            return self.body.encode()
        if self.status == 429:
            msg = {
                "code": -1003,
                "msg": "Too many requests; current limit of IP(127.0.0.1) request weight per "
                "minute is 2400. Please use WebSocket Streams for live updates to avoid polling the API.",
            }
            return json.dumps(msg).encode()
        if self.status == 418:
            msg = {
                "code": -1003,
                "msg": "Way too many requests; IP(127.0.0.1) banned until "
                "further notice. Please use WebSocket Streams for live updates to avoid bans.",
            }
            return json.dumps(msg).encode()
        if self.status >= 500:
            # Binance's gateway answers 5xx with an HTML page, not JSON.
            return f"<html><body><h1>{self.status} Service Unavailable</h1></body></html>".encode()
        return json.dumps({"code": -1000, "msg": "An unknown error occurred while processing the request."}).encode()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """The set of active faults; thread-safe, deterministic given a seed."""

    def __init__(self, seed: int | None = 0) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return [Fault(**f.to_dict()) for f in self._faults]

    def pick(self, method: str, path: str) -> Fault | None:
        """The first fault that fires for this request (its count is consumed), or None."""
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, path):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault.fired += 1
                return fault
            return None
