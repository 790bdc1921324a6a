"""Benchmarks (``lineguard bench``): interleaved rounds, their spread, and the reports built from them.

Tooling, not edge code: it may import everything in ``lineguard.runtime``; the runtime never imports it.
"""
