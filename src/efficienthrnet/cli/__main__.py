"""``python -m efficienthrnet.cli``: the `efficienthrnet` command."""

import sys

from . import main

sys.exit(main())
