"""``python -m nbqueue.cli``."""

from nbqueue.cli import main

raise SystemExit(main())
