"""Detached Ed25519 signatures of a bundle's manifest: who released this bundle, and that it is unchanged.

Usage::

    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.bundle.signature import create_signing_key, sign_bundle

    private, public = create_signing_key("keys", "plant-a")   # keys/plant-a.pem (0600), keys/plant-a.pub.pem
    sign_bundle("bundles/default", private)                    # writes bundles/default/manifest.sig
    Bundle.open("bundles/default", trusted_key=public)         # BundleSignatureError when missing or bad

The manifest records the size and sha256 of every file of the bundle, so a signature over the exact bytes
of ``manifest.json`` covers the whole bundle: ``Bundle.open`` checks the signature of the bytes it is about
to parse, then every file against its sha256 in them. Anything that rewrites the manifest afterwards
(``lineguard enroll``, ``export llm``) invalidates the signature: sign the bundle as it will be deployed.

Keys are PEM files: the private key PKCS#8 (optionally encrypted with a passphrase), the public key
SubjectPublicKeyInfo, as written by ``lineguard keys create NAME --signing`` or ``openssl genpkey -algorithm
ed25519``. Signatures are made and checked with the ``cryptography`` package (OpenSSL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lineguard.runtime.bundle import MANIFEST_NAME, BundleError, utc_now
from lineguard.runtime.bundle.store import replace_file_atomically
from lineguard.runtime.contract.validation import describe_validation_error
from lineguard.runtime.security.key_files import new_key_paths

SIGNATURE_NAME = "manifest.sig"
PRIVATE_SUFFIX = ".pem"
PUBLIC_SUFFIX = ".pub.pem"


class BundleSignatureError(BundleError):
    """The manifest's signature is missing, malformed, made with another key or does not match."""


class SigningKeyError(ValueError):
    """A signing key file that cannot be used (missing, not PEM, not Ed25519, wrong passphrase)."""


class ManifestSignature(BaseModel):
    """``manifest.sig``: the detached signature of ``manifest.json``'s bytes."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str = Field(description="sha256 of the raw public key, first 16 hex digits")
    signature: str = Field(description="base64 of the 64-byte Ed25519 signature")
    signed_at: str


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def create_signing_key(out_dir: str | os.PathLike[str], name: str,
                       passphrase: bytes | None = None) -> tuple[Path, Path]:
    """Write ``NAME.pem`` (private, mode 0600) and ``NAME.pub.pem`` into ``out_dir``; never overwrites."""
    private_path, public_path = new_key_paths(out_dir, name, (PRIVATE_SUFFIX, PUBLIC_SUFFIX), SigningKeyError)
    key = Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except FileNotFoundError:
        raise SigningKeyError(f"signing key {path} does not exist (lineguard keys create NAME --signing)") from None
    except OSError as exc:  # a folder, no permission
        raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path} is not a usable PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise SigningKeyError(f"public key {path} does not exist") from None
    except OSError as exc:  # a folder, no permission
        raise SigningKeyError(f"cannot read public key {path}: {exc.strerror or exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} is a {type(key).__name__}, not an Ed25519 public key")
    return key


def sign_manifest(manifest: bytes, private_key: Ed25519PrivateKey) -> ManifestSignature:
    return ManifestSignature(key_id=key_id(private_key.public_key()), signed_at=utc_now(),
                             signature=base64.b64encode(private_key.sign(manifest)).decode())


def sign_bundle(bundle_dir: str | os.PathLike[str], private_key_path: str | os.PathLike[str],
                passphrase: bytes | None = None) -> Path:
    """Check the bundle (every file against the manifest), then sign its manifest; returns manifest.sig."""
    from lineguard.runtime.bundle import Bundle

    key = load_private_key(private_key_path, passphrase)
    root = Path(bundle_dir)
    manifest = (root / MANIFEST_NAME).read_bytes() if (root / MANIFEST_NAME).is_file() else b""
    Bundle.open(root)  # refuses a missing, tampered or partial bundle: only an intact one is signed
    if (root / MANIFEST_NAME).read_bytes() != manifest:
        raise BundleError(f"{root / MANIFEST_NAME} changed while it was being signed; sign again")
    signature = sign_manifest(manifest, key)
    replace_file_atomically(root / SIGNATURE_NAME, signature.model_dump_json(indent=2) + "\n")
    return root / SIGNATURE_NAME


def verify_manifest(bundle_dir: str | os.PathLike[str], manifest: bytes,
                    trusted_key: str | os.PathLike[str] | Ed25519PublicKey) -> ManifestSignature:
    """Check ``manifest`` (the bytes of the bundle's manifest.json) against ``manifest.sig`` and the key."""
    try:
        public_key = trusted_key if isinstance(trusted_key, Ed25519PublicKey) else load_public_key(trusted_key)
    except SigningKeyError as exc:
        raise BundleSignatureError(f"cannot check the bundle's signature: {exc}") from None
    path = Path(bundle_dir) / SIGNATURE_NAME
    if not path.is_file():
        raise BundleSignatureError(f"{path} is missing: the bundle is not signed, and this line only loads "
                                   f"bundles signed by key {key_id(public_key)} (lineguard bundle sign)")
    try:
        signature = ManifestSignature.model_validate_json(path.read_bytes())
        raw = base64.b64decode(signature.signature, validate=True)
    except ValidationError as exc:
        raise BundleSignatureError(f"{path} is not a lineguard manifest signature: "
                                   f"{describe_validation_error(exc, whole='signature')}") from None
    except (binascii.Error, ValueError) as exc:
        raise BundleSignatureError(f"{path} is not a lineguard manifest signature: {exc}") from None
    if signature.key_id != key_id(public_key):
        raise BundleSignatureError(f"the bundle is signed by key {signature.key_id}, this line trusts only key "
                                   f"{key_id(public_key)}")
    try:
        public_key.verify(raw, manifest)
    except InvalidSignature:
        raise BundleSignatureError(f"{MANIFEST_NAME} does not match its signature: it was changed after signing "
                                   "(tampered, or re-enrolled: sign it again with lineguard bundle sign)") from None
    return signature
