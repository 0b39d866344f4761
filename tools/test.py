"""`fixnorm-test` in a source checkout: :mod:`fixnorm_mm.tools.test`."""
from fixnorm_mm.tools.test import *  # noqa: F401,F403  (for scripts and tests)
from fixnorm_mm.tools.test import main

if __name__ == '__main__':
    main()
