"""The release of revdsl (also in every generated file's header)."""

__version__ = "0.1.0"
