"""The runtime's HTTP port: health, readiness, metrics, archived NG frames and their overlays.

May import ``contract``, ``scoring`` (location words for overlays) and ``line`` (config, archive, metrics).
"""
