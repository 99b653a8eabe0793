"""Training recipes that build whole pipelines out of the reference components."""
