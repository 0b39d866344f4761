"""`fixnorm-train` in a source checkout: :mod:`fixnorm_mm.tools.train`."""
from fixnorm_mm.tools.train import *  # noqa: F401,F403  (for scripts and tests)
from fixnorm_mm.tools.train import main

if __name__ == '__main__':
    main()
