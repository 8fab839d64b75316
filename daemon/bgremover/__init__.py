"""bgremover: a hot-folder daemon that removes image backgrounds on this machine."""

__version__ = "0.1.0"
