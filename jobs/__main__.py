"""Run the CLI as a script: `spark-submit jobs/__main__.py score --date D`."""

import os
import sys

# Run as a file, Python puts this folder first on sys.path, where module names like
# `lake` or `spark` must not shadow anything; the package is imported as `jobs`.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from jobs.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
