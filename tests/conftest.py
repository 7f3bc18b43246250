import pytest

from guardstream.dev.tiny_checkpoints import TinyCheckpoints, build_tiny_checkpoints


@pytest.fixture(scope="session")
def tiny() -> TinyCheckpoints:
    """The fixture checkpoints (built once per machine, about a minute, then cached)."""
    return build_tiny_checkpoints()
