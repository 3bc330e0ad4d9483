"""API keys are tenants: who a bearer key is, checked against SHA-256 digests in constant time.

Keys come from settings: `SOUNDSTAGE_API_KEY_HASHES` and `SOUNDSTAGE_ADMIN_KEY_HASHES` hold entries
`<tenant>:<sha256 hex of the key>` (or a bare digest, whose tenant is `key-<first 12 hex digits>`), so a
leaked config does not leak keys. `SOUNDSTAGE_API_KEYS` (plain keys) still works and is hashed at start-up.
With no key configured the API is open: one anonymous tenant that owns nothing and sees everything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from infra.settings import Settings

KEY_HASH_ENTRY = re.compile(r"^(?:(?P<tenant>[a-z0-9][a-z0-9_.-]{0,62}):)?(?P<digest>[0-9a-f]{64})$")


@dataclass(frozen=True)
class Tenant:
    """Who is asking. `id` owns what the tenant makes (None: the open API, where nothing is owned);
    `admin` sees and manages every tenant's jobs, uploads and voices."""

    id: str | None
    admin: bool = False

    def owns(self, owner: str | None) -> bool:
        """Whether something owned by `owner` is visible to this tenant."""
        return self.admin or owner == self.id

    @property
    def scope(self) -> str | None:
        """The owner a store read is limited to: this tenant's id, or None (all) for an admin."""
        return None if self.admin else self.id


OPEN = Tenant(id=None, admin=True)


def key_digest(key: str) -> str:
    """The SHA-256 hex digest an operator stores for `key` (`soundstage`'s docs show how)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    tenant: Tenant


class KeyRing:
    """The configured keys; `resolve` compares a presented key with every one in constant time."""

    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = entries

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        entries = [_entry(key_digest(key), admin=False) for key in settings.api_keys]
        entries += [_entry(raw, admin=False) for raw in settings.api_key_hashes]
        entries += [_entry(raw, admin=True) for raw in settings.admin_key_hashes]
        return cls(entries)

    @property
    def admins(self) -> frozenset[str]:
        """The tenant ids of the admin keys."""
        return frozenset(e.tenant.id for e in self._entries if e.tenant.admin and e.tenant.id is not None)

    @property
    def open(self) -> bool:
        """No key configured: every request is the anonymous `OPEN` tenant."""
        return not self._entries

    def resolve(self, key: str) -> Tenant | None:
        """The tenant of `key`, or None. Every entry is compared (no early exit), each in constant time."""
        presented = hashlib.sha256(key.encode()).digest()
        found: Tenant | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.digest) and found is None:
                found = entry.tenant
        return found


def voice_scope(owner: str | None, settings: Settings) -> str | None:
    """The owner a job's voice reads are limited to when the job runs: its tenant's id, or None (any
    voice) for a job of an admin key or of the open API, which admission let name any voice."""
    if owner is None or owner in KeyRing.from_settings(settings).admins:
        return None
    return owner


def _entry(raw: str, *, admin: bool) -> _Entry:
    match = KEY_HASH_ENTRY.match(raw.strip().lower())
    if match is None:  # settings validate the format; this guards other callers
        raise ValueError("a key hash entry is `<tenant>:<64 hex digits>` or `<64 hex digits>`")
    digest = match["digest"]
    return _Entry(bytes.fromhex(digest), Tenant(id=match["tenant"] or f"key-{digest[:12]}", admin=admin))
