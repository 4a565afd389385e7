"""Plain HTTP for the API tests (http.client, as a risk manager's script would) and a
running ``guard-app run --api`` in a subprocess against the simulator."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEADLINE_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def call(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    source: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """One request on a fresh connection; ``source`` binds the client to that address."""
    source_address = (source, 0) if source else None
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=10, context=tls,
                                           source_address=source_address)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10, source_address=source_address)
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        conn.close()


def wait_for(condition: Callable[[], Any], what: str, deadline: float = DEADLINE_SECONDS) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class RunningGuard:
    """``guard-app run --api`` in a subprocess, its output captured to files."""

    proc: subprocess.Popen[bytes]
    port: int
    out_path: Path
    err_path: Path
    tls: ssl.SSLContext | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def call(self, method: str, path: str, **kw: Any) -> Answer:
        kw.setdefault("tls", self.tls)
        return call(self.port, method, path, **kw)

    def output(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_guard(
    config_path: Path, data_dir: Path, port: int, out_dir: Path, *,
    tls: ssl.SSLContext | None = None, extra_args: tuple[str, ...] = ("--api",),
) -> RunningGuard:
    out_path, err_path = out_dir / "run.stdout", out_dir / "run.stderr"
    cmd = [sys.executable, "-m", "guard_app", "run", *extra_args,
           "--config", str(config_path), "--data-dir", str(data_dir)]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=dict(os.environ))
    running = RunningGuard(proc, port, out_path, err_path, tls)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"guard-app run exited {proc.returncode}: {running.output()}")
        try:
            return running.call("GET", "/healthz").status == 200
        except OSError:
            return False

    wait_for(healthy, "the API's /healthz to answer 200")
    return running
