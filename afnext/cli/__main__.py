"""``python -m afnext.cli``: the ``afnext`` command."""

import sys

from afnext.cli import main

sys.exit(main())
