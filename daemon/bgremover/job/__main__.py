"""`python -m bgremover.job`: one image, run by hand the way the fork server runs it for the supervisor."""

import sys

from bgremover.job.process import main

sys.exit(main())
