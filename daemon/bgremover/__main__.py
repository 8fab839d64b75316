"""`python -m bgremover` is the same as the `bgremover` console script."""

import sys

from bgremover.main import main

sys.exit(main())
