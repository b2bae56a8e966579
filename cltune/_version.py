"""The version of cltune (read by the package facade and written into every run's results)."""

__version__ = "0.1.0"
