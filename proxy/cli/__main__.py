"""``python -m proxy.cli``: the ``memproxy`` command."""

import sys

from . import main

sys.exit(main())
