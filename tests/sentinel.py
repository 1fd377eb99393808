"""A primary, its replicas and three sentinels on loopback, started and stopped by the tests.

The data nodes are :class:`tests.conftest.RedisServer` processes (no
persistence); each sentinel is ``redis-server <conf> --sentinel`` with a
config file of its own in a temporary directory (Sentinel rewrites it), that
monitors the primary as ``svc`` with a quorum of 2 and short timeouts, so a
``kill -9`` of the primary is followed by a failover within a few seconds.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from .conftest import RedisServer, free_port

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["SERVICE", "SentinelGroup", "SentinelServer", "sentinel_unavailable_reason"]

SERVICE = "svc"


def sentinel_unavailable_reason() -> str | None:
    """Why sentinels cannot be started here, or None if they can be tried."""
    if shutil.which("redis-server") is None:
        return "redis-server not on PATH"
    return None


class SentinelServer:
    """One ``redis-server --sentinel`` process watching ``primary_port`` as :data:`SERVICE`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.myid = secrets.token_hex(20)
        self.dir = Path(tempfile.mkdtemp(prefix="promptkit-sentinel-"))
        self.conf = self.dir / "sentinel.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(
        self,
        primary_port: int,
        replica_ports: list[int],
        peers: list[SentinelServer],
        *,
        down_after_ms: int,
        failover_timeout_ms: int,
    ) -> None:
        """Write the config, with the replicas and the other sentinels already known
        (as Sentinel itself records them), so that the group need not wait seconds
        for their discovery before it can agree on a failover."""
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f'dir "{self.dir}"',
            f"sentinel myid {self.myid}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}",
            f"sentinel parallel-syncs {SERVICE} 1",
            *(f"sentinel known-replica {SERVICE} 127.0.0.1 {port}" for port in replica_ports),
            *(
                f"sentinel known-sentinel {SERVICE} 127.0.0.1 {peer.port} {peer.myid}"
                for peer in peers
                if peer is not self
            ),
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Self:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH")
        self.proc = subprocess.Popen(
            [exe, str(self.conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def wait_ready(self, deadline: float) -> None:
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sentinel exited with {self.proc.returncode}")
                try:
                    if client.ping():
                        return
                except (redis.RedisError, OSError):
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError("a sentinel did not answer in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelGroup:
    """A primary, ``replicas`` replicas of it, and three sentinels (quorum 2)."""

    def __init__(
        self, replicas: int = 1, *, down_after_ms: int = 400, failover_timeout_ms: int = 2000
    ) -> None:
        # Diskless full syncs start at once (Redis waits 5 s by default for more replicas).
        quick = ("--repl-diskless-sync-delay", "0")
        self.primary = RedisServer(*quick)
        self.replicas = [
            RedisServer(*quick, "--replicaof", "127.0.0.1", str(self.primary.port))
            for _ in range(replicas)
        ]
        self.sentinels = [SentinelServer() for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.configure(
                self.primary.port,
                [r.port for r in self.replicas],
                self.sentinels,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
        self.stopped: list[RedisServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> Self:
        try:
            self.primary.start()
            for replica in self.replicas:
                replica.start()
            deadline = time.monotonic() + 10
            for replica in self.replicas:
                _wait_link_up(replica.port, deadline)
            for sentinel in self.sentinels:
                sentinel.start()
            for sentinel in self.sentinels:
                sentinel.wait_ready(deadline)
            self.wait_known(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_known(self, deadline: float) -> None:
        """Until every sentinel knows the primary, each replica and the other sentinels:
        only then can they agree on a failover."""
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=1)
            try:
                while True:
                    state = client.sentinel_master(SERVICE)
                    assert isinstance(state, dict)
                    if (
                        int(state.get("num-slaves", 0)) >= len(self.replicas)
                        and int(state.get("num-other-sentinels", 0)) >= 2
                    ):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"sentinels not ready: {state}")
                    time.sleep(0.05)
            finally:
                client.close()

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers tells it."""
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=0.5)
            try:
                found = client.sentinel_get_master_addr_by_name(SERVICE)
                if isinstance(found, tuple):
                    return int(found[1])
            except (redis.RedisError, OSError):
                continue
            finally:
                client.close()
        return None

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers() if s.port == port)

    def kill_primary(self) -> RedisServer:
        """``kill -9`` of the current primary; it is not restarted."""
        port = self.primary_port()
        assert port is not None
        server = self.server_on(port)
        server.kill()
        self.stopped.append(server)
        return server

    def wait_promoted(self, old_port: int, timeout: float = 15.0) -> int:
        """Until a replica is primary in the sentinels' view and in its own: its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old_port and _role(port) == "master":
                return port
            time.sleep(0.05)
        raise RuntimeError(f"no replica was promoted within {timeout} s")

    def pause(self, server: RedisServer) -> None:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)

    def resume(self, server: RedisServer) -> None:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        for server in self.servers():
            if server.proc is not None and server.proc.poll() is None:
                self.resume(server)  # a stopped process ignores nothing but SIGKILL; be sure
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers():
            server.stop()


def _role(port: int) -> str | None:
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        role = client.execute_command("ROLE")  # type: ignore[no-untyped-call]
        return str(role[0].decode())
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def _wait_link_up(port: int, deadline: float) -> None:
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica on port {port} did not sync in time")
            time.sleep(0.05)
    finally:
        client.close()
