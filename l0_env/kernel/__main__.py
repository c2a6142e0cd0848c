"""``python -m l0_env.kernel --report``: which sandbox protections are active on this machine."""

from .report import main

raise SystemExit(main())
