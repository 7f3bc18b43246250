"""Each bench renders its own table: the ratios it prints are computed against the right baseline."""

from guardstream.bench.gen import gen_table
from guardstream.bench.pipeline import pipeline_table
from guardstream.bench.soak import Sample, soak_table
from guardstream.bench.stream import stream_table
from guardstream.bench.stream_pipeline import BrokerRuns, StreamsRun, stream_pipeline_table
from guardstream.bench.timing import Measurement


def rows(table) -> list[list[str]]:
    """The cells as the bench put them in, row by row."""
    return [list(row) for row in zip(*(column._cells for column in table.columns))]


def test_stream_rows_are_ratios_over_the_reference_and_the_single_cached_stream():
    reference = Measurement("(a)", 1, 100, 1.0, [1.0], chunk=1)
    single = Measurement("(b)", 1, 200, 1.0, [1.0], chunk=1)
    batched = Measurement("batched", 8, 800, 1.0, [1.0], chunk=1)
    other_chunk = Measurement("batched", 8, 900, 1.0, [1.0], chunk=4)
    got = rows(stream_table([reference, single, batched, other_chunk], "t"))
    assert [r[-2:] for r in got] == [["1.0", ""], ["2.0", "1.0"], ["8.0", "4.0"], ["9.0", ""]]


def test_gen_rows_name_agreement_on_a_checkpoint_and_flops_on_random_weights():
    base = Measurement("reference", 1, 10, 1.0, [1.0], agree=1.0)
    faster = Measurement("scoring", 8, 50, 1.0, [1.0], agree=0.5)
    table = gen_table([base, faster], "t")
    assert table.columns[-1].header == "label agreement"
    assert [r[-2:] for r in rows(table)] == [["1.0", "100%"], ["5.0", "50%"]]
    shape = gen_table([Measurement("reference", 1, 1, 20.0, [1.0], useful_flops=4e12)], "t")
    assert shape.columns[-1].header == "useful TFLOP/s" and rows(shape)[0][2] == "0.050" and rows(shape)[0][-1] == "0.200"


def test_pipeline_rows_are_shares_of_the_engine_alone():
    engine, pipeline, noop = (Measurement(n, 32, c, 1.0, [1.0]) for n, c in (("engine", 100), ("pipeline", 90), ("noop", 1200)))
    assert [r[-1] for r in rows(pipeline_table([engine, pipeline, noop], "t"))] == ["1.00", "0.90", "12.00"]


def test_stream_pipeline_and_soak_tables_show_every_run_and_both_ends():
    runs = [StreamsRun(streams=4, chunk=4, latencies_ms=[10.0, 20.0], stop_lag_ms=[5.0], stop_lag_tokens=[0], unsafe_streams=1,
                      worker_cpu_s=0.004)]
    measured = {"tansu": BrokerRuns([1.0, 2.0], runs), "kafka": BrokerRuns([3.0], runs)}
    got = rows(stream_pipeline_table([Measurement("engine", 4, 8, 1.0, [1.0] * 8)], measured, "t"))
    assert [r[0].split(":")[0] for r in got] == ["engine alone", "tansu floor", "tansu pipeline", "kafka floor",
                                                 "kafka pipeline"]
    assert got[2][5] == "1/1" and got[0][2] == "2" and got[1][2] == "2" and got[3][2] == "1"
    assert got[2][8] == "2,000"  # worker CPU µs per chunk: 4 ms over 2 chunks
    first, last = (Sample(at_s=t, streams_started=n, streams_finished=n, worker_rss_mb=100, actor_rss_mb=200, kv_used_mb=1,
                          table_entries=n, changelog_mb=0.5, lag=0) for t, n in ((0, 1), (60, 500)))
    last = Sample(**{**last.__dict__, "verdicts_sent": 9000, "analytics_entries": 12345})
    got = rows(soak_table([first, Sample(**{**first.__dict__, "at_s": 30}), last]))
    assert [r[:3] for r in got] == [["0", "1", "0"], ["60", "500", "9,000"]] and got[1][7] == "12,345"
