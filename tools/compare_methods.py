"""`fixnorm-compare` in a source checkout: :mod:`fixnorm_mm.tools.compare_methods`."""
from fixnorm_mm.tools.compare_methods import *  # noqa: F401,F403  (for scripts and tests)
from fixnorm_mm.tools.compare_methods import main

if __name__ == '__main__':
    main()
