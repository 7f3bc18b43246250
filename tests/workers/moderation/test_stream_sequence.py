"""The sequencer alone, with no model: which chunks are next in line, what waits, what is dead, and
what the table keeps."""

from __future__ import annotations

import json

import pytest

from guardstream.schemas.intake import RawRecord
from guardstream.workers.moderation.rules import StreamRules
from guardstream.workers.moderation.stream_sequence import StreamSequencer
from guardstream.workers.moderation.stream_state import Staged, StreamRef

from tests.helpers.memory_table import MemoryTable
from tests.helpers.models import cached_tokenizer

REF = StreamRef("t", "c", "s")


@pytest.fixture()
def sequencer(tiny) -> StreamSequencer:
    return StreamSequencer(StreamRules(gap_timeout_s=5, max_tokens=20, max_held_chunks=4), cached_tokenizer(tiny.stream),
                           max_positions=4096)


def chunk(seq: int, ids: list[int] | None = None, final: bool = False) -> dict:
    return {"event_id": f"e-{seq}", "conversation_id": "c", "stream_id": "s", "tenant": "t", "seq": seq,
            "token_ids": ids if ids is not None else [10 + seq, 20 + seq], "final": final,
            **({"prompt": "hello"} if seq == 0 else {})}


def records(*chunks: dict) -> list[RawRecord]:
    return [RawRecord("chunks", 0, i, b"c", json.dumps(c).encode()) for i, c in enumerate(chunks)]


class Table(MemoryTable):
    def take(self, sequencer, chunks, now=100.0, release=()):
        """One batch through the sequencer alone, its writes applied as the agent applies them."""
        staged = Staged(self.get)
        taken = sequencer.take(records(*chunks), staged, release, now=now)
        sequencer.settle(taken, staged)
        self.apply(staged)
        return taken


def test_chunks_in_order_with_nothing_held_go_straight_to_judging(sequencer):
    """The hot path: no held entry is written or read for a chunk that is next in line."""
    table, writes = Table(), []

    class Spied(Staged):
        def put(self, partition, key, value):
            writes.append(key)
            super().put(partition, key, value)

    staged = Spied(table.get)
    taken = sequencer.take(records(chunk(0), chunk(1), chunk(2, final=True)), staged, now=100.0)
    assert [[c.seq for c in r.chunks] for r in taken.ready] == [[0, 1, 2]] and taken.letters == []
    assert not [k for k in writes if k.startswith('["held"')] and taken.ready[0].state.done
    behind = sequencer.take(records(chunk(0), chunk(2), chunk(1)), Spied(Table().get), now=100.0)
    assert [[c.seq for c in r.chunks] for r in behind.ready] == [[0, 1, 2]]  # 1 came after 2: both waited in turn


def test_chunks_wait_behind_a_gap_until_it_fills_or_times_out(sequencer):
    table = Table()
    taken = table.take(sequencer, [chunk(0), chunk(2)])
    assert [[c.seq for c in r.chunks] for r in taken.ready] == [[0]] and taken.letters == []
    assert json.loads(next(k for k in table if k.startswith('["held"')))[-1] == 2
    waiting = table.take(sequencer, [], now=103.0, release=[REF])
    assert waiting.ready == [] and waiting.letters == []
    late = table.take(sequencer, [], now=106.0, release=[REF])
    assert [[c.seq for c in r.chunks] for r in late.ready] == [[2]]
    assert [d.error_code for d in late.letters] == ["sequence_gap"] and "chunks 1..1 never arrived" in late.letters[0].error
    again = table.take(sequencer, [chunk(1)], now=107.0)
    assert again.ready == [] and [d.error_code for d in again.letters] == ["sequence_gap"]


def test_duplicates_are_dropped_silently_and_chunks_after_the_final_one_are_dead(sequencer):
    table = Table()
    table.take(sequencer, [chunk(0), chunk(1, final=True)])
    taken = table.take(sequencer, [chunk(1), chunk(2)])
    assert taken.ready == [] and [d.error_code for d in taken.letters] == ["stream_error"]
    assert "after its final chunk" in taken.letters[0].error


def test_a_finished_stream_keeps_only_its_state_and_a_running_one_its_prompt_and_ids(sequencer):
    table = Table()
    table.take(sequencer, [chunk(0), chunk(1)])
    assert sorted(json.loads(k)[0] for k in table) == ["ids", "ids", "prompt", "state"]
    table.take(sequencer, [chunk(2, final=True)])
    assert [json.loads(k)[0] for k in table] == ["state"]


def test_the_chunk_past_the_token_limit_is_a_letter_and_ends_the_stream(sequencer):
    table = Table()
    taken = table.take(sequencer, [chunk(0, list(range(10, 22))), chunk(1, list(range(30, 42))), chunk(2)])
    (ready,) = taken.ready
    assert [c.seq for c in ready.chunks] == [0] and ready.too_long[0] == "e-1" and "stream_max_tokens (20)" in ready.too_long[1]
    assert [d.error_code for d in taken.letters] == ["stream_error", "stream_error"] and ready.state.done


def test_chunks_too_far_ahead_and_ids_outside_the_vocabulary_are_dead(sequencer, tiny):
    taken = Table().take(sequencer, [chunk(0), chunk(9), chunk(1, [len(cached_tokenizer(tiny.stream)) + 1])])
    assert [d.error_code for d in taken.letters] == ["stream_error", "stream_error"]
    assert "4 or more ahead" in taken.letters[0].error and "outside the checkpoint's vocabulary" in taken.letters[1].error


OWNER, THIEF = "a1" * 16, "b2" * 16


def test_a_chunk_without_the_streams_nonce_is_refused_and_reroutes_nothing(sequencer):
    table = Table()
    owned = {"nonce": OWNER, "reply_to": 3}
    taken = table.take(sequencer, [{**chunk(0), **owned}])
    assert taken.ready[0].state.reply_to == 3 and taken.ready[0].state.nonce == OWNER
    # another gateway (no nonce, or a guessed one) names the next chunk and its own partition
    hijack = table.take(sequencer, [{**chunk(1), "reply_to": 9}, {**chunk(1), "nonce": THIEF, "reply_to": 9}])
    assert hijack.ready == [] and [d.error_code for d in hijack.letters] == ["stream_error", "stream_error"]
    assert "does not carry the nonce of the stream's first chunk" in hijack.letters[0].error
    # the owner's chunk 1 is still next in line and judged, routed where the owner said
    taken = table.take(sequencer, [{**chunk(1), **owned}])
    assert [c.seq for c in taken.ready[0].chunks] == [1] and taken.ready[0].state.reply_to == 3
    moved = table.take(sequencer, [{**chunk(2), "nonce": OWNER, "reply_to": 5}])  # the owner may move its own route
    assert moved.ready[0].state.reply_to == 5


def test_without_a_nonce_the_first_chunk_fixes_the_route(sequencer):
    table = Table()
    table.take(sequencer, [{**chunk(0), "reply_to": 3}])
    taken = table.take(sequencer, [{**chunk(1), "reply_to": 9}])
    assert [c.seq for c in taken.ready[0].chunks] == [1] and taken.ready[0].state.reply_to == 3

