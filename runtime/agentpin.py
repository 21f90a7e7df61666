"""AgentPin credential verification for the policy gate (SPEC §5.7, reference/agentpin.md §5).

An AgentPin credential is a compact JWS (``header.payload.signature``) signed with ES256 by the
issuer domain's key; the key comes from that domain's *discovery document*
(``agent-identity.json``), read from a local trust bundle/directory (the default) or, when
allowed, fetched from ``https://{iss}/.well-known/agent-identity.json``.

:func:`verify_credential` is the one entry point. It never raises for bad input: every problem
is a :class:`VerificationResult` with ``ok=False`` and a distinct :class:`Reason`. The first
failing check decides. The order (agentpin.md §5) puts every check that needs no I/O first, in
particular the issuer allow-list (the *domain anchor*: without it any domain could vouch for any
agent id) and ``sub`` == the job's agent id, so an untrusted token never makes us read a file
or open a connection.

Deliberate differences from the reference implementations (agentpin.md §1.5), all stricter:
strict base64url and duplicate-key-free JSON, ``kid`` required, ``agentpin_version`` checked,
per-agent ``credential_ttl_max`` enforced, revocation required (fail closed) unless
``require_revocation=False``, the revocation document's ``entity`` checked, and the key is
pinned only after every other check has passed.

Signatures: the AgentPin tools (Rust CLI, JS and Python packages) emit **DER** ECDSA signatures
(agentpin.md key finding 1), not JOSE's 64-byte ``r||s``; both are accepted here (raw only while
``accept_raw_signatures``). High-S signatures are valid (the tools do not normalise s).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = [
    "AgentPinSettings",
    "InMemoryPinStore",
    "PinStore",
    "Reason",
    "ERROR_CODES",
    "VerificationResult",
    "jwk_fingerprint",
    "verify_credential",
]

REQUIRED_ALG = "ES256"
REQUIRED_TYP = "agentpin-credential+jwt"
PROTOCOL_VERSION = "0.1"  # the wire version of tokens and documents (agentpin.md §1.2)
WELL_KNOWN_DISCOVERY = "/.well-known/agent-identity.json"
WELL_KNOWN_REVOCATION = "/.well-known/agent-identity-revocations.json"
_MAX_KID_CHARS = 128
_MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z: anything larger is not a real time
# Headers that name a key or extension outside the discovery document; the key must come from
# discovery only (agentpin.md §5 step 2), so these are refused rather than ignored.
_FORBIDDEN_HEADERS = ("crit", "jku", "jwk", "x5u", "x5c")
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# A lowercase DNS name with at least two labels: no scheme, port, path, userinfo, trailing dot.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_ENTITY_TYPES = ("maker", "deployer", "both")
_CLASSIFICATION_ORDER = MappingProxyType(
    {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
)
_RATE_UNITS = MappingProxyType({"second": 3600, "minute": 60, "hour": 1})


class Reason(StrEnum):
    """Why a credential was refused: one distinct code per failing check.

    Members are ``str``, so ``result.reason == "expired"`` works. :data:`ERROR_CODES` maps each
    to the AgentPin spec error code (agentpin.md §1.4) or, where the spec has none, a local one.
    """

    TOKEN_TOO_LARGE = "token_too_large"
    MALFORMED_TOKEN = "malformed_token"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    WRONG_TYP = "wrong_typ"
    MISSING_KID = "missing_kid"
    INVALID_KID = "invalid_kid"
    FORBIDDEN_HEADER = "forbidden_header"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_ISSUER = "invalid_issuer"
    ISSUER_NOT_ALLOWED = "issuer_not_allowed"
    SUBJECT_MISMATCH = "subject_mismatch"
    SUBJECT_DOMAIN_MISMATCH = "subject_domain_mismatch"
    ISSUED_IN_FUTURE = "issued_in_future"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    INVALID_LIFETIME = "invalid_lifetime"
    LIFETIME_EXCEEDED = "lifetime_exceeded"
    TRUST_BUNDLE_INVALID = "trust_bundle_invalid"
    DISCOVERY_UNAVAILABLE = "discovery_unavailable"
    DISCOVERY_REDIRECT_REFUSED = "discovery_redirect_refused"
    DISCOVERY_TOO_LARGE = "discovery_too_large"
    DISCOVERY_TIMEOUT = "discovery_timeout"
    DISCOVERY_INVALID = "discovery_invalid"
    DISCOVERY_ENTITY_MISMATCH = "discovery_entity_mismatch"
    KEY_NOT_FOUND = "key_not_found"
    KEY_INVALID = "key_invalid"
    KEY_EXPIRED = "key_expired"
    BAD_SIGNATURE = "bad_signature"
    REVOCATION_UNAVAILABLE = "revocation_unavailable"
    REVOCATION_INVALID = "revocation_invalid"
    CREDENTIAL_REVOKED = "credential_revoked"
    AGENT_REVOKED = "agent_revoked"
    KEY_REVOKED = "key_revoked"
    AGENT_NOT_FOUND = "agent_not_found"
    AGENT_INACTIVE = "agent_inactive"
    CAPABILITY_EXCEEDED = "capability_exceeded"
    CONSTRAINT_VIOLATION = "constraint_violation"
    AUDIENCE_MISMATCH = "audience_mismatch"
    PIN_MISMATCH = "pin_mismatch"
    PIN_STORE_ERROR = "pin_store_error"
    SETTINGS_INVALID = "settings_invalid"
    INTERNAL_ERROR = "internal_error"


# Reason → AgentPin error code. Spec codes where agentpin.md §1.4 has one (using the
# reference's choice where the spec has none, e.g. not-yet-valid → CREDENTIAL_EXPIRED, a
# revoked agent → AGENT_INACTIVE); otherwise local codes (MALFORMED_TOKEN, AGENT_MISMATCH, …).
ERROR_CODES: Mapping[Reason, str] = MappingProxyType(
    {
        Reason.TOKEN_TOO_LARGE: "MALFORMED_TOKEN",
        Reason.MALFORMED_TOKEN: "MALFORMED_TOKEN",
        Reason.ALG_NOT_ALLOWED: "ALGORITHM_REJECTED",
        Reason.WRONG_TYP: "ALGORITHM_REJECTED",
        Reason.MISSING_KID: "MALFORMED_TOKEN",
        Reason.INVALID_KID: "MALFORMED_TOKEN",
        Reason.FORBIDDEN_HEADER: "MALFORMED_TOKEN",
        Reason.MISSING_CLAIM: "MALFORMED_TOKEN",
        Reason.INVALID_CLAIM: "MALFORMED_TOKEN",
        Reason.UNSUPPORTED_VERSION: "MALFORMED_TOKEN",
        Reason.INVALID_ISSUER: "DOMAIN_MISMATCH",
        Reason.ISSUER_NOT_ALLOWED: "DOMAIN_MISMATCH",
        Reason.SUBJECT_MISMATCH: "AGENT_MISMATCH",
        Reason.SUBJECT_DOMAIN_MISMATCH: "DOMAIN_MISMATCH",
        Reason.ISSUED_IN_FUTURE: "CREDENTIAL_EXPIRED",
        Reason.EXPIRED: "CREDENTIAL_EXPIRED",
        Reason.NOT_YET_VALID: "CREDENTIAL_EXPIRED",
        Reason.INVALID_LIFETIME: "CREDENTIAL_EXPIRED",
        Reason.LIFETIME_EXCEEDED: "CREDENTIAL_EXPIRED",
        Reason.TRUST_BUNDLE_INVALID: "DISCOVERY_INVALID",
        Reason.DISCOVERY_UNAVAILABLE: "DISCOVERY_FETCH_FAILED",
        Reason.DISCOVERY_REDIRECT_REFUSED: "DISCOVERY_FETCH_FAILED",
        Reason.DISCOVERY_TOO_LARGE: "DISCOVERY_FETCH_FAILED",
        Reason.DISCOVERY_TIMEOUT: "DISCOVERY_FETCH_FAILED",
        Reason.DISCOVERY_INVALID: "DISCOVERY_INVALID",
        Reason.DISCOVERY_ENTITY_MISMATCH: "DOMAIN_MISMATCH",
        Reason.KEY_NOT_FOUND: "KEY_NOT_FOUND",
        Reason.KEY_INVALID: "DISCOVERY_INVALID",
        Reason.KEY_EXPIRED: "KEY_EXPIRED",
        Reason.BAD_SIGNATURE: "SIGNATURE_INVALID",
        Reason.REVOCATION_UNAVAILABLE: "DISCOVERY_FETCH_FAILED",
        Reason.REVOCATION_INVALID: "DISCOVERY_INVALID",
        Reason.CREDENTIAL_REVOKED: "CREDENTIAL_REVOKED",
        Reason.AGENT_REVOKED: "AGENT_INACTIVE",
        Reason.KEY_REVOKED: "KEY_REVOKED",
        Reason.AGENT_NOT_FOUND: "AGENT_NOT_FOUND",
        Reason.AGENT_INACTIVE: "AGENT_INACTIVE",
        Reason.CAPABILITY_EXCEEDED: "CAPABILITY_EXCEEDED",
        Reason.CONSTRAINT_VIOLATION: "CONSTRAINT_VIOLATION",
        Reason.AUDIENCE_MISMATCH: "AUDIENCE_MISMATCH",
        Reason.PIN_MISMATCH: "KEY_PIN_MISMATCH",
        Reason.PIN_STORE_ERROR: "PIN_STORE_ERROR",
        Reason.SETTINGS_INVALID: "SETTINGS_INVALID",
        Reason.INTERNAL_ERROR: "INTERNAL_ERROR",
    }
)


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class AgentPinSettings:
    """How credentials are verified (config ``[agentpin]``, SPEC §6).

    ``expected_issuers`` is the domain anchor: the allow-list of issuer domains (``iss``); an
    empty tuple refuses every credential. ``trust_bundle`` is a trust-bundle JSON file
    (``{"agentpin_bundle_version": "0.1", "documents": [...], "revocations": [...]}``) or a
    directory holding ``{domain}.json`` and ``{domain}.revocations.json``; it is read on each
    verification, so an updated bundle needs no restart. Online ``.well-known`` discovery is
    off unless ``allow_online_discovery``; it is then the fallback when the local source has no
    document for the domain.

    ``discovery_base_url_override`` is for tests only: it replaces the origin
    ``https://{iss}`` of discovery/revocation URLs (e.g. ``http://127.0.0.1:PORT``); plain HTTP
    is accepted there for loopback hosts only. Never set it in production.
    """

    expected_issuers: tuple[str, ...]
    trust_bundle: Path | None
    allow_online_discovery: bool = False
    clock_skew_seconds: int = 60
    max_token_bytes: int = 16384
    discovery_timeout_seconds: float = 5
    discovery_max_bytes: int = 65536
    # Our additions (agentpin.md §5 configuration table).
    max_credential_lifetime_seconds: int = 86400
    trust_bundle_max_bytes: int = 4 * 1024 * 1024
    accept_raw_signatures: bool = True  # JOSE r||s besides the DER the AgentPin tools emit
    require_revocation: bool = True  # no revocation document for the issuer → refuse
    audience: str | None = None  # this scheduler's domain; checked against `aud` when set
    discovery_base_url_override: str | None = None  # TESTS ONLY (see above)

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> AgentPinSettings:
        """Build settings from the runtime's ``[agentpin]`` section (``AgentPinConfig``).

        ``config.domain`` (``SYMBI_AGENTPIN_DOMAIN`` overrides it in the config loader) may name
        several issuers separated by commas; they are lower-cased. ``config.trust_bundle`` is the
        trust source. Optional attributes ``allow_online_discovery``, ``clock_skew_seconds`` and
        ``audience`` are used when the config model has them; ``overrides`` win over all.
        """
        section = getattr(config, "agentpin", config)
        domains = getattr(section, "domain", None) or ""
        issuers = tuple(d.strip().lower() for d in str(domains).split(",") if d.strip())
        bundle = getattr(section, "trust_bundle", None)
        values: dict[str, Any] = {
            "expected_issuers": issuers,
            "trust_bundle": Path(bundle) if bundle is not None else None,
        }
        for name in ("allow_online_discovery", "clock_skew_seconds", "audience"):
            if getattr(section, name, None) is not None:
                values[name] = getattr(section, name)
        values.update(overrides)
        return cls(**values)


@runtime_checkable
class PinStore(Protocol):
    """Key pinning (TOFU, agentpin.md §1.7): one pinned key fingerprint per issuer domain.

    ``set_pin`` must keep an existing pin (first writer wins: insert-or-ignore), so two
    concurrent first verifications cannot pin two different keys; the verifier re-reads the pin
    after setting it. Rotation is an admin action that replaces the pin outside this protocol.
    """

    def get_pin(self, domain: str) -> str | None:
        """The pinned fingerprint for ``domain``, or None when the domain was never seen."""
        ...

    def set_pin(self, domain: str, key_id: str, fingerprint: str) -> None:
        """Pin ``fingerprint`` (of key ``key_id``) for ``domain`` unless a pin already exists."""
        ...


class InMemoryPinStore:
    """A :class:`PinStore` in a dict (tests and ``symbi run``); pins die with the process."""

    def __init__(self, pins: Mapping[str, str] | None = None) -> None:
        self._pins: dict[str, tuple[str, str]] = {d: ("", fp) for d, fp in (pins or {}).items()}

    def get_pin(self, domain: str) -> str | None:
        """The pinned fingerprint for ``domain``, or None."""
        entry = self._pins.get(domain)
        return entry[1] if entry else None

    def set_pin(self, domain: str, key_id: str, fingerprint: str) -> None:
        """Pin the key for ``domain`` unless one is pinned already."""
        self._pins.setdefault(domain, (key_id, fingerprint))

    def pinned_kid(self, domain: str) -> str | None:
        """The ``kid`` of the pinned key (empty when pre-pinned by fingerprint only)."""
        entry = self._pins.get(domain)
        return entry[0] if entry else None


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """The outcome of :func:`verify_credential`.

    ``claims`` is the verified payload on success and None on failure. ``token_info`` holds
    what could be read from the token even when it was refused (``iss``, ``sub``, ``kid``,
    ``jti``: unverified then) plus ``token_sha256``, for the ``AgentPinVerificationFailed``
    audit event; the raw token is never included anywhere.
    """

    ok: bool
    reason: str | None
    detail: str
    claims: dict[str, Any] | None
    error_code: str | None = None  # AgentPin spec code for `reason` (ERROR_CODES)
    token_info: Mapping[str, str] = field(default_factory=dict)
    pin_status: str | None = None  # on success: "first_use" or "matched"
    warnings: tuple[str, ...] = ()

    def audit_details(self) -> dict[str, str]:
        """Details for the audit event: reason, error code, message and ``token_info``."""
        details = dict(self.token_info)
        details.update({"reason": self.reason or "", "error_code": self.error_code or "",
                        "detail": self.detail})
        return details


def jwk_fingerprint(jwk: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the JWK's ``crv``/``kty``/``x``/``y`` canonical JSON (agentpin.md §1.7).

    The same value the ``agentpin`` packages store in their pin files (``jwk_thumbprint``).
    """
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- entry point


