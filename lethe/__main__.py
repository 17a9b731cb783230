import sys

from lethe.cli.main import main

sys.exit(main())
