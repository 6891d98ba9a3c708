import sys

from parseq_client.cli import main

sys.exit(main())