async def verify_credential(
    token: str,
    *,
    agent_id: str,
    settings: AgentPinSettings,
    pins: PinStore,
    now: datetime,
    http_session: aiohttp.ClientSession | None = None,
) -> VerificationResult:
    """Verify an AgentPin credential for a run of agent ``agent_id`` at instant ``now``.

    ``token`` is the already-expanded JWT (expand ``${VAR}`` per run; never store it expanded).
    ``http_session`` is used for online discovery when given (otherwise a short-lived session
    is opened only if a fetch is needed). Never raises for bad input: every failure is an
    ``ok=False`` result with a :class:`Reason`. On success the key is pinned for ``iss`` when
    the domain had no pin (``pin_status`` ``first_use``).
    """
    info: dict[str, str] = {}
    try:
        claims, pin_status, warnings = await _verify(
            token, agent_id, settings, pins, now, http_session, info
        )
    except _Reject as r:
        return VerificationResult(
            ok=False, reason=r.reason, detail=r.detail, claims=None,
            error_code=ERROR_CODES[r.reason], token_info=MappingProxyType(info),
        )
    except Exception as e:  # fail closed: a bug must deny the run, not crash the scheduler
        return VerificationResult(
            ok=False, reason=Reason.INTERNAL_ERROR,
            detail=f"internal error during verification: {type(e).__name__}: {e}",
            claims=None, error_code=ERROR_CODES[Reason.INTERNAL_ERROR],
            token_info=MappingProxyType(info),
        )
    return VerificationResult(
        ok=True, reason=None, detail=f"credential of {claims['sub']} issued by {claims['iss']} verified",
        claims=claims, error_code=None, token_info=MappingProxyType(info),
        pin_status=pin_status, warnings=warnings,
    )


