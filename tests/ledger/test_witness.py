"""The witness (C2SP tlog-witness, tlog-cosignature) over real HTTP on loopback: cosigning,
the status codes the spec requires, rewinds refused within a year and across yearly origins,
and `ica witness init|key|serve` as a real process."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.ledger.cosignature import (
    CosignatureVerifier,
    Cosigner,
    cosignature_key_id,
    verify_cosignatures,
)
from azdev_ica.ledger.merkle import EMPTY_ROOT
from azdev_ica.ledger.note import Checkpoint, NoteError, Signer, Verifier, sign_checkpoint
from azdev_ica.ledger.witness import LogFamily, Witness, add_checkpoint_body
from tests.ledger.witness_support import PREFIX, Shard, post, serve_witness

NOW = 1_790_000_000


@pytest.fixture(scope="module")
def log_signer() -> Signer:
    return Signer.generate(PREFIX)


@pytest.fixture(scope="module")
def cosigner() -> Cosigner:
    return Cosigner.generate("witness.test/w1")


@pytest.fixture
def witness_url(
    tmp_path: Path, log_signer: Signer, cosigner: Cosigner
) -> Iterator[tuple[str, Witness]]:
    logs = [LogFamily(PREFIX, (log_signer.verifier(),))]
    with serve_witness(tmp_path / "witness.db", cosigner, logs, clock=lambda: NOW) as served:
        yield served


def _cosign(url: str, body: bytes) -> tuple[int, str, str]:
    return post(url + "/add-checkpoint", body)


def test_cosignature_format_and_key_id(cosigner: Cosigner) -> None:
    vkey = cosigner.verifier().key_string()
    name, kid, key = vkey.split("+", 2)
    assert base64.b64decode(key)[0] == 0x04
    assert len(base64.b64decode(key)) == 33
    assert int(kid, 16) == cosignature_key_id(name, cosigner.public_key)
    assert CosignatureVerifier.from_key_string(vkey) == cosigner.verifier()
    with pytest.raises(NoteError, match="cosignature key"):  # a log key (0x01) is not one
        CosignatureVerifier.from_key_string(Signer.generate("x").verifier().key_string())


def test_round_trip_cosigns_each_consistent_checkpoint(
    witness_url: tuple[str, Witness], log_signer: Signer, cosigner: Cosigner
) -> None:
    url, witness = witness_url
    shard = Shard.open(log_signer, 2026, None, None)
    shard.grow(4)
    status, body, _ = _cosign(url, shard.add_body(0))
    assert status == 200, body
    assert body.startswith("— witness.test/w1 ")
    assert body.endswith("\n")
    cosigned = shard.note() + body
    found, problems = verify_cosignatures(cosigned, [cosigner.verifier()])
    assert problems == []
    assert [c.timestamp for c in found] == [NOW]
    # The checkpoint grows: the consistency proof from the witness's size is accepted.
    shard.grow(37)
    status, body, _ = _cosign(url, shard.add_body(5))
    assert status == 200, body
    assert verify_cosignatures(shard.note() + body, [cosigner.verifier()])[0]
    assert witness.latest(shard.origin) == (42, shard.note())
    # The same checkpoint again (old == size): cosigned again, nothing changes.
    assert _cosign(url, shard.add_body(42))[0] == 200
    # A cosignature over another checkpoint text does not verify.
    other = shard.note(41) + body
    assert verify_cosignatures(other, [cosigner.verifier()])[1]


def test_size_mismatch_answers_409_with_the_known_size(
    witness_url: tuple[str, Witness], log_signer: Signer
) -> None:
    url, _ = witness_url
    shard = Shard.open(log_signer, 2026, None, None)
    shard.grow(9)
    assert _cosign(url, shard.add_body(0))[0] == 200
    shard.grow(5)
    status, body, content_type = _cosign(url, shard.add_body(0))
    assert (status, body, content_type) == (409, "10\n", "text/x.tlog.size")
    status, body, _ = _cosign(url, shard.add_body(3))
    assert (status, body) == (409, "10\n")
    assert _cosign(url, shard.add_body(10))[0] == 200


def test_fork_is_refused_with_422_and_recorded(
    witness_url: tuple[str, Witness], log_signer: Signer
) -> None:
    url, witness = witness_url
    genuine = Shard.open(log_signer, 2026, None, None)
    genuine.grow(20)
    assert _cosign(url, genuine.add_body(0))[0] == 200
    # A rewind: the database restored to 12 entries, then other entries signed on top.
    forked = Shard.open(log_signer, 2026, None, None)
    for entry in genuine.entries[1:12]:
        forked.entries.append(entry)
        forked.tree.append(entry)
    forked.grow(15, tag="rewritten")
    # The fork cannot prove consistency from 21: any proof it builds is refused.
    status, body, _ = _cosign(url, forked.add_body(0))
    assert (status, body) == (409, "21\n")
    fake_proof = genuine.tree.consistency_proof(21, 21) or [EMPTY_ROOT] * 5
    status, body, _ = post(
        url + "/add-checkpoint", add_checkpoint_body(21, fake_proof, forked.note())
    )
    assert status == 422
    assert "not consistent" in body
    # Same size, another root.
    same_size = Shard.open(log_signer, 2026, None, None)
    same_size.grow(20, tag="other")
    status, body, _ = _cosign(url, same_size.add_body(21))
    assert status == 422
    assert [r[1] for r in witness.refusals()] == [422, 422]
    assert witness.latest(genuine.origin)[0] == 21  # type: ignore[index]
    genuine.grow(3)
    assert _cosign(url, genuine.add_body(21))[0] == 200


def test_spec_status_codes(
    witness_url: tuple[str, Witness], log_signer: Signer, tmp_path: Path
) -> None:
    url, _ = witness_url
    shard = Shard.open(log_signer, 2026, None, None)
    shard.grow(3)
    # Unknown origin: 404.
    stranger = sign_checkpoint(Checkpoint("other.test/log", 1, EMPTY_ROOT), [log_signer])
    assert _cosign(url, add_checkpoint_body(0, [], stranger))[0] == 404
    # Not signed by a trusted key: 403; a trusted key's bad signature: 403.
    impostor = Signer.generate(PREFIX)
    forged = sign_checkpoint(Checkpoint(shard.origin, 4, shard.tree.root()), [impostor])
    assert _cosign(url, add_checkpoint_body(0, [], forged))[0] == 403
    good = shard.note()
    text, sig = good.split("\n\n")
    tampered = text.replace(text.split("\n")[1], "5") + "\n\n" + sig
    assert _cosign(url, add_checkpoint_body(0, [], tampered))[0] == 403
    # old larger than the checkpoint: 400; malformed: 400.
    assert _cosign(url, add_checkpoint_body(9, [], good))[0] == 400
    assert _cosign(url, b"old 01\n\n" + good.encode())[0] == 400
    assert _cosign(url, b"new 0\n\n" + good.encode())[0] == 400
    assert _cosign(url, b"old 0\nnot base64!\n\n" + good.encode())[0] == 400
    too_long = add_checkpoint_body(1, [EMPTY_ROOT] * 64, good)
    assert _cosign(url, too_long)[0] == 400
    # Old size 0 with a proof: 422; an empty tree with another root: 422.
    assert _cosign(url, add_checkpoint_body(0, [EMPTY_ROOT], good))[0] == 422
    other_year = Shard(f"{PREFIX}/2030", log_signer)
    bad_empty = sign_checkpoint(Checkpoint(other_year.origin, 0, b"\x01" * 32), [log_signer])
    assert _cosign(url, add_checkpoint_body(0, [], bad_empty))[0] == 422
    # Unknown paths and a missing body length.
    assert post(url + "/nothing", b"x")[0] == 404


def test_yearly_origin_must_chain_to_the_last_cosigned_checkpoint(
    witness_url: tuple[str, Witness], log_signer: Signer
) -> None:
    url, _ = witness_url
    y2026 = Shard.open(log_signer, 2026, None, None)
    y2026.grow(30)
    assert _cosign(url, y2026.add_body(0, 12))[0] == 200
    assert _cosign(url, y2026.add_body(12))[0] == 200  # the year's final checkpoint, size 31
    final = y2026.note()

    # A rewound log opens 2027 from an earlier 2026 checkpoint (size 12): refused.
    rewound = Shard.open(log_signer, 2027, y2026.origin, y2026.note(12))
    rewound.grow(4)
    status, body, _ = post(url + "/open-origin", rewound.open_body())
    assert status == 422
    assert "rewound" in body
    # ... or skips open-origin and submits 2027 directly: refused too.
    status, body, _ = _cosign(url, rewound.add_body(0))
    assert status == 422
    assert "does not chain" in body
    # ... or claims no previous year at all: refused.
    fresh = Shard.open(log_signer, 2027, None, None)
    fresh.grow(2)
    assert post(url + "/open-origin", fresh.open_body())[0] == 422
    # An entry 0 that is not in the checkpoint: refused.
    liar = Shard.open(log_signer, 2027, y2026.origin, final)
    liar.grow(2)
    body_bytes = liar.open_body().replace(b"index 0\n", b"index 0\n" + b"A" * 43 + b"=\n", 1)
    assert post(url + "/open-origin", body_bytes)[0] in (400, 422)

    # The genuine 2027 embeds the final 2026 checkpoint: opened, then cosigned.
    y2027 = Shard.open(log_signer, 2027, y2026.origin, final)
    y2027.grow(3)
    status, body, _ = post(url + "/open-origin", y2027.open_body())
    assert status == 200, body
    assert _cosign(url, y2027.add_body(0))[0] == 200
    # 2026 is closed now: it cannot grow; an older year cannot start.
    y2026.grow(2)
    status, body, _ = _cosign(url, y2026.add_body(31))
    assert status == 422
    assert "closed" in body
    y2025 = Shard.open(log_signer, 2025, None, None)
    assert post(url + "/open-origin", y2025.open_body())[0] == 422
    assert _cosign(url, y2025.add_body(0))[0] == 422


@settings(max_examples=25, deadline=None)
@given(
    first=st.integers(min_value=1, max_value=80),
    more=st.integers(min_value=0, max_value=80),
    flip=st.integers(min_value=0, max_value=63),
)
def test_witness_accepts_exactly_the_genuine_proofs(
    tmp_path_factory: pytest.TempPathFactory, first: int, more: int, flip: int
) -> None:
    signer = Signer(PREFIX, b"\x07" * 32)
    witness = Witness(
        tmp_path_factory.mktemp("w") / "w.db",
        Cosigner("witness.test/p", b"\x08" * 32),
        [LogFamily(PREFIX, (signer.verifier(),))],
        clock=lambda: NOW,
    )
    try:
        shard = Shard.open(signer, 2026, None, None)
        shard.grow(first - 1)
        assert witness.add_checkpoint(shard.add_body(0)).status == 200
        shard.grow(more)
        proof = shard.tree.consistency_proof(first, shard.tree.size) if more else []
        if proof:
            bad = list(proof)
            i = flip % len(bad)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            body = add_checkpoint_body(first, bad, shard.note())
            assert witness.add_checkpoint(body).status == 422
        assert witness.add_checkpoint(shard.add_body(first)).status == 200
        assert witness.latest(shard.origin)[0] == first + more  # type: ignore[index]
    finally:
        witness.close()


def _ica(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "azdev_ica.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


def test_ica_witness_commands_as_a_real_process(tmp_path: Path, log_signer: Signer) -> None:
    key = tmp_path / "w.key"
    made = _ica("witness", "init", "--key", str(key), "--name", "witness.test/proc")
    assert made.returncode == 0, made.stderr
    vkey = made.stdout.strip()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert _ica("witness", "init", "--key", str(key), "--name", "x").returncode == 3
    shown = _ica("witness", "key", "--key", str(key))
    assert shown.stdout.strip() == vkey
    key.chmod(0o644)
    assert _ica("witness", "key", "--key", str(key)).returncode == 3  # readable by others
    key.chmod(0o600)

    errors = tmp_path / "witness.log"
    with (
        errors.open("w") as stderr,
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "azdev_ica.cli.main",
                "witness",
                "serve",
                "--key",
                str(key),
                "--state",
                str(tmp_path / "state.db"),
                "--port",
                "0",
                "--log",
                PREFIX,
                log_signer.verifier().key_string(),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ) as process,
    ):
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert "listening on " in line, errors.read_text()
            url = line.split("listening on ")[1].strip()
            shard = Shard.open(log_signer, 2026, None, None)
            shard.grow(6)
            status, body, _ = post(url + "/add-checkpoint", shard.add_body(0))
            assert status == 200, body
            found, problems = verify_cosignatures(
                shard.note() + body, [CosignatureVerifier.from_key_string(vkey)]
            )
            assert len(found) == 1
            assert not problems
            assert abs(found[0].timestamp - time.time()) < 3600
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert (tmp_path / "state.db").exists()


def test_log_keys_of_the_witness_parse(log_signer: Signer) -> None:
    from azdev_ica.ledger.witness import read_logs

    vkey = log_signer.verifier().key_string()
    logs = read_logs(["# a comment", f"{PREFIX}/ {vkey}", ""])
    assert logs == [LogFamily(PREFIX, (Verifier.from_key_string(vkey),))]
    with pytest.raises(NoteError):
        read_logs([PREFIX])


def test_concurrent_submissions_never_roll_the_state_back(
    witness_url: tuple[str, Witness], log_signer: Signer
) -> None:
    """The spec's race: requests from the same old size, checked and stored atomically."""
    from concurrent.futures import ThreadPoolExecutor

    url, witness = witness_url
    shard = Shard.open(log_signer, 2026, None, None)
    shard.grow(9)
    assert _cosign(url, shard.add_body(0))[0] == 200
    shard.grow(16)
    bodies = [shard.add_body(10, size) for size in range(11, 27)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda body: _cosign(url, body), bodies))
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) == 1
    assert statuses.count(409) == len(bodies) - 1
    winner = 11 + statuses.index(200)
    assert witness.latest(shard.origin)[0] == winner  # type: ignore[index]
    assert {body for status, body, _ in answers if status == 409} == {f"{winner}\n"}
