"""Serving many adapters over one base: the continuous-batching scheduler (:mod:`.scheduler`) and its
OpenAI-compatible HTTP front (:mod:`.http`)."""
