"""``python -m maivar``: the ``maivar`` command."""

import sys

from maivar.cli import main

sys.exit(main())
