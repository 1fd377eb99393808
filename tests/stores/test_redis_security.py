"""Security on spawned Redis servers: ACL users, secrets kept out of text, TLS, key hygiene.

- An ACL user whose keys are limited to the store's prefix can run every
  operation (so the library touches nothing else), and a wrong password is
  a clear error that never contains the password.
- No repr, error message or log line (any logger, DEBUG) shows credentials.
- ``rediss://`` works against a TLS server, and an untrusted certificate is
  refused (skipped, with the reason, when redis-server or openssl lack TLS).
- Foreign keys, including look-alikes of the key schema, are untouched by
  every operation, and no operation uses KEYS or FLUSH* (INFO commandstats).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio as aioredis

from promptkit_async import (
    Conversations,
    RedisStore,
    Session,
    StoreError,
    StoreUnavailable,
)
from promptkit_async.providers import ScriptedProvider

from ..conftest import contents, free_port
from ..samples import u

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..conftest import RedisServer

pytestmark = pytest.mark.redis

PASSWORD = "s3cret-Pa55-word"
ADMIN_PASSWORD = "adm1n-Pa55-word"


def everything_said(exc: BaseException) -> str:
    """All the text an error can show: str, repr, the whole chain and its traceback."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


async def exercise(store: RedisStore, prefix_of_ids: str = "user-") -> None:
    """Every operation of the store, Session and Conversations."""
    await store.ping()
    sid = f"{prefix_of_ids}1"
    await store.append(sid, [u("hello")], turn_id="t1")
    await store.append(sid, [u("hello")], turn_id="t1")
    assert await store.turn_status(sid, "t1") == "applied"
    async with Session(store, sid, provider=ScriptedProvider(["hi there"])) as s:
        assert await s.send("how are you") is not None
    async with Session(store, f"{prefix_of_ids}2", lazy=True) as s:
        s.add(u("lazy"))
    chats = Conversations(store, owns=False, max_messages=4)
    await chats.execute(f"{prefix_of_ids}3", "system", "logged in")
    assert len(await chats.history(f"{prefix_of_ids}3")) == 1
    assert await store.load(sid, limit=2)
    assert await store.exists(sid)
    assert await store.ttl(sid)
    assert {s async for s in store.sessions(prefix_of_ids)} >= {sid, f"{prefix_of_ids}2"}
    await store.metrics()
    assert await chats.delete(f"{prefix_of_ids}3")
    assert await store.delete(f"{prefix_of_ids}2")
    assert await store.delete_prefix(prefix_of_ids) == 1  # all of a user's sessions
    assert [s async for s in store.sessions("")] == []


# -- ACL --------------------------------------------------------------------------------


@pytest.fixture
def acl_server(spawn_server: Callable[..., RedisServer], prefix: str) -> RedisServer:
    """A server where ``alice`` may use keys under ``prefix`` only, and no KEYS/FLUSH*."""
    srv = spawn_server()
    with redis.Redis(port=srv.port) as admin:
        admin.acl_setuser(
            "alice",
            enabled=True,
            passwords=[f"+{PASSWORD}"],
            keys=[f"{prefix}:*"],
            commands=["+@all", "-keys", "-flushall", "-flushdb"],
        )
    return srv


async def test_acl_user_limited_to_the_prefix_can_do_everything(
    acl_server: RedisServer, prefix: str
) -> None:
    url = f"redis://alice:{PASSWORD}@127.0.0.1:{acl_server.port}/0"
    async with RedisStore.from_url(url, prefix=prefix) as store:
        await exercise(store)
        # The distributed lease lives under the prefix too.
        leased = RedisStore(store.client, prefix=prefix, distributed_lock=True)
        async with Session(leased, "user-9") as s:
            s.add(u("leased"))
        assert await contents(leased, "user-9") == ["leased"]
        # The ACL really bites outside the prefix: the server enforces it.
        with pytest.raises(redis.exceptions.NoPermissionError):
            await store.client.set("elsewhere", "x")


