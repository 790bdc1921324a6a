"""lineguard.export: the workstation side. Turns an anomaly model into a bundle (torch lives here only)."""
