"""AgentPin online discovery (``.well-known/agent-identity.json``) against a real aiohttp server
on 127.0.0.1: redirects refused, size caps, timeouts, HTTP errors, revocation fetching, TLS
verification, and no request at all when the issuer is not allowed."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import agentpin
import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_agentpin_support import AGENT, ISSUER, KID, NOW_DT, World, parts

from runtime.agentpin import (
    WELL_KNOWN_DISCOVERY,
    WELL_KNOWN_REVOCATION,
    AgentPinSettings,
    Reason,
    VerificationResult,
    verify_credential,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Site:
    """A local HTTP(S) server whose routes the test sets; records every path requested."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.hits: list[str] = []
        self.release = asyncio.Event()  # set at teardown: frees handlers that hang on purpose
        self.routes: dict[str, Handler] = {
            WELL_KNOWN_DISCOVERY: lambda r: self._json(self.world.discovery),
            WELL_KNOWN_REVOCATION: lambda r: self._json(self.world.revocation),
        }
        self.port = 0
        self.scheme = "http"

    async def _json(self, doc: Any) -> web.StreamResponse:
        return web.json_response(doc)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404)
        return await handler(request)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def hang(self, request: web.Request) -> web.StreamResponse:
        await self.release.wait()
        return web.Response(status=204)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def _start(site: Site, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", site.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await tcp.start()
    site.port = runner.addresses[0][1]
    site.scheme = "https" if ssl_context else "http"
    return runner


@pytest.fixture
async def site(world: World) -> AsyncIterator[Site]:
    s = Site(world)
    runner = await _start(s)
    yield s
    s.release.set()
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def online(world: World, site: Site, **overrides: Any) -> AgentPinSettings:
    values: dict[str, Any] = {
        "expected_issuers": (ISSUER,),
        "trust_bundle": None,
        "allow_online_discovery": True,
        "discovery_base_url_override": site.origin,
        "discovery_timeout_seconds": 2,
    }
    values.update(overrides)
    return AgentPinSettings(**values)


async def verify(
    world: World, site: Site, session: aiohttp.ClientSession | None, token: str | None = None,
    **overrides: Any,
) -> VerificationResult:
    return await verify_credential(
        token or world.issue(), agent_id=AGENT, settings=online(world, site, **overrides),
        pins=world.pins, now=NOW_DT, http_session=session,
    )


# --------------------------------------------------------------------------- positive


async def test_online_discovery_and_revocation(
    world: World, site: Site, session: aiohttp.ClientSession
) -> None:
    result = await verify(world, site, session)
    assert result.ok, result.detail
    assert site.hits == [WELL_KNOWN_DISCOVERY, WELL_KNOWN_REVOCATION]


async def test_online_without_a_session_opens_its_own(world: World, site: Site) -> None:
    assert (await verify(world, site, None)).ok


async def test_custom_revocation_endpoint_on_issuer_origin(
    world: World, site: Site, session: aiohttp.ClientSession
) -> None:
    world.discovery["revocation_endpoint"] = f"https://{ISSUER}/revocations/current.json"
    site.routes["/revocations/current.json"] = site.routes.pop(WELL_KNOWN_REVOCATION)
    token = world.issue()
    agentpin.add_revoked_credential(world.revocation, parts(token)[1]["jti"], "superseded")
    result = await verify(world, site, session, token)
    assert result.reason == Reason.CREDENTIAL_REVOKED
    assert site.hits == [WELL_KNOWN_DISCOVERY, "/revocations/current.json"]


async def test_bundle_without_the_domain_falls_back_to_online_when_allowed(
    world: World, site: Site, session: aiohttp.ClientSession
) -> None:
    world.discovery["entity"] = "other.example.com"
    bundle = world.write_documents()  # the bundle only knows other.example.com
    world.discovery["entity"] = ISSUER  # what the server serves
    result = await verify(world, site, session, trust_bundle=bundle)
    assert result.ok, result.detail
    assert site.hits[0] == WELL_KNOWN_DISCOVERY
    offline = await verify(world, site, session, trust_bundle=bundle, allow_online_discovery=False)
    assert offline.reason == Reason.DISCOVERY_UNAVAILABLE and len(site.hits) == 2


# --------------------------------------------------------------------------- no I/O before identity


async def test_unexpected_issuer_or_subject_makes_no_request(
    world: World, site: Site, session: aiohttp.ClientSession
) -> None:
    wrong_iss = await verify(world, site, session, world.issue(iss="evil.example.com"))
    wrong_sub = await verify(world, site, session, world.issue(sub=AGENT + "-x"))
    assert (wrong_iss.reason, wrong_sub.reason) == (
        Reason.ISSUER_NOT_ALLOWED, Reason.SUBJECT_MISMATCH
    )
    assert site.hits == []


# --------------------------------------------------------------------------- discovery failures


def _respond(**kwargs: Any) -> Handler:
    async def go(request: web.Request) -> web.StreamResponse:
        return web.Response(**kwargs)

    return go


async def _stream_forever(request: web.Request) -> web.StreamResponse:
    # Chunked, no Content-Length: the cap must hold while reading.
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    try:
        for _ in range(64):
            await resp.write(b" " * 8192)
    except (ConnectionResetError, RuntimeError):
        pass  # the client hung up once over the cap, as it should
    return resp


def _redirect(status: int) -> Handler:
    return _respond(status=status, headers={"Location": "/elsewhere.json"})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_discovery_redirect_refused(
    world: World, site: Site, session: aiohttp.ClientSession, status: int
) -> None:
    site.routes[WELL_KNOWN_DISCOVERY] = _redirect(status)
    site.routes["/elsewhere.json"] = lambda r: site._json(world.discovery)
    result = await verify(world, site, session)
    assert result.reason == Reason.DISCOVERY_REDIRECT_REFUSED
    assert site.hits == [WELL_KNOWN_DISCOVERY]  # the target was never fetched


DISCOVERY_FAILURES: dict[str, tuple[Callable[[Site], Handler], Reason]] = {
    "404": (lambda s: _respond(status=404), Reason.DISCOVERY_UNAVAILABLE),
    "500": (lambda s: _respond(status=500), Reason.DISCOVERY_UNAVAILABLE),
    "too-large-content-length": (
        lambda s: _respond(body=b" " * 70000, content_type="application/json"),
        Reason.DISCOVERY_TOO_LARGE,
    ),
    "too-large-streamed": (lambda s: _stream_forever, Reason.DISCOVERY_TOO_LARGE),
    "not-json": (lambda s: _respond(text="{nope", content_type="application/json"),
                 Reason.DISCOVERY_INVALID),
    "html-content-type": (
        lambda s: _respond(text=json.dumps(s.world.discovery), content_type="text/html"),
        Reason.DISCOVERY_INVALID,
    ),
    "duplicate-keys": (
        lambda s: _respond(text='{"entity": "a", "entity": "b"}', content_type="application/json"),
        Reason.DISCOVERY_INVALID,
    ),
    "entity-mismatch": (
        lambda s: _respond(text=json.dumps({**s.world.discovery, "entity": "evil.example.com"}),
                           content_type="application/json"),
        Reason.DISCOVERY_ENTITY_MISMATCH,
    ),
}


@pytest.mark.parametrize("handler, reason", DISCOVERY_FAILURES.values(), ids=DISCOVERY_FAILURES.keys())
async def test_discovery_failures(
    world: World, site: Site, session: aiohttp.ClientSession,
    handler: Callable[[Site], Handler], reason: Reason,
) -> None:
    site.routes[WELL_KNOWN_DISCOVERY] = handler(site)
    result = await verify(world, site, session)
    assert (result.ok, result.reason) == (False, reason), result.detail
    assert world.pins.get_pin(ISSUER) is None


async def test_discovery_timeout_no_headers(
    world: World, site: Site, session: aiohttp.ClientSession
) -> None:
    site.routes[WELL_KNOWN_DISCOVERY] = site.hang
    started = time.monotonic()
    result = await verify(world, site, session, discovery_timeout_seconds=0.15)
    assert result.reason == Reason.DISCOVERY_TIMEOUT
    assert time.monotonic() - started < 1.5


async def test_discovery_timeout_slow_body(
    world: World, site: Site, session: aiohttp.ClientSession
) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b"{")
        await site.release.wait()
        return resp

    site.routes[WELL_KNOWN_DISCOVERY] = drip
    started = time.monotonic()
    result = await verify(world, site, session, discovery_timeout_seconds=0.15)
    assert result.reason == Reason.DISCOVERY_TIMEOUT
    assert time.monotonic() - started < 1.5


