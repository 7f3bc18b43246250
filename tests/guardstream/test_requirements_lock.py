"""requirements.lock must install on a fresh machine: pinned names only, never a path on the machine it was frozen on."""

from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


def test_every_lock_line_is_a_registry_pin():
    lines = [line for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines
    not_pins = [line for line in lines if "==" not in line or "@" in line or "file:" in line]
    assert not_pins == [], f"requirements.lock holds lines a fresh machine cannot install: {not_pins}"
