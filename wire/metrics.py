"""The worker's Prometheus series, one place for every name and label set (served by `topology/health.py`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from guardstream.schemas.labels import QUERY_CATEGORIES

_CATEGORIES = {*QUERY_CATEGORIES, "None"}


def category(name: str) -> str:
    """A category as a metric label: the model's own, or `other` for a name a producer made up."""
    return name if name in _CATEGORIES else "other"

# Tenant labels are `Policy.metric_tenant`: the policy's tenants by name, every other one as `other`;
# language labels `metric_language`: the languages policies name, every other one (and none) `other`.
VERDICTS = Counter("guardstream_verdicts_total", "Verdicts counted by analytics (after de-duplication)",
                   ["tenant", "risk_level", "category"])
DEAD_LETTERS = Counter("guardstream_dead_letters_total", "Records sent to the dead-letter topic", ["topic", "error_code"])
GEN_BATCH_SECONDS = Histogram("guardstream_gen_batch_seconds", "Time to moderate one Gen micro-batch",
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STREAM_BATCH_SECONDS = Histogram("guardstream_stream_batch_seconds", "Time to judge one batch of reply chunks and "
                                 "deliver its verdicts (each chunk's time inside the worker)",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
BATCH_RECORDS = Histogram("guardstream_batch_records", "Records per agent batch sent to the model pool", ["agent"],
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
ACTIONS = Counter("guardstream_actions_total", "Actions emitted by enforcement", ["tenant", "language", "action"])
WOULD_ACTIONS = Counter("guardstream_would_action_total", "Observe mode: what enforcement would have done instead of "
                        "allowing (one per observed action)", ["tenant", "language", "action"])
POLICY_REJECTED = Counter("guardstream_policy_rejected_total", "Policies-topic records refused (their tenant keeps the "
                          "policy it had)")
POLICY_VERSION = Gauge("guardstream_policy_version", "The version in force of each entry the policies topic has set",
                       ["tenant"])
BATCH_FAILURES = Counter("guardstream_batch_failures_total",
                         "Batches (or single records) whose step failed permanently and was narrowed down", ["agent"])
RETRIES = Counter("guardstream_retries_total", "Transient failures retried while the agent held its offsets", ["agent"])
CONSUMER_LAG = Gauge("guardstream_consumer_lag", "Records after the last committed offset, per topic and partition",
                     ["topic", "partition"])
TABLE_ENTRIES = Gauge("guardstream_table_entries", "Keys held in a Faust table by this worker", ["table"])
CHANGELOG_BYTES = Counter("guardstream_changelog_bytes_total", "Bytes of table values written to changelogs", ["table"])
STORE_REBUILT = Counter("guardstream_store_rebuilt_total", "Local table stores that could not be opened (corrupt, "
                        "unreadable), moved aside and rebuilt from their changelog", ["table"])
STATE_BYTES = Gauge("guardstream_state_bytes", "Bytes on disk under the worker's state directory (its tables' local "
                    "stores); the chart's alert compares it with the volume's size limit")
CHANGELOG_REPLAYED = Counter("guardstream_changelog_replayed_total", "Changelog records applied by table recovery "
                             "(a store on disk replays only what it had not yet applied)", ["table"])
ACTOR_RSS = Gauge("guardstream_actor_rss_bytes", "Resident memory of each model actor, as it last reported",
                  ["kind", "actor"])
ACTOR_KV = Gauge("guardstream_actor_kv_bytes", "KV cache of each Stream actor: held by sessions (used), allocated "
                 "(reserved) and allowed (budget, stream_kv_cache_mb)", ["pool", "actor", "kind"])
KV_EVICTIONS = Gauge("guardstream_actor_kv_evictions", "Sessions each Stream actor closed to make room in its KV cache "
                     "(rebuilt when they come back)", ["pool", "actor"])
STREAM_REBUILDS = Counter("guardstream_stream_rebuilds_total", "Stream sessions sent again with their history because "
                          "their actor had lost them (restart, eviction) or held another number of tokens")
LATE_VERDICTS = Counter("guardstream_analytics_late_total",
                        "Verdicts not counted because their window ended more than the retention ago", ["tenant"])
FAIL_MODES = Counter("guardstream_client_fail_modes_total", "Requests and streams a gateway (guardstream.client, "
                     "serve) answered with the tenant's fail mode instead of a verdict, and why", ["tenant", "action", "reason"])
UNROUTABLE_REPLIES = Counter("guardstream_unroutable_replies_total", "Verdicts whose request named a reply partition "
                             "the replies topic does not have (sent to the verdict topic only)")
CANARY_PAIRS = Counter("guardstream_canary_pairs_total", "Canary pairs (the main and the canary model on one sampled "
                       "event or stream) by the risk level each gave", ["variant", "main", "canary"])
CANARY_CATEGORIES = Counter("guardstream_canary_categories_total", "Categories named in canary pairs, and by whom "
                            "(both, main, canary)", ["variant", "category", "named_by"])
CANARY_STOPS = Counter("guardstream_canary_stops_total", "Stream canary pairs by where the canary stopped the stream "
                       "against the main model (same, canary_earlier, canary_later, main_only, canary_only, neither)",
                       ["outcome"])
CANARY_STOP_OFFSET = Histogram("guardstream_canary_stop_offset_tokens", "Canary stop token minus the main model's, "
                               "in streams both stopped", buckets=(-64, -16, -4, -1, 0, 1, 4, 16, 64))
CANARY_UNPAIRED = Counter("guardstream_canary_unpaired_total", "Sampled events or streams given up on without a pair, "
                          "by the side that never came (main, canary, both)", ["variant", "missing"])
REVIEW_QUEUE = Gauge("guardstream_review_queue_items", "Review items waiting for a decision, per tenant", ["tenant"])
REVIEW_OLDEST = Gauge("guardstream_review_oldest_seconds", "Age of each tenant's oldest review item waiting for a "
                      "decision (0: none waits)", ["tenant"])
REVIEW_DECIDED = Gauge("guardstream_review_decisions_last_hour", "Review decisions made in the last hour, per tenant",
                       ["tenant"])
REVIEW_OVERTURNED = Gauge("guardstream_review_overturn_ratio", "Share of the last day's review decisions that overturned "
                          "the model, per category it named (None: it named none)", ["category"])
CANARY_WAITING = Gauge("guardstream_canary_waiting", "Canary verdicts waiting for their other side")


def record_actors(kind: str, reports: list[dict]) -> None:
    """What each actor of a pool said when asked whether it is ready: its memory, and a Stream
    actor's KV cache."""
    for index, report in enumerate(reports):
        labels = (kind, str(index))
        ACTOR_RSS.labels(*labels).set(report["rss"])
        for held in ("used", "reserved", "budget"):
            if f"kv_{held}_bytes" in report:
                ACTOR_KV.labels(*labels, held).set(report[f"kv_{held}_bytes"])
        if "kv_evictions" in report:
            KV_EVICTIONS.labels(*labels).set(report["kv_evictions"])