async def test_connection_refused(world: World, site: Site, session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await verify(world, site, session,
                          discovery_base_url_override=f"http://127.0.0.1:{port}")
    assert result.reason == Reason.DISCOVERY_UNAVAILABLE


# --------------------------------------------------------------------------- revocation failures


REVOCATION_FAILURES: dict[str, tuple[Callable[[Site], Handler], Reason]] = {
    "500": (lambda s: _respond(status=500), Reason.REVOCATION_UNAVAILABLE),
    "redirect": (lambda s: _redirect(302), Reason.REVOCATION_UNAVAILABLE),
    "too-large": (lambda s: _stream_forever, Reason.REVOCATION_UNAVAILABLE),
    "timeout": (lambda s: s.hang, Reason.REVOCATION_UNAVAILABLE),
    "not-json": (lambda s: _respond(text="[", content_type="application/json"),
                 Reason.REVOCATION_INVALID),
    "foreign-entity": (
        lambda s: _respond(text=json.dumps({**s.world.revocation, "entity": "evil.example.com"}),
                           content_type="application/json"),
        Reason.REVOCATION_INVALID,
    ),
}


@pytest.mark.parametrize("handler, reason", REVOCATION_FAILURES.values(),
                         ids=REVOCATION_FAILURES.keys())
async def test_revocation_fails_closed(
    world: World, site: Site, session: aiohttp.ClientSession,
    handler: Callable[[Site], Handler], reason: Reason,
) -> None:
    site.routes[WELL_KNOWN_REVOCATION] = handler(site)
    result = await verify(world, site, session, discovery_timeout_seconds=0.3)
    assert (result.ok, result.reason) == (False, reason), result.detail


async def test_online_revoked_key(world: World, site: Site, session: aiohttp.ClientSession) -> None:
    agentpin.add_revoked_key(world.revocation, KID, "key_compromise")
    assert (await verify(world, site, session)).reason == Reason.KEY_REVOKED


# --------------------------------------------------------------------------- TLS


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )


async def test_https_certificate_is_verified(world: World, tmp_path: Path) -> None:
    cert_pem, key_pem = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    tls_site = Site(world)
    runner = await _start(tls_site, server_ctx)
    try:
        async with aiohttp.ClientSession() as default_session:
            untrusted = await verify(world, tls_site, default_session)
        assert untrusted.reason == Reason.DISCOVERY_UNAVAILABLE
        assert "certificate" in untrusted.detail.lower()
        trusting = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting)) as s:
            trusted = await verify(world, tls_site, s)
        assert trusted.ok, trusted.detail
    finally:
        await runner.cleanup()
