"""Accuracy evaluation (``lineguard eval``, ``eval --all``, ``eval-explanations``) on MVTec-layout data.

Tooling, not edge code: it may import everything in ``lineguard.runtime``; the runtime never imports it.
"""
