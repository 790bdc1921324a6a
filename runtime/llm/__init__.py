"""The language model: a llama.cpp process, its prompts, explanations and the yes/no judge.

Owns the model worker process (:mod:`.worker`) and its typed events, routed to each job's handle
(:mod:`.events`), the prompts built from measured evidence (:mod:`.prompts`), the explanation port
(:mod:`.explain_server`), the LLM verdict (:mod:`.judge`) and the soft-prompt input (:mod:`.soft_prompt`:
AnomalyGPT's prompt-learner embeddings fed through llama.cpp). The verdict path never waits on it beyond
its deadline. May import ``contract`` and ``bundle``.
"""
