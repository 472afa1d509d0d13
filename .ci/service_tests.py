"""The test files the full phase of .ci/run must run after a bare phase passed: those with a
test the bare machine skipped (it needs a service that was hidden), and those that drive the
local sandbox end to end (they ran on bubblewrap's stand-in there, and must run on bubblewrap).
Every other test gives the same result with or without the services, and has just passed.

    python3 .ci/service_tests.py BARE_JUNIT.xml   # prints one test file per line
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
# what starts an environment server, a run or a local sandbox in a test file
SANDBOX = re.compile(r'EnvServer\(|run_team\(|external_agent_run|gymnasium\.make\(|'
                     r'create\("local"|"mlgym\.cli", "run"|run_server\(')


def main(junit: str) -> int:
    files = set()
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            module = case.get("classname", "").split(".")
            while module and not (TESTS.parent / Path(*module).with_suffix(".py")).is_file():
                module = module[:-1]  # a class inside the module
            if module:
                files.add(str(Path(*module).with_suffix(".py")))
    for path in sorted(TESTS.glob("test_*.py")):
        if SANDBOX.search(path.read_text()):
            files.add(str(path.relative_to(TESTS.parent)))
    print("\n".join(sorted(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
