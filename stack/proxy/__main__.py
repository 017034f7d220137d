"""``python -m stack.proxy --listen 127.0.0.1:8474``: the Toxiproxy-compatible server in the foreground."""
import sys

from stack.proxy.process import main

sys.exit(main())
