"""``python -m qmamba.data.synth --out DIR ...`` (the same as ``qmamba data synth``)."""

from qmamba.data.synth.cli import main

raise SystemExit(main())
