"""What the three protocol front-ends (Binance, OKX, Bybit) share: routing and counters.

A front-end maps ``(method, path)`` to a handler and answers an :class:`ApiResponse`.
:class:`RateLimitStats` counts the answers that told a client to slow down (HTTP 429,
418 and 403, OKX ``50011``, Bybit ``10006``) so tests and benchmarks can report them
(``GET /_sim/limits``).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["ApiRequest", "ApiResponse", "RateLimitStats"]


@dataclass
class ApiRequest:
    """An incoming HTTP request, already read off the socket."""

    method: str
    path: str
    query: str
    body: str
    headers: dict[str, str]  # lower-case names
    client: str = "127.0.0.1"  # the caller's IP, for per-IP limits

    @property
    def params(self) -> dict[str, str]:
        params = dict(parse_qsl(self.query, keep_blank_values=True))
        params.update(parse_qsl(self.body, keep_blank_values=True))
        return params


@dataclass
class ApiResponse:
    """What to send back: HTTP status, JSON body and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class RateLimitStats:
    """Thread-safe counts of rate-limit answers, by protocol and kind (e.g. ``binance 429``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def note(self, protocol: str, kind: str) -> None:
        with self._lock:
            self._counts[f"{protocol} {kind}"] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
