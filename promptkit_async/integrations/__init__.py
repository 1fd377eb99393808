"""Adapters that put a promptkit_async store behind an agent framework.

Each module needs its framework, installed by an extra of its own, and is
imported only when asked for: ``import promptkit_async`` imports none of them.

- :mod:`promptkit_async.integrations.openai_agents`: ``promptkit_async[agents]``
- :mod:`promptkit_async.integrations.pydantic_ai`: ``promptkit_async[pydantic-ai]``
"""
