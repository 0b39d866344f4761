"""`fixnorm-fold` in a source checkout: :mod:`fixnorm_mm.tools.fold`."""
from fixnorm_mm.tools.fold import *  # noqa: F401,F403  (for scripts and tests)
from fixnorm_mm.tools.fold import main

if __name__ == '__main__':
    main()
