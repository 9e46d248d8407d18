"""``python -m robin_plugin.cli``: the ``robin`` command (``torchrun -m robin_plugin.cli train ...``)."""
from __future__ import annotations

import sys

from . import main

sys.exit(main())
