"""Scoring: from the chain's maps to a threshold-free verdict.

Owns the few-shot patch memory, the product model (scorer + judge), split-conformal calibration,
enrolment, the 3x3 location words, measured region evidence and the :class:`Inspector` that runs one
frame through chain and scoring. May import ``contract``, ``bundle`` and ``inference``.
"""
