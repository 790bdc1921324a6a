"""``lineguard demo`` / ``make demo``: export the default bundle, enrol a generated product, run a line.

A first-time user sees the whole system on this machine in a few minutes, with nothing downloaded:
generated "weave" fabric parts, four normal shots enrolled and 99 further normals calibrating the 1%
false-reject budget (split conformal: p-values are ranks among them), then the line service started on
loopback, a camera pushing normal parts and parts with a defect pasted into a known 3x3 cell, and a
subscriber printing each verdict with where the anomaly is, before a clean shutdown.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lineguard.runtime.scoring.location import GRID_WORDS

PRODUCT = "weave"
SHOTS = 4
CALIBRATION = 99  # held-out normals: 1/(99 + 1) resolves the 1% budget without a fitted tail
DEFECT_CELLS = ((0, 0), (1, 2), (2, 1))


def make_demo_images(workdir: Path, seed: int = 7) -> tuple[Path, list[tuple[Path, str]]]:
    """Write normals and test parts; returns the normals folder and (test image, expected cell) pairs."""
    from lineguard.export.synthesis import cut_paste_poisson
    from lineguard.export.textures import texture_variants

    normals_dir, test_dir = workdir / "normals", workdir / "parts"
    normals_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    normals = SHOTS + CALIBRATION
    parts = texture_variants(PRODUCT, normals + 3 + len(DEFECT_CELLS), seed)
    foreign = texture_variants("grain", 1, seed + 1)[0]
    for i, img in enumerate(parts[:normals]):
        cv2.imwrite(str(normals_dir / f"normal_{i:03d}.png"), img)
    tests: list[tuple[Path, str]] = []
    for i, img in enumerate(parts[normals : normals + 3]):
        path = test_dir / f"ok_{i}.png"
        cv2.imwrite(str(path), img)
        tests.append((path, "-"))
    rng = np.random.default_rng(seed)
    h, w = parts[0].shape[:2]
    for (row, col), img in zip(DEFECT_CELLS, parts[normals + 3 :], strict=True):
        centre = (int((col + 0.5) * w / 3), int((row + 0.5) * h / 3))
        sample = cut_paste_poisson(img, foreign, rng, 0.11, 0.14, center=centre, opacity=0.5)
        cell = GRID_WORDS[row][col]
        path = test_dir / f"defect_{cell.replace(' ', '_')}.png"
        cv2.imwrite(str(path), sample.image)
        tests.append((path, cell))
    return normals_dir, tests


def run_demo(bundle_dir: Path, workdir: Path, timeout_s: float = 120.0) -> int:
    """Export if needed, enrol, then run the real line: server, camera pusher and subscriber on loopback."""
    import time

    from lineguard.runtime.bundle import Bundle
    from lineguard.runtime.clients.camera import CameraPusher
    from lineguard.runtime.clients.watch import VerdictWatcher, format_line
    from lineguard.runtime.image_io import image_paths, read_image, read_images, split_normals
    from lineguard.runtime.line.config import LineConfig
    from lineguard.runtime.line.server import LineServer
    from lineguard.runtime.scoring.enroll import enroll_product
    from lineguard.runtime.scoring.inspector import Inspector

    if not (bundle_dir / "manifest.json").is_file():
        from lineguard.export.vision import export_vision

        print(f"[1/4] exporting the default bundle to {bundle_dir} (trains the decoder, a few minutes) ...")
        export_vision(bundle_dir)
    else:
        print(f"[1/4] using the bundle in {bundle_dir}")
    bundle = Bundle.open(bundle_dir)  # verifies every checksum: once
    if bundle.manifest.llm is None:
        from lineguard.export.llm import export_llm

        print("      adding the packaged LLM (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) for explanations ...")
        export_llm(bundle_dir)
        bundle = Bundle.open(bundle_dir)
    normals_dir, tests = make_demo_images(workdir)
    inspector = Inspector(bundle)
    shots, calibration = split_normals(image_paths(normals_dir), SHOTS, seed=0)
    print(f"[2/4] enrolling product {PRODUCT!r}: memory from {len(shots)} normal images in {normals_dir}, "
          f"the other {len(calibration)} calibrate ...")
    enroll_product(bundle, PRODUCT, read_images(shots), calibration_images=read_images(calibration), chain=inspector.chain)
    print(f"      {inspector.product_model(PRODUCT).judge.describe(inspector.false_reject_budget)}")

    loopback = "tcp://127.0.0.1:*"
    config = LineConfig(line="demo", endpoints={"frames": loopback, "verdicts": loopback, "inspect": loopback,
                                                "explanations": loopback},
                        deadline_ms=5000, batching={"max_batch": 4},
                        archive={"dir": str(workdir / "archive"), "max_bytes": 200 << 20})
    print("[3/4] starting the line service (models load and warm up before it reports ready) ...")
    expected = {path.stem: cell for path, cell in tests}
    received = {}
    with LineServer(inspector, config) as server, \
            VerdictWatcher(server.endpoints.verdicts, prefix="verdict.demo.") as watcher, \
            CameraPusher(server.endpoints.frames, "cam0", [], product=PRODUCT) as camera:
        watcher_ready = time.monotonic() + 5
        while time.monotonic() < watcher_ready and not any(e.kind == "heartbeat" for e in watcher.poll(0.2)):
            pass  # a SUB socket only receives once subscribed: wait for the first heartbeat
        print(f"[4/4] camera cam0 pushes {len(tests)} parts; verdicts as the PLC sees them "
              f"(threshold-free, false-reject budget 1%; [where the defect was put]):")
        for path, _ in tests:
            camera.push(read_image(path), frame_id=path.stem)
        deadline = time.monotonic() + timeout_s
        while len(received) < len(tests) and time.monotonic() < deadline:
            for event in watcher.poll(0.2):
                if event.kind == "verdict" and event.verdict is not None:
                    v = event.verdict
                    received[v.frame_id] = v
                    print(f"  {format_line(v)}   [{expected.get(v.frame_id, '?')}]")
                elif event.kind in ("gap", "heartbeat_missed"):
                    print(f"  !! {event.kind}: {event.message}")
        explained = explain_one(server, received)
    ng = sum(v.verdict == "NG" for v in received.values())
    print(f"done: {len(received)}/{len(tests)} verdicts ({ng} NG), service stopped cleanly; "
          f"NG frames archived in {workdir / 'archive'}")
    return 0 if len(received) == len(tests) and explained else 1


def explain_one(server, received: dict) -> bool:
    """Ask the line's LLM why the first NG part was rejected, streaming the answer as a technician would."""
    from lineguard.runtime.clients.explain import ask

    ng = [v for v in received.values() if v.verdict == "NG"]
    if not ng or server.explanations is None:
        print("  (no NG part or no LLM: nothing to explain)")
        return not ng
    frame_id = ng[0].frame_id
    print(f"technician asks: why was {frame_id} rejected?\n  LLM: ", end="", flush=True)
    for reply in ask(server.endpoints.explanations, frame_id, "Why was this part rejected?"):
        if reply.type == "chunk":
            print(reply.text, end="", flush=True)
        elif reply.type == "final":
            print(f"\n  [{reply.completion_tokens} tokens, first after {reply.time_to_first_token_ms:.0f} ms]")
            return True
        else:
            print(f"\n  !! {reply.error.code}: {reply.error.message}")
    return False
