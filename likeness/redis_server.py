"""A private `redis-server` child process: used by `likeness up`, the tests and the benchmarks.

Binds to loopback only, on a free port, with its data in a folder of ours; never touches a user's Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from likeness.errors import ConfigError

__all__ = ["RedisServer", "free_port"]

INSTALL_HINT = (
    "`redis-server` was not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install redis-server`; "
    "macOS: `brew install redis`) or set LIKENESS_REDIS_URL to an existing Redis."
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Start `redis-server` on 127.0.0.1:<free port> with data under `data_dir`; stop it on exit.

    `appendonly=True` keeps an AOF so a restart (`restart()`) loses no acknowledged write. `maxmemory` (e.g.
    "1gb") bounds its memory; it never evicts (`noeviction`): the queue client refuses new work before the
    limit (`Admission`), so queued jobs can still finish.
    """

    def __init__(
        self, data_dir: Path, *, appendonly: bool = True, port: int | None = None, maxmemory: str | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.appendonly = appendonly
        self.maxmemory = maxmemory
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(message=INSTALL_HINT)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            "--logfile", str(self.data_dir / "redis.log"), "--protected-mode", "yes",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.maxmemory is not None:
            cmd += ["--maxmemory", self.maxmemory]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigError(message=f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise ConfigError(message=f"redis-server did not answer on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (tests freeze it with SIGSTOP)."""
        return None if self._proc is None else self._proc.pid

    def restart(self) -> None:
        """Stop and start again on the same port and data (AOF replay)."""
        self.stop()
        self.start()

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
