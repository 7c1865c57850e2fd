"""python -m distilrt.cli"""

import sys

from distilrt.cli import main

sys.exit(main())
