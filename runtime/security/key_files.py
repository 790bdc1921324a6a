"""Where a new key pair goes: one rule for CURVE key pairs and Ed25519 signing keys.

Usage::

    public, secret = new_key_paths("keys", "cam0", (".key", ".key_secret"), CurveError)

The name must be a plain file name, and an existing key is never overwritten: replacing a key
silently would lock its owner out (or let a bundle signed by the old key be refused without warning).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def new_key_paths(out_dir: str | os.PathLike[str], name: str, suffixes: Sequence[str],
                  error: type[Exception]) -> list[Path]:
    """``out_dir/NAME+suffix`` for each suffix, the folder created; ``error`` for a bad name,
    FileExistsError for a key that is already there."""
    if not name or Path(name).name != name or name.startswith("."):
        raise error(f"key name {name!r} must be a plain file name")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise error(f"{out} is a file: keys go into a folder (--out DIR)")
    paths = [out / f"{name}{suffix}" for suffix in suffixes]
    for path in paths:
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it first to make a new key")
    out.mkdir(parents=True, exist_ok=True)
    return paths
