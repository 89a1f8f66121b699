"""Tests of sasrec.integrity: streamed checksums, manifests of folders, sealed JSON documents."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sasrec import integrity
from sasrec.errors import IntegrityError, SasrecError


def flip_byte(path: Path, offset: int) -> None:
    """Invert the bits of one byte of ``path`` in place (same size)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    (root / "big.bin").write_bytes(rng.bytes(3 * (1 << 20) + 17))  # spans several 1 MiB blocks
    (root / "small.txt").write_text("1 2 1\n2 3 0\n")
    (root / "sub" / "nested.json").write_text('{"a": 1}')
    return root


# ------------------------------------------------------------------------------------- file checksums
def test_streamed_sha256_equals_hashlib(folder: Path) -> None:
    for path in (folder / "big.bin", folder / "small.txt"):
        assert integrity.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
        assert integrity.sha256_bytes(path.read_bytes()) == integrity.sha256_file(path)
    record = integrity.file_record(folder / "small.txt")
    assert record == {"bytes": 12, "sha256": hashlib.sha256(b"1 2 1\n2 3 0\n").hexdigest()}


def test_untouched_folder_verifies(folder: Path) -> None:
    recorded = integrity.manifest(folder)
    assert sorted(recorded) == ["big.bin", "small.txt", "sub/nested.json"]
    assert integrity.check_manifest(folder, recorded) == []
    integrity.verify_manifest(folder, recorded)  # no error


@pytest.mark.parametrize("offset", [0, 1 << 20, 3 * (1 << 20) + 16])  # first, middle, last byte
def test_flipped_byte_is_detected(folder: Path, offset: int) -> None:
    recorded = integrity.manifest(folder, ["big.bin", "small.txt"])
    flip_byte(folder / "big.bin", offset)
    assert integrity.check_manifest(folder, recorded) == ["big.bin does not match its sha256 (damaged)"]
    # sizes alone cannot see a flipped byte
    assert integrity.check_manifest(folder, recorded, hash_contents=False) == []
    with pytest.raises(IntegrityError, match=r"^my artifacts: big\.bin does not match its sha256"):
        integrity.verify_manifest(folder, recorded, "my artifacts")


def test_truncated_and_missing_files_are_detected(folder: Path) -> None:
    recorded = integrity.manifest(folder)
    truncate(folder / "big.bin", 1000)
    (folder / "sub" / "nested.json").unlink()
    problems = integrity.check_manifest(folder, recorded, hash_contents=False)
    assert problems == [
        "big.bin has 1,000 bytes instead of 3,145,745 (truncated or replaced)",
        "nested.json is missing",
    ]
    with pytest.raises(IntegrityError) as caught:
        integrity.verify_manifest(folder, recorded)
    assert "\n" not in str(caught.value) and isinstance(caught.value, SasrecError)


def test_tree_digest_follows_names_and_contents(folder: Path, tmp_path: Path) -> None:
    before = integrity.sha256_tree(folder)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in integrity.manifest(folder):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((folder / name).read_bytes())
    assert integrity.sha256_tree(copy) == before
    (copy / "small.txt").rename(copy / "renamed.txt")
    assert integrity.sha256_tree(copy) != before
    flip_byte(folder / "small.txt", 0)
    assert integrity.sha256_tree(folder) != before


# --------------------------------------------------------------------------------------- sealed JSON
def test_sealed_document_round_trips_and_detects_edits(tmp_path: Path) -> None:
    payload = {"name": "small_matrix", "counts": {"events": np.int64(7), "users": 3}, "cut": np.float64(0.5)}
    made_by = {"params": {"n_valid": 1}, "source_fingerprint": "abc"}
    text = integrity.dumps_sealed(payload, made_by, default=lambda v: v.item())
    loaded = integrity.loads_sealed(text, "meta.json")
    assert loaded["counts"] == {"events": 7, "users": 3} and loaded["cut"] == 0.5
    assert integrity.made_by(loaded) == made_by
    assert loaded["integrity"]["fingerprint"] == integrity.fingerprint(made_by)

    edited = json.loads(text)
    edited["counts"]["events"] = 8
    with pytest.raises(IntegrityError, match="meta.json does not match its checksum"):
        integrity.verify_sealed(edited, "meta.json")
    origin_edited = json.loads(text)
    origin_edited["integrity"]["made_by"]["params"]["n_valid"] = 2  # what made it cannot be rewritten
    with pytest.raises(IntegrityError, match="does not match its checksum"):
        integrity.verify_sealed(origin_edited, "meta.json")

    path = tmp_path / "meta.json"
    path.write_text(text)
    assert integrity.read_sealed_json(path) == loaded
    truncate(path, len(text) // 2)
    with pytest.raises(IntegrityError, match="meta.json is not valid JSON.*cut short"):
        integrity.read_sealed_json(path)


def test_unsealed_document_is_refused_and_resealing_replaces_the_entry() -> None:
    with pytest.raises(IntegrityError, match="carries no integrity entry"):
        integrity.verify_sealed({"a": 1}, "old.json")
    with pytest.raises(IntegrityError, match="carries no integrity entry"):
        integrity.verify_sealed([1, 2], "list.json")
    sealed = integrity.seal({"a": 1}, {"v": 1})
    resealed = integrity.seal({**sealed, "b": 2}, {"v": 2})
    assert integrity.verify_sealed(resealed)["b"] == 2 and integrity.made_by(resealed) == {"v": 2}


def test_fingerprint_ignores_key_order_and_tuple_types() -> None:
    assert integrity.fingerprint({"a": 1, "b": (1, 2)}) == integrity.fingerprint({"b": [1, 2], "a": 1})
    assert integrity.fingerprint({"a": 1}) != integrity.fingerprint({"a": 2})
    assert len(integrity.fingerprint({})) == 16
    assert integrity.canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
