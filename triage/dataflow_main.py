"""Entry point of the Dataflow flex template: the streaming service with the job's options.

The launcher (same image as the workers, see Dockerfile) runs this file with the template's
parameters as `--name=value` arguments.
"""

from __future__ import annotations

import sys

from triage.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
