import sys

from qmamba.cli import main

sys.exit(main())
