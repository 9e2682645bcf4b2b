import sys

from tabembed.cli import main

sys.exit(main())