# --------------------------------------------------------------------------- the checks


class _Reject(Exception):
    """Internal: a check failed (converted to a VerificationResult at the entry point)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _reject(reason: Reason, detail: str) -> NoReturn:
    raise _Reject(reason, detail)


async def _verify(
    token: Any,
    agent_id: str,
    settings: AgentPinSettings,
    pins: PinStore,
    now: datetime,
    session: aiohttp.ClientSession | None,
    info: dict[str, str],
) -> tuple[dict[str, Any], str, tuple[str, ...]]:
    _check_settings(settings)
    if not isinstance(now, datetime) or now.tzinfo is None:
        _reject(Reason.SETTINGS_INVALID, "`now` must be a timezone-aware datetime")
    now_ts = now.astimezone(UTC).timestamp()

    # Steps 0–5: everything that needs no I/O.
    header, payload, signing_input, sig_segment = _parse_token(token, settings, info)
    issuer, subject = _check_identity(payload, agent_id, settings)
    _check_times(payload, now_ts, settings)

    # Step 6: discovery (and, from the same source, revocation).
    docs = await _load_documents(issuer, settings, session)
    discovery = docs.discovery
    _validate_discovery(discovery, issuer)

    # Steps 7–8: key by kid, then the signature.
    kid = header["kid"]
    jwk = _find_key(discovery, kid)
    public_key = _public_key(jwk, now_ts, settings)
    _check_signature(public_key, signing_input, sig_segment, settings)

    # Step 9: revocation, checked on every run.
    revocation = docs.revocation
    if revocation is None and docs.revocation_url is not None:
        revocation = await _fetch_revocation(docs.revocation_url, settings, session)
    if revocation is None:
        if settings.require_revocation:
            _reject(Reason.REVOCATION_UNAVAILABLE,
                    f"no revocation document for {issuer} (revocation is required)")
    else:
        _check_revocation(revocation, issuer, payload["jti"], subject, kid)

    # Steps 10–13: the agent declaration.
    agent = _find_agent(discovery, subject)
    _check_agent(agent, payload)

    # Step 14: delegation chains cannot be verified offline (the reference never verifies them).
    warnings: list[str] = []
    if payload.get("delegation_chain"):
        warnings.append("delegation chain present but not verified")

    # Step 15: audience.
    aud = payload.get("aud")
    if settings.audience is not None and aud is not None and aud not in ("*", settings.audience):
        _reject(Reason.AUDIENCE_MISMATCH,
                f"credential audience {aud!r} is not {settings.audience!r}")

    # Step 16: TOFU, last, so a refused credential never pins a key.
    pin_status = _check_pin(pins, issuer, kid, jwk_fingerprint(jwk))
    return payload, pin_status, tuple(warnings)


def _check_settings(settings: AgentPinSettings) -> None:
    if not isinstance(settings, AgentPinSettings):
        _reject(Reason.SETTINGS_INVALID, "settings must be an AgentPinSettings")
    # A bare string would make `iss in expected_issuers` a substring test.
    issuers = settings.expected_issuers
    if not isinstance(issuers, tuple | list | frozenset | set) or not all(
        isinstance(i, str) for i in issuers
    ):
        _reject(Reason.SETTINGS_INVALID, "expected_issuers must be a tuple of domain names")
    if settings.trust_bundle is not None and not isinstance(settings.trust_bundle, Path):
        _reject(Reason.SETTINGS_INVALID, "trust_bundle must be a Path")
    numbers = {
        "clock_skew_seconds": settings.clock_skew_seconds,
        "max_token_bytes": settings.max_token_bytes,
        "discovery_timeout_seconds": settings.discovery_timeout_seconds,
        "discovery_max_bytes": settings.discovery_max_bytes,
        "max_credential_lifetime_seconds": settings.max_credential_lifetime_seconds,
        "trust_bundle_max_bytes": settings.trust_bundle_max_bytes,
    }
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            _reject(Reason.SETTINGS_INVALID, f"{name} must be a non-negative number")
    override = settings.discovery_base_url_override
    if override is not None:
        parts = urlsplit(override)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not (parts.scheme == "https" or (parts.scheme == "http" and loopback)) or (
            parts.path not in ("", "/") or parts.username or parts.query or parts.fragment
        ):
            _reject(Reason.SETTINGS_INVALID,
                    "discovery_base_url_override must be an https origin or a loopback http "
                    "origin (tests only)")


# ---- steps 0–3: the token


def _b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding: the alphabet only, and canonical (re-encodes equal)."""
    if _B64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise ValueError("non-canonical base64url")  # non-zero trailing bits
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _strict_json(data: bytes) -> Any:
    """Parse UTF-8 JSON refusing duplicate keys and NaN/Infinity (ValueError otherwise)."""
    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, RecursionError) as e:
        raise ValueError(str(e)) from None


