"""C2SP signed notes and tlog checkpoints: known vectors, round trips, tampering, bad input."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import LedgerError
from ledger.note import (
    MAX_SIGNATURES,
    Checkpoint,
    InvalidSignatureError,
    Note,
    NoteError,
    NoteSignature,
    Signer,
    UnverifiedNoteError,
    Verifier,
    key_id,
    open_checkpoint,
    open_note,
    sign_note,
)

# Known vectors from golang.org/x/mod/sumdb/note (its package documentation and tests).
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

# The Go checksum database's public key (built into the go command) and two signed tree heads it
# published: real-world tlog checkpoints, with an origin line that contains spaces.
GO_SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
GO_SUMDB_CHECKPOINTS = [
    (
        "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n"
        "— sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/"
        "C3YI8oW9/C8DJ87F61QqspBYwM=\n",
        31700353,
        "qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=",
    ),
    (
        "go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n"
        "— sum.golang.org Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/"
        "R3cVtYspg3dxXABkGZZKdsQ8=\n",
        65209736,
        "5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=",
    ),
]

ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture(scope="module")
def peter() -> Verifier:
    return Verifier.parse(PETER_VKEY)


@pytest.fixture(scope="module")
def enoch() -> Verifier:
    return Verifier.parse(ENOCH_VKEY)


# ---------------------------------------------------------------- known vectors


def test_verifier_key_vector(peter: Verifier) -> None:
    assert peter.name == "PeterNeumann"
    assert peter.key_id == 0xC74F20A3
    assert peter.key_id == key_id("PeterNeumann", peter.public_key)
    assert str(peter) == PETER_VKEY
    assert Verifier.parse(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == peter


def test_signer_key_vector(peter: Verifier) -> None:
    signer = Signer.parse(PETER_SKEY)
    assert signer.verifier() == peter
    assert signer.key_id == 0xC74F20A3
    assert signer.signer_key() == PETER_SKEY


def test_sign_matches_go_byte_for_byte() -> None:
    assert sign_note(TEXT, Signer.parse(PETER_SKEY)) == TEXT + "\n" + PETER_SIG


def test_open_go_note(peter: Verifier, enoch: Verifier) -> None:
    note = open_note(TEXT + "\n" + PETER_SIG, [peter])
    assert note.text == TEXT
    assert [(s.name, s.key_id) for s in note.verified] == [("PeterNeumann", 0xC74F20A3)]
    assert note.unverified == ()
    assert note.verified[0].line() == PETER_SIG

    # Bytes are accepted too.
    assert open_note((TEXT + "\n" + PETER_SIG).encode(), [peter]) == note

    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    note = open_note(both, [peter])
    assert [s.name for s in note.verified] == ["PeterNeumann"]
    assert [(s.name, s.key_id) for s in note.unverified] == [("EnochRoot", 0xAF0CFE78)]

    note = open_note(both, [enoch, peter])
    assert [s.name for s in note.verified] == ["PeterNeumann", "EnochRoot"]
    assert note.unverified == ()


@pytest.mark.parametrize(("note_text", "size", "root"), GO_SUMDB_CHECKPOINTS)
def test_real_go_checksum_database_checkpoints(note_text: str, size: int, root: str) -> None:
    checkpoint = open_checkpoint(note_text, [Verifier.parse(GO_SUMDB_VKEY)])
    assert checkpoint == Checkpoint("go.sum database tree", size, base64.b64decode(root))
    assert checkpoint.to_text() == note_text[: note_text.index("\n\n") + 1]
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(
            note_text.replace(str(size), str(size + 1)), [Verifier.parse(GO_SUMDB_VKEY)]
        )


# ---------------------------------------------------------------- key strings


def test_every_mangled_verifier_key_is_rejected() -> None:
    """As in Go's tests: every proper substring and every single-byte increment fails."""
    for begin in range(len(PETER_VKEY) + 1):
        for end in range(begin + 1, len(PETER_VKEY) + 1):
            if (begin, end) != (0, len(PETER_VKEY)):
                with pytest.raises(NoteError):
                    Verifier.parse(PETER_VKEY[begin:end])
    for position in range(len(PETER_VKEY)):
        mangled = (
            PETER_VKEY[:position] + chr(ord(PETER_VKEY[position]) + 1) + PETER_VKEY[position + 1 :]
        )
        with pytest.raises(NoteError):
            Verifier.parse(mangled)


