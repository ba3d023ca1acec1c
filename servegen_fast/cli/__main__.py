"""`python -m servegen_fast.cli`: the same as the `servegen-fast` command."""
import sys

from . import main

sys.exit(main())
