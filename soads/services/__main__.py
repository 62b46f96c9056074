"""``python -m soads.services up|down|status|install [kafka|mariadb|hbase|alertmanager]`` (see
the package docstring)."""
import sys

from soads.services import main

sys.exit(main())
