"""Cryptographic building blocks of SecAgg+: keys, mask keystreams, share encryption, Shamir.

Keys, masks and share encryption come from `cryptography` (X25519, HKDF, ChaCha20,
ChaCha20-Poly1305). Shamir sharing is written here, over the prime field of 2^521 - 1 with Python
integers: Flower's `create_shares`/`combine_shares` wrap pycryptodome's GF(2^128) arithmetic, which
is pure Python bit loops (about 110k multiplications, most of a 100-client round's server time)
and start a thread pool per call. Flower's `pseudo_rand_gen` is not used either: it folds seeds to
32 bits and expands them with numpy MT19937.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
import secrets

SEED_BYTES = 32
_RAW = serialization.Encoding.Raw


class SecAggError(RuntimeError):
    """A SecAgg+/CKKS protocol step cannot go on; the message says which check failed and why."""


def new_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as (private raw 32 bytes, public raw 32 bytes)."""
    sk = X25519PrivateKey.generate()
    pk = sk.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    return sk.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()), pk


def public_of(private: bytes) -> bytes:
    """The X25519 public key of a raw private key (to verify a reconstructed key)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def agree(private: bytes, peer_public: bytes, label: bytes) -> bytes:
    """A 32-byte key shared by two parties: HKDF-SHA256 of their X25519 secret, bound to `label`."""
    secret = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(secret)


class Keystream:
    """ChaCha20 keystreams of `size` uint32 values written into one reused buffer.

    Each call overwrites the array returned by the previous one (consume it first). Reusing the
    buffer matters: a fresh 4 MB output per mask cost 15 ms on a busy machine, against 1 ms.
    """

    def __init__(self, size: int) -> None:
        self._zeros = bytes(4 * size)
        self._buffer = bytearray(4 * size + 15)  # update_into wants room for one extra block
        self._values = np.frombuffer(self._buffer, dtype="<u4", count=size)

    def __call__(self, key: bytes) -> np.ndarray:
        """The keystream under a 32-byte key (zero nonce: every key is used for one stream)."""
        Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update_into(self._zeros, self._buffer)
        return self._values


def keystream_u32(key: bytes, size: int) -> np.ndarray:
    """`size` uniform uint32 values from the ChaCha20 keystream under a 32-byte key (a fresh array)."""
    return Keystream(size)(key).copy()


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ChaCha20-Poly1305 encryption (random 96-bit nonce prepended), authenticated with `aad`."""
    nonce = os.urandom(12)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a `seal` blob; a changed ciphertext, sender, recipient or round raises SecAggError."""
    try:
        return ChaCha20Poly1305(key).decrypt(blob[:12], blob[12:], aad)
    except (InvalidTag, ValueError) as exc:
        raise SecAggError("a share ciphertext failed authentication (tampered, replayed or misrouted)") from exc


_PRIME = 2**521 - 1  # Mersenne prime above any 32-byte secret
_VALUE_BYTES = 66


def split_secret(secret: bytes, threshold: int, holders: int) -> list[bytes]:
    """Shamir shares of a <= 64-byte `secret`: any `threshold` of `holders` recover it, fewer learn nothing.

    Share i is (i, f(i)) for a random degree threshold-1 polynomial f with f(0) = secret, encoded
    as 4-byte index + 66-byte value; the secret's length travels as coefficient-free framing.
    """
    if not 1 <= threshold <= holders or len(secret) > 64:
        raise ValueError(f"cannot share a {len(secret)}-byte secret {threshold}-of-{holders}")
    coefficients = [int.from_bytes(b"\x01" + secret, "big")]  # leading 1 keeps leading zero bytes
    coefficients += [secrets.randbelow(_PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, holders + 1):
        y = 0
        for c in reversed(coefficients):
            y = (y * x + c) % _PRIME
        shares.append(x.to_bytes(4, "big") + y.to_bytes(_VALUE_BYTES, "big"))
    return shares


def join_shares(shares: list[bytes]) -> bytes:
    """Recover a secret by Lagrange interpolation at 0; ValueError when the shares do not fit."""
    points = [(int.from_bytes(s[:4], "big"), int.from_bytes(s[4:], "big")) for s in shares]
    if len({x for x, _ in points}) != len(points) or any(len(s) != 4 + _VALUE_BYTES for s in shares):
        raise ValueError("Failed to combine shares: malformed or repeated shares")
    value = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * -xj % _PRIME
                den = den * (xi - xj) % _PRIME
        value = (value + yi * num * pow(den, -1, _PRIME)) % _PRIME
    raw = value.to_bytes(_VALUE_BYTES, "big").lstrip(b"\x00")
    if not raw.startswith(b"\x01") or len(raw) > 65:
        raise ValueError("Failed to combine shares")
    return raw[1:]


def commitment(session: bytes, seed: bytes) -> bytes:
    """Binding hash of a self-mask seed, published so the server can verify its reconstruction."""
    return hashlib.sha256(b"fedsafe-secagg-seed" + session + seed).digest()


def new_seed() -> bytes:
    """A fresh 256-bit self-mask seed from the OS RNG."""
    return os.urandom(SEED_BYTES)
