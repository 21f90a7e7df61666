"""AgentPin verifier (SPEC §5.7): genuine credentials from the PyPI ``agentpin`` package checked
against a local trust bundle/directory, and every applicable negative case of
reference/agentpin.md §6 with its expected reason. Online discovery: test_agentpin_online.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import agentpin
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_agentpin_support import (
    AGENT,
    CAPS,
    FIXTURES,
    ISSUER,
    KID,
    NOW,
    NOW_DT,
    REMOVE,
    World,
    b64url,
    compact,
    new_key,
    parts,
    raw_token,
    with_signature,
)

from runtime.agentpin import (
    ERROR_CODES,
    AgentPinSettings,
    InMemoryPinStore,
    Reason,
    VerificationResult,
    jwk_fingerprint,
    verify_credential,
)

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 order


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def der_to_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --------------------------------------------------------------------------- positive paths


async def test_stored_fixture_token_issued_by_agentpin_verifies_from_bundle_and_directory() -> None:
    token = (FIXTURES / "credential.jwt").read_text().strip()
    sig = parts(token)[2]
    assert sig[0] == 0x30 and 70 <= len(sig) <= 72  # DER, as the AgentPin tools emit
    for source in (FIXTURES / "bundle.json", FIXTURES):
        pins = InMemoryPinStore()
        result = await verify_credential(
            token, agent_id=AGENT, settings=AgentPinSettings((ISSUER,), source), pins=pins,
            now=NOW_DT,
        )
        assert result.ok, result.detail
        assert (result.reason, result.error_code, result.pin_status) == (None, None, "first_use")
        assert result.claims is not None
        assert (result.claims["iss"], result.claims["sub"]) == (ISSUER, AGENT)
        discovery = json.loads((FIXTURES / f"{ISSUER}.json").read_text())
        assert pins.get_pin(ISSUER) == jwk_fingerprint(discovery["public_keys"][0])


async def test_fresh_agentpin_token_verifies_and_pin_matches_agentpin_thumbprint(
    world: World,
) -> None:
    result = await world.verify(world.issue())
    assert result.ok, result.detail
    assert result.pin_status == "first_use"
    # Same fingerprint format as the agentpin packages' pin stores (interoperable pin files).
    assert world.pins.get_pin(ISSUER) == agentpin.jwk_thumbprint(world.key.jwk)
    assert world.pins.pinned_kid(ISSUER) == KID
    assert result.token_info["iss"] == ISSUER and result.token_info["kid"] == KID


async def test_issued_with_real_clock_verifies_at_real_now(world: World) -> None:
    caps: Any = CAPS  # the package annotates list[Capability] but takes strings
    token = agentpin.issue_credential(
        world.key.private_pem, KID, ISSUER, AGENT, None, caps, None, None, 600
    )
    result = await verify_credential(
        token, agent_id=AGENT, settings=world.settings(), pins=world.pins,
        now=datetime.now(NOW_DT.tzinfo),
    )
    assert result.ok, result.detail


async def test_directory_mode_verifies(world: World) -> None:
    world.mode = "directory"
    assert (await world.verify(world.issue())).ok


async def test_tofu_first_use_then_matched(world: World) -> None:
    first = await world.verify(world.issue())
    second = await world.verify(world.issue())
    assert (first.ok, first.pin_status, second.ok, second.pin_status) == (
        True, "first_use", True, "matched"
    )


async def test_der_and_raw_signatures_both_accepted(world: World) -> None:
    token = world.issue()
    der = parts(token)[2]
    raw = der_to_raw(der)
    assert len(raw) == 64 and der != raw
    assert (await world.verify(token)).ok
    assert (await world.verify(with_signature(token, raw))).ok


async def test_high_s_twin_is_valid(world: World) -> None:
    # The AgentPin signers do not normalise s, so about half of genuine tokens are high-S.
    token = world.issue()
    r, s = decode_dss_signature(parts(token)[2])
    twin = with_signature(token, encode_dss_signature(r, N - s))
    assert twin != token
    result = await world.verify(twin)
    assert result.ok and result.claims is not None
    assert result.claims["jti"] == parts(token)[1]["jti"]  # replay logic must key on jti


def _after(
    setup: Callable[[World], object], build: Callable[[World], str] = lambda w: w.issue()
) -> Callable[[World], str]:
    """Run ``setup`` on the world, then build the token."""

    def go(w: World) -> str:
        setup(w)
        return build(w)

    return go


def _with_settings(build: Callable[[World], str] = lambda w: w.issue(), **overrides: Any
                   ) -> Callable[[World], str]:
    return _after(lambda w: w.overrides.update(overrides), build)


def _revoke_others(w: World) -> None:
    agentpin.add_revoked_credential(w.revocation, "other-jti", "superseded")
    agentpin.add_revoked_agent(w.revocation, "urn:agentpin:agents.example.com:x", "superseded")
    agentpin.add_revoked_key(w.revocation, "other-kid", "superseded")


def _no_revocation(w: World) -> None:
    w.publish_revocation = False


def _key_exp(offset: int) -> Callable[[World], str]:
    def go(w: World) -> str:
        w.discovery["public_keys"][0]["exp"] = datetime.fromtimestamp(
            NOW + offset, NOW_DT.tzinfo
        ).isoformat().replace("+00:00", "Z")
        return w.issue()

    return go


ACCEPTED: dict[str, Callable[[World], str]] = {
    "expired-59s-ago-within-skew": lambda w: w.issue(iat=NOW - 3659, ttl=3600),
    "iat-59s-in-future-within-skew": lambda w: w.issue(iat=NOW + 59),
    "nbf-59s-in-future-within-skew": lambda w: w.sign(w.claims(nbf=NOW + 59)),
    "lifetime-exactly-86400": lambda w: w.issue(iat=NOW - 10, ttl=86400),
    "key-exp-59s-ago-within-skew": _key_exp(-59),
    "key-exp-without-Z-offset": _after(
        lambda w: w.discovery["public_keys"][0].update(exp="2030-01-01T00:00:00+00:00")
    ),
    "aud-star": _with_settings(lambda w: w.issue(audience="*"), audience="sched.example.com"),
    "aud-equal": _with_settings(
        lambda w: w.issue(audience="sched.example.com"), audience="sched.example.com"
    ),
    "aud-absent-with-audience-configured": _with_settings(audience="sched.example.com"),
    "aud-present-without-audience-configured": lambda w: w.issue(audience="other.example"),
    "capability-wildcard": lambda w: w.issue(caps=["read:anything.at.all"]),
    "capability-scoped": lambda w: w.issue(caps=["write:reports.weekly"]),
    "no-capabilities": lambda w: w.issue(caps=[]),
    "constraints-stricter": _after(
        lambda w: w.discovery["agents"][0].update(constraints={
            "data_classification_max": "confidential", "rate_limit": "100/hour",
            "allowed_domains": ["*.client.example", "client.example"]}),
        lambda w: w.issue(constraints={
            "data_classification_max": "internal", "rate_limit": "1/minute",
            "allowed_domains": ["api.client.example", "client.example"]}),
    ),
    "revocation-lists-other-ids": _after(_revoke_others),
    "revocation-not-required-and-absent": _after(
        _no_revocation, _with_settings(require_revocation=False)
    ),
    "second-key-listed": _after(
        lambda w: w.discovery["public_keys"].append(new_key("agents.example.com-2026-02").jwk)
    ),
}


@pytest.mark.parametrize("build", ACCEPTED.values(), ids=ACCEPTED.keys())
async def test_accepted(world: World, build: Callable[[World], str]) -> None:
    result = await world.verify(build(world))
    assert result.ok, f"{result.reason}: {result.detail}"


async def test_delegation_chain_is_accepted_with_a_warning(world: World) -> None:
    chain = [{"domain": "maker.example", "role": "maker", "agent_id": "urn:agentpin:maker.example:x",
              "kid": "m1", "attestation": "AAAA"}]
    result = await world.verify(world.issue(delegation_chain=chain))
    assert result.ok and result.warnings == ("delegation chain present but not verified",)


# --------------------------------------------------------------------------- negative cases


@dataclass(frozen=True)
class Case:
    """A token (and maybe an agent id) built so that exactly one check fails."""

    id: str
    build: Callable[[World], str | tuple[str, str]]
    reason: Reason


def _hs256_confusion(w: World) -> str:
    header = {"alg": "HS256", "typ": "agentpin-credential+jwt", "kid": KID}
    signing_input = f"{b64url(compact(header))}.{b64url(compact(w.claims()))}"
    mac = hmac.new(w.key.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _alg(alg: Any) -> Callable[[World], str]:
    def go(w: World) -> str:
        header: dict[str, Any] = {"typ": "agentpin-credential+jwt", "kid": KID}
        if alg is not REMOVE:
            header["alg"] = alg
        return w.sign(w.claims(), header=header)

    return go


def _header(**changes: Any) -> Callable[[World], str]:
    def go(w: World) -> str:
        header: dict[str, Any] = {"alg": "ES256", "typ": "agentpin-credential+jwt", "kid": KID}
        for name, value in changes.items():
            if value is REMOVE:
                header.pop(name)
            else:
                header[name] = value
        return w.sign(w.claims(), header=header)

    return go


def _claims(**changes: Any) -> Callable[[World], str]:
    return lambda w: w.sign(w.claims(**changes))


def _sig(transform: Callable[[bytes], bytes]) -> Callable[[World], str]:
    def go(w: World) -> str:
        token = w.issue()
        return with_signature(token, transform(parts(token)[2]))

    return go


def _flip_last_bit(sig: bytes) -> bytes:
    return sig[:-1] + bytes([sig[-1] ^ 1])


def _der(r: int | None = None, s: int | None = None) -> Callable[[bytes], bytes]:
    def go(sig: bytes) -> bytes:
        r0, s0 = decode_dss_signature(sig)
        return encode_dss_signature(r0 if r is None else r, s0 if s is None else s)

    return go


def _segment_edit(index: int, edit: Callable[[str], str]) -> Callable[[World], str]:
    def go(w: World) -> str:
        segs = w.issue().split(".")
        segs[index] = edit(segs[index])
        return ".".join(segs)

    return go


def _non_canonical_trailing_bits(w: World) -> str:
    # Find a payload whose base64url length leaves unused trailing bits, then flip the lowest
    # (unused) bit of its last character: lenient decoders yield the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for extra in ("", "a", "aa"):
        token = w.sign(w.claims(jti="jti" + extra))
        segs = token.split(".")
        if len(segs[1]) % 4:
            last = segs[1][-1]
            segs[1] = segs[1][:-1] + alphabet[alphabet.index(last) ^ 1]
            return ".".join(segs)
    raise AssertionError("no payload length with trailing bits")


def _tampered_payload(w: World) -> str:
    token = w.issue()
    h, p, s = token.split(".")
    payload = parts(token)[1]
    payload["capabilities"] = ["read:everything"]
    return f"{h}.{b64url(compact(payload))}.{s}"


def _raw_sig_not_accepted(w: World) -> str:
    w.overrides["accept_raw_signatures"] = False
    token = w.issue()
    return with_signature(token, der_to_raw(parts(token)[2]))


def _wrong_key_same_kid(w: World) -> str:
    return w.issue(new_key(KID))


def _right_key_wrong_kid(w: World) -> str:
    k2 = new_key("agents.example.com-2026-02")
    w.discovery["public_keys"].append(k2.jwk)
    return w.sign(w.claims(), header={"alg": "ES256", "typ": "agentpin-credential+jwt",
                                      "kid": k2.kid})


def _jwk(**changes: Any) -> Callable[[World], str]:
    def go(w: World) -> str:
        w.discovery["public_keys"][0].update(changes)
        return w.issue()

    return go


def _doc(mutate: Callable[[dict[str, Any]], Any]) -> Callable[[World], str]:
    def go(w: World) -> str:
        mutate(w.discovery)
        return w.issue()

    return go


def _agent(**changes: Any) -> Callable[[World], str]:
    return _doc(lambda d: d["agents"][0].update(changes))


def _revoke(kind: str) -> Callable[[World], str]:
    def go(w: World) -> str:
        token = w.issue()
        if kind == "credential":
            agentpin.add_revoked_credential(w.revocation, parts(token)[1]["jti"], "key_compromise")
        elif kind == "agent":
            agentpin.add_revoked_agent(w.revocation, AGENT, "policy_violation")
        else:
            agentpin.add_revoked_key(w.revocation, KID, "key_compromise")
        return token

    return go


def _revocation(mutate: Callable[[World], Any], mode: str = "bundle") -> Callable[[World], str]:
    def setup(w: World) -> None:
        w.mode = mode
        mutate(w)

    return _after(setup)


def _directory_entity(entity: str) -> Callable[[World], None]:
    def setup(w: World) -> None:
        w.mode = "directory"
        w.discovery["entity"] = entity

    return setup


def _constraints(declared: dict[str, Any], wanted: dict[str, Any]) -> Callable[[World], str]:
    def go(w: World) -> str:
        w.discovery["agents"][0]["constraints"] = declared
        return w.issue(constraints=wanted)

    return go


def _pinned_elsewhere(w: World) -> str:
    w.pins = InMemoryPinStore({ISSUER: jwk_fingerprint(new_key().jwk)})
    return w.issue()


def _rotation_without_admin(w: World) -> str:
    w.pins = InMemoryPinStore({ISSUER: jwk_fingerprint(w.key.jwk)})
    k2 = new_key("agents.example.com-2026-02")
    w.discovery["public_keys"].append(k2.jwk)
    return w.issue(k2)


def _dup_header(w: World) -> str:
    head = (b'{"alg":"none","alg":"ES256","typ":"agentpin-credential+jwt","kid":"'
            + KID.encode() + b'"}')
    return raw_token(head, compact(w.claims()), b"\x30\x06\x02\x01\x01\x02\x01\x01")


def _dup_payload(w: World) -> str:
    body = compact(w.claims())[:-1] + b',"sub":"' + AGENT.encode() + b'"}'
    return raw_token({"alg": "ES256", "typ": "agentpin-credential+jwt", "kid": KID}, body, b"x")


def _agent_id(token_build: Callable[[World], str], agent_id: str) -> Callable[[World], tuple[str, str]]:
    return lambda w: (token_build(w), agent_id)


_HEADER_OK = {"alg": "ES256", "typ": "agentpin-credential+jwt", "kid": KID}
_OTHER_URN = "urn:agentpin:other.example.com:nightly-report"

CASES = [
    # 1-5: algorithm and type
    Case("alg-none-empty-signature",
         lambda w: raw_token({**_HEADER_OK, "alg": "none"}, w.claims(), b""), Reason.ALG_NOT_ALLOWED),
    Case("alg-none-two-segments",
         lambda w: raw_token({**_HEADER_OK, "alg": "none"}, w.claims(), b"").rstrip("."),
         Reason.MALFORMED_TOKEN),
    Case("hs256-public-key-as-secret", _hs256_confusion, Reason.ALG_NOT_ALLOWED),
    *(Case(f"alg-{a}", _alg(a), Reason.ALG_NOT_ALLOWED)
      for a in ("RS256", "ES384", "ES512", "EdDSA", "es256")),
    Case("alg-missing", _alg(REMOVE), Reason.ALG_NOT_ALLOWED),
    Case("alg-not-a-string", _alg(["ES256"]), Reason.ALG_NOT_ALLOWED),
    Case("typ-JWT", _header(typ="JWT"), Reason.WRONG_TYP),
    Case("typ-missing", _header(typ=REMOVE), Reason.WRONG_TYP),
    Case("typ-other-case", _header(typ="AgentPin-Credential+JWT"), Reason.WRONG_TYP),
    # 6-7: kid and key-bearing headers
    Case("kid-missing", _header(kid=REMOVE), Reason.MISSING_KID),
    Case("kid-empty", _header(kid=""), Reason.MISSING_KID),
    Case("kid-number", _header(kid=7), Reason.INVALID_KID),
    Case("kid-too-long", _header(kid="k" * 129), Reason.INVALID_KID),
    Case("header-jwk-embedded", lambda w: w.sign(w.claims(), header={
        **_HEADER_OK, "jwk": new_key().jwk}), Reason.FORBIDDEN_HEADER),
    Case("header-crit", _header(crit=["exp"]), Reason.FORBIDDEN_HEADER),
    Case("header-jku", _header(jku="https://evil.example/keys"), Reason.FORBIDDEN_HEADER),
    # 8-15: signatures
    Case("tampered-payload", _tampered_payload, Reason.BAD_SIGNATURE),
    Case("signature-bit-flipped", _sig(_flip_last_bit), Reason.BAD_SIGNATURE),
    Case("signature-truncated", _sig(lambda s: s[:-1]), Reason.BAD_SIGNATURE),
    Case("signature-empty", _sig(lambda s: b""), Reason.BAD_SIGNATURE),
    Case("signature-trailing-bytes", _sig(lambda s: s + b"\x00"), Reason.BAD_SIGNATURE),
    Case("raw-signature-when-not-accepted", _raw_sig_not_accepted, Reason.BAD_SIGNATURE),
    Case("signature-r-zero", _sig(_der(r=0)), Reason.BAD_SIGNATURE),
    Case("signature-s-zero", _sig(_der(s=0)), Reason.BAD_SIGNATURE),
    Case("signature-r-equals-n", _sig(_der(r=N)), Reason.BAD_SIGNATURE),
    Case("signature-r-negative", _sig(lambda s: b"\x30\x06\x02\x01\xff\x02\x01\x01"),
         Reason.BAD_SIGNATURE),
    Case("wrong-key-same-kid", _wrong_key_same_kid, Reason.BAD_SIGNATURE),
    Case("right-key-wrong-kid", _right_key_wrong_kid, Reason.BAD_SIGNATURE),
    # 10, 46-48: encodings and shapes
    Case("junk-in-signature", _segment_edit(2, lambda s: s[:10] + "!!" + s[10:]),
         Reason.MALFORMED_TOKEN),
    Case("padding-in-payload", _segment_edit(1, lambda s: s + "="), Reason.MALFORMED_TOKEN),
    Case("space-in-header", _segment_edit(0, lambda s: s[:5] + " " + s[5:]), Reason.MALFORMED_TOKEN),
    Case("non-canonical-trailing-bits", _non_canonical_trailing_bits, Reason.MALFORMED_TOKEN),
    Case("four-segments", lambda w: w.issue() + ".AAAA", Reason.MALFORMED_TOKEN),
    Case("empty-payload-segment", _segment_edit(1, lambda s: ""), Reason.MALFORMED_TOKEN),
    Case("header-json-array", lambda w: raw_token(b'["ES256"]', w.claims(), b"x"),
         Reason.MALFORMED_TOKEN),
    Case("payload-not-json", lambda w: raw_token(_HEADER_OK, b"not json", b"x"),
         Reason.MALFORMED_TOKEN),
    Case("payload-invalid-utf8", lambda w: raw_token(_HEADER_OK, b'{"iss":"\xff"}', b"x"),
         Reason.MALFORMED_TOKEN),
    Case("payload-nan", lambda w: raw_token(_HEADER_OK, b'{"exp":NaN}', b"x"),
         Reason.MALFORMED_TOKEN),
    Case("trailing-newline", lambda w: w.issue() + "\n", Reason.MALFORMED_TOKEN),
    Case("leading-space", lambda w: " " + w.issue(), Reason.MALFORMED_TOKEN),
    Case("non-ascii", lambda w: w.issue() + "é", Reason.MALFORMED_TOKEN),
    Case("empty-string", lambda w: "", Reason.MALFORMED_TOKEN),
    Case("not-a-string", lambda w: b"abc.def.ghi", Reason.MALFORMED_TOKEN),  # type: ignore[arg-type,return-value]
    Case("duplicate-alg-header", _dup_header, Reason.MALFORMED_TOKEN),
    Case("duplicate-sub-claim", _dup_payload, Reason.MALFORMED_TOKEN),
    Case("oversized-16KiB", lambda w: "a" * 16385, Reason.TOKEN_TOO_LARGE),
    Case("oversized-1MiB", lambda w: "a." * (1 << 19) + "a", Reason.TOKEN_TOO_LARGE),
    Case("genuine-token-over-configured-cap",
         _with_settings(max_token_bytes=200),
         Reason.TOKEN_TOO_LARGE),
    # 24, 45: claims
    *(Case(f"missing-{c}", _claims(**{c: REMOVE}), Reason.MISSING_CLAIM)
      for c in ("iss", "sub", "iat", "exp", "jti", "capabilities", "agentpin_version")),
    Case("exp-string", _claims(exp=str(NOW + 3600)), Reason.INVALID_CLAIM),
    Case("exp-float", _claims(exp=float(NOW + 3600)), Reason.INVALID_CLAIM),
    Case("exp-bool", _claims(exp=True), Reason.INVALID_CLAIM),
    Case("exp-1e30", _claims(exp=10**30), Reason.INVALID_CLAIM),
    Case("iat-negative", _claims(iat=-1), Reason.INVALID_CLAIM),
    Case("nbf-string", _claims(nbf="soon"), Reason.INVALID_CLAIM),
    Case("sub-empty", _claims(sub=""), Reason.INVALID_CLAIM),
    Case("capabilities-string", _claims(capabilities="read:*"), Reason.INVALID_CLAIM),
    Case("aud-array", _claims(aud=["sched.example.com"]), Reason.INVALID_CLAIM),
    Case("constraints-not-object", _claims(constraints=["x"]), Reason.INVALID_CLAIM),
    Case("agentpin-version-0.2", _claims(agentpin_version="0.2"), Reason.UNSUPPORTED_VERSION),
    # 25, 27, 28: domain anchor and identity (before any I/O)
    Case("issuer-not-expected", lambda w: w.issue(iss="evil.example.com"),
         Reason.ISSUER_NOT_ALLOWED),
    *(Case(f"hostile-iss-{i}", _claims(iss=bad), Reason.INVALID_ISSUER) for i, bad in enumerate((
        "a.com@evil.com", "evil.com:8443", "evil.com/x", "127.0.0.1", "../../etc/x",
        "AGENTS.EXAMPLE.COM", "agents.example.com.", "https://agents.example.com", "localhost",
    ))),
    Case("subject-not-job-agent",
         lambda w: w.issue(sub="urn:agentpin:agents.example.com:other"), Reason.SUBJECT_MISMATCH),
    Case("subject-urn-of-other-domain",
         _agent_id(lambda w: w.issue(sub=_OTHER_URN), _OTHER_URN), Reason.SUBJECT_DOMAIN_MISMATCH),
    # 19-22: time
    Case("expired-61s", lambda w: w.issue(iat=NOW - 3661, ttl=3600), Reason.EXPIRED),
    Case("expired-60s-exactly", lambda w: w.issue(iat=NOW - 3660, ttl=3600), Reason.EXPIRED),
    Case("iat-61s-in-future", lambda w: w.issue(iat=NOW + 61), Reason.ISSUED_IN_FUTURE),
    Case("nbf-61s-in-future", _claims(nbf=NOW + 61), Reason.NOT_YET_VALID),
    Case("exp-not-after-iat", _claims(iat=NOW - 10, exp=NOW - 10), Reason.INVALID_LIFETIME),
    Case("lifetime-86401", lambda w: w.issue(iat=NOW - 10, ttl=86401), Reason.LIFETIME_EXCEEDED),
    Case("per-agent-ttl",
         _after(lambda w: w.discovery["agents"][0].update(credential_ttl_max=3600),
                lambda w: w.issue(ttl=7200)), Reason.LIFETIME_EXCEEDED),
    # 16-18: keys
    Case("unknown-kid", lambda w: w.issue(new_key("agents.example.com-2099-01")),
         Reason.KEY_NOT_FOUND),
    Case("key-expired-61s", _key_exp(-61), Reason.KEY_EXPIRED),
    Case("key-exp-unparsable", _jwk(exp="next year"), Reason.KEY_INVALID),
    Case("jwk-kty-RSA", _jwk(kty="RSA"), Reason.KEY_INVALID),
    Case("jwk-crv-P-384", _jwk(crv="P-384"), Reason.KEY_INVALID),
    Case("jwk-x-31-bytes", _jwk(x=b64url(b"\x01" * 31)), Reason.KEY_INVALID),
    Case("jwk-point-not-on-curve", lambda w: _jwk(y=w.discovery["public_keys"][0]["x"])(w),
         Reason.KEY_INVALID),
    Case("jwk-use-enc", _jwk(use="enc"), Reason.KEY_INVALID),
    Case("jwk-key-ops-sign-only", _jwk(key_ops=["sign"]), Reason.KEY_INVALID),
    # 26, 29, 30, 37, 38: discovery documents and agents
    Case("discovery-entity-mismatch",
         _after(_directory_entity("other.example.com")),
         Reason.DISCOVERY_ENTITY_MISMATCH),
    Case("discovery-version-0.2", _doc(lambda d: d.update(agentpin_version="0.2")),
         Reason.DISCOVERY_INVALID),
    Case("discovery-no-keys", _doc(lambda d: d.update(public_keys=[])), Reason.DISCOVERY_INVALID),
    Case("discovery-depth-4", _doc(lambda d: d.update(max_delegation_depth=4)),
         Reason.DISCOVERY_INVALID),
    Case("discovery-duplicate-kid", _doc(lambda d: d["public_keys"].append(dict(d["public_keys"][0]))),
         Reason.DISCOVERY_INVALID),
    Case("discovery-bad-entity-type", _doc(lambda d: d.update(entity_type="robot")),
         Reason.DISCOVERY_INVALID),
    Case("discovery-http-revocation-endpoint",
         _doc(lambda d: d.update(revocation_endpoint="http://agents.example.com/r.json")),
         Reason.DISCOVERY_INVALID),
    Case("agent-not-declared", _agent(agent_id="urn:agentpin:agents.example.com:someone"),
         Reason.AGENT_NOT_FOUND),
    Case("agent-suspended", _agent(status="suspended"), Reason.AGENT_INACTIVE),
    Case("agent-deprecated", _agent(status="deprecated"), Reason.AGENT_INACTIVE),
    Case("agent-declared-twice", _doc(lambda d: d["agents"].append(dict(d["agents"][0]))),
         Reason.DISCOVERY_INVALID),
    Case("discovery-missing-from-bundle",
         _doc(lambda d: d.update(entity="other.example.com")), Reason.DISCOVERY_UNAVAILABLE),
    Case("discovery-file-missing-from-directory",
         _after(lambda w: w.overrides.update(trust_bundle=w.tmp)),
         Reason.DISCOVERY_UNAVAILABLE),
    Case("no-trust-source", _with_settings(trust_bundle=None),
         Reason.DISCOVERY_UNAVAILABLE),
    # 32-36: revocation
    Case("revoked-credential", _revoke("credential"), Reason.CREDENTIAL_REVOKED),
    Case("revoked-agent", _revoke("agent"), Reason.AGENT_REVOKED),
    Case("revoked-key", _revoke("key"), Reason.KEY_REVOKED),
    Case("revocation-missing-from-bundle", _revocation(_no_revocation),
         Reason.REVOCATION_UNAVAILABLE),
    Case("revocation-missing-from-directory",
         _revocation(_no_revocation, "directory"),
         Reason.REVOCATION_UNAVAILABLE),
    Case("revocation-foreign-entity",
         _revocation(lambda w: w.revocation.update(entity="other.example.com"), "directory"),
         Reason.REVOCATION_INVALID),
    Case("revocation-bad-list", _revocation(lambda w: w.revocation.update(revoked_keys="all")),
         Reason.REVOCATION_INVALID),
    # 31, 43, 44: audience, capabilities, constraints
    Case("audience-mismatch",
         _with_settings(lambda w: w.issue(audience="other.com"), audience="sched.example.com"),
         Reason.AUDIENCE_MISMATCH),
    Case("capability-prefix-not-scope",
         _after(lambda w: w.discovery["agents"][0].update(capabilities=["read:codebase"]),
                lambda w: w.issue(caps=["read:codebasex"])), Reason.CAPABILITY_EXCEEDED),
    Case("capability-wildcard-not-declared",
         _after(lambda w: w.discovery["agents"][0].update(capabilities=["read:x"]),
                lambda w: w.issue(caps=["read:*"])), Reason.CAPABILITY_EXCEEDED),
    Case("capability-undeclared-action", lambda w: w.issue(caps=["delete:x"]),
         Reason.CAPABILITY_EXCEEDED),
    Case("constraint-classification",
         _constraints({"data_classification_max": "confidential"},
                      {"data_classification_max": "restricted"}), Reason.CONSTRAINT_VIOLATION),
    Case("constraint-rate", _constraints({"rate_limit": "100/hour"}, {"rate_limit": "200/hour"}),
         Reason.CONSTRAINT_VIOLATION),
    Case("constraint-rate-per-second",
         _constraints({"rate_limit": "100/hour"}, {"rate_limit": "1/second"}),
         Reason.CONSTRAINT_VIOLATION),
    Case("constraint-domain-outside",
         _constraints({"allowed_domains": ["*.client.example"]},
                      {"allowed_domains": ["client.example"]}), Reason.CONSTRAINT_VIOLATION),
    # 40-41: pinning
    Case("pin-mismatch", _pinned_elsewhere, Reason.PIN_MISMATCH),
    Case("rotation-needs-admin", _rotation_without_admin, Reason.PIN_MISMATCH),
    # trust bundle problems
    Case("bundle-not-json",
         _after(lambda w: w.overrides.update(trust_bundle=_write(w, "{oops"))),
         Reason.TRUST_BUNDLE_INVALID),
    Case("bundle-without-version",
         _after(lambda w: w.overrides.update(trust_bundle=_write(w, '{"documents": []}'))),
         Reason.TRUST_BUNDLE_INVALID),
    Case("bundle-over-size-cap", _with_settings(trust_bundle_max_bytes=100),
         Reason.TRUST_BUNDLE_INVALID),
    Case("settings-issuers-as-bare-string",  # must not become a substring test
         _with_settings(expected_issuers="xagents.example.com.org"), Reason.SETTINGS_INVALID),
    Case("settings-trust-bundle-not-a-path",
         _after(lambda w: w.overrides.update(trust_bundle=str(w.write_documents()))),
         Reason.SETTINGS_INVALID),
    Case("settings-http-override-not-loopback",
         _with_settings(discovery_base_url_override="http://10.0.0.1:80"),
         Reason.SETTINGS_INVALID),
]


def _write(w: World, text: str) -> Path:
    path = w.tmp / "other-bundle.json"
    path.write_text(text)
    return path


def test_case_ids_unique_and_every_reason_has_an_error_code() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert set(ERROR_CODES) == set(Reason)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_refused(world: World, case: Case) -> None:
    built = case.build(world)
    token, agent_id = built if isinstance(built, tuple) else (built, AGENT)
    pins_before = world.pins.get_pin(ISSUER)
    result = await world.verify(token, agent_id=agent_id)
    assert (result.ok, result.reason) == (False, case.reason), result.detail
    assert result.error_code == ERROR_CODES[case.reason]
    assert result.claims is None and result.detail
    # A refused credential never pins a key (the reference pins anyway, agentpin.md §6 #42).
    assert world.pins.get_pin(ISSUER) == pins_before
    # The raw token never appears in what is reported.
    if isinstance(token, str) and len(token) > 20:
        assert token not in result.detail and token not in str(result.audit_details())


# --------------------------------------------------------------------------- ordering and API


async def test_issuer_and_subject_checked_before_any_file_access(world: World) -> None:
    missing = world.tmp / "no-such-bundle.json"
    for token, reason in (
        (world.issue(iss="evil.example.com"), Reason.ISSUER_NOT_ALLOWED),
        (world.issue(sub="urn:agentpin:agents.example.com:other"), Reason.SUBJECT_MISMATCH),
    ):
        result = await world.verify(token, trust_bundle=missing)
        assert result.reason == reason
    # The same bundle path does fail once the identity checks pass: the order is what we saw.
    assert (await world.verify(world.issue(), trust_bundle=missing)).reason == (
        Reason.DISCOVERY_UNAVAILABLE
    )


async def test_empty_allow_list_refuses_everything(world: World) -> None:
    result = await world.verify(world.issue(), expected_issuers=())
    assert result.reason == Reason.ISSUER_NOT_ALLOWED and "none configured" in result.detail


async def test_no_pin_on_audience_failure_then_pin_on_success(world: World) -> None:
    bad = await world.verify(world.issue(audience="other.com"), audience="sched.example.com")
    assert bad.reason == Reason.AUDIENCE_MISMATCH and world.pins.get_pin(ISSUER) is None
    assert (await world.verify(world.issue())).pin_status == "first_use"


async def test_failure_reports_token_info_for_the_audit_event(world: World) -> None:
    token = world.issue()
    agentpin.add_revoked_credential(world.revocation, parts(token)[1]["jti"], "superseded")
    result = await world.verify(token)
    details = result.audit_details()
    assert details["reason"] == "credential_revoked"
    assert details["error_code"] == "CREDENTIAL_REVOKED"
    assert (details["iss"], details["sub"], details["kid"], details["jti"]) == (
        ISSUER, AGENT, KID, parts(token)[1]["jti"]
    )
    assert details["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert "superseded" in details["detail"]


class _BrokenPins:
    def get_pin(self, domain: str) -> str | None:
        raise OSError("database is locked")

    def set_pin(self, domain: str, key_id: str, fingerprint: str) -> None:
        raise AssertionError("not reached")


async def test_pin_store_failure_denies(world: World) -> None:
    world.pins = _BrokenPins()
    result = await world.verify(world.issue())
    assert (result.ok, result.reason) == (False, Reason.PIN_STORE_ERROR)
    assert "database is locked" in result.detail


class _RacingPins(InMemoryPinStore):
    """A store where another verification pins a different key between get and set."""

    def set_pin(self, domain: str, key_id: str, fingerprint: str) -> None:
        super().set_pin(domain, "other", "0" * 64)
        super().set_pin(domain, key_id, fingerprint)


async def test_lost_first_pin_race_is_a_mismatch(world: World) -> None:
    world.pins = _RacingPins()
    assert (await world.verify(world.issue())).reason == Reason.PIN_MISMATCH


async def test_naive_now_is_refused_not_raised(world: World) -> None:
    result = await verify_credential(
        world.issue(), agent_id=AGENT, settings=world.settings(), pins=world.pins,
        now=datetime(2027, 1, 15, 8, 0),
    )
    assert result.reason == Reason.SETTINGS_INVALID


async def test_concurrent_verifications_pin_one_key(world: World) -> None:
    settings_ = world.settings()
    results = await asyncio.gather(*(
        verify_credential(world.issue(), agent_id=AGENT, settings=settings_, pins=world.pins,
                          now=NOW_DT) for _ in range(5)
    ))
    assert all(r.ok for r in results)
    assert [r.pin_status for r in results].count("first_use") == 1
    assert world.pins.get_pin(ISSUER) == jwk_fingerprint(world.key.jwk)


def test_settings_from_config() -> None:
    from runtime.config import AgentPinConfig

    cfg = AgentPinConfig(required=True, domain="Agents.Example.com, b.example.org",
                         trust_bundle=Path("/etc/symbi/bundle.json"))
    s = AgentPinSettings.from_config(cfg, clock_skew_seconds=30)
    assert s.expected_issuers == ("agents.example.com", "b.example.org")
    assert s.trust_bundle == Path("/etc/symbi/bundle.json")
    assert (s.clock_skew_seconds, s.allow_online_discovery, s.discovery_base_url_override) == (
        30, False, None
    )
    empty = AgentPinSettings.from_config(AgentPinConfig())
    assert (empty.expected_issuers, empty.trust_bundle) == ((), None)


def test_defaults_match_spec() -> None:
    s = AgentPinSettings((ISSUER,), None)
    assert (s.clock_skew_seconds, s.max_token_bytes, s.discovery_timeout_seconds,
            s.discovery_max_bytes, s.allow_online_discovery, s.discovery_base_url_override) == (
        60, 16384, 5, 65536, False, None
    )


# --------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=100).map(b64url),
                 st.lists(st.text(alphabet="ABCab_-=.!", max_size=40), max_size=5).map(".".join)))
def test_arbitrary_input_never_raises(tmp_path: Path, junk: str) -> None:
    result = asyncio.run(verify_credential(
        junk, agent_id=AGENT, settings=AgentPinSettings((ISSUER,), tmp_path / "none.json"),
        pins=InMemoryPinStore(), now=NOW_DT,
    ))
    assert isinstance(result, VerificationResult) and not result.ok
    assert result.reason in set(Reason) and result.reason != Reason.INTERNAL_ERROR


@pytest.fixture(scope="module")
def mutation_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, str]:
    w = World(tmp_path_factory.mktemp("mut"))
    return w, w.issue()


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_any_single_character_change_is_refused(
    mutation_world: tuple[World, str], data: st.DataObject
) -> None:
    w, token = mutation_world
    pos = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.sampled_from(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
    ).filter(lambda c: c != token[pos]))
    mutated = token[:pos] + char + token[pos + 1:]
    result = asyncio.run(w.verify(mutated))
    assert not result.ok and result.reason != Reason.INTERNAL_ERROR, result.detail
