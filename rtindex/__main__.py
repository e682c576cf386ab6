"""``python -m rtindex ...`` is the ``rtindex`` command."""

import sys

from rtindex.service.cli import main

if __name__ == "__main__":
    sys.exit(main())
