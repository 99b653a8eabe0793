"""Serving exported pipelines: Triton pipeline models, the server, an OpenAI-compatible front."""
