import sys

from dataplane.cli.main import main

sys.exit(main())
