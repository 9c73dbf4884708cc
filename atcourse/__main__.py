"""``python -m atcourse``: the command line, as ``atcourse`` runs it.

The entry point torchrun needs to start one run over several processes::

    torchrun --standalone --nproc_per_node=2 -m atcourse train --profile smoke
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
