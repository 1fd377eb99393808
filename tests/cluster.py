"""A real 3-primary Redis Cluster on loopback, started and stopped by the tests.

Each node is a ``redis-server --cluster-enabled yes`` in its own temporary
directory with an explicit cluster bus port (the default, port + 10000, can
overflow for ephemeral ports; a server without ``--cluster-port``, 6.2, gets
a port whose port + 10000 is free). ``redis-cli --cluster create`` assigns the
16384 slots; the cluster is ready when every node reports ``cluster_state:ok``
and they all agree on the slot map.
"""

from __future__ import annotations

import functools
import random
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import redis

from .conftest import RedisServer, free_port

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ClusterServers", "cluster_node", "cluster_unavailable_reason"]


@functools.cache
def _has_cluster_port() -> bool:
    """Whether the server binary takes ``--cluster-port`` (Redis 7+, Valkey)."""
    from .strict import redis_server_binary, server_binary_version

    binary = redis_server_binary()
    return binary is not None and server_binary_version(binary) >= (7,)


def _bus_free_port() -> int:
    """A port whose port + 10000 (a 6.2 node's bus) is free too."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def cluster_node(*args: str, node_timeout_ms: int = 2000) -> RedisServer:
    """A cluster-enabled server (not started), its bus on a port that is free."""
    flags = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    flags += ["--cluster-node-timeout", str(node_timeout_ms), *args]
    if _has_cluster_port():
        return RedisServer(*flags, "--cluster-port", str(free_port()))
    return RedisServer(*flags, port_factory=_bus_free_port)


def cluster_unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None if it can be tried."""
    from .strict import redis_server_binary

    missing = [exe for exe in ("redis-cli",) if shutil.which(exe) is None]
    if redis_server_binary() is None:
        missing.insert(0, "redis-server")
    if missing:
        return f"{' and '.join(missing)} not on PATH"
    return None


class ClusterServers:
    """``n`` cluster-enabled primaries, no replicas."""

    def __init__(self, n: int = 3, *, node_timeout_ms: int = 2000) -> None:
        self.nodes = [cluster_node(node_timeout_ms=node_timeout_ms) for _ in range(n)]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node (a cluster client discovers the others)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            exe = shutil.which("redis-cli")
            if exe is None:
                raise RuntimeError("redis-cli is not on PATH")
            addrs = [f"127.0.0.1:{p}" for p in self.ports]
            proc = subprocess.run(
                [exe, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    "redis-cli --cluster create failed: "
                    + (proc.stdout + proc.stderr).decode(errors="replace")[-2000:]
                )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node says ``cluster_state:ok`` and they agree on the slots."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                states = []
                maps = []
                for port in self.ports:
                    with redis.Redis(port=port, socket_timeout=2) as r:
                        info = r.execute_command("CLUSTER", "INFO")
                        text = info.decode() if isinstance(info, bytes) else str(info)
                        states.append("cluster_state:ok" in text)
                        slots = r.execute_command("CLUSTER", "SLOTS")
                        maps.append(sorted((s[0], s[1], s[2][1]) for s in slots))
                if all(states) and all(m == maps[0] for m in maps) and maps[0]:
                    return
                last = f"states={states}"
            except (redis.RedisError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not become ready within {timeout:g}s ({last})")

    def node_id(self, port: int) -> str:
        with redis.Redis(port=port, socket_timeout=2) as r:
            raw = r.execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def owner(self, slot: int) -> int:
        """The port of the primary serving ``slot``."""
        with redis.Redis(port=self.ports[0], socket_timeout=2) as r:
            for start, end, primary, *_ in r.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        raise LookupError(f"slot {slot} is not served")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
