"""Ed25519 signatures of bundle manifests: sign, verify at load, refuse what was changed or signed by another."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lineguard.cli import main
from lineguard.runtime.bundle import MANIFEST_NAME, Bundle, sha256_file
from lineguard.runtime.bundle.signature import (
    SIGNATURE_NAME,
    BundleSignatureError,
    ManifestSignature,
    SigningKeyError,
    create_signing_key,
    load_private_key,
    sign_bundle,
)
from lineguard.runtime.line.assembly import ServerError
from lineguard.runtime.line.config import LineConfig
from lineguard.runtime.line.server import LineServer


@pytest.fixture
def signing_key(tmp_path: Path) -> tuple[Path, Path]:
    assert main(["keys", "create", "plant-a", "--out", str(tmp_path / "keys"), "--signing"]) == 0
    return tmp_path / "keys" / "plant-a.pem", tmp_path / "keys" / "plant-a.pub.pem"


def rehash(bundle: Path, relative: str) -> None:
    """What an attacker who can write the bundle does after changing a file: fix its manifest entry."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    path = bundle / relative
    manifest["files"][relative] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def test_signed_bundle_loads_and_the_cli_verifies_it(bundle_copy: Path, signing_key, capsys) -> None:
    private, public = signing_key
    assert (private.stat().st_mode & 0o777) == 0o600
    assert main(["bundle", "sign", str(bundle_copy), "--key", str(private)]) == 0
    signature = ManifestSignature.model_validate_json((bundle_copy / SIGNATURE_NAME).read_text())
    assert len(base64.b64decode(signature.signature)) == 64
    bundle = Bundle.open(bundle_copy, trusted_key=public)
    assert bundle.manifest.bundle_id
    assert main(["bundle", "verify", str(bundle_copy), "--key", str(public)]) == 0
    assert f"signature by key {signature.key_id}" in capsys.readouterr().out


def test_a_rehashed_tampered_file_passes_checksums_but_not_the_signature(bundle_copy: Path, signing_key) -> None:
    private, public = signing_key
    sign_bundle(bundle_copy, private)
    decoder = bundle_copy / "decoder.onnx"
    decoder.write_bytes(decoder.read_bytes() + b"\0")
    rehash(bundle_copy, "decoder.onnx")
    Bundle.open(bundle_copy)  # the checksums alone cannot tell: the manifest was fixed up too
    with pytest.raises(BundleSignatureError, match="changed after signing"):
        Bundle.open(bundle_copy, trusted_key=public)
    assert main(["bundle", "verify", str(bundle_copy), "--key", str(public)]) == 2


def test_unsigned_foreign_and_malformed_signatures_are_refused(bundle_copy: Path, signing_key, tmp_path: Path) -> None:
    private, public = signing_key
    with pytest.raises(BundleSignatureError, match="not signed"):
        Bundle.open(bundle_copy, trusted_key=public)
    other_private, _ = create_signing_key(tmp_path / "other", "plant-b")
    sign_bundle(bundle_copy, other_private)
    with pytest.raises(BundleSignatureError, match="signed by key .* trusts only key"):
        Bundle.open(bundle_copy, trusted_key=public)
    (bundle_copy / SIGNATURE_NAME).write_text('{"algorithm": "ed25519", "key_id": "x", "signature": "%%%", '
                                              '"signed_at": "now"}')
    with pytest.raises(BundleSignatureError, match="not a lineguard manifest signature"):
        Bundle.open(bundle_copy, trusted_key=public)
    with pytest.raises(BundleSignatureError, match="does not exist"):
        Bundle.open(bundle_copy, trusted_key=tmp_path / "nope.pub.pem")


def test_only_an_intact_bundle_is_signed(bundle_copy: Path, signing_key) -> None:
    private, _ = signing_key
    (bundle_copy / "prototypes.npz").write_bytes(b"tampered")
    assert main(["bundle", "sign", str(bundle_copy), "--key", str(private)]) == 2
    assert not (bundle_copy / SIGNATURE_NAME).exists()


def test_passphrase_protected_key(bundle_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_SIGNING_PASSPHRASE", "correct horse")
    assert main(["keys", "create", "vault", "--out", str(tmp_path), "--signing",
                 "--passphrase-env", "LG_SIGNING_PASSPHRASE"]) == 0
    private = tmp_path / "vault.pem"
    assert b"ENCRYPTED" in private.read_bytes()
    with pytest.raises(SigningKeyError, match="not a usable PEM private key"):
        load_private_key(private)  # no passphrase
    monkeypatch.setenv("LG_WRONG", "wrong")
    assert main(["bundle", "sign", str(bundle_copy), "--key", str(private), "--passphrase-env", "LG_WRONG"]) == 2
    assert main(["bundle", "sign", str(bundle_copy), "--key", str(private),
                 "--passphrase-env", "LG_SIGNING_PASSPHRASE"]) == 0
    Bundle.open(bundle_copy, trusted_key=tmp_path / "vault.pub.pem")


def test_keys_of_other_algorithms_are_refused(tmp_path: Path, bundle_copy: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "ecdsa.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
        sign_bundle(bundle_copy, pem)
    public = tmp_path / "ecdsa.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(BundleSignatureError, match="not an Ed25519 public key"):
        Bundle.open(bundle_copy, trusted_key=public)


def test_line_with_a_trusted_key_refuses_an_unsigned_bundle(bundle_copy: Path, signing_key) -> None:
    private, public = signing_key
    config = LineConfig(line="signed", endpoints={"frames": "tcp://127.0.0.1:*", "verdicts": "tcp://127.0.0.1:*",
                                                  "inspect": "tcp://127.0.0.1:*"},
                        security={"bundle_public_key": str(public)})
    with pytest.raises(BundleSignatureError, match="not signed"):
        LineServer.from_bundle(bundle_copy, config)
    sign_bundle(bundle_copy, private)
    server = LineServer.from_bundle(bundle_copy, config)
    assert server.bundle_id == Bundle.open(bundle_copy).manifest.bundle_id


def test_a_bad_trusted_key_path_names_the_line_setting(bundle_copy: Path, tmp_path: Path) -> None:
    """A missing or unreadable key is the line config's mistake: the error says which setting, not a traceback."""
    (tmp_path / "folder.pem").mkdir()
    for key, reason in ((tmp_path / "missing.pem", "does not exist"), (tmp_path / "folder.pem", "cannot read")):
        config = LineConfig(line="signed", endpoints={"frames": "tcp://127.0.0.1:*", "verdicts": "tcp://127.0.0.1:*",
                                                      "inspect": "tcp://127.0.0.1:*"},
                            security={"bundle_public_key": str(key)})
        with pytest.raises(ServerError, match=f"line signed: security.bundle_public_key: .*{reason}"):
            LineServer.from_bundle(bundle_copy, config)
    with pytest.raises(SigningKeyError, match="cannot read signing key"):
        load_private_key(tmp_path / "folder.pem")
