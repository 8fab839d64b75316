"""bgremover: a hot-folder daemon that removes image backgrounds on this machine."""

# The one place the version is written: the build reads it from here
# (pyproject.toml's [tool.hatch.version]), and so does `bgremover --version`.
__version__ = "0.1.0"
