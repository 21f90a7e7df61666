"""Builders shared by the AgentPin tests (no tests here).

Keys, discovery/revocation documents and credentials come from the PyPI ``agentpin`` package
(the test extra), so the tokens are GENUINE AgentPin credentials with the DER signatures the
AgentPin tools emit. Hand-built tokens (``raw_token``) are used only for shapes the package
cannot produce (bad alg, duplicate keys, broken encodings).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import agentpin

from runtime.agentpin import (
    AgentPinSettings,
    InMemoryPinStore,
    VerificationResult,
    verify_credential,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agentpin"
ISSUER = "agents.example.com"
AGENT = "urn:agentpin:agents.example.com:nightly-report"
KID = "agents.example.com-2026-01"
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
NOW_DT = datetime.fromtimestamp(NOW, UTC)
CAPS = ["read:reports", "write:reports.daily"]
REMOVE = object()  # a claim value meaning "leave this claim out"


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(seg: str) -> bytes:
    """Lenient decode for tests (the verifier's own decoder is the strict one)."""
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def compact(obj: Any) -> bytes:
    """Compact JSON bytes, as the AgentPin issuers write them."""
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def raw_token(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, sig: bytes) -> str:
    """Assemble a compact JWS from parts (dicts are serialised, bytes used as given)."""
    h = header if isinstance(header, bytes) else compact(header)
    p = payload if isinstance(payload, bytes) else compact(payload)
    return f"{b64url(h)}.{b64url(p)}.{b64url(sig)}"


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Header, payload and signature bytes of a token."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), b64url_decode(s)


def with_signature(token: str, sig: bytes) -> str:
    """``token`` with its signature segment replaced by ``sig``."""
    h, p, _ = token.split(".")
    return f"{h}.{p}.{b64url(sig)}"


@dataclass
class Key:
    """A P-256 key pair made by ``agentpin.generate_key_pair`` and its public JWK."""

    kid: str
    private_pem: str
    public_pem: str
    jwk: dict[str, Any]


def new_key(kid: str = KID) -> Key:
    """A fresh key with ``kid``."""
    private_pem, public_pem = agentpin.generate_key_pair()
    jwk = agentpin.pem_to_jwk(public_pem, kid)
    jwk["exp"] = "2030-01-01T00:00:00Z"
    return Key(kid, private_pem, public_pem, jwk)


def agent_decl(**changes: Any) -> dict[str, Any]:
    """An active agent declaration for AGENT, with ``changes`` applied."""
    decl: dict[str, Any] = {
        "agent_id": AGENT,
        "name": "Nightly report",
        "capabilities": ["read:*", "write:reports"],
        "credential_ttl_max": 86400,
        "status": "active",
    }
    decl.update(changes)
    return decl


@dataclass
class World:
    """One issuer domain with its documents on disk, a pin store, and ways to mint tokens.

    ``mode`` is ``bundle`` (a trust-bundle file) or ``directory`` (``{domain}.json`` files).
    Tests mutate ``discovery``/``revocation``/``overrides`` before calling :meth:`verify`.
    """

    tmp: Path
    key: Key = field(default_factory=new_key)
    mode: str = "bundle"
    overrides: dict[str, Any] = field(default_factory=dict)
    pins: Any = field(default_factory=InMemoryPinStore)
    publish_revocation: bool = True  # False: no revocation document for ISSUER at all
    discovery: dict[str, Any] = field(init=False)
    revocation: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.discovery = agentpin.build_discovery_document(
            ISSUER, "deployer", [self.key.jwk], [agent_decl()], 2, "2026-06-01T00:00:00Z"
        )
        self.revocation = agentpin.build_revocation_document(ISSUER)

    # -- documents and settings

    def write_documents(self) -> Path:
        """Write the documents in the current mode; returns the trust-bundle path."""
        if self.mode == "directory":
            root = self.tmp / "trust"
            root.mkdir(exist_ok=True)
            (root / f"{ISSUER}.json").write_text(json.dumps(self.discovery))
            rev = root / f"{ISSUER}.revocations.json"
            if self.publish_revocation:
                rev.write_text(json.dumps(self.revocation))
            elif rev.exists():
                rev.unlink()
            return root
        bundle = agentpin.create_trust_bundle("2026-06-01T00:00:00Z")
        bundle["documents"].append(self.discovery)
        if self.publish_revocation:
            bundle["revocations"].append(self.revocation)
        path = self.tmp / "bundle.json"
        path.write_text(json.dumps(bundle))
        return path

    def settings(self, **overrides: Any) -> AgentPinSettings:
        """Settings trusting ISSUER via the written documents, with overrides applied."""
        values: dict[str, Any] = {
            "expected_issuers": (ISSUER,),
            "trust_bundle": self.write_documents(),
        }
        values.update(self.overrides)
        values.update(overrides)
        return AgentPinSettings(**values)

    # -- tokens

    def issue(
        self,
        key: Key | None = None,
        *,
        iat: int = NOW - 10,
        ttl: int = 3600,
        iss: str = ISSUER,
        sub: str = AGENT,
        caps: list[str] | None = None,
        audience: str | None = None,
        constraints: dict[str, Any] | None = None,
        delegation_chain: list[Any] | None = None,
    ) -> str:
        """A credential issued by ``agentpin.issue_credential`` as if at ``iat``."""
        k = key or self.key
        capabilities: Any = CAPS if caps is None else caps  # the package annotates Capability
        with mock.patch("time.time", return_value=float(iat)):
            return str(
                agentpin.issue_credential(
                    k.private_pem, k.kid, iss, sub, audience,
                    capabilities, constraints, delegation_chain, ttl,
                )
            )

    def claims(self, **changes: Any) -> dict[str, Any]:
        """The payload ``issue`` would produce, with ``changes`` (REMOVE drops a claim)."""
        payload: dict[str, Any] = {
            "iss": ISSUER, "sub": AGENT, "iat": NOW - 10, "exp": NOW + 3590,
            "jti": "6a1f3f4e-2d7c-4d9e-9a51-0f5d3c2b1a00", "agentpin_version": "0.1",
            "capabilities": list(CAPS),
        }
        for name, value in changes.items():
            if value is REMOVE:
                payload.pop(name, None)
            else:
                payload[name] = value
        return payload

    def sign(
        self, payload: dict[str, Any], header: dict[str, Any] | None = None, key: Key | None = None
    ) -> str:
        """``agentpin.encode_jwt`` (DER signature) of an arbitrary header/payload."""
        k = key or self.key
        head = {"alg": "ES256", "typ": "agentpin-credential+jwt", "kid": k.kid}
        if header is not None:
            head = header
        return str(agentpin.encode_jwt(head, payload, k.private_pem))

    async def verify(
        self, token: Any, *, agent_id: str = AGENT, **overrides: Any
    ) -> VerificationResult:
        """Run the verifier at NOW against this world's documents and pins."""
        return await verify_credential(
            token, agent_id=agent_id, settings=self.settings(**overrides), pins=self.pins,
            now=NOW_DT,
        )
