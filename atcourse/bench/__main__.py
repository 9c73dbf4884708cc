"""``python -m atcourse.bench``: the benchmark, or (internal) one isolated configuration."""

import sys

from . import main
from .measure import worker_main

if len(sys.argv) == 4 and sys.argv[1] == "--_worker":
    sys.exit(worker_main(sys.argv[2], sys.argv[3]))
sys.exit(main())
