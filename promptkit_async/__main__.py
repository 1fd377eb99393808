"""``python -m promptkit_async``: the same as the ``promptkit-async`` command."""

import sys

from ._cli import main

sys.exit(main())
