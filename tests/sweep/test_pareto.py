import pandas as pd
import pytest

from sweep.fronts import pareto


def frame():
    return pd.DataFrame({"point": range(7), "model": ["a"] * 5 + ["b"] * 2,
                         "cost": [1, 2, 2, 3, 4, 1, 2], "latency_us": [10, 6, 8, 6, 3, 5, 4.0],
                         "throughput_ips": [1e5, 1.6e5, 1.2e5, 1.6e5, 3.3e5, 2e5, 2.5e5]})


def test_the_front_keeps_what_nothing_beats_sorted_by_x():
    df = frame()[lambda d: d.model == "a"]
    assert list(pareto(df, "cost", "latency_us")["point"]) == [0, 1, 4]
    assert list(pareto(df, "cost", "throughput_ips")["point"]) == [0, 1, 4]  # throughput is maximised
    assert list(pareto(df, "cost", "latency_us", maximize={"cost"})["point"]) == [4]


def test_fronts_per_group_and_missing_values():
    df = frame()
    df.loc[4, "latency_us"] = None  # a failed point takes no part
    front = pareto(df, "cost", "latency_us", by="model")
    assert list(zip(front["model"], front["point"])) == [("a", 0), ("a", 1), ("b", 5), ("b", 6)]
    with pytest.raises(KeyError, match="no column 'area'"):
        pareto(df, "area", "latency_us")
