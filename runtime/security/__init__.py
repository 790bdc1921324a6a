"""Security: CURVE keys, their files, and which key may speak for which camera.

A leaf layer: imports only ``contract``; the bundle (signing keys), the line and the clients use it.
"""
