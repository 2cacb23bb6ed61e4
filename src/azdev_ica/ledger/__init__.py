"""The tamper-evident ledger's pure core: no storage, no web.

- :mod:`.merkle`: RFC 6962 / RFC 9162 hashing, stored-node addressing, compact ranges,
  inclusion and consistency proofs read through a batched ``get_nodes`` callback, and their
  verification.
- :mod:`.note`: C2SP signed notes and tlog checkpoints with Ed25519 keys.
- :mod:`.ed25519_pure`: RFC 8032 Ed25519 in pure Python (the fallback when ``cryptography`` is
  missing).
- :mod:`.offline_verify`: the standalone bundle verifier shipped as ``verify.py`` in exports
  (standard library only; it imports nothing from this package).
"""

from __future__ import annotations

from .merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    GetNodes,
    MemoryTree,
    Node,
    NodeId,
    NodeReadError,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_nodes,
    stored_hash_index,
    verify_consistency,
    verify_inclusion,
)
from .note import Checkpoint, NoteError, Signer, Verifier, open_checkpoint, sign_checkpoint

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Checkpoint",
    "CompactRange",
    "GetNodes",
    "MemoryTree",
    "Node",
    "NodeId",
    "NodeReadError",
    "NoteError",
    "ProofError",
    "Signer",
    "Verifier",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "root_from_nodes",
    "sign_checkpoint",
    "stored_hash_index",
    "verify_consistency",
    "verify_inclusion",
]
