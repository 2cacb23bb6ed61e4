"""Secrets ICA must keep to use later (an Azure DevOps check's callback AuthToken), encrypted
at rest with a key derived from the server secret. Never in the ledger, never in a log."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Purposes: one derived key each, so a secret sealed for one use opens for no other.
ADO_CALLBACK_TOKEN = "ado-callback-token"  # noqa: S105 - a purpose, not a secret


def _fernet(pepper: bytes, purpose: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"ica/{purpose}/v1".encode()
    ).derive(pepper)
    return Fernet(base64.urlsafe_b64encode(key))


def seal(pepper: bytes, purpose: str, secret: str) -> str:
    """The secret encrypted and authenticated (Fernet: AES-128-CBC + HMAC-SHA-256)."""
    return _fernet(pepper, purpose).encrypt(secret.encode()).decode()


def unseal(pepper: bytes, purpose: str, sealed: str) -> str:
    """The secret back; ValueError when it was sealed with another key or altered."""
    try:
        return _fernet(pepper, purpose).decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise ValueError("the sealed secret cannot be opened with this server secret") from None
