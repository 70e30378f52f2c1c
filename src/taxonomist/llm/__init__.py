"""Prompting a general LLM with retrieval: backends, prompt builder, accounting."""
