"""The technicians' touch panel: a web page bridged to a line's ZeroMQ endpoints (``lineguard panel``)."""
