"""Reference decoders: semantic latents (and prompts) to pixels."""
