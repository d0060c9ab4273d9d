"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and tlog checkpoints.

A signed note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
``— <key name> <base64(4-byte key ID || signature)>`` (an EM DASH, U+2014). The key ID is the
first four bytes of ``SHA-256(name || "\\n" || 0x01 || 32-byte Ed25519 public key)``. A verifier
key is shared as ``<name>+<8 hex digits key ID>+<base64(0x01 || public key)>``, and a signer key
as ``PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || 32-byte seed)>``; both are the formats of
``golang.org/x/mod/sumdb/note``, so notes made here verify with standard tooling and vice versa.

A checkpoint (c2sp.org/tlog-checkpoint) is a note whose text is ``<origin>\\n<tree size>\\n
<base64 root hash>\\n`` followed by optional extension lines.

Errors are :class:`NoteError` (a LedgerError); :class:`UnverifiedNoteError` and
:class:`InvalidSignatureError` refine it for the two verification failures callers may want to
tell apart from malformed input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import NoteError

__all__ = [
    "ED25519_SIGNATURE_TYPE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "InvalidSignatureError",
    "Note",
    "NoteError",
    "NoteSignature",
    "Signer",
    "UnverifiedNoteError",
    "Verifier",
    "key_id",
    "open_checkpoint",
    "open_note",
    "sign_note",
]

ED25519_SIGNATURE_TYPE = 0x01
"""The signature type byte C2SP signed-note assigns to Ed25519."""

MAX_SIGNATURES = 100
"""Notes with more signature lines are rejected (the spec asks for a limit of at least 16)."""

_SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")
_TREE_SIZE = re.compile(r"0|[1-9][0-9]*")
_ROOT_HASH_SIZE = 32
_MAX_TREE_SIZE = 2**64 - 1
_SIGNER_KEY_PREFIX = "PRIVATE+KEY+"


class UnverifiedNoteError(NoteError):
    """The note is well formed but no signature in it is by a known key."""

    def __init__(self, message: str, note: Note) -> None:
        super().__init__(message)
        self.note = note


class InvalidSignatureError(NoteError):
    """A signature by a known key does not verify: the note was altered or forged."""


