"""The stream table in memory, for unit tests: a batch's writes are applied after it, as the agent does."""

from __future__ import annotations

from guardstream.workers.moderation.stream_state import Staged


class MemoryTable(dict):
    async def run(self, moderator, records, release=(), now=None, waits_from=0.0):
        staged = Staged(self.get)
        verdicts, letters = await moderator.moderate(records, staged, release, now=now, waits_from=waits_from)
        self.apply(staged)
        return verdicts, letters

    def apply(self, staged: Staged) -> None:
        """A batch's writes, applied: a None value deletes its key."""
        self.last_writes = staged.writes
        for key, (_, value) in staged.writes.items():
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value

    def streams(self) -> list[str]:
        return [key for key in self if key.startswith('["state"')]
