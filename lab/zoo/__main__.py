import sys

from lab.zoo.cli import main

sys.exit(main())
