"""bgremover: a hot-folder daemon that removes image backgrounds on this machine.

`from bgremover import remove, Session` gives the Python API (bgremover/api.py).
Both are imported on first use, so importing bgremover, or any of its daemon
modules, never loads numpy or onnxruntime: the supervisor stays small.
"""

from bgremover.version import __version__  # written once, in version.py

__all__ = ["__version__"]

_API = ("remove", "Session")


def __getattr__(name: str):
    if name in _API:
        from bgremover import api

        return getattr(api, name)
    raise AttributeError(f"module 'bgremover' has no attribute {name!r}")
