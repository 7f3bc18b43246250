"""Do the values fit? For every values file the chart ships, the memory each pod may have to hold,
added up from what it runs, against its memory limit, and each GPU actor's memory against its
share of a GPU.

Ray places actors by CPUs and GPUs only, so a Ray model worker may end up with any mix of Gen and
Stream actors whose CPUs and GPUs fit its own: the check takes the worst mix. An actor holds:
- on the host: its runtime, plus, on a CPU, its weights, its KV cache budget (`kvCacheMb`) and a
  forward's activations; on a GPU with the transformers backend, its weights once more while they
  load (read on the host, then moved);
- on its GPU: weights, KV budget and the CUDA context with a forward's activations; vLLM takes 85%
  of the GPU whatever the model (workers/engines/gen_vllm.py).
The figures below are the allowances docs/deploying.md gives operators."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.helm.test_chart import CPU, PRODUCTION, merged

GiB = 1 << 30
PARAMETERS = {"0.6B": 0.60e9, "4B": 4.02e9, "8B": 8.19e9}  # Qwen3Guard sizes, Gen and Stream alike
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto: the checkpoints' bfloat16
ACTOR_RUNTIME = 2 * GiB  # Python, torch, transformers and Ray's core worker
CUDA_RESERVE = 2 * GiB  # a CUDA context, allocator slack and a forward's activations
CPU_ACTIVATIONS = 1 * GiB  # a forward's activations on a CPU
VLLM_SHARE = 0.85
RAY_NODE = 1 * GiB  # raylet, dashboard agent, log monitor
RAY_HEAD = 2 * GiB  # the above plus the GCS and the dashboard


def quantity(text: str | int) -> float:
    """A Kubernetes quantity: 24Gi, 768Mi, 250m, 8."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "m": 1e-3, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()
    return float(number) * units[unit]


def weights(actor: dict) -> float:
    size = re.search(r"-([0-9.]+B)$", actor["model"]).group(1)
    return PARAMETERS[size] * DTYPE_BYTES[actor["dtype"]]


def actor_memory(actor: dict, gpu_bytes: float) -> tuple[float, float]:
    """(host bytes, GPU bytes) of one actor."""
    kv = actor.get("kvCacheMb", 0) * (1 << 20)
    if actor.get("backend") == "vllm":
        return ACTOR_RUNTIME, VLLM_SHARE * gpu_bytes
    if actor["device"].startswith("cuda"):
        return ACTOR_RUNTIME + weights(actor), weights(actor) + kv + CUDA_RESERVE
    return ACTOR_RUNTIME + weights(actor) + kv + CPU_ACTIVATIONS, 0.0


def problems(values: dict) -> list[str]:
    cluster, pool = values["ray"]["cluster"], values["pool"]
    nodes = cluster["modelWorkers"]
    gpu_bytes = nodes["gpuMemoryGiB"] * GiB
    cpus, gpus = quantity(nodes["resources"]["limits"]["cpu"]), nodes["gpusPerWorker"]
    found = []
    actors = {kind: (pool[kind], *actor_memory(pool[kind], gpu_bytes)) for kind in ("gen", "stream")}
    for kind, (actor, _, gpu) in actors.items():
        if actor["device"].startswith("cuda") and not actor["actorGpus"]:
            found.append(f"{kind}: device {actor['device']} but no GPU asked for (actorGpus)")
        elif gpu > actor["actorGpus"] * gpu_bytes:
            found.append(f"{kind}: needs {gpu / GiB:.1f} GiB of GPU memory, its share ({actor['actorGpus']} of "
                         f"{nodes['gpuMemoryGiB']} GiB) holds {actor['actorGpus'] * gpu_bytes / GiB:.1f}")
    (gen, gen_host, _), (stream, stream_host, _) = actors["gen"], actors["stream"]
    mixes = [(g, s) for g, s in itertools.product(range(gen["actors"] + 1), range(stream["actors"] + 1))
             if g * gen["actorCpus"] + s * stream["actorCpus"] <= cpus and g * gen["actorGpus"] + s * stream["actorGpus"] <= gpus]
    g, s = max(mixes, key=lambda m: m[0] * gen_host + m[1] * stream_host)
    store = cluster["objectStoreMemory"]
    pods = {"ray model worker": (RAY_NODE + store + g * gen_host + s * stream_host, nodes["resources"]),
            "ray head": (RAY_HEAD + store, cluster["head"]["resources"]),
            "moderation's ray node": (RAY_NODE / 2 + values["ray"]["driverNode"]["objectStoreMemory"],
                                      values["ray"]["driverNode"]["resources"])}
    for pod, (need, resources) in pods.items():
        limit = quantity(resources["limits"]["memory"])
        if need > limit:
            holding = f" ({g} Gen + {s} Stream actors)" if pod == "ray model worker" else ""
            found.append(f"{pod}: may need {need / GiB:.1f} GiB{holding}, its memory limit is {limit / GiB:.1f} GiB")
    return found


@pytest.mark.parametrize("name,overrides", [("default", {}), ("cpu", CPU), ("production", PRODUCTION)])
def test_every_values_file_fits_its_pods_and_gpus(name, overrides):
    assert problems(merged(overrides)) == []


def test_a_pool_that_outgrows_its_pods_is_caught():
    # the former defaults: Stream-4B in float32 on CPU; four of them (2 CPUs each) fit one 8-CPU, 48 Gi pod
    old = merged({"ray": {"cluster": {"modelWorkers": {"resources": {"limits": {"memory": "48Gi"}}}}},
                  "pool": {"gen": {"model": "Qwen/Qwen3Guard-Gen-4B", "actors": 4},
                           "stream": {"model": "Qwen/Qwen3Guard-Stream-4B", "actors": 4, "actorGpus": 0, "device": "cpu",
                                      "dtype": "float32", "kvCacheMb": 4096}}})
    (found,) = problems(old)
    assert found.startswith("ray model worker: may need") and "(0 Gen + 4 Stream actors)" in found, found
    greedy = merged({"pool": {"stream": {"kvCacheMb": 96 * 1024}}})
    assert [p for p in problems(greedy) if p.startswith("stream: needs")]
    assert problems(merged({"pool": {"gen": {"actorGpus": 0}}})) == ["gen: device cuda but no GPU asked for (actorGpus)"]
