"""Converters from published checkpoint layouts, registered through the `xomni.converters` entry points."""