@pytest.mark.parametrize(
    ("verifier_key", "message"),
    [
        # From Go's tests: wrong key length, and an unknown algorithm, each with a matching ID.
        # (Go's decoder allows the first one's non-zero padding bits; ours is strict.)
        ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==", "canonical"),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "signature type"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex digits"),
        ("PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "8 hex digits"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "base64"),
        ("PeterNeumann+c74f20a3+", "empty"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key name"),
        ("PeterNeumann", "8 hex digits"),
    ],
)
def test_verifier_key_errors_say_what_is_wrong(verifier_key: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Verifier.parse(verifier_key)


def test_wrong_length_key_with_matching_id() -> None:
    key = b"\x01" + bytes(range(40))
    digest = hashlib.sha256(b"PeterNeumann\n" + key).digest()
    verifier_key = f"PeterNeumann+{digest[:4].hex()}+{base64.b64encode(key).decode()}"
    with pytest.raises(NoteError, match="32 bytes"):
        Verifier.parse(verifier_key)


def test_every_mangled_signer_key_is_rejected() -> None:
    for begin in range(len(PETER_SKEY) + 1):
        for end in range(begin + 1, len(PETER_SKEY) + 1):
            if (begin, end) != (0, len(PETER_SKEY)):
                with pytest.raises(NoteError):
                    Signer.parse(PETER_SKEY[begin:end])
    for position in range(len(PETER_SKEY)):
        mangled = (
            PETER_SKEY[:position] + chr(ord(PETER_SKEY[position]) + 1) + PETER_SKEY[position + 1 :]
        )
        with pytest.raises(NoteError):
            Signer.parse(mangled)


def test_signer_key_errors_never_echo_the_secret() -> None:
    secret = PETER_SKEY.rsplit("+", 1)[1]
    for bad in (PETER_SKEY[:-1], PETER_SKEY.replace("c74f20a3", "c74f20a4"), PETER_SKEY[8:]):
        with pytest.raises(NoteError) as caught:
            Signer.parse(bad)
        assert secret[:10] not in str(caught.value)
    signer = Signer.parse(PETER_SKEY)
    assert secret[:10] not in repr(signer)
    assert "c74f20a3" in repr(signer)


@pytest.mark.parametrize(
    "name", ["", "a+b", "a b", "a\tb", "a\u00a0b", "a\u2003b", "a\nb", "\u2028"]
)
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(NoteError, match="key name"):
        Signer.generate(name)
    with pytest.raises(NoteError, match="key name"):
        Verifier(name, bytes(32))


def test_generated_keys_round_trip() -> None:
    signer = Signer.generate("chainsight.example/ledger-1")
    assert Signer.parse(signer.signer_key()).public_key == signer.public_key
    verifier = Verifier.parse(str(signer.verifier()))
    assert verifier == signer.verifier()
    assert str(verifier).startswith(f"chainsight.example/ledger-1+{signer.key_id:08x}+A")
    with pytest.raises(NoteError, match="32 bytes"):
        Signer.from_seed("x", bytes(31))
    with pytest.raises(NoteError, match="32 bytes"):
        Verifier("x", bytes(33))


def test_errors_are_ledger_errors() -> None:
    for error in (NoteError, InvalidSignatureError, UnverifiedNoteError):
        assert issubclass(error, LedgerError)
        assert error.status == 400


# ---------------------------------------------------------------- signing and opening


note_texts = st.lists(
    st.text(
        alphabet=st.characters(exclude_categories=["Cs"], min_codepoint=0x20),
        max_size=40,
    ),
    min_size=1,
    max_size=6,
).map(lambda lines: "".join(line + "\n" for line in lines))

SIGNER = Signer.generate("chainsight.example/test")
OTHER = Signer.generate("chainsight.example/other")


@settings(max_examples=200, deadline=None)
@given(note_texts)
def test_sign_open_round_trip(text: str) -> None:
    signed = sign_note(text, [SIGNER, OTHER])
    note = open_note(signed, [SIGNER.verifier()])
    assert note.text == text
    assert [s.name for s in note.verified] == [SIGNER.name]
    assert [s.name for s in note.unverified] == [OTHER.name]
    both = open_note(signed, [OTHER.verifier(), SIGNER.verifier()])
    assert [s.name for s in both.verified] == [SIGNER.name, OTHER.name]


@settings(max_examples=100, deadline=None)
@given(note_texts, st.data())
def test_any_change_to_the_text_is_caught(text: str, data: st.DataObject) -> None:
    signed = sign_note(text, SIGNER)
    # Newlines stay put: removing one may merge the text into the signature block instead.
    positions = [i for i, char in enumerate(text) if char != "\n"]
    if not positions:
        return
    position = data.draw(st.sampled_from(positions), label="position")
    replacement = "Y" if text[position] == "X" else "X"
    tampered = signed[:position] + replacement + signed[position + 1 :]
    with pytest.raises(InvalidSignatureError, match="invalid signature for key"):
        open_note(tampered, [SIGNER.verifier()])


def test_tampered_signature_and_wrong_key() -> None:
    signed = sign_note("hello\n", SIGNER)
    line = signed.split("\n")[2]
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[10] ^= 1
    tampered = signed.replace(line.split(" ")[2], base64.b64encode(bytes(raw)).decode())
    with pytest.raises(InvalidSignatureError):
        open_note(tampered, [SIGNER.verifier()])

    # A different key under the same name has a different key ID: it is simply unknown.
    impostor = Signer.generate(SIGNER.name)
    with pytest.raises(UnverifiedNoteError) as caught:
        open_note(sign_note("hello\n", impostor), [SIGNER.verifier()])
    assert f"{SIGNER.name}+{impostor.key_id:08x}" in str(caught.value)


def test_unknown_keys_only() -> None:
    signed = sign_note("hello\n", [SIGNER, OTHER])
    with pytest.raises(UnverifiedNoteError, match="no signature by a known key") as caught:
        open_note(signed, [])
    assert isinstance(caught.value.note, Note)
    assert caught.value.note.text == "hello\n"
    assert [s.name for s in caught.value.note.unverified] == [SIGNER.name, OTHER.name]


def test_a_bad_signature_by_a_known_key_rejects_the_note_even_beside_a_good_one() -> None:
    signed = sign_note("hello\n", SIGNER)
    bad = NoteSignature(SIGNER.name, SIGNER.key_id, bytes(64)).line()
    with pytest.raises(InvalidSignatureError):
        open_note(signed + bad, [SIGNER.verifier()])


def test_repeated_signatures_are_counted_once(peter: Verifier) -> None:
    note = open_note(TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG, [peter])
    assert len(note.verified) == 1
    assert len(note.unverified) == 1


def test_ambiguous_keys() -> None:
    # Two Ed25519 keys whose 32-bit key IDs collide under the name "x" (found by brute force).
    first = Verifier(
        "x", bytes.fromhex("7fa8fca17d2b44b5c94e9db51c4b18c3d7fcbcb79bee422a05acc02059cb75e1")
    )
    second = Verifier(
        "x", bytes.fromhex("26781078c9e64216fdb9b2e592c042e59b627ef2d375249c5aae1bcd2133bd5e")
    )
    assert first.key_id == second.key_id and first != second
    claimed = NoteSignature("x", first.key_id, bytes(64)).line()
    with pytest.raises(NoteError, match="ambiguous key x"):
        open_note("hello\n\n" + claimed, [first, second])
    # Unused ambiguity does not matter; the same key listed twice is not ambiguous.
    signed = sign_note("hello\n", SIGNER)
    open_note(signed, [first, second, SIGNER.verifier(), SIGNER.verifier()])


@pytest.mark.parametrize(
    ("note_text", "message"),
    [
        (TEXT, "no blank line"),
        (TEXT + "\n", "no signature lines"),
        (TEXT + "\n" + PETER_SIG[:-1], "must end with a newline"),
        ("\x01" + TEXT + "\n" + PETER_SIG, "control character"),
        (TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"), "signature"),
        (TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "em dash"),
        (TEXT + "\n" + PETER_SIG.replace("—", "-"), "em dash"),
        (TEXT + "\n" + PETER_SIG.replace("—", "–"), "em dash"),  # EN DASH
        (TEXT + "\n" + PETER_SIG.replace("— ", "—"), "em dash"),
        (TEXT + "\n— PeterNeumann\n", "key name"),
        (TEXT + "\n— PeterNeumann \n", "no signature after"),
        (TEXT + "\n— PeterNeumann AAAA\n", "too short"),
        (TEXT + "\n— PeterNeumann x08go/ZJ!\n", "base64"),
        (TEXT + "\n" + PETER_SIG.replace("AM=", "AN="), "canonical"),
        (TEXT + "\n" + PETER_SIG.replace("\n", "\r\n"), "control character"),
        (TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), "more than 100"),
    ],
)
def test_malformed_notes(peter: Verifier, note_text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        open_note(note_text, [peter])


def test_invalid_utf8_is_malformed(peter: Verifier) -> None:
    with pytest.raises(NoteError, match="UTF-8"):
        open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [peter])


def test_text_may_contain_blank_lines() -> None:
    text = "first\n\nsecond\n\n"
    assert open_note(sign_note(text, SIGNER), [SIGNER.verifier()]).text == text


def test_sign_note_errors() -> None:
    with pytest.raises(NoteError, match="end with a newline"):
        sign_note("abc", SIGNER)
    with pytest.raises(NoteError, match="control character"):
        sign_note("a\tb\n", SIGNER)
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note("abc\n", [])
    assert sign_note("abc\n", [SIGNER, SIGNER]).count("\u2014") == 1


def test_max_signatures_are_accepted() -> None:
    signers = [Signer.generate(f"witness-{i}") for i in range(MAX_SIGNATURES)]
    note = open_note(sign_note("abc\n", signers), [s.verifier() for s in signers])
    assert len(note.verified) == MAX_SIGNATURES


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_text_format() -> None:
    checkpoint = Checkpoint("chainsight/ledger-1/writer-a", 20852163, ROOT)
    expected = f"chainsight/ledger-1/writer-a\n20852163\n{base64.b64encode(ROOT).decode()}\n"
    assert checkpoint.to_text() == expected
    assert Checkpoint.parse(expected) == checkpoint
    with_extensions = Checkpoint("o", 0, ROOT, ("ext one", "ext2"))
    assert with_extensions.to_text().endswith("\next one\next2\n")
    assert Checkpoint.parse(with_extensions.to_text()) == with_extensions


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.characters(exclude_categories=["Cs"], min_codepoint=0x20), min_size=1),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes) -> None:
    checkpoint = Checkpoint(origin, size, root)
    signed = checkpoint.sign(SIGNER)
    assert open_checkpoint(signed, [SIGNER.verifier()], origin=origin) == checkpoint


