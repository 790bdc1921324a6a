"""``lineguard keys create|init`` and ``lineguard bundle sign|verify``: CURVE key pairs for the line's
endpoints, Ed25519 keys for signing bundles, and the signatures themselves."""

from __future__ import annotations

import argparse

from lineguard.cli.common import CliError, passphrase


def cmd_keys_create(args: argparse.Namespace) -> int:
    if args.passphrase_env and not args.signing:
        raise CliError("--passphrase-env encrypts a signing key: add --signing (a CURVE secret key is protected by "
                       "its file's permissions, not a passphrase)")
    if args.signing:
        from lineguard.runtime.bundle.signature import create_signing_key

        private, public = create_signing_key(args.out, args.name, passphrase(args))
        print(f"bundle signing key: {private} (private: lineguard bundle sign BUNDLE --key {private})\n"
              f"public key: {public} (lines trust it with security.bundle_public_key)")
        return 0
    from lineguard.runtime.security.curve import create_key_pair

    public, secret = create_key_pair(args.out, args.name)
    print(f"CURVE key pair: {secret} (secret: stays with {args.name})\n"
          f"public key: {public} (a client's: copy into the server's security.curve.allowed_clients_dir; "
          f"the server's: give to every client as --curve-server-key)")
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from lineguard.runtime.security.curve import init_line_keys

    keys = init_line_keys(args.folder, tuple(dict.fromkeys(args.client)))
    for path in keys.created:
        print(f"created {path}")
    print(f"line keys in {args.folder} ({len(keys.created)} files created, the rest kept). In the line config:\n"
          f"  security.curve.server_secret_key_file: {keys.server_secret_key_file}\n"
          f"  security.curve.allowed_clients_dir: {keys.allowed_clients_dir}\n"
          f"  http.token_file: {keys.http_token_file}\n"
          f"clients connect with --curve-server-key {keys.server_public_key_file}; a camera's key: "
          f"lineguard keys create cam0 --out DIR, then copy DIR/cam0.key into {keys.allowed_clients_dir}")
    return 0


def cmd_bundle_sign(args: argparse.Namespace) -> int:
    from lineguard.runtime.bundle.signature import sign_bundle

    path = sign_bundle(args.bundle, args.key, passphrase(args))
    print(f"signed {args.bundle}: {path}")
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.bundle.signature import SIGNATURE_NAME, ManifestSignature

    bundle = Bundle.open(args.bundle, trusted_key=args.key)
    signature = ManifestSignature.model_validate_json((bundle.root / SIGNATURE_NAME).read_bytes())
    print(f"bundle {bundle.manifest.bundle_id}: signature by key {signature.key_id} ({signature.signed_at}) "
          f"valid; every file matches its sha256")
    return 0
