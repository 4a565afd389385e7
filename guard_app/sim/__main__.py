"""Allow ``python -m guard_app.sim --port N --scenario FILE``."""

import sys

from guard_app.sim.cli import main

sys.exit(main())
