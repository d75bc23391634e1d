"""python -m phi3_helpers.bench (same as: python -m phi3_helpers bench)."""

import sys

from . import main

sys.exit(main())