async def test_wrong_password_is_a_clear_error_without_the_password(
    acl_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wr0ng-Pa55-word"
    url = f"redis://alice:{wrong}@127.0.0.1:{acl_server.port}/0"
    with caplog.at_level(logging.DEBUG):
        async with RedisStore.from_url(url, prefix=prefix, retries=0) as store:
            assert wrong not in repr(store) and wrong not in str(store)
            with pytest.raises(StoreUnavailable) as info:
                await store.load("s")
            text = everything_said(info.value)
            assert "password" in str(info.value).lower() or "auth" in text.lower()
            assert wrong not in text
            with pytest.raises(StoreUnavailable) as info2:
                async with Session(store, "s", lazy=True) as s:
                    s.add(u("x"))
            assert wrong not in everything_said(info2.value)
            assert info2.value.unsaved == (u("x"),)
    assert wrong not in caplog.text
    assert all(wrong not in str(r.args) for r in caplog.records)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://alice:{PASSWORD}@127.0.0.1:notaport/0",
        f"http://alice:{PASSWORD}@127.0.0.1/0",
        f"rediss://:{PASSWORD}@[::1/0",
        f"redis+cluster://alice:{PASSWORD}@127.0.0.1:99999999",
    ],
)
def test_bad_urls_never_echo_the_password(url: str) -> None:
    with pytest.raises((ValueError, StoreError)) as info:
        RedisStore.from_url(url)
    assert PASSWORD not in everything_said(info.value)


