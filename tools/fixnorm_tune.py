"""`fixnorm-tune` in a source checkout: :mod:`fixnorm_mm.tools.tune`."""
from fixnorm_mm.tools.tune import *  # noqa: F401,F403  (for scripts and tests)
from fixnorm_mm.tools.tune import main

if __name__ == '__main__':
    raise SystemExit(main())
