"""Write the hostile-input corpus to a folder: python tests/support/hostile DIR"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hostile import corpus  # noqa: E402

if len(sys.argv) != 2:
    sys.exit("usage: python tests/support/hostile DIR (the folder the corpus is written to)")
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for name, data in corpus().items():
    (out / name).write_bytes(data)
    print(f"{out / name}  {len(data)} bytes")
