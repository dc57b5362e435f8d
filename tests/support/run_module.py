"""``python run_module.py MODULE ARGS...``: run a module's ``main(argv)`` and exit with its code
(``python -m`` would need the module path; trtenv.run takes a script)."""

import importlib
import sys

if __name__ == "__main__":
    module = importlib.import_module(sys.argv[1])
    sys.exit(module.main(sys.argv[2:]))
