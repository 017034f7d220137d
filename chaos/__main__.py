"""`python -m chaos`: run experiments, list them, heal, or serve the Toxiproxy API."""
import sys

from chaos.cli import main

sys.exit(main())
