import sys

from siteserver.cli import main

sys.exit(main())
