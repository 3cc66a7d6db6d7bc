"""``python -m dataset.synthetic --format davis2017 --out DIR`` (see :mod:`dataset.synthetic.cli`)."""

import sys

from dataset.synthetic.cli import main

sys.exit(main())
