"""lineguard: AnomalyGPT-style anomaly detection served at the production line.

``lineguard.runtime`` is the edge side (no torch), ``lineguard.export`` the workstation side;
they meet only at the bundle schema in :mod:`lineguard.runtime.bundle`.
"""

__version__ = "0.1.0"
