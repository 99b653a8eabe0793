"""Runtimes that run exported artefacts behind the component interfaces."""
