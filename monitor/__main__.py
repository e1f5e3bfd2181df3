"""`python -m monitor` runs the same CLI as the `backup-monitor` console script."""

from __future__ import annotations

from monitor.entry import main

raise SystemExit(main())
