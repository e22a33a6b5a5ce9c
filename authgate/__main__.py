import sys

from authgate.cli import main

sys.exit(main())