def _parse_token(
    token: Any, settings: AgentPinSettings, info: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any], bytes, str]:
    if not isinstance(token, str):
        _reject(Reason.MALFORMED_TOKEN, "the credential is not a string")
    # Length first, before any decoding, so a huge value costs nothing more (len of a str is
    # O(1); characters <= bytes, and non-ASCII is refused just below).
    if len(token) > settings.max_token_bytes:
        _reject(Reason.TOKEN_TOO_LARGE,
                f"credential is {len(token)} bytes, the limit is {settings.max_token_bytes}")
    if not token.isascii():
        _reject(Reason.MALFORMED_TOKEN, "the credential contains non-ASCII characters")
    info["token_sha256"] = hashlib.sha256(token.encode("ascii")).hexdigest()
    if token == "" or token != token.strip() or any(c.isspace() for c in token):
        _reject(Reason.MALFORMED_TOKEN, "the credential is empty or contains whitespace")
    segments = token.split(".")
    if len(segments) != 3:
        _reject(Reason.MALFORMED_TOKEN,
                f"a credential has 3 dot-separated segments, this one has {len(segments)}")
    head_seg, body_seg, sig_seg = segments
    if not head_seg or not body_seg:
        _reject(Reason.MALFORMED_TOKEN, "empty header or payload segment")
    try:
        header = _strict_json(_b64url_decode(head_seg))
        payload = _strict_json(_b64url_decode(body_seg))
        _b64url_decode(sig_seg)  # syntax only here; an empty signature fails at step 8
    except ValueError as e:
        _reject(Reason.MALFORMED_TOKEN, f"segment is not strict base64url JSON: {e}")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        _reject(Reason.MALFORMED_TOKEN, "header and payload must be JSON objects")

    for name in ("iss", "sub", "kid", "jti"):
        source = header if name == "kid" else payload
        if isinstance(source.get(name), str):
            info[name] = source[name][:256]

    # Header (step 2): alg first, and never used to choose anything.
    alg = header.get("alg")
    if alg != REQUIRED_ALG:
        _reject(Reason.ALG_NOT_ALLOWED, f"algorithm {alg!r} is not allowed (only {REQUIRED_ALG})")
    if header.get("typ") != REQUIRED_TYP:
        _reject(Reason.WRONG_TYP, f"token type {header.get('typ')!r} is not {REQUIRED_TYP!r}")
    if "kid" not in header or header["kid"] == "":
        _reject(Reason.MISSING_KID, "the header has no key id (kid)")
    kid = header["kid"]
    if not isinstance(kid, str) or len(kid) > _MAX_KID_CHARS:
        _reject(Reason.INVALID_KID, f"kid must be a string of at most {_MAX_KID_CHARS} characters")
    for name in _FORBIDDEN_HEADERS:
        if name in header:
            _reject(Reason.FORBIDDEN_HEADER, f"header parameter {name!r} is not accepted")

    _check_claim_types(payload)
    return header, payload, f"{head_seg}.{body_seg}".encode("ascii"), sig_seg


