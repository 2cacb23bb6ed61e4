"""The standalone bundle verifier: good bundles pass, every tampering is caught and located."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.ledger import offline_verify
from azdev_ica.ledger.merkle import MemoryTree
from azdev_ica.ledger.offline_verify import Report, hash_entries, main, verify_bundle

from .bundles import (
    EVIL_SIGNER,
    LOG_SIGNER,
    OLD_SIGNER,
    ORIGIN,
    T0,
    Bundle,
    KeySpec,
    build_bundle,
    entry,
    rfc3339,
)

N = 100
SIZES = [1, 10, 37, 64, 100]
LOG_VKEY = LOG_SIGNER.verifier().key_string()


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return build_bundle(tmp_path / "bundle", N, SIZES)


def _cp(size: int) -> str:
    return offline_verify.checkpoint_file_name(size)


def _failed(report: Report, where: str, text: str) -> None:
    assert not report.ok
    hits = [p for p in report.problems if p.where == where and text in p.message]
    assert hits, f"no problem at {where} mentioning {text!r}: {report.problems}"


def _tamper(bundle: Bundle, lines: list[bytes], *, reseal: bool = True) -> Report:
    bundle.write_entries(lines)
    if reseal:  # the attacker also fixes the (unsigned) manifest
        bundle.reseal_manifest()
    return verify_bundle(bundle.path)


# --- good bundles ----------------------------------------------------------------------------


def test_a_good_bundle_verifies(bundle: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify_bundle(bundle.path)
    assert report.ok, report.problems
    assert (report.entries, report.checkpoints, report.checkpoints_verified) == (N, 5, 5)
    assert report.verified_size == N
    assert report.first_bad_index is None
    assert report.first_bad_checkpoint is None
    assert report.origin == ORIGIN
    assert report.backend.startswith("cryptography")
    assert report.warnings == []
    assert LOG_VKEY in report.keys[0]
    assert main([str(bundle.path)]) == 0
    out = capsys.readouterr().out
    assert "RESULT: OK: all 100 entries match" in out
    assert "not pinned" in out


def test_json_report_and_pinned_keys(bundle: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(bundle.path), "--json", "--trust-key", LOG_VKEY]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["pinned"] is True
    assert data["entries"] == N


def test_pure_backend(bundle: Bundle) -> None:
    report = verify_bundle(bundle.path, use_cryptography=False)
    assert report.ok, report.problems
    assert report.backend.startswith("pure")


def test_empty_log(tmp_path: Path) -> None:
    b = build_bundle(tmp_path / "empty", 0, [0])
    assert b.file("entries.jsonl").read_bytes() == b""
    report = verify_bundle(b.path)
    assert report.ok, report.problems
    assert report.entries == 0


def test_one_checkpoint_only(tmp_path: Path) -> None:
    b = build_bundle(tmp_path / "one", 33, [33])
    assert verify_bundle(b.path).ok


def test_key_rotation(tmp_path: Path) -> None:
    switch = T0 + timedelta(seconds=50)
    keys = [KeySpec(OLD_SIGNER, valid_until=switch), KeySpec(LOG_SIGNER, valid_from=switch)]
    signer_for = {s: OLD_SIGNER if s < 50 else LOG_SIGNER for s in SIZES}
    b = build_bundle(tmp_path / "rot", N, SIZES, keys=keys, signer_for=signer_for)
    assert verify_bundle(b.path).ok
    # The same instants written with another offset mean the same validity periods.
    keys_json = json.loads(b.file("keys.json").read_text())
    keys_json[0]["valid_until"] = "2026-01-01T01:00:50+01:00"
    keys_json[1]["valid_from"] = "2025-12-31T19:00:50.000000000-05:00"
    b.file("keys.json").write_text(json.dumps(keys_json))
    b.reseal_manifest()
    assert verify_bundle(b.path).ok
    keys_json[0]["valid_until"] = "2026-01-01T00:00:30+01:00"  # the old key retired too early
    b.file("keys.json").write_text(json.dumps(keys_json))
    b.reseal_manifest()
    _failed(verify_bundle(b.path), _cp(37), "is valid only")
    keys_json[0]["valid_until"] = rfc3339(switch)
    b.file("keys.json").write_text(json.dumps(keys_json))
    b.reseal_manifest()
    both = [OLD_SIGNER.verifier().key_string(), LOG_VKEY]
    assert verify_bundle(b.path, both).ok
    # Pinning only the new key rejects what the old one signed.
    report = verify_bundle(b.path, [LOG_VKEY])
    _failed(report, _cp(1), "not signed by any pinned key")
    assert report.first_bad_checkpoint == _cp(1)


def test_a_retired_key_cannot_sign_later_checkpoints(tmp_path: Path) -> None:
    switch = T0 + timedelta(seconds=50)
    keys = [KeySpec(OLD_SIGNER, valid_until=switch), KeySpec(LOG_SIGNER, valid_from=switch)]
    b = build_bundle(
        tmp_path / "r", N, SIZES, keys=keys, signer_for=dict.fromkeys(SIZES, OLD_SIGNER)
    )
    report = verify_bundle(b.path)
    _failed(report, _cp(64), "is valid only")
    assert report.first_bad_checkpoint == _cp(64)
    assert {p.where for p in report.problems} == {_cp(64), _cp(100), "entries.jsonl"}
    _failed(report, "entries.jsonl", "entries [37, 100) are not covered")
    assert (report.first_bad_index, report.verified_size) == (37, 37)
    # Entries cut at the last valid checkpoint: still fewer than the manifest promises.
    b.write_entries(b.read_entries()[:37])
    b.reseal_manifest()
    _failed(verify_bundle(b.path), "entries.jsonl", "has 37 entries, the manifest says 100")


# --- tampered entries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "start", "end"), [(0, 0, 1), (5, 1, 10), (42, 37, 64), (99, 64, 100)]
)
def test_an_edited_entry_is_located(bundle: Bundle, index: int, start: int, end: int) -> None:
    lines = bundle.read_entries()
    lines[index] = lines[index].replace(b"approval", b"apprOval").replace(b"run.", b"rUn.")
    assert lines[index] != bundle.entries[index]
    report = _tamper(bundle, lines)
    _failed(report, "entries.jsonl", f"an entry in [{start}, {end}) was altered")
    assert (report.first_bad_index, report.first_bad_index_end) == (start, end)
    assert report.first_bad_checkpoint == _cp(end)
    assert report.verified_size == start
    assert report.checkpoints_verified == 5  # the signatures are fine; the entries are not


def test_a_single_byte_edit_without_resealing(bundle: Bundle) -> None:
    data = bytearray(bundle.file("entries.jsonl").read_bytes())
    offset = data.index(b'"n":70') + 5
    data[offset] = ord("1")  # entry 70's "n":70 becomes "n":71
    bundle.file("entries.jsonl").write_bytes(bytes(data))
    report = verify_bundle(bundle.path)
    _failed(report, "entries.jsonl", "does not match the manifest")
    _failed(report, "entries.jsonl", "an entry in [64, 100)")
    assert report.first_bad_index == 64


def test_a_deleted_entry(bundle: Bundle) -> None:
    lines = bundle.read_entries()
    del lines[50]
    report = _tamper(bundle, lines)
    _failed(report, "entries.jsonl", "an entry in [37, 64)")
    _failed(report, "entries.jsonl", "entries [99, 100) are missing")
    assert report.first_bad_index == 37
    assert report.first_bad_checkpoint == _cp(64)


def test_swapped_entries(bundle: Bundle) -> None:
    lines = bundle.read_entries()
    lines[70], lines[71] = lines[71], lines[70]
    report = _tamper(bundle, lines)
    _failed(report, "entries.jsonl", "an entry in [64, 100)")
    assert len(report.problems) == 1


def test_an_inserted_entry(bundle: Bundle) -> None:
    lines = bundle.read_entries()
    lines.insert(5, entry(5))  # a duplicate of a real entry
    report = _tamper(bundle, lines)
    _failed(report, "entries.jsonl", "an entry in [1, 10)")
    _failed(report, "entries.jsonl", "entries [100, 101) are not covered")
    assert report.first_bad_index == 1


def test_an_appended_entry(bundle: Bundle) -> None:
    report = _tamper(bundle, [*bundle.read_entries(), entry(N)])
    _failed(report, "entries.jsonl", "entries [100, 101) are not covered")
    assert report.first_bad_index == N
    assert report.verified_size == N


def test_a_truncated_tail(bundle: Bundle) -> None:
    report = _tamper(bundle, bundle.read_entries()[:80])
    _failed(report, "entries.jsonl", "has 80 entries but checkpoints/")
    _failed(report, "entries.jsonl", "entries [80, 100) are missing")
    assert (report.first_bad_index, report.first_bad_index_end) == (80, None)
    assert report.first_bad_checkpoint == _cp(100)
    assert report.verified_size == 64


def test_a_file_cut_in_the_middle_of_a_line(bundle: Bundle) -> None:
    data = bundle.file("entries.jsonl").read_bytes()
    cut = data.index(entry(40)) + 10
    bundle.file("entries.jsonl").write_bytes(data[:cut])
    bundle.reseal_manifest()
    report = verify_bundle(bundle.path)
    _failed(report, "entries.jsonl", "the last line (entry 40) does not end with a newline")
    _failed(report, "entries.jsonl", "entries [41, 100) are missing")
    assert report.first_bad_index == 40
    assert report.verified_size == 37


def test_a_blank_line_is_an_entry_too(bundle: Bundle) -> None:
    lines = bundle.read_entries()
    lines.insert(99, b"")
    _failed(_tamper(bundle, lines), "entries.jsonl", "an entry in [64, 100)")


def test_crlf_line_endings_are_tampering(bundle: Bundle) -> None:
    report = _tamper(bundle, [line + b"\r" for line in bundle.read_entries()])
    _failed(report, "entries.jsonl", "an entry in [0, 1)")


# --- tampered checkpoints, keys and manifest -------------------------------------------------


def _forged_tree(lines: list[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for line in lines:
        tree.append(line)
    return tree


def test_a_checkpoint_resigned_by_another_key(bundle: Bundle) -> None:
    lines = bundle.read_entries()
    lines[80] = lines[80].replace(b"user", b"root")
    bundle.write_entries(lines)
    forged = _forged_tree(lines)
    bundle.checkpoint_path(100).write_bytes(bundle.sign(100, forged.root(), [EVIL_SIGNER]))
    bundle.reseal_manifest()
    report = verify_bundle(bundle.path)
    _failed(report, _cp(100), "not signed by any keys.json key valid at")
    assert report.first_bad_checkpoint == _cp(100)
    assert report.checkpoints_verified == 4
    # Without a valid checkpoint over them, the last entries cannot be verified.
    _failed(report, "entries.jsonl", "entries [64, 100) are not covered by a valid signed")
    assert report.first_bad_index == 64


def test_replaced_keys_are_caught_only_by_pinning(bundle: Bundle) -> None:
    # An attacker who rewrites everything, keys.json included: the bundle is self-consistent,
    # so only a key obtained independently exposes it.
    lines = bundle.read_entries()
    lines[3] = lines[3].replace(b"user", b"root")
    bundle.write_entries(lines)
    forged = _forged_tree(lines)
    for size in SIZES:
        bundle.checkpoint_path(size).write_bytes(
            bundle.sign(size, forged.root(size), [EVIL_SIGNER])
        )
    keys = [KeySpec(EVIL_SIGNER).as_json()]
    bundle.file("keys.json").write_text(json.dumps(keys))
    bundle.reseal_manifest()
    unpinned = verify_bundle(bundle.path)
    assert unpinned.ok
    assert LOG_VKEY not in unpinned.keys[0]  # the fingerprint an auditor compares differs
    pinned = verify_bundle(bundle.path, [LOG_VKEY])
    _failed(pinned, _cp(1), "not signed by any pinned key")
    assert pinned.first_bad_checkpoint == _cp(1)
    assert any("is not in keys.json" in w for w in pinned.warnings)


def test_a_corrupted_signature_by_the_log_key(bundle: Bundle) -> None:
    note = bundle.checkpoint_path(37).read_text(encoding="utf-8")
    text, sig_line = note.rsplit("\n\n", 1)
    name, b64 = sig_line.rstrip("\n").rsplit(" ", 1)
    import base64

    blob = bytearray(base64.b64decode(b64))
    blob[10] ^= 1
    bad = f"{text}\n\n{name} {base64.b64encode(bytes(blob)).decode()}\n"
    bundle.checkpoint_path(37).write_text(bad, encoding="utf-8")
    bundle.reseal_manifest()
    report = verify_bundle(bundle.path)
    _failed(report, _cp(37), "is invalid")
    assert report.first_bad_checkpoint == _cp(37)
    assert report.ok is False
    assert report.checkpoints_verified == 4


def test_a_forked_checkpoint(bundle: Bundle) -> None:
    # The log key signed two different roots for one size: a split view.
    lines = bundle.read_entries()
    lines[60] = lines[60].replace(b"user", b"root")
    fork = _forged_tree(lines)
    path = "checkpoints/fork-00000000000000000064.checkpoint"
    bundle.file(path).write_bytes(bundle.sign(64, fork.root(64), [LOG_SIGNER]))
    manifest = bundle.manifest()
    manifest["checkpoints"].append(
        {
            "path": path,
            "size": 64,
            "signed_at": rfc3339(bundle.signed_at(64) + timedelta(seconds=1)),
        }
    )
    bundle.write_manifest(manifest)
    bundle.reseal_manifest()
    report = verify_bundle(bundle.path)
    _failed(report, path, "a second, different root for size 64")


def test_checkpoint_origin_and_size_must_match(bundle: Bundle) -> None:
    from azdev_ica.ledger.note import Checkpoint, sign_checkpoint

    root = bundle.tree.root(10)
    other_origin = sign_checkpoint(Checkpoint("ica.example/audit/2025", 10, root), [LOG_SIGNER])
    bundle.checkpoint_path(10).write_text(other_origin, encoding="utf-8")
    wrong_size = sign_checkpoint(Checkpoint(ORIGIN, 36, bundle.tree.root(36)), [LOG_SIGNER])
    bundle.checkpoint_path(37).write_text(wrong_size, encoding="utf-8")
    bundle.reseal_manifest()
    report = verify_bundle(bundle.path)
    _failed(report, _cp(10), "origin 'ica.example/audit/2025'")
    _failed(report, _cp(37), "signs size 36, the manifest says 37")
    assert report.first_bad_checkpoint == _cp(10)


def test_malformed_checkpoint_note(bundle: Bundle) -> None:
    note = bundle.checkpoint_path(10).read_bytes()
    bundle.checkpoint_path(10).write_bytes(note.replace(b"\n\n", b"\n"))
    bundle.reseal_manifest()
    _failed(verify_bundle(bundle.path), _cp(10), "no blank line")


def test_checkpoint_times_must_not_go_backwards(bundle: Bundle) -> None:
    manifest = bundle.manifest()
    for item in manifest["checkpoints"]:
        if item["size"] == 64:
            item["signed_at"] = rfc3339(T0)
    bundle.write_manifest(manifest)
    _failed(verify_bundle(bundle.path), _cp(64), "before the smaller checkpoint")


def test_bad_manifest_hash(bundle: Bundle) -> None:
    keys = bundle.file("keys.json")
    keys.write_text(keys.read_text() + "\n")  # still valid JSON, but not the listed bytes
    report = verify_bundle(bundle.path)
    _failed(report, "keys.json", "does not match the manifest")
    assert report.first_bad_index is None
    manifest = bundle.manifest()
    for item in manifest["files"]:
        if item["path"] == "verify.py":
            item["sha256"] = "0" * 64
    bundle.write_manifest(manifest)
    _failed(verify_bundle(bundle.path), "verify.py", "does not match the manifest")


def test_unlisted_files(bundle: Bundle) -> None:
    bundle.file("notes.txt").write_text("hello")
    report = verify_bundle(bundle.path)
    assert report.ok
    assert report.warnings == ["notes.txt is not listed in the manifest (ignored)"]
    bundle.file("checkpoints/extra.checkpoint").write_bytes(bundle.checkpoint_path(10).read_bytes())
    _failed(verify_bundle(bundle.path), "checkpoints/extra.checkpoint", "not listed")


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda m: m.update(format="ica-audit-bundle/v2"), "this verify.py reads"),
        (lambda m: m.pop("origin"), "has no 'origin'"),
        (lambda m: m.update(size="100"), "must be a JSON int"),
        (lambda m: m.update(size=True), "must be a JSON int"),
        (lambda m: m.update(size=99), "not the largest checkpoint size"),
        (lambda m: m.update(checkpoints=[]), "no checkpoints"),
        (lambda m: m["files"].append(dict(m["files"][0])), "listed twice"),
        (lambda m: m["files"][0].update(path="../escape"), "unsafe"),
        (lambda m: m["files"][0].update(path="/abs"), "unsafe"),
        (lambda m: m["files"][0].update(sha256="AB" * 32), "lowercase hex"),
        (lambda m: m["checkpoints"][0].update(signed_at="2026-01-01 00:00:00"), "RFC 3339"),
        (lambda m: m["checkpoints"][0].update(signed_at="2026-01-01T00:00:00"), "RFC 3339"),
        (lambda m: m["checkpoints"][0].update(signed_at="2026-02-30T00:00:00Z"), "not a valid"),
        (lambda m: m["checkpoints"][0].update(path="elsewhere/x"), "live in checkpoints/"),
        (lambda m: m["files"].pop(0), "is not listed in files"),
    ],
)
def test_malformed_manifests(bundle: Bundle, edit: object, error: str) -> None:
    manifest = bundle.manifest()
    assert callable(edit)
    edit(manifest)
    bundle.write_manifest(manifest)
    report = verify_bundle(bundle.path)
    assert not report.ok
    assert any(error in str(p) for p in report.problems), report.problems


def test_missing_or_invalid_manifest(bundle: Bundle) -> None:
    manifest = bundle.file("manifest.json")
    text = manifest.read_text()
    manifest.write_text('{"format": "ica-audit-bundle/v1", "format": "x"}')
    _failed(verify_bundle(bundle.path), "manifest.json", "duplicate JSON key 'format'")
    manifest.write_text(text[:-5])
    _failed(verify_bundle(bundle.path), "manifest.json", "not valid JSON")
    manifest.unlink()
    _failed(verify_bundle(bundle.path), "manifest.json", "cannot be read")


def test_missing_files(bundle: Bundle) -> None:
    bundle.checkpoint_path(37).unlink()
    bundle.file("verify.py").unlink()
    report = verify_bundle(bundle.path)
    _failed(report, _cp(37), "cannot be read")
    _failed(report, "verify.py", "cannot be read")
    assert report.first_bad_checkpoint == _cp(37)
    bundle.file("entries.jsonl").unlink()
    _failed(verify_bundle(bundle.path), "entries.jsonl", "cannot be read")


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda k: k[0].update(name="someone.else"), "is not the vkey's name"),
        (lambda k: k[0].update(vkey=k[0]["vkey"][:-2] + "AA"), "key id does not match"),
        (lambda k: k[0].update(valid_from="yesterday"), "RFC 3339"),
        (lambda k: k[0].update(valid_until=k[0]["valid_from"]), "not after valid_from"),
        (lambda k: k.append(dict(k[0])), "listed twice"),
        (lambda k: k.clear(), "non-empty JSON array"),
        (lambda k: k[0].pop("valid_until"), "has no 'valid_until'"),
        (lambda k: k[0].update(vkey=42), "must be a JSON str"),
    ],
)
def test_malformed_keys(bundle: Bundle, edit: object, error: str) -> None:
    keys = json.loads(bundle.file("keys.json").read_text())
    assert callable(edit)
    edit(keys)
    bundle.file("keys.json").write_text(json.dumps(keys))
    bundle.reseal_manifest()
    report = verify_bundle(bundle.path)
    _failed(report, "keys.json", error)


def test_bad_pinned_key_is_reported(bundle: Bundle) -> None:
    report = verify_bundle(bundle.path, ["not-a-key"])
    _failed(report, "--trust-key", "is not <name>+<hex key id>+<base64 key>")


def test_trust_keys_file_and_usage_errors(
    bundle: Bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pins = tmp_path / "pins.txt"
    pins.write_text(f"# the log key\n{EVIL_SIGNER.verifier().key_string()}\n")
    assert main([str(bundle.path), "--trust-keys-file", str(pins), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "RESULT: FAILED" in out
    assert f"first bad checkpoint: {_cp(1)}" in out
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nope")])
    assert exc.value.code == 2


def test_long_problem_lists_are_capped_in_text(tmp_path: Path) -> None:
    sizes = list(range(1, 61))
    b = build_bundle(tmp_path / "many", 60, sizes, signer_for=dict.fromkeys(sizes, EVIL_SIGNER))
    report = verify_bundle(b.path)
    assert len(report.problems) == 61  # every checkpoint, and the uncovered entries
    assert "... and 11 more (see --json)" in report.text()
    assert report.first_bad_checkpoint == _cp(1)


# --- streaming -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=80),
    st.integers(1, 40),
    st.booleans(),
    st.data(),
)
def test_streaming_roots_equal_the_tree(
    lines: list[bytes], chunk: int, final_newline: bool, data: st.DataObject
) -> None:
    raw = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    sizes = data.draw(st.lists(st.integers(0, len(lines) + 3), max_size=6), label="sizes")
    stream = io.BytesIO(raw)
    original = offline_verify._CHUNK
    offline_verify._CHUNK = chunk  # force lines across chunk boundaries
    try:
        digest = hash_entries(stream, sizes)
    finally:
        offline_verify._CHUNK = original
    # Entries are the "\n"-separated pieces; a last piece without a newline still counts,
    # an empty one after the final newline does not.
    expected = raw.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    tree = _forged_tree(expected)
    assert digest.count == tree.size
    assert digest.roots == {s: tree.root(s) for s in sizes if s <= tree.size}
    assert digest.sha256 == hashlib.sha256(raw).hexdigest()
    assert digest.bytes == len(raw)
    assert digest.ends_with_newline == (not raw or raw.endswith(b"\n"))


def test_progress_callback(bundle: Bundle) -> None:
    seen: list[tuple[int, int]] = []
    assert verify_bundle(bundle.path, progress=lambda done, total: seen.append((done, total))).ok
    size = bundle.file("entries.jsonl").stat().st_size
    assert seen[-1] == (size, size)


# --- standalone ------------------------------------------------------------------------------


def test_offline_verify_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(offline_verify.__file__).read_text(encoding="utf-8"))
    top_level = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the file is shipped alone"
            top_level.add((node.module or "").split(".")[0])
    assert "azdev_ica" not in top_level
    assert top_level - sys.stdlib_module_names == {"cryptography"}  # optional, guarded


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_standalone_script_with_the_standard_library_only(bundle: Bundle, tmp_path: Path) -> None:
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    script = shutil.copy(bundle.file("verify.py"), alone / "verify.py")
    # -I: isolated (no PYTHON* variables, no user site); -S: no site-packages at all.
    probe = _run([sys.executable, "-I", "-S", "-c", "import cryptography"], alone)
    assert probe.returncode != 0, "cryptography must be unavailable in this mode"
    probe = _run([sys.executable, "-I", "-S", "-c", "import azdev_ica"], alone)
    assert probe.returncode != 0

    ok = _run([sys.executable, "-I", "-S", str(script), str(bundle.path)], alone)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Ed25519: pure Python" in ok.stdout
    assert "RESULT: OK: all 100 entries match" in ok.stdout

    lines = bundle.read_entries()
    lines[42] = lines[42].replace(b"user", b"resu")
    bundle.write_entries(lines)
    bad = _run([sys.executable, "-I", "-S", str(script), str(bundle.path), "--json"], alone)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert (report["first_bad_index"], report["first_bad_index_end"]) == (37, 64)
    assert report["first_bad_checkpoint"] == _cp(64)
    assert report["backend"].startswith("pure")

    usage = _run([sys.executable, "-I", "-S", str(script)], alone)
    assert usage.returncode == 2


def test_standalone_script_uses_cryptography_when_installed(bundle: Bundle) -> None:
    result = _run([sys.executable, str(bundle.file("verify.py")), str(bundle.path)], bundle.path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ed25519: cryptography" in result.stdout
