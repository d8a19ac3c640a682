"""``python -m similar_articles.cli``."""

import sys

from . import main

sys.exit(main())