def _is_timestamp(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _MAX_TIMESTAMP


def _check_claim_types(payload: dict[str, Any]) -> None:
    for name in ("iss", "sub", "iat", "exp", "jti", "agentpin_version", "capabilities"):
        if name not in payload:
            _reject(Reason.MISSING_CLAIM, f"required claim {name!r} is missing")
    for name in ("iss", "sub", "jti"):
        if not isinstance(payload[name], str) or not payload[name]:
            _reject(Reason.INVALID_CLAIM, f"claim {name!r} must be a non-empty string")
    for name in ("iat", "exp"):
        if not _is_timestamp(payload[name]):
            _reject(Reason.INVALID_CLAIM, f"claim {name!r} must be an integer Unix time")
    if "nbf" in payload and not _is_timestamp(payload["nbf"]):
        _reject(Reason.INVALID_CLAIM, "claim 'nbf' must be an integer Unix time")
    if payload["agentpin_version"] != PROTOCOL_VERSION:
        _reject(Reason.UNSUPPORTED_VERSION,
                f"agentpin_version {payload['agentpin_version']!r} is not {PROTOCOL_VERSION!r}")
    caps = payload["capabilities"]
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        _reject(Reason.INVALID_CLAIM, "claim 'capabilities' must be a list of strings")
    optional = {"aud": str, "nonce": str, "constraints": dict, "delegation_chain": list}
    for name, kind in optional.items():
        if name in payload and not isinstance(payload[name], kind):
            _reject(Reason.INVALID_CLAIM, f"claim {name!r} must be a {kind.__name__}")


# ---- step 4: domain anchor and identity (before any I/O)


def _is_hostname(value: str) -> bool:
    return (
        len(value) <= 253
        and _HOSTNAME.fullmatch(value) is not None
        and not value.rsplit(".", 1)[1].isdigit()  # an IPv4 literal is not a domain anchor
    )


def _check_identity(
    payload: dict[str, Any], agent_id: str, settings: AgentPinSettings
) -> tuple[str, str]:
    issuer, subject = payload["iss"], payload["sub"]
    if not _is_hostname(issuer):
        _reject(Reason.INVALID_ISSUER, f"issuer {issuer[:256]!r} is not a lowercase domain name")
    if issuer not in settings.expected_issuers:
        allowed = ", ".join(settings.expected_issuers) or "none configured"
        _reject(Reason.ISSUER_NOT_ALLOWED,
                f"issuer {issuer!r} is not an expected issuer ({allowed})")
    if subject != agent_id:
        _reject(Reason.SUBJECT_MISMATCH,
                f"credential subject {subject[:256]!r} does not match job agent {agent_id!r}")
    if subject.startswith("urn:agentpin:"):
        urn_domain = subject[len("urn:agentpin:"):].split(":", 1)[0]
        if urn_domain != issuer:
            _reject(Reason.SUBJECT_DOMAIN_MISMATCH,
                    f"agent URN domain {urn_domain!r} is not the issuer {issuer!r}")
    return issuer, subject


# ---- step 5: time


def _check_times(payload: dict[str, Any], now_ts: float, settings: AgentPinSettings) -> None:
    skew = settings.clock_skew_seconds
    iat, exp, nbf = payload["iat"], payload["exp"], payload.get("nbf")
    if iat > now_ts + skew:
        _reject(Reason.ISSUED_IN_FUTURE, f"credential issued {iat - now_ts:.0f}s in the future")
    if exp <= now_ts - skew:
        _reject(Reason.EXPIRED, f"credential expired {now_ts - exp:.0f}s ago")
    if nbf is not None and nbf > now_ts + skew:
        _reject(Reason.NOT_YET_VALID, f"credential not valid for another {nbf - now_ts:.0f}s")
    if exp <= iat:
        _reject(Reason.INVALID_LIFETIME, "credential expires before it was issued")
    if exp - iat > settings.max_credential_lifetime_seconds:
        _reject(Reason.LIFETIME_EXCEEDED,
                f"credential lifetime {exp - iat}s exceeds "
                f"{settings.max_credential_lifetime_seconds}s")


# ---- step 6: documents


@dataclass(frozen=True, slots=True)
class _Documents:
    discovery: Any
    revocation: Any | None  # already obtained (local source)
    revocation_url: str | None  # to fetch (online source) when `revocation` is None


class _FetchError(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # unavailable | redirect | too_large | timeout | invalid
        self.detail = detail


_DISCOVERY_FETCH_REASONS = MappingProxyType(
    {
        "unavailable": Reason.DISCOVERY_UNAVAILABLE,
        "redirect": Reason.DISCOVERY_REDIRECT_REFUSED,
        "too_large": Reason.DISCOVERY_TOO_LARGE,
        "timeout": Reason.DISCOVERY_TIMEOUT,
        "invalid": Reason.DISCOVERY_INVALID,
    }
)


async def _load_documents(
    issuer: str, settings: AgentPinSettings, session: aiohttp.ClientSession | None
) -> _Documents:
    if settings.trust_bundle is not None:
        local = await asyncio.to_thread(_load_local, issuer, settings)
        if local is not None:
            return local
        if not settings.allow_online_discovery:
            _reject(Reason.DISCOVERY_UNAVAILABLE,
                    f"no discovery document for {issuer} in {settings.trust_bundle}")
    elif not settings.allow_online_discovery:
        _reject(Reason.DISCOVERY_UNAVAILABLE,
                "no trust bundle configured and online discovery is disabled")
    origin = settings.discovery_base_url_override or f"https://{issuer}"
    try:
        discovery = await _fetch_json(origin.rstrip("/") + WELL_KNOWN_DISCOVERY, settings, session)
    except _FetchError as e:
        _reject(_DISCOVERY_FETCH_REASONS[e.kind], f"discovery for {issuer}: {e.detail}")
    endpoint = f"https://{issuer}{WELL_KNOWN_REVOCATION}"
    if isinstance(discovery, dict) and isinstance(discovery.get("revocation_endpoint"), str):
        endpoint = discovery["revocation_endpoint"]  # validated with the document
    if settings.discovery_base_url_override and endpoint.startswith(f"https://{issuer}/"):
        endpoint = settings.discovery_base_url_override.rstrip("/") + endpoint[len(f"https://{issuer}"):]
    return _Documents(discovery, None, endpoint)


def _read_capped(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _FetchError("too_large", f"{path} is larger than {limit} bytes")
    return data


def _load_local(issuer: str, settings: AgentPinSettings) -> _Documents | None:
    """Discovery + revocation for ``issuer`` from the bundle file or directory (None: absent)."""
    source = settings.trust_bundle
    assert source is not None
    limit = settings.trust_bundle_max_bytes
    if source.is_dir():
        # `issuer` passed the hostname check, so it cannot escape the directory.
        path = source / f"{issuer}.json"
        if not path.is_file():
            return None
        try:
            discovery = _strict_json(_read_capped(path, limit))
        except _FetchError as e:
            _reject(Reason.DISCOVERY_TOO_LARGE, e.detail)
        except (OSError, ValueError) as e:
            _reject(Reason.DISCOVERY_INVALID, f"{path}: {e}")
        rev_path = source / f"{issuer}.revocations.json"
        revocation = None
        if rev_path.is_file():
            try:
                revocation = _strict_json(_read_capped(rev_path, limit))
            except (_FetchError, OSError, ValueError) as e:
                _reject(Reason.REVOCATION_INVALID, f"{rev_path}: {e}")
        return _Documents(discovery, revocation, None)

    try:
        bundle = _strict_json(_read_capped(source, limit))
    except _FetchError as e:
        _reject(Reason.TRUST_BUNDLE_INVALID, e.detail)
    except OSError as e:
        _reject(Reason.DISCOVERY_UNAVAILABLE, f"cannot read trust bundle {source}: {e.strerror}")
    except ValueError as e:
        _reject(Reason.TRUST_BUNDLE_INVALID, f"trust bundle {source} is not valid JSON: {e}")
    if (
        not isinstance(bundle, dict)
        or bundle.get("agentpin_bundle_version") != PROTOCOL_VERSION
        or not isinstance(bundle.get("documents"), list)
        or not isinstance(bundle.get("revocations", []), list)
    ):
        _reject(Reason.TRUST_BUNDLE_INVALID,
                f"trust bundle {source} needs agentpin_bundle_version \"0.1\", a documents list "
                "and a revocations list")
    docs = [d for d in bundle["documents"] if isinstance(d, dict) and d.get("entity") == issuer]
    if not docs:
        return None
    if len(docs) > 1:
        _reject(Reason.TRUST_BUNDLE_INVALID, f"trust bundle has {len(docs)} documents for {issuer}")
    revs = [r for r in bundle.get("revocations", [])
            if isinstance(r, dict) and r.get("entity") == issuer]
    if len(revs) > 1:
        _reject(Reason.TRUST_BUNDLE_INVALID,
                f"trust bundle has {len(revs)} revocation documents for {issuer}")
    return _Documents(docs[0], revs[0] if revs else None, None)


async def _fetch_json(
    url: str, settings: AgentPinSettings, session: aiohttp.ClientSession | None
) -> Any:
    """GET ``url`` as JSON: no redirects, a total timeout and a size cap (raises _FetchError)."""
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await _fetch_json(url, settings, own)
    limit = settings.discovery_max_bytes
    timeout = settings.discovery_timeout_seconds
    body = bytearray()
    try:
        # asyncio.timeout bounds the whole exchange (connect + headers + a slow-drip body);
        # the aiohttp timeout is the same bound expressed to the client.
        async with asyncio.timeout(timeout):
            async with session.get(
                url,
                allow_redirects=False,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                if 300 <= resp.status < 400:
                    raise _FetchError("redirect", f"HTTP {resp.status} redirect refused ({url})")
                if resp.status != 200:
                    raise _FetchError("unavailable", f"HTTP {resp.status} from {url}")
                if resp.content_length is not None and resp.content_length > limit:
                    raise _FetchError("too_large",
                                      f"{resp.content_length} bytes from {url}, limit {limit}")
                mime = resp.content_type
                if mime != "application/json" and not mime.endswith("+json"):
                    raise _FetchError("invalid", f"content type {mime!r} from {url} is not JSON")
                async for chunk in resp.content.iter_chunked(8192):
                    body.extend(chunk)
                    if len(body) > limit:
                        raise _FetchError("too_large", f"more than {limit} bytes from {url}")
    except TimeoutError:
        raise _FetchError("timeout", f"no complete answer from {url} within {timeout}s") from None
    except aiohttp.ClientError as e:
        raise _FetchError("unavailable", f"{type(e).__name__} fetching {url}: {e}") from None
    try:
        return _strict_json(bytes(body))
    except ValueError as e:
        raise _FetchError("invalid", f"{url} did not return valid JSON: {e}") from None


async def _fetch_revocation(
    url: str, settings: AgentPinSettings, session: aiohttp.ClientSession | None
) -> Any:
    try:
        return await _fetch_json(url, settings, session)
    except _FetchError as e:
        if e.kind == "invalid":
            _reject(Reason.REVOCATION_INVALID, f"revocation document: {e.detail}")
        _reject(Reason.REVOCATION_UNAVAILABLE, f"revocation document: {e.detail}")


def _validate_discovery(doc: Any, issuer: str) -> None:
    def bad(what: str) -> NoReturn:
        _reject(Reason.DISCOVERY_INVALID, f"discovery document for {issuer}: {what}")

    if not isinstance(doc, dict):
        bad("not a JSON object")
    if doc.get("agentpin_version") != PROTOCOL_VERSION:
        bad(f"agentpin_version {doc.get('agentpin_version')!r} is not {PROTOCOL_VERSION!r}")
    if doc.get("entity") != issuer:
        _reject(Reason.DISCOVERY_ENTITY_MISMATCH,
                f"discovery document entity {str(doc.get('entity'))[:256]!r} is not the "
                f"issuer {issuer!r}")
    if doc.get("entity_type") not in _ENTITY_TYPES:
        bad(f"entity_type must be one of {', '.join(_ENTITY_TYPES)}")
    keys = doc.get("public_keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        bad("public_keys must be a non-empty list of JWK objects")
    kids = [k.get("kid") for k in keys]
    if not all(isinstance(k, str) and 0 < len(k) <= _MAX_KID_CHARS for k in kids):
        bad("every public key needs a kid of 1 to 128 characters")
    if len(set(kids)) != len(kids):
        bad("duplicate kid in public_keys")
    agents = doc.get("agents")
    if not isinstance(agents, list) or not all(
        isinstance(a, dict) and isinstance(a.get("agent_id"), str) for a in agents
    ):
        bad("agents must be a list of declarations with a string agent_id")
    depth = doc.get("max_delegation_depth")
    if type(depth) is not int or not 0 <= depth <= 3:
        bad("max_delegation_depth must be an integer from 0 to 3")
    if not isinstance(doc.get("updated_at"), str):
        bad("updated_at is missing")
    endpoint = doc.get("revocation_endpoint")
    if endpoint is not None:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is None or parts.scheme != "https" or not parts.hostname or parts.username:
            bad("revocation_endpoint must be an https URL")


# ---- steps 7–8: key and signature


def _find_key(doc: dict[str, Any], kid: str) -> dict[str, Any]:
    for jwk in doc["public_keys"]:
        if jwk["kid"] == kid:
            return jwk  # type: ignore[no-any-return]
    _reject(Reason.KEY_NOT_FOUND, f"no key {kid[:128]!r} in the discovery document")


def _public_key(
    jwk: dict[str, Any], now_ts: float, settings: AgentPinSettings
) -> ec.EllipticCurvePublicKey:
    kid = jwk["kid"]

    def bad(what: str) -> NoReturn:
        _reject(Reason.KEY_INVALID, f"key {kid!r}: {what}")

    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        bad("must be kty EC, crv P-256")
    if "use" in jwk and jwk["use"] != "sig":
        bad("use must be 'sig'")
    if "key_ops" in jwk and (
        not isinstance(jwk["key_ops"], list) or "verify" not in jwk["key_ops"]
    ):
        bad("key_ops must include 'verify'")
    try:
        x = _b64url_decode(jwk["x"]) if isinstance(jwk.get("x"), str) else b""
        y = _b64url_decode(jwk["y"]) if isinstance(jwk.get("y"), str) else b""
    except ValueError:
        bad("x and y must be base64url")
    if len(x) != 32 or len(y) != 32:
        bad("x and y must be 32 bytes each")
    try:
        key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError:
        bad("the point is not on the P-256 curve")
    if "exp" in jwk:
        try:
            exp = datetime.fromisoformat(jwk["exp"]) if isinstance(jwk["exp"], str) else None
        except ValueError:
            exp = None
        if exp is None or exp.tzinfo is None:
            bad(f"exp {jwk['exp']!r} is not an RFC 3339 time with an offset")
        if exp.timestamp() < now_ts - settings.clock_skew_seconds:
            _reject(Reason.KEY_EXPIRED, f"key {kid!r} expired at {jwk['exp']}")
    return key


def _der_candidates(sig: bytes, accept_raw: bool) -> list[bytes]:
    """The DER signature(s) to try: ``sig`` itself when it is strict DER with 1 <= r, s < n,
    and, when raw signatures are accepted, ``sig`` read as 64-byte JOSE ``r||s``."""
    out: list[bytes] = []
    try:
        r, s = decode_dss_signature(sig)
        if 0 < r < _P256_ORDER and 0 < s < _P256_ORDER and encode_dss_signature(r, s) == sig:
            out.append(sig)
    except ValueError:
        pass
    if accept_raw and len(sig) == 64:
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        if 0 < r < _P256_ORDER and 0 < s < _P256_ORDER:
            out.append(encode_dss_signature(r, s))
    return out


def _check_signature(
    key: ec.EllipticCurvePublicKey, signing_input: bytes, sig_segment: str,
    settings: AgentPinSettings,
) -> None:
    sig = _b64url_decode(sig_segment)  # syntax was checked while parsing
    if not sig:
        _reject(Reason.BAD_SIGNATURE, "the credential has no signature")
    candidates = _der_candidates(sig, settings.accept_raw_signatures)
    if not candidates:
        _reject(Reason.BAD_SIGNATURE, f"the signature ({len(sig)} bytes) is not a valid ECDSA "
                "P-256 DER" + (" or r||s" if settings.accept_raw_signatures else "") + " value")
    # A 64-byte value may be both valid DER and r||s; each is a full ECDSA check under the
    # discovery key, so accepting either is no weaker than accepting one.
    for der in candidates:
        try:
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            return
        except InvalidSignature:
            continue
    _reject(Reason.BAD_SIGNATURE, "the signature does not verify with the issuer's key")


# ---- step 9: revocation


def _check_revocation(doc: Any, issuer: str, jti: str, sub: str, kid: str) -> None:
    if not isinstance(doc, dict) or doc.get("agentpin_version") != PROTOCOL_VERSION:
        _reject(Reason.REVOCATION_INVALID, f"revocation document for {issuer} is not valid")
    if doc.get("entity") != issuer:
        _reject(Reason.REVOCATION_INVALID,
                f"revocation document entity {str(doc.get('entity'))[:256]!r} is not {issuer!r}")
    lists = (
        ("revoked_credentials", "jti", jti, Reason.CREDENTIAL_REVOKED, "credential"),
        ("revoked_agents", "agent_id", sub, Reason.AGENT_REVOKED, "agent"),
        ("revoked_keys", "kid", kid, Reason.KEY_REVOKED, "key"),
    )
    for list_name, id_name, value, reason, noun in lists:
        entries = doc.get(list_name, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            _reject(Reason.REVOCATION_INVALID, f"{list_name} must be a list of objects")
        for entry in entries:
            if entry.get(id_name) == value:
                why = entry.get("reason")
                _reject(reason, f"{noun} {value[:128]!r} revoked"
                        + (f" ({why})" if isinstance(why, str) else ""))


# ---- steps 10–13: the agent declaration


def _find_agent(doc: dict[str, Any], sub: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [a for a in doc["agents"] if a["agent_id"] == sub]
    if not found:
        _reject(Reason.AGENT_NOT_FOUND, f"agent {sub!r} is not declared by {doc['entity']}")
    if len(found) > 1:
        _reject(Reason.DISCOVERY_INVALID, f"agent {sub!r} is declared {len(found)} times")
    return found[0]


def _capability_covers(declared: str, wanted: str) -> bool:
    """agentpin.md §1.9: same action, and declared resource ``*``, equal, or a ``.`` prefix."""
    d_action, sep_d, d_res = declared.partition(":")
    w_action, sep_w, w_res = wanted.partition(":")
    if not sep_d or not sep_w or d_action != w_action:
        return False
    return d_res == "*" or d_res == w_res or w_res.startswith(d_res + ".")


def _rate_per_hour(rate: Any) -> int | None:
    if not isinstance(rate, str):
        return None
    count, sep, unit = rate.partition("/")
    if not sep or not count.isdigit() or unit not in _RATE_UNITS:
        return None
    return int(count) * _RATE_UNITS[unit]


def _domain_matches(pattern: str, domain: str) -> bool:
    if pattern == domain:
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com": at least one more label is required
        return domain.endswith(suffix) and len(domain) > len(suffix)
    return False


def _check_constraints(declared: Any, wanted: dict[str, Any]) -> None:
    """Credential constraints must be no looser than the declared ones (agentpin.md §1.9)."""
    if not isinstance(declared, dict) or not declared:
        return
    d_cls, w_cls = declared.get("data_classification_max"), wanted.get("data_classification_max")
    if d_cls is not None and w_cls is not None:
        if d_cls not in _CLASSIFICATION_ORDER:
            _reject(Reason.DISCOVERY_INVALID, f"declared data_classification_max {d_cls!r}")
        if w_cls not in _CLASSIFICATION_ORDER or (
            _CLASSIFICATION_ORDER[w_cls] > _CLASSIFICATION_ORDER[d_cls]
        ):
            _reject(Reason.CONSTRAINT_VIOLATION,
                    f"data_classification_max {w_cls!r} is looser than declared {d_cls!r}")
    d_rate, w_rate = declared.get("rate_limit"), wanted.get("rate_limit")
    if d_rate is not None and w_rate is not None:
        d_per_hour, w_per_hour = _rate_per_hour(d_rate), _rate_per_hour(w_rate)
        if d_per_hour is None:
            _reject(Reason.DISCOVERY_INVALID, f"declared rate_limit {d_rate!r}")
        if w_per_hour is None or w_per_hour > d_per_hour:
            _reject(Reason.CONSTRAINT_VIOLATION,
                    f"rate_limit {w_rate!r} is looser than declared {d_rate!r}")
    d_dom, w_dom = declared.get("allowed_domains"), wanted.get("allowed_domains")
    if d_dom and w_dom is not None:
        if not isinstance(d_dom, list) or not all(isinstance(p, str) for p in d_dom):
            _reject(Reason.DISCOVERY_INVALID, "declared allowed_domains must be strings")
        if not isinstance(w_dom, list):
            _reject(Reason.CONSTRAINT_VIOLATION, "allowed_domains must be a list")
        for domain in w_dom:
            if not isinstance(domain, str) or not any(_domain_matches(p, domain) for p in d_dom):
                _reject(Reason.CONSTRAINT_VIOLATION,
                        f"allowed domain {str(domain)[:256]!r} is outside the declared ones")


def _check_agent(agent: dict[str, Any], payload: dict[str, Any]) -> None:
    sub = payload["sub"]
    status = agent.get("status")
    if not isinstance(status, str):
        _reject(Reason.DISCOVERY_INVALID, f"agent {sub!r} has no status")
    if status != "active":
        _reject(Reason.AGENT_INACTIVE, f"agent {sub!r} is {status[:64]}")
    ttl_max = agent.get("credential_ttl_max", 86400)
    if type(ttl_max) is not int or ttl_max <= 0:
        _reject(Reason.DISCOVERY_INVALID, f"agent {sub!r}: credential_ttl_max must be an integer")
    lifetime = payload["exp"] - payload["iat"]
    if lifetime > ttl_max:
        _reject(Reason.LIFETIME_EXCEEDED,
                f"credential lifetime {lifetime}s exceeds the agent's credential_ttl_max "
                f"{ttl_max}s")
    declared = agent.get("capabilities")
    if not isinstance(declared, list) or not all(isinstance(c, str) for c in declared):
        _reject(Reason.DISCOVERY_INVALID, f"agent {sub!r}: capabilities must be a list")
    for cap in payload["capabilities"]:
        if not any(_capability_covers(d, cap) for d in declared):
            _reject(Reason.CAPABILITY_EXCEEDED,
                    f"capability {cap[:128]!r} is not declared for agent {sub!r}")
    if "constraints" in payload:
        _check_constraints(agent.get("constraints"), payload["constraints"])


# ---- step 16: key pinning


def _check_pin(pins: PinStore, issuer: str, kid: str, fingerprint: str) -> str:
    try:
        pinned = pins.get_pin(issuer)
        status = "matched"
        if pinned is None:
            pins.set_pin(issuer, kid, fingerprint)
            pinned = pins.get_pin(issuer)  # another verification may have pinned first
            status = "first_use"
    except Exception as e:  # a store failure must deny, not pass
        _reject(Reason.PIN_STORE_ERROR, f"pin store failed: {type(e).__name__}: {e}")
    if pinned != fingerprint:
        _reject(Reason.PIN_MISMATCH,
                f"key {kid!r} of {issuer} is not the key pinned for that domain")
    return status
