"""The transparency-dev/merkle RFC 6962 vectors and the RFC 6962 known-answer roots."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from azdev_ica.ledger.merkle import (
    MemoryTree,
    ProofError,
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors" / "merkle"
INCLUSION = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").rglob("*.json"))

# RFC 6962 test leaves and the roots of their first n (../shared/testdata/README.md).
RFC_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(data: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in data["proof"] or []]


def _id(path: Path) -> str:
    return path.relative_to(VECTORS).as_posix()


def test_all_vectors_are_present() -> None:
    # 196 files in transparency-dev/merkle testdata; a lost file must not go unnoticed.
    assert len(INCLUSION) + len(CONSISTENCY) == 196
    assert len(INCLUSION) == 98
    wanted = [_load(p)["wantErr"] for p in INCLUSION + CONSISTENCY]
    assert wanted.count(False) == 12


@pytest.mark.parametrize("path", INCLUSION, ids=_id)
def test_inclusion_vector(path: Path) -> None:
    v = _load(path)

    def check() -> None:
        verify_inclusion(
            _b64(v["leafHash"]), v["leafIdx"], v["treeSize"], _proof(v), _b64(v["root"])
        )

    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("path", CONSISTENCY, ids=_id)
def test_consistency_vector(path: Path) -> None:
    v = _load(path)

    def check() -> None:
        verify_consistency(v["size1"], v["size2"], _proof(v), _b64(v["root1"]), _b64(v["root2"]))

    if v["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


def _rfc_tree() -> MemoryTree:
    tree = MemoryTree()
    for data in RFC_LEAVES:
        tree.append(data)
    return tree


@pytest.mark.parametrize("n", range(9))
def test_rfc6962_known_roots(n: int) -> None:
    want = bytes.fromhex(RFC_ROOTS[n])
    assert root_from_leaf_hashes(leaf_hash(d) for d in RFC_LEAVES[:n]) == want
    assert _rfc_tree().root(n) == want


HAPPY = [p for p in INCLUSION + CONSISTENCY if p.name == "happy-path.json"]


@pytest.mark.parametrize("path", HAPPY, ids=_id)
def test_generated_proofs_equal_the_happy_path_vectors(path: Path) -> None:
    # The vectors are built from the RFC 6962 leaves: proof generation must reproduce them.
    v = _load(path)
    tree = _rfc_tree()
    if "leafIdx" in v:
        assert tree.leaf_hash(v["leafIdx"]) == _b64(v["leafHash"])
        assert tree.inclusion_proof(v["leafIdx"], v["treeSize"]) == _proof(v)
        assert tree.root(v["treeSize"]) == _b64(v["root"])
    else:
        assert tree.consistency_proof(v["size1"], v["size2"]) == _proof(v)
        assert tree.root(v["size1"]) == _b64(v["root1"])
        assert tree.root(v["size2"]) == _b64(v["root2"])
