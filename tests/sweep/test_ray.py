"""Sweeps on Ray: the default local Ray (one start in the default run), a two-node cluster, and the
100-point ResNet-50 + LSTM sweep of issue 13 (both marked slow)."""
import copy
import importlib.util
import tempfile
import time
from pathlib import Path

import pytest

from sweep.runner import execute
from sweep_fixtures import tiny_spec, tiny_result  # noqa: F401 - fixtures

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]


def test_local_ray_gives_the_serial_results_and_records_the_node(tiny_spec, tiny_result, tmp_path):
    result = execute(tiny_spec, cache_dir=tmp_path, num_cpus=2)
    assert not ray.is_initialized()  # the sweep started Ray, so it shut it down
    df, serial = result.results, tiny_result[0].results
    assert result.stats["mode"] == "ray" and result.stats["computed"] == 8
    ok = df[df["status"] == "ok"]
    assert len(ok) == 8 and len(set(ok["node_id"])) == 1 and ok["node_id"].iloc[0] != "local"
    assert len(ok["node_id"].iloc[0]) == 56 and ok["hostname"].notna().all()  # Ray's hex node id
    cols = ["point", "model", "status", "latency_us", "utilization", "total_cycles"]
    assert df[cols].equals(serial[cols])


@pytest.mark.slow
def test_a_two_node_cluster_shares_the_work(tiny_spec, tmp_path):
    from ray.cluster_utils import Cluster

    spec = copy.deepcopy(tiny_spec)
    spec["space"] = {"tile_engines": [1, 2, 3], "dpe_lanes": [1, 2, 4, 8]}
    # a short folder: Ray's socket paths under it must fit in 107 characters
    temp = tempfile.mkdtemp(prefix="ray2n-", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": temp})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        result = execute(spec, cache_dir=tmp_path, address=cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    df = result.results
    assert (df["status"] == "ok").all() and result.stats["computed"] == 24
    nodes = df["node_id"].value_counts()
    print(f"units per node: {nodes.to_dict()}")
    assert len(nodes) == 2 and result.stats["nodes"] == sorted(nodes.index)


@pytest.mark.slow
def test_a_ray_client_address(tiny_spec, tmp_path):
    import socket

    from ray.cluster_utils import Cluster

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="raycl-", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "temp_dir": temp,
                                                            "ray_client_server_port": port})
    try:
        result = execute(tiny_spec, cache_dir=tmp_path, address=f"ray://127.0.0.1:{port}")
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result.stats["mode"] == f"ray (ray://127.0.0.1:{port})" and result.stats["computed"] == 8
    assert len(result.stats["nodes"]) == 1


@pytest.mark.slow
def test_a_100_point_resnet50_and_lstm_sweep_and_its_cached_rerun(tmp_path):
    spec_of = importlib.util.spec_from_file_location("bench_sweep", ROOT / "benchmarks" / "bench_sweep.py")
    bench = importlib.util.module_from_spec(spec_of)
    spec_of.loader.exec_module(bench)
    spec = bench.spec(input_size=64)
    first = execute(spec, cache_dir=tmp_path)
    assert first.stats["points"] == 100 and first.stats["units"] == 200 and first.stats["mode"] == "ray"
    assert set(first.results["model"]) == {"resnet50-64", "lstm"}
    assert (first.results["status"] == "ok").mean() > 0.9
    t0 = time.perf_counter()
    again = execute(spec, cache_dir=tmp_path)
    elapsed = time.perf_counter() - t0
    print(f"first {first.stats['time_s']:.1f} s, cached re-run {elapsed:.1f} s")
    assert again.stats["computed"] == 0 and elapsed < bench.CACHED_TARGET_S
    assert again.results[["point", "model", "latency_us"]].equals(first.results[["point", "model", "latency_us"]])
