"""The user's side of an end-to-end run: a work directory with stand-ins for the user's own
build, test, scan and deploy (`make dist`, `make test-coverage`, `make scan`, `./deploy.sh`),
a pinned, hashed requirements file, and a `python3` whose `-m pip install` checks it was asked
for a hashed, dependency-free install (there is no package index here) and otherwise is Python.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAKEFILE = """\
dist:
\tmkdir -p dist
\tprintf 'registry build %s\\n' "$$BUILD_BUILDID$$GITHUB_RUN_ID" > dist/registry.tar.gz
test-coverage:
\t@echo "running the unit tests"
\t{tests}
\tprintf '<coverage line-rate="0.873" branch-rate="0.7"></coverage>\\n' > coverage.xml
scan:
\t@echo "scan: 0 critical, 0 high"
"""
DEPLOY = '#!/bin/bash\nset -eu\necho "deployed $2 to $1" | tee deployed.txt\n'
PIP_STAND_IN = """#!/bin/bash
if [ "$1 $2" = "-m venv" ]; then  # a virtual environment whose python is this stand-in
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
if [ "$1 $2 $3" = "-m pip install" ]; then
  case " $* " in *" --require-hashes "*) ;; *) echo "pip: no --require-hashes" >&2; exit 9 ;; esac
  case " $* " in *" --no-deps "*) ;; *) echo "pip: no --no-deps" >&2; exit 9 ;; esac
  requirements="${{@: -1}}"
  grep -Eq '^azdev-ica==[0-9.]+ --hash=sha256:[0-9a-f]{{64}}$' "$requirements" \\
    || {{ echo "pip: $requirements is not pinned with a hash" >&2; exit 9; }}
  printf '#!/bin/sh\\nexec {ica} "$@"\\n' > "$(dirname "$0")/ica" && chmod +x "$(dirname "$0")/ica"
  echo "pip: azdev-ica is installed (hash checked)"
  exit 0
fi
exec {python} "$@"
"""


SAMPLES = Path(__file__).parent.parent / "cli" / "samples"


def make_workdir(
    tmp_path: Path,
    *,
    failing_tests: bool = False,
    failing_deploy: bool = False,
    failing_verify: bool = False,
) -> tuple[Path, Path]:
    """(the checked-out repository, a directory of tools to put first on PATH)."""
    work, tools = tmp_path / "work", tmp_path / "tools"
    work.mkdir()
    tools.mkdir()
    for sample in ("scan.sarif", "bom.cdx.json"):  # what a scanner and an SBOM tool wrote
        (work / sample).write_text((SAMPLES / sample).read_text())
    tests = "@echo 'FAILED test_register_farmer' && exit 1" if failing_tests else "@true"
    (work / "Makefile").write_text(MAKEFILE.format(tests=tests))
    (work / "deploy.sh").write_text(
        '#!/bin/bash\necho "deploy: the rollout timed out" >&2\nexit 1\n'
        if failing_deploy
        else DEPLOY
    )
    (work / "deploy.sh").chmod(0o755)
    (work / "verify.sh").write_text(  # the user's post-deploy health and smoke checks
        '#!/bin/bash\necho "smoke: /health answers 503" >&2\nexit 1\n'
        if failing_verify
        else '#!/bin/bash\necho "smoke: /health answers 200"\n'
    )
    (work / "verify.sh").chmod(0o755)
    (work / "ica-requirements.txt").write_text(f"azdev-ica==0.1.0 --hash=sha256:{'e' * 64}\n")
    python3 = tools / "python3"
    ica = Path(sys.executable).parent / "ica"  # what the package index would have installed
    python3.write_text(PIP_STAND_IN.format(python=sys.executable, ica=ica))
    python3.chmod(0o755)
    return work, tools
