"""Runs the TransformerLens twin of every demo (examples/python/tl/<demo>.py) and commits what
it prints as examples/python/expected/<demo>.txt, the numbers the libcircuits demo must print
(bindings/python/tests/test_demos.py compares them). Needs TransformerLens 3.9 + torch:

    /opt/refenv/bin/python examples/python/generate_expected.py [demo ...]
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TL = os.path.join(HERE, "tl")


def main() -> None:
    demos = sys.argv[1:] or sorted(f[:-3] for f in os.listdir(TL) if f.endswith(".py") and f != "tl_load.py")
    for demo in demos:
        out = subprocess.run([sys.executable, os.path.join(TL, demo + ".py")], cwd=TL, check=True,
                             capture_output=True, text=True,
                             env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1")).stdout
        with open(os.path.join(HERE, "expected", demo + ".txt"), "w") as f:
            f.write(out)
        print(f"expected/{demo}.txt: {len(out.splitlines())} lines")


if __name__ == "__main__":
    main()
