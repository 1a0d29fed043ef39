"""A real `fundalloc serve` process on a loopback port, for tests over a socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "fundalloc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FUNDALLOC_DATABASE_URL": url}
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=120)


def new_key(url: str, role: str) -> str:
    out = cli(url, "keys", "create", "--role", role)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


class LiveServer:
    def __init__(self, url: str, log: Path, **env: str):
        self.url, self.log_path, self.env = url, log, env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "LiveServer":
        env = {**os.environ, "FUNDALLOC_DATABASE_URL": self.url, **self.env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BIN), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--log-level", "warning"], env=env, stdout=self._log, stderr=self._log,
                                     start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """SIGKILL the server and its solver processes (no shutdown handlers run)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            self._log.close()
