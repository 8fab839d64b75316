"""The version of bgremover, a leaf any layer may import.

The one place the version is written: the build reads it from here
(pyproject.toml's [tool.hatch.version]), and so do `bgremover --version` and
the celery runner, whose supervisor and workers must run the same one.
"""

__version__ = "0.1.0"