def key_id(name: str, public_key: bytes) -> int:
    """The C2SP key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4], big-endian."""
    digest = hashlib.sha256(
        name.encode() + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


def _is_valid_key_name(name: str) -> bool:
    # Non-empty, no "+" (it separates the fields of a key string) and no Unicode spaces (a space
    # ends the name in a signature line); control characters are barred from notes anyway.
    if not name or "+" in name:
        return False
    for char in name:
        if char.isspace() or ord(char) < 0x20 or unicodedata.category(char) in ("Zs", "Zl", "Zp"):
            return False
    return _is_utf8(name)


def _check_key_name(name: str) -> None:
    if not _is_valid_key_name(name):
        raise NoteError(
            f"invalid key name {name!r}: it must be non-empty, without spaces, '+' or control "
            "characters"
        )


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _decode_base64(text: str, what: str) -> bytes:
    """Strict standard base64: right alphabet, right padding, canonical trailing bits."""
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise NoteError(f"{what} is not valid base64: {error}") from None
    if base64.b64encode(decoded).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return decoded


def _encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Verifier:
    """A named Ed25519 public key that checks note signatures."""

    name: str
    public_key: bytes
    key_id: int = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if len(self.public_key) != _ED25519_KEY_SIZE:
            raise NoteError(
                f"an Ed25519 public key has {_ED25519_KEY_SIZE} bytes, got {len(self.public_key)}"
            )
        try:
            public_key = Ed25519PublicKey.from_public_bytes(self.public_key)
        except ValueError as error:
            raise NoteError(f"invalid Ed25519 public key: {error}") from None
        object.__setattr__(self, "_key", public_key)
        object.__setattr__(self, "key_id", key_id(self.name, self.public_key))

    @classmethod
    def parse(cls, verifier_key: str) -> Verifier:
        """Parse a verifier key ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        name, _, rest = verifier_key.partition("+")
        id_hex, _, key_base64 = rest.partition("+")
        where = f"verifier key {verifier_key!r}"
        if not _is_valid_key_name(name):
            raise NoteError(f"{where}: invalid key name {name!r}")
        if not _KEY_ID_HEX.fullmatch(id_hex):
            raise NoteError(f"{where}: the key ID must be 8 hex digits, got {id_hex!r}")
        key = _decode_base64(key_base64, f"{where}: the key")
        if not key:
            raise NoteError(f"{where}: the key is empty")
        if key[0] != ED25519_SIGNATURE_TYPE:
            raise NoteError(f"{where}: unknown signature type {key[0]:#04x} (only Ed25519, 0x01)")
        if len(key) != 1 + _ED25519_KEY_SIZE:
            raise NoteError(f"{where}: an Ed25519 key has {_ED25519_KEY_SIZE} bytes")
        verifier = cls(name, key[1:])
        if verifier.key_id != int(id_hex, 16):
            raise NoteError(f"{where}: key ID {id_hex} does not match the name and key")
        return verifier

    def __str__(self) -> str:
        """The verifier key string, as ``chainsight key show`` prints it."""
        key = bytes([ED25519_SIGNATURE_TYPE]) + self.public_key
        return f"{self.name}+{self.key_id:08x}+{_encode_base64(key)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, repr=False, eq=False)
class Signer:
    """A named Ed25519 private key that signs notes. Its repr never shows the key."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_key_name(self.name)

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A signer with a fresh random key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        """A signer from a 32-byte Ed25519 seed (RFC 8032 private key)."""
        if len(seed) != _ED25519_KEY_SIZE:
            raise NoteError(f"an Ed25519 seed has {_ED25519_KEY_SIZE} bytes, got {len(seed)}")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def parse(cls, signer_key: str) -> Signer:
        """Parse a signer key ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``."""
        # The message never echoes the key string: it is a secret.
        if not signer_key.startswith(_SIGNER_KEY_PREFIX):
            raise NoteError("signer key must start with 'PRIVATE+KEY+'")
        name, _, rest = signer_key[len(_SIGNER_KEY_PREFIX) :].partition("+")
        id_hex, _, key_base64 = rest.partition("+")
        if not _is_valid_key_name(name):
            raise NoteError(f"signer key: invalid key name {name!r}")
        if not _KEY_ID_HEX.fullmatch(id_hex):
            raise NoteError("signer key: the key ID must be 8 hex digits")
        try:
            key = _decode_base64(key_base64, "signer key: the key")
        except NoteError:
            raise NoteError("signer key: the key is not valid base64") from None
        if not key or key[0] != ED25519_SIGNATURE_TYPE or len(key) != 1 + _ED25519_KEY_SIZE:
            raise NoteError("signer key: not an Ed25519 key (0x01 followed by a 32-byte seed)")
        signer = cls.from_seed(name, key[1:])
        if signer.key_id != int(id_hex, 16):
            raise NoteError(f"signer key: key ID {id_hex} does not match the name and key")
        return signer

    def signer_key(self) -> str:
        """The secret signer key string (store it with mode 0600)."""
        seed = self.private_key.private_bytes_raw()
        key = _encode_base64(bytes([ED25519_SIGNATURE_TYPE]) + seed)
        return f"{_SIGNER_KEY_PREFIX}{self.name}+{self.key_id:08x}+{key}"

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> int:
        """The C2SP key ID of this key under this name."""
        return key_id(self.name, self.public_key)

    def verifier(self) -> Verifier:
        """The matching verifier, to publish."""
        return Verifier(self.name, self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``message``."""
        return self.private_key.sign(message)

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"


# --------------------------------------------------------------------------- notes


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: the key it claims and the signature bytes."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        encoded = _encode_base64(self.key_id.to_bytes(4, "big") + self.signature)
        return f"{_SIGNATURE_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text, and its signatures split by whether a known key verified them."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...] = ()


def _check_note_characters(text: str, what: str) -> None:
    if not _is_utf8(text):
        raise NoteError(f"{what} is not valid UTF-8")
    for position, char in enumerate(text):
        if ord(char) < 0x20 and char != "\n":
            raise NoteError(
                f"{what} contains control character {ord(char):#04x} at offset {position}"
            )


def sign_note(text: str, signers: Signer | Iterable[Signer]) -> str:
    """Sign ``text`` (ending in a newline) with each signer; return the signed note."""
    if isinstance(signers, Signer):
        signers = [signers]
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    _check_note_characters(text, "note text")
    message = text.encode()
    lines: list[str] = []
    seen: set[tuple[str, int]] = set()
    for signer in signers:
        identity = (signer.name, signer.key_id)
        if identity in seen:  # one line per key, as verifiers count a key once
            continue
        seen.add(identity)
        lines.append(NoteSignature(signer.name, signer.key_id, signer.sign(message)).line())
    if not lines:
        raise NoteError("a note needs at least one signer")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note may carry at most {MAX_SIGNATURES} signatures")
    return text + "\n" + "".join(lines)


def _parse_signature_line(line: str, number: int) -> NoteSignature:
    where = f"signature line {number}"
    if not line.startswith(_SIGNATURE_PREFIX):
        raise NoteError(f"malformed note: {where} does not start with an em dash and a space")
    name, space, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    if not space or not _is_valid_key_name(name):
        raise NoteError(f"malformed note: {where} has an invalid key name {name!r}")
    if not encoded:
        raise NoteError(f"malformed note: {where} has no signature after the key name")
    raw = _decode_base64(encoded, f"malformed note: {where}: the signature")
    if len(raw) < 5:
        raise NoteError(f"malformed note: {where}: the signature is too short")
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def open_note(note_text: str | bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse a signed note and verify it against known keys; return its text and signatures.

    Every signature by a known key (same name and key ID) must verify, and at least one must be
    present; signatures by other keys are kept as unverified and otherwise ignored.
    """
    if isinstance(note_text, bytes):
        try:
            note_text = note_text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise NoteError(f"malformed note: not valid UTF-8 ({error.reason})") from None
    _check_note_characters(note_text, "malformed note: the note")

    # Two different keys under one name and key ID make that identity ambiguous; that only
    # matters (and is only reported) if the note carries a signature claiming it.
    known: dict[tuple[str, int], Verifier | None] = {}
    for verifier in verifiers:
        identity = (verifier.name, verifier.key_id)
        other = known.setdefault(identity, verifier)
        if other is not None and other.public_key != verifier.public_key:
            known[identity] = None

    # The text is separated from the signatures by the note's last blank line.
    split = note_text.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, signature_block = note_text[: split + 1], note_text[split + 2 :]
    if not signature_block:
        raise NoteError("malformed note: no signature lines")
    if not signature_block.endswith("\n"):
        raise NoteError("malformed note: the last signature line must end with a newline")
    lines = signature_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")

    message = text.encode()
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    for number, line in enumerate(lines, start=1):
        signature = _parse_signature_line(line, number)
        identity = (signature.name, signature.key_id)
        if identity not in known:
            if signature not in unverified:
                unverified.append(signature)
            continue
        signer_key = known[identity]
        if signer_key is None:
            raise NoteError(f"ambiguous key {signature.name}+{signature.key_id:08x}")
        # C2SP: a signature by a known key MUST be verified, and a failure rejects the note.
        if not signer_key.verify(message, signature.signature):
            raise InvalidSignatureError(
                f"invalid signature for key {signature.name}+{signature.key_id:08x}"
            )
        if all(s.key_id != signature.key_id or s.name != signature.name for s in verified):
            verified.append(signature)

    note = Note(text, tuple(verified), tuple(unverified))
    if not verified:
        unknown = ", ".join(f"{s.name}+{s.key_id:08x}" for s in unverified)
        raise UnverifiedNoteError(
            f"note has no signature by a known key (signed only by unknown keys: {unknown})", note
        )
    return note


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog checkpoint: a log's origin, tree size and root hash, plus extension lines."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin:
            raise NoteError("checkpoint origin must not be empty")
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.tree_size, bool) or not isinstance(self.tree_size, int):
            raise NoteError(f"checkpoint tree size must be an int, got {self.tree_size!r}")
        if not 0 <= self.tree_size <= _MAX_TREE_SIZE:
            raise NoteError(
                f"checkpoint tree size must be in 0..2**64-1 (as in other tlog tools), "
                f"got {self.tree_size}"
            )
        if len(self.root_hash) != _ROOT_HASH_SIZE:
            raise NoteError(
                f"checkpoint root hash has {len(self.root_hash)} bytes, expected {_ROOT_HASH_SIZE}"
            )
        for number, extension in enumerate(self.extensions, start=1):
            if not extension:
                raise NoteError(f"checkpoint extension line {number} is empty")
            _check_line(extension, f"checkpoint extension line {number}")

    def to_text(self) -> str:
        """The note text: origin, size and base64 root, each on its own line, then extensions."""
        lines = [self.origin, str(self.tree_size), _encode_base64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text (not a signed note: see ``open_checkpoint``)."""
        if not text.endswith("\n"):
            raise NoteError("malformed checkpoint: the text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError(
                f"malformed checkpoint: expected origin, tree size and root hash lines, "
                f"got {len(lines)} line(s)"
            )
        origin, size_line, root_line, *extensions = lines
        if not _TREE_SIZE.fullmatch(size_line):
            raise NoteError(
                f"malformed checkpoint: tree size must be a decimal number without leading "
                f"zeros, got {size_line!r}"
            )
        root = _decode_base64(root_line, "malformed checkpoint: the root hash")
        return cls(origin, int(size_line), root, tuple(extensions))

    def sign(self, signers: Signer | Iterable[Signer]) -> str:
        """The checkpoint as a signed note."""
        return sign_note(self.to_text(), signers)


def _check_line(value: str, what: str) -> None:
    if "\n" in value:
        raise NoteError(f"{what} must be a single line")
    _check_note_characters(value, what)


def open_checkpoint(
    note_text: str | bytes, verifiers: Iterable[Verifier], origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint note and parse it; optionally require a given origin."""
    checkpoint = Checkpoint.parse(open_note(note_text, verifiers).text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint is for origin {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint
