"""``python -m l0_env.data build ...``: see :mod:`l0_env.pipeline.cli`."""

from l0_env.pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
