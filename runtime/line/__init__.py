"""The line service: ZeroMQ socket loop, batching, deadlines, the NG archive, state and metrics.

Owns ``lineguard serve``: the line config, the server loop, the batcher and its latency model, the
archive writer, the drift monitor, the persistent counters, Prometheus metrics and systemd readiness.
May import every lower layer (``contract``, ``bundle``, ``inference``, ``scoring``, ``security``) and
``llm`` (the judge and the explanation port it hosts).
"""
