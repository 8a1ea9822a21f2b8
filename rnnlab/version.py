"""The package version (ground floor: imported by the checkpoint writer and the server without
importing the package itself)."""
__version__ = "0.2.0"
