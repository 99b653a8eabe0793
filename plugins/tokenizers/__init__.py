"""Reference semantic image tokenizers."""
