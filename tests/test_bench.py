import json

import pytest

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


def test_network_benchmarks_report_speed_flops_and_memory():
    from phenexplain.bench import bench_generate, bench_train

    train = list(bench_train(8, 64, 16, batch=4, z_dim=16, steps=16, repeats=2, threads=1))
    names = [x["name"] for x in train]
    assert names == ["train_img_per_s", "train_effective_gflop_s", "conv_ceiling_gflop_s",
                     "train_fraction_of_conv_ceiling", "train_peak_rss"]  # fmt: skip
    speed, effective, ceiling, fraction, _ = (x["value"] for x in train)
    assert speed > 0 and train[0]["config"]["resolution"] == 8
    assert train[0]["config"]["img_per_s"]["repeats"] == 2
    per_image = train[1]["config"]["gflop_per_image"]
    assert effective == pytest.approx(per_image * speed, abs=0.01)  # rounded to 0.01
    assert fraction == pytest.approx(effective / ceiling, abs=0.01)
    gen = list(bench_generate(8, 64, 16, batch=8, z_dim=16, batches=2, map_n=2000, threads=1))
    assert [x["name"] for x in gen] == [
        "generate_img_per_s",
        "generate_effective_gflop_s",
        "mapping_seconds",
        "generate_peak_rss",
    ]
    # a training image costs more than G's forward pass: G and D, forward and backward
    assert per_image > 3 * gen[1]["config"]["gflop_per_image"]
    assert (
        gen[0]["value"] > 0 and gen[2]["value"] >= 0 and gen[3]["value"] > 0
    )  # mapping may round to 0


def test_flops_are_counted_with_torchs_formulas_under_autograd_grad():
    import torch

    from phenexplain.bench import _flop

    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    w = torch.randn(1, 1, 3, 3)
    assert _flop(lambda: torch.nn.functional.conv2d(x, w, padding=1)) == 2 * 16 * 9

    # a gradient through autograd.grad (as R1 takes it) counts the backward convolution too
    def r1():
        y = torch.nn.functional.conv2d(x, w, padding=1).sum()
        torch.autograd.grad(y, x)

    assert _flop(r1) == 2 * (2 * 16 * 9)


def test_bench_translate_reports_crops_per_s_with_and_without_refinement():
    from phenexplain.bench import bench_translate

    plain, refined = bench_translate(crops=8, crop_size=32, refine_crops=2, refine_steps=2,
                                     repeats=1)  # fmt: skip
    assert plain["name"] == "translate_crops_per_s" and plain["value"] > 0
    assert plain["config"]["crops"] == 8 and plain["config"]["resolution"] == 32
    assert refined["name"] == "translate_refined_crops_per_s" and refined["value"] > 0
    assert refined["config"]["refine_steps"] == 2


@pytest.mark.slow  # inductor compiles G's forward: tens of seconds on 2 cores
def test_bench_generate_compiled_reports_its_compile_time_and_speed():
    from phenexplain.bench import bench_generate

    gen = list(bench_generate(8, 64, 16, batch=8, z_dim=16, batches=2, map_n=2000, threads=1,
                              repeats=1, compile=True))  # fmt: skip
    compile_seconds = next(x for x in gen if x["name"] == "generate_compile_seconds")
    assert compile_seconds["value"] > 0
    assert gen[0]["config"]["compiled"] is True and gen[0]["value"] > 0


def test_bench_train_refuses_compile_with_the_reason():
    from typer.testing import CliRunner

    from phenexplain.cli import app

    result = CliRunner().invoke(app, ["bench", "train", "--compile"])
    assert result.exit_code == 2
    assert "bench generate" in result.output
