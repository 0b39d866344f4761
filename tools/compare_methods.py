"""`fixnorm-compare` in a source checkout: the tool is :mod:`fixnorm_mm.tools.compare_methods`."""
from fixnorm_mm.tools.compare_methods import *  # noqa: F401,F403  (its functions, for scripts and tests)
from fixnorm_mm.tools.compare_methods import main

if __name__ == '__main__':
    main()
