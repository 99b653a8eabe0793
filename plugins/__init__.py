"""Reference X-Omni components, registered through the `xomni.plugins` entry points."""
