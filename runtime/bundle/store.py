"""The bundle on disk: the one contract between the export side and the edge runtime.

A bundle is a folder::

    manifest.json            BundleManifest (this module), schema_version, sha256 of every file
    encoder.onnx             image -> multi-stage patch features
    decoder.onnx             patch features -> per-pixel abnormal probability
    prototypes.npz           normal / abnormal text prototype vectors
    parity.json              max abs diff ONNX vs PyTorch on sample inputs
    products/<name>/memory.npz        few-shot patch memory + feature statistics (enrol)
    products/<name>/calibration.json  ProductCalibration (enrol)

Usage::

    from lineguard.runtime.bundle import Bundle
    bundle = Bundle.open("bundles/default")       # verifies every checksum
    bundle.manifest.preprocessing.input_size       # (224, 224)

Nothing here is unpickled: arrays load with ``allow_pickle=False``; paths come only from the manifest
and must stay inside the bundle folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from lineguard.runtime.bundle.schema import (
    MANIFEST_NAME,
    PARITY_FAILED_NAME,
    BundleIncompatibleError,
    BundleIntegrityError,
    BundleManifest,
    BundleNotFoundError,
    FileEntry,
    ProductCalibration,
)
from lineguard.runtime.contract.validation import describe_validation_error


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _inside(root: Path, relative: str) -> Path:
    """Resolve a manifest path and refuse anything that escapes the bundle folder."""
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise BundleIntegrityError(f"manifest path {relative!r} points outside the bundle")
    return candidate


def new_bundle_id() -> str:
    return uuid.uuid4().hex[:12]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _umask() -> int:
    """This process's umask, read without changing it (os.umask can only set it, racing other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022  # not Linux: the usual default


def replace_file_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so a crash never leaves half of it.
    The file gets the mode ``open()`` would give it (0666 less the umask), like the bundle's other files:
    mkstemp's 0600 would lock out a service user other than the one who enrolled or signed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Bundle:
    """A verified bundle on disk. Open with :meth:`open`; write with :meth:`write_manifest`."""

    def __init__(self, root: Path, manifest: BundleManifest,
                 trusted_key: str | os.PathLike[str] | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.trusted_key = trusted_key  # the key its signature was checked with at open: re-reads check it too

    @classmethod
    def open(cls, root: str | os.PathLike[str], verify: bool = True,
             trusted_key: str | os.PathLike[str] | None = None) -> Bundle:
        """``trusted_key``: an Ed25519 public key (PEM); the manifest must carry a valid signature by it
        (``manifest.sig``, see lineguard.runtime.bundle.signature), checked before the manifest is parsed."""
        root = Path(root).resolve()
        manifest_path = root / MANIFEST_NAME
        if not root.is_dir():
            raise BundleNotFoundError(f"bundle folder {root} " + ("is a file, not a folder" if root.exists() else "does not exist"))
        if not manifest_path.is_file():
            if (root / PARITY_FAILED_NAME).is_file():
                raise BundleIncompatibleError(f"{root} is an export that failed its parity check "
                                              f"({PARITY_FAILED_NAME}, parity.json): not a loadable bundle")
            raise BundleNotFoundError(f"{manifest_path} is missing: not a lineguard bundle")
        manifest_bytes = manifest_path.read_bytes()
        if trusted_key is not None:
            from lineguard.runtime.bundle.signature import verify_manifest

            verify_manifest(root, manifest_bytes, trusted_key)
        try:
            raw = json.loads(manifest_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleIntegrityError(f"{manifest_path} is not valid JSON: {exc}") from exc
        try:
            manifest = BundleManifest.model_validate(raw)
        except ValidationError as exc:
            raise BundleIncompatibleError(f"{manifest_path} does not validate: "
                                          f"{describe_validation_error(exc, whole='manifest')}") from exc
        if not manifest.parity.passed:  # an export that failed its parity check is never served
            raise BundleIncompatibleError(
                f"{root} failed its parity check at export (ONNX vs PyTorch max abs diff {manifest.parity.max_abs_diff}, "
                f"tolerance {manifest.parity.tolerance}): its graphs do not compute what was trained; export it again")
        bundle = cls(root, manifest, trusted_key)
        if verify:
            bundle.verify()
        return bundle

    @classmethod
    @contextmanager
    def scratch_copy(cls, root: str | os.PathLike[str], prefix: str = "lineguard-") -> Iterator[Bundle]:
        """A verified private copy in a temporary folder, removed afterwards: for eval and benchmarks,
        which enrol products without touching the original bundle."""
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            copy = Path(tmp) / "bundle"
            shutil.copytree(root, copy)
            yield cls.open(copy)

    def verify(self, only: Iterable[str] | None = None) -> None:
        """Check every file the manifest lists (or those of ``only``) against its size and sha256."""
        required = {self.manifest.encoder.file, self.manifest.decoder.file, self.manifest.prototypes.file}
        for product in self.manifest.products.values():
            required |= {product.memory_file, product.calibration_file}
        if self.manifest.llm is not None:
            required.add(self.manifest.llm.file)
        required |= {engine.file for engine in self.manifest.engines}
        missing_entries = required - set(self.manifest.files)
        if missing_entries:
            raise BundleIntegrityError(f"manifest has no checksum for {sorted(missing_entries)}")
        checked = set(self.manifest.files) if only is None else set(only)
        for relative, entry in self.manifest.files.items():
            if relative not in checked:
                continue
            path = _inside(self.root, relative)
            if not path.is_file():
                raise BundleIntegrityError(f"{relative} is listed in the manifest but missing (partial copy?)")
            size = path.stat().st_size
            if size != entry.size:
                raise BundleIntegrityError(f"{relative} is {size} bytes, manifest says {entry.size} (truncated or tampered)")
            if sha256_file(path) != entry.sha256:
                raise BundleIntegrityError(f"{relative} does not match its sha256 in the manifest (tampered or corrupt)")

    def path(self, relative: str) -> Path:
        return _inside(self.root, relative)

    def load_arrays(self, relative: str) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path(relative), allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except ValueError as exc:  # object arrays need unpickling: refused, whatever the checksum says
            raise BundleIntegrityError(f"{relative} cannot be loaded without unpickling ({exc}): refused") from None

    def prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        arrays = self.load_arrays(self.manifest.prototypes.file)
        return arrays["normal"].astype(np.float32), arrays["abnormal"].astype(np.float32)

    def calibration(self, product: str) -> ProductCalibration:
        entry = self.manifest.products[product]
        try:
            return ProductCalibration.model_validate_json(self.path(entry.calibration_file).read_text())
        except ValidationError as exc:
            raise BundleIncompatibleError(
                f"{entry.calibration_file} does not validate (written by an older lineguard?): re-enrol with "
                f"`lineguard enroll {self.root} --product {product} --normals DIR`\n{exc}") from exc

    # -- writing (export and enrol) ---------------------------------------------------------------

    def register_file(self, relative: str) -> BundleManifest:
        """Record (or refresh) a file's checksum in the in-memory manifest."""
        path = self.path(relative)
        files = dict(self.manifest.files)
        files[relative] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
        self.manifest = self.manifest.model_copy(update={"files": files})
        return self.manifest

    def write_manifest(self) -> None:
        """Atomically replace manifest.json, so a crash never leaves half a manifest."""
        replace_file_atomically(self.root / MANIFEST_NAME, self.manifest.model_dump_json(indent=2))
