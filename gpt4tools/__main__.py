"""`python -m gpt4tools`: the command line (gpt4tools/cli.py)."""

import sys

from gpt4tools.cli import main

sys.exit(main())
