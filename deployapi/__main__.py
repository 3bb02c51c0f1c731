"""``python -m deployapi`` is the ``deployapi`` command."""

from .cli import main

raise SystemExit(main())
