"""python -m phi3_helpers.bench (same as: python -m phi3_helpers bench)."""

import sys

from ..cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
