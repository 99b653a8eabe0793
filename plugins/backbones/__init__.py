"""Unified autoregressive backbones: one transformer over text and image tokens."""
