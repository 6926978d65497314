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


def test_network_benchmarks_report_speed_and_memory():
    from phenexplain.bench import bench_generate, bench_train

    train = list(bench_train(8, 64, 16, batch=4, z_dim=16, steps=16, threads=1))
    assert [x["name"] for x in train] == ["train_img_per_s", "train_peak_rss"]
    assert train[0]["value"] > 0 and train[0]["config"]["resolution"] == 8
    gen = list(bench_generate(8, 64, 16, batch=8, z_dim=16, batches=2, map_n=2000, threads=1))
    assert [x["name"] for x in gen] == [
        "generate_img_per_s",
        "mapping_seconds",
        "generate_peak_rss",
    ]
    assert (
        gen[0]["value"] > 0 and gen[1]["value"] >= 0 and gen[2]["value"] > 0
    )  # mapping may round to 0
