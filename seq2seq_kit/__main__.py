"""`python -m seq2seq_kit ...` runs the seq2seq-kit command line."""

import sys

from .cli import main

sys.exit(main())
