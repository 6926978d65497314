import json

from phenexplain.bench import bench_ingest, bench_synth


def test_bench_synth_reports_one_json_line_per_worker_count():
    lines = list(bench_synth(fields=1, workers=[1]))
    assert len(lines) == 1
    line = json.loads(json.dumps(lines[0]))
    assert set(line) == {"name", "value", "unit", "config"}
    assert line["name"] == "synth_fields_per_s" and line["unit"] == "fields/s"
    assert (
        line["config"]["workers"] == 1 and line["config"]["fields"] == 7
    )  # one per dose condition
    assert 0 < line["value"] < 1000


def test_bench_ingest_counts_fields_and_crops():
    (line,) = bench_ingest(fields=7, workers=[2])
    assert line["name"] == "ingest_fields_per_s" and line["unit"] == "fields/s"
    assert line["config"]["fields"] == 7 and line["config"]["crops"] > 50
    assert line["value"] > 0
