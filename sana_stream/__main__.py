"""``python -m sana_stream``: the ``sana-stream`` command."""

import sys

from sana_stream.cli import main

sys.exit(main())
