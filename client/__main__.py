import sys

from crossfarm.client.cli import main

sys.exit(main())
