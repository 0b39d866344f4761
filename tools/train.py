"""`fixnorm-train` in a source checkout: the tool is :mod:`fixnorm_mm.tools.train`."""
from fixnorm_mm.tools.train import *  # noqa: F401,F403  (its functions, for scripts and tests)
from fixnorm_mm.tools.train import main

if __name__ == '__main__':
    main()
