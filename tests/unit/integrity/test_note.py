"""C2SP signed notes (known answers from the Go reference and the spec) and checkpoints."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from integrity.errors import NoteError, SignatureError
from integrity.note import (
    MAX_SIGNATURES,
    Checkpoint,
    Signature,
    Signer,
    Verifier,
    generate_signer_key,
    open_note,
    sign_note,
    split_note,
)

VECTORS = Path(__file__).resolve().parents[4] / "shared" / "testdata" / "note" / "vectors.json"


def _vector(name: str) -> dict[str, Any]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return next(v for v in vectors if v["name"] == name)


GO = _vector("go-sumdb-note-example")
C2SP = _vector("c2sp-signed-note-spec-example")


@pytest.fixture(scope="module")
def keys() -> tuple[Signer, Verifier]:
    skey, vkey = generate_signer_key("liuhen.example/log")
    return Signer.from_key(skey), Verifier.from_key(vkey)


def test_go_reference_note_is_reproduced_byte_for_byte() -> None:
    signer = Signer.from_key(GO["signer_key"])
    assert signer.verifier.to_key() == GO["verifier_key"]
    assert sign_note(GO["text"], [signer]) == GO["note"]


def test_go_reference_note_opens() -> None:
    note = open_note(GO["note"], [Verifier.from_key(GO["verifier_key"])])
    assert note.text == GO["text"]
    assert [(s.name, s.key_id) for s in note.signatures] == [("PeterNeumann", 0xC74F20A3)]


def test_c2sp_spec_example_opens() -> None:
    note = open_note(C2SP["note"], [Verifier.from_key(C2SP["verifier_key"])])
    assert note.text == "This is an example message.\n"


def test_generated_keys_round_trip(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    assert signer.verifier == verifier
    assert Verifier.from_key(verifier.to_key()) == verifier
    assert "PRIVATE" not in repr(signer)
    text = "liuhen.example/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    assert open_note(sign_note(text, [signer]), [verifier]).text == text


def test_text_may_contain_blank_lines(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    text = "a\n\nb\n\n"
    assert open_note(sign_note(text, [signer]), [verifier]).text == text


def test_swapped_key_is_rejected(keys: tuple[Signer, Verifier]) -> None:
    signer, _ = keys
    note = sign_note("hello\n", [signer])
    # A different key under the same name has another key ID: unknown, so nothing verifies.
    _, other = generate_signer_key(signer.name)
    with pytest.raises(SignatureError, match="not signed by any known key"):
        open_note(note, [Verifier.from_key(other)])


def test_known_key_with_bad_signature_rejects_the_note(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    note = sign_note("hello\n", [signer])
    with pytest.raises(SignatureError, match=f"signature by {signer.name}\\+[0-9a-f]{{8}} does"):
        open_note(note.replace("hello", "jello"), [verifier])
    # A forged line from the known key next to a good one still rejects the whole note.
    forged = Signature(signer.name, signer.key_id, bytes(64)).to_line()
    with pytest.raises(SignatureError, match="does not verify"):
        open_note(note + forged, [verifier])


def test_unknown_signatures_are_ignored(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    stranger = Signer.from_key(generate_signer_key("witness.example")[0])
    note = sign_note("hello\n", [stranger, signer])
    opened = open_note(note, [verifier])
    assert [s.name for s in opened.signatures] == [signer.name]
    with pytest.raises(SignatureError, match="not signed by any known key"):
        open_note(sign_note("hello\n", [stranger]), [verifier])


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("hello\n— a AAAAAAAAAA==\n", "no blank line"),
        ("hello\n\n— a AAAAAAAAAA==", "does not end with a signature line"),
        ("hello\n\n", "does not end with a signature line"),
        ("hello\n\n— a AAAAAAAAAA==\n\n", "does not end with a signature line"),
        ("hello\n\n- a AAAAAAAAAA==\n", "not a signature line"),
        ("hello\n\n— a+b AAAAAAAAAA==\n", "invalid key name"),
        ("hello\n\n—  AAAAAAAAAA==\n", "invalid key name"),
        ("hello\n\n— a\n", "invalid key name"),
        ("hello\n\n— a AAAAAAAAAA\n", "base64"),
        ("hello\n\n— a AAAA AAAA\n", "base64"),
        ("hello\n\n— a AAAAAA==\n", "too short"),
        ("hel\rlo\n\n— a AAAAAAAAAA==\n", "control character U\\+000D"),
        ("hel\udc80lo\n\n— a AAAAAAAAAA==\n", "not valid UTF-8"),
    ],
)
def test_malformed_notes(note: str, message: str, keys: tuple[Signer, Verifier]) -> None:
    with pytest.raises(NoteError, match=message):
        open_note(note, [keys[1]])


def test_signature_count_is_limited(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    note = sign_note("hello\n", [signer])
    unknown = Signature("x", 1, bytes(64)).to_line()
    assert open_note(note + unknown * (MAX_SIGNATURES - 1), [verifier]).text == "hello\n"
    with pytest.raises(NoteError, match="more than 100"):
        open_note(note + unknown * MAX_SIGNATURES, [verifier])


def test_sign_rejects_bad_text(keys: tuple[Signer, Verifier]) -> None:
    signer, _ = keys
    with pytest.raises(NoteError, match="end with a newline"):
        sign_note("hello", [signer])
    with pytest.raises(NoteError, match="control character"):
        sign_note("a\tb\n", [signer])
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note("hello\n", [])
    with pytest.raises(NoteError, match="twice"):
        sign_note("hello\n", [signer, signer])


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("PeterNeumann+c74f20a3", "not name\\+keyid\\+key"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex digits"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+c74f20a3+AhpcQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "base64"),
        (
            "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Ed25519 \\(0x01\\)",
        ),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10Q=", "31 bytes"),
    ],
)
def test_malformed_verifier_keys(key: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Verifier.from_key(key)


def test_malformed_signer_keys() -> None:
    good = GO["signer_key"]
    with pytest.raises(NoteError, match="PRIVATE\\+KEY"):
        Signer.from_key(good.removeprefix("PRIVATE+"))
    with pytest.raises(NoteError, match="does not match"):
        Signer.from_key(good.replace("c74f20a3", "c74f20a4"))


def test_ambiguous_verifiers_are_refused(keys: tuple[Signer, Verifier]) -> None:
    _, verifier = keys
    twin = Verifier.__new__(Verifier)  # same name and ID, other key: only a forger makes this
    object.__setattr__(twin, "name", verifier.name)
    object.__setattr__(twin, "key_id", verifier.key_id)
    object.__setattr__(twin, "public_key", bytes(32))
    with pytest.raises(NoteError, match="two different verifier keys"):
        open_note("a\n\n— a AAAAAAAAAA==\n", [verifier, twin])


def test_split_note_does_not_verify() -> None:
    text, sigs = split_note(GO["note"].replace("problem", "trouble"))
    assert text.startswith("If you think")
    assert sigs[0].key_id == 0xC74F20A3


# --- checkpoints -------------------------------------------------------------------------------

ROOT = bytes(range(32))
ROOT64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize("extensions", [(), ("ext one", "ext2")])
def test_checkpoint_round_trip(extensions: tuple[str, ...]) -> None:
    cp = Checkpoint("liuhen.example/log", 20852163, ROOT, extensions)
    text = cp.to_text()
    assert text == "".join(
        f"{x}\n" for x in ["liuhen.example/log", "20852163", ROOT64, *extensions]
    )
    assert Checkpoint.parse(text) == cp


def test_checkpoint_in_a_signed_note(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    cp = Checkpoint(signer.name, 0, ROOT)
    assert Checkpoint.parse(open_note(sign_note(cp.to_text(), [signer]), [verifier]).text) == cp


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"log\n5\n{ROOT64}", "end with a newline"),
        ("log\n5\n", "at least 3"),
        (f"\n5\n{ROOT64}\n", "origin"),
        (f"log\n05\n{ROOT64}\n", "leading 0"),
        (f"log\n-5\n{ROOT64}\n", "not a decimal"),
        (f"log\n+5\n{ROOT64}\n", "not a decimal"),
        (f"log\n 5\n{ROOT64}\n", "not a decimal"),
        (f"log\n５\n{ROOT64}\n", "not a decimal"),
        (f"log\n{2**64}\n{ROOT64}\n", "not a uint64"),
        (f"log\n5\n{ROOT64[:-1]}\n", "base64"),
        (f"log\n5\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"log\n5\n{ROOT64}\n\n", "extension lines"),
        (f"log\n5\n{ROOT64}\nx\ty\n", "control character"),
    ],
)
def test_checkpoint_parse_is_strict(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(text)


def test_checkpoint_validates_on_construction() -> None:
    with pytest.raises(NoteError, match="origin"):
        Checkpoint("a\nb", 1, ROOT)
    with pytest.raises(NoteError, match="uint64"):
        Checkpoint("log", -1, ROOT)
