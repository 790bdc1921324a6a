"""The language model: a llama.cpp process, its prompts, explanations and the yes/no judge.

Owns the model worker process (:mod:`.worker`) and its typed events, routed to each job's handle
(:mod:`.events`), the prompts built from measured evidence (:mod:`.prompts`), the explanation port (:mod:`.explain_server`) and the LLM verdict (:mod:`.judge`).
The verdict path never waits on it beyond its deadline. May import ``contract`` and ``bundle``.
"""
