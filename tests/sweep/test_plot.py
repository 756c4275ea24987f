"""The pictures render headless (matplotlib's Agg, no display) into PNGs and one self-contained page."""
import re

import pytest

from sweep.errors import SweepError
from sweep.figures import plot
from sweep_fixtures import tiny_result  # noqa: F401 - fixtures

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_renders_pngs_and_a_self_contained_page(tiny_result, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    _, results = tiny_result
    out = plot(results, tmp_path)
    names = sorted(p.rsplit("/", 1)[1] for p in out["pngs"])
    assert names == ["layers_p%d.png" % out["point"], "pareto_area_luts.png", "pareto_macs_per_cycle.png",
                     "pareto_onchip_bits.png"]
    for p in out["pngs"]:
        data = open(p, "rb").read()
        assert data.startswith(PNG) and len(data) > 5000
    page = open(out["html"]).read()
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", page)  # nothing fetched from elsewhere
    assert "<table>" in page and "addEventListener('click'" in page and "★" in page
    assert "resource proxy" in page and "not an area estimate" in page


def test_the_chosen_point_is_the_fastest_unless_given(tiny_result, tmp_path):
    result, results = tiny_result
    ok = result.results[result.results["status"] == "ok"]
    fastest = ok.groupby("point")["latency_us"].prod().idxmin()
    assert plot(results, tmp_path)["point"] == fastest
    assert plot(results / "results.parquet", tmp_path, point=0, y="throughput_ips")["point"] == 0
    with pytest.raises(SweepError, match="--point 99: no such point"):
        plot(results, tmp_path, point=99)
    with pytest.raises(SweepError, match="no sweep results here"):
        plot(tmp_path / "nothing", tmp_path)


def test_formats_and_fidelity_get_their_own_figures(tmp_path):
    from sweep.runner import execute

    spec = {"sweep": {"base": "tiny", "fidelity": 1, "formats": ["bfp-e8m7b8", "bfp-e8m3b8"]},
            "models": [{"zoo": "tiny_cnn"}], "space": {"tile_engines": [1, 2]}}
    result = execute(spec, cache_dir=tmp_path / "cache", local=True)
    names = {p.rsplit("/", 1)[1] for p in plot(result, tmp_path)["pngs"]}
    assert {"formats.png", "fidelity.png"} <= names
