"""Client tools that talk to a running line: ``camera`` (push frames), ``watch`` (subscribe) and
``explain`` (ask the explanation port). They run on other hosts than the service and import only
``contract``, ``security`` and ``image_io``; never the service itself.
"""
