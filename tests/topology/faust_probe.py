"""A minimal Faust app for test_faust_click: echoes `probe-in` to `probe-out`, upper-cased."""

import os

import faust

app = faust.App("guardstream-click-probe", broker=f"kafka://{os.environ['PROBE_BOOTSTRAP']}", store="memory://",
                web_enabled=False, topic_partitions=1, broker_rebalance_timeout=6, broker_session_timeout=6,
                broker_heartbeat_interval=1)
probe_in = app.topic("probe-in", value_serializer="raw")
probe_out = app.topic("probe-out", value_serializer="raw")


@app.agent(probe_in)
async def echo(stream):
    async for value in stream:
        await probe_out.send(value=value.upper())
