"""Allow ``python -m guard_app``."""

import sys

from guard_app.cli import main

sys.exit(main())
