"""An example third-party xomni plugin package."""