async def test_no_credentials_in_reprs_errors_or_logs(
    acl_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://alice:{PASSWORD}@127.0.0.1:{acl_server.port}/0"
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        async with RedisStore.from_url(
            url, prefix=prefix, socket_timeout=0.5, connect_timeout=0.5
        ) as store:
            seen += [repr(store), str(store), repr(Conversations(store, owns=False))]
            await exercise(store)
            async with Session(store, "x") as s:
                seen.append(repr(s))
            acl_server.kill()  # failures now: their messages and the warnings logged
            for attempt in (store.load("x"), store.append("x", [u("lost")])):
                with pytest.raises(StoreUnavailable) as info:
                    await attempt
                seen.append(everything_said(info.value))
            acl_server.start()
    seen.append(caplog.text)
    seen += [str(r.args) for r in caplog.records]
    assert not [text for text in seen if PASSWORD in text]


# -- TLS ----------------------------------------------------------------------------------


def _tls_unavailable_reason() -> str | None:
    for exe in ("redis-server", "openssl"):
        if shutil.which(exe) is None:
            return f"{exe} is not on PATH"
    return None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class TLSUnsupported(RuntimeError):
    """The installed redis-server refused the TLS options."""


class TLSServer:
    """redis-server with TLS only, a throwaway CA, and a certificate for 127.0.0.1."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="promptkit-tls-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "redis.log"

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.crt")

    def make_certs(self) -> None:
        # Extensions as a real CA sets them: Python 3.13's default context checks
        # certificates strictly (VERIFY_X509_STRICT) and rejects a CA without a
        # critical basicConstraints and a keyUsage, or a leaf without key ids.
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        d = self.dir
        _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                 "-subj", "/CN=promptkit test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash", cwd=d)  # fmt: skip
        _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
        (d / "server.ext").write_text(
            "subjectAltName=IP:127.0.0.1\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", "server.crt", "-days", "2",
                 "-extfile", "server.ext", cwd=d)  # fmt: skip

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
             "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--logfile", str(self.log)],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                if "tls" in log.lower() or "bad directive" in log.lower():
                    raise TLSUnsupported(log[-500:])
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {log[-500:]}")
            try:
                with redis.Redis(
                    host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=self.ca
                ) as r:
                    if r.ping():
                        return
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        raise RuntimeError("the TLS redis-server did not answer within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def tls_server() -> Iterator[TLSServer]:
    reason = _tls_unavailable_reason()
    if reason is not None:
        pytest.skip(f"TLS untested: {reason}")
    server = TLSServer()
    try:
        try:
            server.make_certs()
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"TLS untested: openssl could not make a test certificate ({exc})")
        try:
            server.start()
        except TLSUnsupported as exc:
            pytest.skip(f"TLS untested: this redis-server was built without TLS ({exc})")
        yield server
    finally:
        server.stop()


async def test_rediss_url_works_and_untrusted_certificates_are_refused(
    tls_server: TLSServer, prefix: str
) -> None:
    url = f"rediss://127.0.0.1:{tls_server.port}/0"
    async with RedisStore.from_url(
        url, prefix=prefix, client_options={"ssl_ca_certs": tls_server.ca}
    ) as store:
        await exercise(store)
    # The system trust store does not know the test CA: refused, as a typed error.
    async with RedisStore.from_url(url, prefix=prefix, retries=0) as untrusted:
        with pytest.raises(StoreUnavailable, match="(?i)certificate|ssl"):
            await untrusted.load("s")
    # Plain text to a TLS-only port never works either.
    plain = f"redis://127.0.0.1:{tls_server.port}/0"
    async with RedisStore.from_url(
        plain, prefix=prefix, retries=0, socket_timeout=1, connect_timeout=1
    ) as cleartext:
        with pytest.raises(StoreUnavailable):
            await cleartext.load("s")


# -- key hygiene ----------------------------------------------------------------------------


def foreign_keys(prefix: str) -> dict[bytes, Callable[[redis.Redis, bytes], object]]:
    """Keys the store must never touch, several of them look-alikes of its own schema."""

    def lst(r: redis.Redis, k: bytes) -> object:
        return r.rpush(k, b'{"v":1,"r":"user","c":"foreign"}')

    def string(r: redis.Redis, k: bytes) -> object:
        return r.set(k, b"foreign", px=3_600_000)

    def zset(r: redis.Redis, k: bytes) -> object:
        return r.zadd(k, {"user-1": 1})

    keys: dict[str, Callable[[redis.Redis, bytes], object]] = {
        prefix: string,  # the bare prefix
        f"{prefix}:index:x": zset,
        f"{prefix}:{{user-1}}": lst,  # no kind suffix
        f"{prefix}:user-1:h": lst,  # no hash tag
        f"{prefix}:{{user-1}}:h:x": lst,  # an extra suffix
        f"{prefix}:{{user-1}}:hh": lst,
        f"{prefix}X:{{user-1}}:h": lst,  # a longer prefix
        f"{prefix.upper()}:{{user-1}}:h": lst,
        f"x{prefix}:{{user-1}}:h": lst,
        "other:{user-1}:h": lst,
        "other:{user-1}:t": zset,
        "user-1": string,
        "{user-1}": string,
        "promptkit:{user-1}:h": lst,  # the default prefix, used by another app
    }
    return {k.encode(): fill for k, fill in keys.items()}


def snapshot(r: redis.Redis, keys: list[bytes]) -> dict[bytes, tuple[object, ...]]:
    return {k: (r.type(k), r.dump(k), r.pttl(k) > 0) for k in keys}


def commandstats(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_foreign_keys_are_untouched_and_keys_flush_never_used(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    srv = spawn_server()
    seeded = foreign_keys(prefix)
    with redis.Redis(port=srv.port) as r:
        for key, fill in seeded.items():
            fill(r, key)
        before = snapshot(r, list(seeded))
        r.config_resetstat()
    client = aioredis.Redis(port=srv.port)
    try:
        for options in ({}, {"distributed_lock": True}, {"near_cache": 10}):
            store = RedisStore(client, prefix=prefix, **options)
            await exercise(store)
    finally:
        await client.aclose()
    with redis.Redis(port=srv.port) as r:
        assert snapshot(r, list(seeded)) == before
        used = commandstats(r)
        assert not {"keys", "flushall", "flushdb"} & set(used), used
        assert used.get("scan", 0) > 0  # listing went through SCAN
        left = {k for k in r.scan_iter(match="*") if k not in seeded}
        # Nothing of ours is left after erasing everything but the registry of the
        # session index's slots, which lapses by itself (a slot's index goes with
        # its last session).
        assert left <= {f"{prefix}:index:slots".encode()}, left
