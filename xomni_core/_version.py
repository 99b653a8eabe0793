"""Version numbers of the package and of the plugin API it offers."""

__version__ = "0.1.0"

#: Plugins declare the core API major version they target; a different major is refused.
CORE_API_VERSION = "1.0"
