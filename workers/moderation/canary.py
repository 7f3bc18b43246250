"""A canary model's comparison with the main one, apart from Kafka: which conversations are
sampled, how the two verdicts on one event or reply stream find each other, and what a pair says
(the worker's metrics and `guardstream canary report` read it the same way).

- The sample is a keyed hash of the conversation id (the records' key, BLAKE2b keyed with the
  `GUARDSTREAM_CANARY_SAMPLE_SECRET`): the same conversations on every run and every worker that share the
  secret, all of a conversation's events and streams together, and no way for whoever picks the
  ids to pick what the canary sees.
- A Gen verdict is paired with the canary's on the same conversation event; a stream's final
  verdict with the canary's on the same stream (its worst risk, and where it stopped or would have).
- `Pairing` holds each side until the other comes, and the source records of both uncommitted
  until then; a side alone for `timeout_s` (a canary far behind, a stream that never ends) is
  given up on and counted, as are the oldest past `max_waiting` pairs or `max_bytes`, so nothing
  waits for ever and memory stays bounded.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from guardstream.schemas import CanaryJudgement, CanaryRecord, RiskLevel, VerdictEvent, derive_id

Side = Literal["main", "canary"]
RISKS = [r.value for r in RiskLevel]


def sampled(key: bytes | None, share: float, secret: bytes) -> bool:
    """Whether the conversation with this id (a record's key) is in the canary's sample."""
    if key is None:
        return False
    return int.from_bytes(hashlib.blake2b(key, digest_size=8, key=secret[:64]).digest(), "big") < share * 2**64


def waiting_bytes(verdict: VerdictEvent) -> int:
    """About what a waiting verdict costs in memory: its fields, and its text when it carries some."""
    return 2048 + 4 * len(verdict.excerpt or "") + len(verdict.error or "")


def compared(verdict: VerdictEvent) -> bool:
    """What a canary pairs: a Gen verdict, or a stream's final one (not its chunks' or its prompt's)."""
    return verdict.stream is None or verdict.stream.final


def judgement(verdict: VerdictEvent) -> CanaryJudgement:
    stop = None
    if verdict.stream is not None:
        stop = verdict.stream.stop_token if verdict.stream.stop_token is not None else verdict.stream.would_stop_token
    return CanaryJudgement(model_id=verdict.model_id, risk_level=verdict.risk_level, categories=verdict.categories,
                           action=verdict.would_action or verdict.action, stop_token=stop, error=verdict.error)


def pair_record(main: VerdictEvent, canary: VerdictEvent) -> CanaryRecord:
    return CanaryRecord(
        canary_id=derive_id("canary", main.verdict_id, canary.model_id), variant=main.model_variant, tenant=main.tenant,
        conversation_id=main.conversation_id, source_event_id=main.source_event_id, moderate=main.moderate,
        stream_id=main.stream.stream_id if main.stream else None, policy_version=main.policy_version,
        main=judgement(main), canary=judgement(canary), excerpt=main.excerpt)


@dataclass
class Waiting:
    touched: float
    main: VerdictEvent | None = None
    canary: VerdictEvent | None = None
    holds: list[tuple[Hashable, int]] = field(default_factory=list)  # (partition, offset) of its source records
    size: int = 256  # about its bytes in memory (`waiting_bytes` of its verdicts)

    @property
    def missing(self) -> str:
        """The side that never came: `main`, `canary`, or `both` (its records came, no verdict yet)."""
        return "both" if self.main is None and self.canary is None else "main" if self.main is None else "canary"


class Pairing:
    """Verdicts waiting for their other side, by what they answer (`VerdictEvent.answers()`), and the
    offsets each keeps from being committed."""

    def __init__(self, timeout_s: float, max_waiting: int, clock: Callable[[], float] = time.monotonic,
                 max_bytes: int = 64 << 20):
        self.timeout_s, self.max_waiting, self.max_bytes, self.clock = timeout_s, max_waiting, max_bytes, clock
        self.waiting: dict[bytes, Waiting] = {}
        self.bytes = 0  # of the entries waiting
        self._held: dict[Hashable, Counter[int]] = {}

    def _entry(self, key: bytes) -> Waiting:
        entry = self.waiting.pop(key, None)
        if entry is None:
            entry = Waiting(self.clock())
            self.bytes += entry.size
        entry.touched = self.clock()
        self.waiting[key] = entry  # last touched last: the oldest are the first given up
        return entry

    def hold(self, key: bytes, partition: Hashable, offset: int) -> None:
        """The record at `offset` stays uncommitted until the pair `key` is published or given up."""
        self._entry(key).holds.append((partition, offset))
        self._held.setdefault(partition, Counter())[offset] += 1

    def offer(self, side: Side, verdict: VerdictEvent) -> CanaryRecord | None:
        """One side's verdict; the pair once both are here."""
        key = verdict.answers()
        entry = self._entry(key)
        setattr(entry, side, verdict)
        grown = waiting_bytes(verdict)
        entry.size += grown
        self.bytes += grown
        if entry.main is None or entry.canary is None:
            return None
        self._release(self.waiting.pop(key))
        return pair_record(entry.main, entry.canary)

    def drop(self, key: bytes) -> Waiting | None:
        """Give up on one pair now (its record could not be judged); None when nothing waited."""
        entry = self.waiting.pop(key, None)
        if entry is not None:
            self._release(entry)
        return entry

    def give_up(self) -> list[tuple[bytes, Waiting]]:
        """The entries alone for longer than the timeout, and the oldest past `max_waiting` or `max_bytes`."""
        horizon, gone = self.clock() - self.timeout_s, []
        for key, entry in list(self.waiting.items()):
            if entry.touched >= horizon and len(self.waiting) <= self.max_waiting and self.bytes <= self.max_bytes:
                break
            gone.append((key, self.waiting.pop(key)))
            self._release(entry)
        return gone

    def _release(self, entry: Waiting) -> None:
        self.bytes -= entry.size
        for partition, offset in entry.holds:
            held = self._held[partition]
            held[offset] -= 1
            if not held[offset]:
                del held[offset]

    def commit_points(self, positions: dict[Hashable, int]) -> dict[Hashable, int]:
        """Where each partition can be committed: its position, or its first record still held."""
        return {p: min(self._held.get(p) or (at,)) for p, at in positions.items()}

    def clear(self) -> None:
        self.waiting.clear()
        self._held.clear()
        self.bytes = 0


def stop_outcome(record: CanaryRecord) -> tuple[str, int | None]:
    """How the canary's stop compares with the main model's, and by how many tokens (canary minus main)."""
    main, canary = record.main.stop_token, record.canary.stop_token
    if main is None or canary is None:
        return ("neither" if main is None and canary is None else "main_only" if canary is None else "canary_only"), None
    delta = canary - main
    return ("same" if delta == 0 else "canary_earlier" if delta < 0 else "canary_later"), delta


def category_outcomes(record: CanaryRecord) -> list[tuple[str, str]]:
    """Each category either model named, and who named it: `both`, `main` or `canary`."""
    main, canary = set(record.main.categories), set(record.canary.categories)
    return [(c, "both" if c in main and c in canary else "main" if c in main else "canary")
            for c in sorted(main | canary)]


class CanaryReport:
    """Agreement between the main and the canary model over a set of canary records, each counted once."""

    def __init__(self, records: Iterable[CanaryRecord]):
        unique = {r.canary_id: r for r in records}
        self.records = list(unique.values())
        self.confusion: dict[str, Counter[tuple[str, str]]] = {}  # variant → (main risk, canary risk) → count
        self.categories: dict[str, Counter[tuple[str, str]]] = {}  # variant → (category, named by) → count
        self.stops: Counter[str] = Counter()
        self.stop_deltas: dict[str, list[int]] = {}
        for r in self.records:
            self.confusion.setdefault(r.variant, Counter())[(r.main.risk_level.value, r.canary.risk_level.value)] += 1
            self.categories.setdefault(r.variant, Counter()).update(category_outcomes(r))
            if r.variant == "stream":
                outcome, delta = stop_outcome(r)
                self.stops[outcome] += 1
                if delta is not None:
                    self.stop_deltas.setdefault(outcome, []).append(delta)

    def pairs(self, variant: str) -> int:
        return sum(self.confusion.get(variant, Counter()).values())

    def agreement(self, variant: str) -> float | None:
        """The share of pairs whose risk levels are the same."""
        confusion = self.confusion.get(variant, Counter())
        total = sum(confusion.values())
        return sum(n for (main, canary), n in confusion.items() if main == canary) / total if total else None

    def category_agreement(self, variant: str) -> dict[str, float]:
        """Per category: of the pairs where either model named it, the share where both did."""
        named = self.categories.get(variant, Counter())
        return {c: named[(c, "both")] / sum(named[(c, who)] for who in ("both", "main", "canary"))
                for c in sorted({c for c, _ in named})}

    def summary(self) -> dict:
        """The report as data (`canary report --json`)."""
        return {"variants": {variant: {
                    "pairs": self.pairs(variant), "agreement": self.agreement(variant),
                    "confusion": {main: {canary: n for (m, canary), n in sorted(confusion.items()) if m == main}
                                  for main in sorted({m for m, _ in confusion})},
                    "category_agreement": self.category_agreement(variant)}
                for variant, confusion in sorted(self.confusion.items())},
                "stream_stops": dict(self.stops)}

    def lines(self) -> list[str]:
        if not self.records:
            return ["no canary records yet: is a worker running with GUARDSTREAM_CANARY set, and traffic in its sample?"]
        out = []
        for variant in sorted(self.confusion):
            confusion = self.confusion[variant]
            out += [f"{variant}: {self.pairs(variant)} pairs, risk levels agree on {self.agreement(variant):.1%}",
                    f"  {'main / canary':<16}" + "".join(f"{r:>15}" for r in RISKS)]
            out += [f"  {main:<16}" + "".join(f"{confusion[(main, canary)]:>15}" for canary in RISKS) for main in RISKS
                    if any(confusion[(main, canary)] for canary in RISKS)]
            named = self.categories[variant]
            if named:
                out.append(f"  {'category':<30}{'both':>8}{'main only':>11}{'canary only':>13}{'agree':>9}")
                for category, share in self.category_agreement(variant).items():
                    out.append(f"  {category:<30}{named[(category, 'both')]:>8}{named[(category, 'main')]:>11}"
                               f"{named[(category, 'canary')]:>13}{share:>9.1%}")
        if self.stops:
            described = []
            for outcome in ("same", "canary_earlier", "canary_later", "main_only", "canary_only", "neither"):
                deltas = self.stop_deltas.get(outcome)
                by = f" (by {sum(abs(d) for d in deltas) / len(deltas):.1f} tokens on average)" if deltas and outcome != "same" else ""
                described.append(f"{outcome.replace('_', ' ')} {self.stops[outcome]}{by}")
            out.append("stream stops: " + ", ".join(described))
        return out