def test_open_checkpoint_checks_origin_and_signature() -> None:
    signed = Checkpoint("chainsight/l/w", 5, ROOT).sign(SIGNER)
    with pytest.raises(NoteError, match="expected 'chainsight/l/other'"):
        open_checkpoint(signed, [SIGNER.verifier()], origin="chainsight/l/other")
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(signed, [OTHER.verifier()])
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(signed.replace("\n5\n", "\n6\n"), [SIGNER.verifier()])


ROOT_B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"o\n5\n{ROOT_B64}", "end with a newline"),
        ("o\n5\n", "got 2 line"),
        (f"o\n05\n{ROOT_B64}\n", "leading"),
        (f"o\n+5\n{ROOT_B64}\n", "decimal"),
        (f"o\n 5\n{ROOT_B64}\n", "decimal"),
        (f"o\n-1\n{ROOT_B64}\n", "decimal"),
        (f"o\n1_000\n{ROOT_B64}\n", "decimal"),
        (f"o\n\u0663\n{ROOT_B64}\n", "decimal"),  # ARABIC-INDIC DIGIT THREE
        (f"o\n\n{ROOT_B64}\n", "decimal"),
        (f"o\n{2**64}\n{ROOT_B64}\n", "2\\*\\*64-1"),
        ("o\n5\nnot base64!\n", "base64"),
        ("o\n5\nAAAA\n", "3 bytes"),
        (f"o\n5\n{ROOT_B64[:-2]}\n", "base64"),
        (f"\n5\n{ROOT_B64}\n", "origin must not be empty"),
        (f"o\n5\n{ROOT_B64}\n\n", "extension line 1 is empty"),
        (f"o\x01\n5\n{ROOT_B64}\n", "control character"),
    ],
)
def test_malformed_checkpoints(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint.parse(text)


def test_checkpoint_field_validation() -> None:
    with pytest.raises(NoteError, match="single line"):
        Checkpoint("a\nb", 1, ROOT)
    with pytest.raises(NoteError, match="must be an int"):
        Checkpoint("o", True, ROOT)
    with pytest.raises(NoteError, match=r"0\.\.2"):
        Checkpoint("o", -1, ROOT)
    with pytest.raises(NoteError, match="31 bytes"):
        Checkpoint("o", 1, ROOT[:31])
    with pytest.raises(NoteError, match="single line"):
        Checkpoint("o", 1, ROOT, ("a\nb",))
