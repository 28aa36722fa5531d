"""``python -m netsim`` is the ``netsim`` command."""

from netsim.cli import main

raise SystemExit(main())
