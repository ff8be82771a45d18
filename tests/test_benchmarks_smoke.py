"""The benchmark scripts run end to end at tiny settings (seconds), so that they cannot rot.

Only that they run and write well-formed JSON is checked: a test never asserts a timing.
"""
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module", autouse=True)
def benchmarks_on_path():
    """The scripts import each other as top-level modules from their folder."""
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


def read(results_dir: Path, name: str) -> dict:
    (path,) = results_dir.glob(f"{name}_*.json")
    return json.loads(path.read_text())


def test_throughput_runs(tmp_path):
    import throughput

    threads = torch.get_num_threads()
    throughput.main(["--device", "cpu", "--methods", "simclr", "dino", "--width", "2", "--batch-size", "4",
                     "--workers", "0", "1", "--rounds", "1", "--steps", "1", "--results-dir", str(tmp_path)])
    assert torch.get_num_threads() == threads  # the cpu clock's one thread ends with the run
    result = read(tmp_path, "throughput")
    assert set(result["methods"]) == {"simclr", "dino"}
    assert result["settings"]["clock"] == "cpu" and result["torch_threads"] == 1
    for method in result["methods"].values():
        assert set(method["images_per_s"]) == {"coursekit", "lightly", "ceiling"}
        assert set(method["lightly_images_per_s_by_workers"]) == {"0", "1"}
        best = method["lightly_images_per_s_by_workers"][str(method["lightly_best_workers"])]
        assert best == max(method["lightly_images_per_s_by_workers"].values()) == method["images_per_s"]["lightly"]
        for ratio in ("coursekit_over_lightly", "coursekit_over_ceiling"):
            assert 0 < method[ratio]["min"] <= method[ratio]["median"]
    assert "load_average_1min_start" in result and result["versions"]["lightly"]


def test_throughput_times_fits_steps_between_the_clock_marks():
    """A round is one fit call; the clock is read after step `lead` and after the last step, and
    a lightly round takes exactly lead + steps batches from its DataLoader."""
    import throughput

    settings = throughput.Settings(width=2, batch_size=4)
    device = torch.device("cpu")
    images = throughput.random_images(40, 32, seed=0)
    readings = iter([10.0, 12.0])
    coursekit = throughput.coursekit_pipeline("simclr", settings, images, device)
    before = [p.clone() for p in coursekit.method.parameters()]
    assert coursekit.images_per_second(settings, 3, lambda: next(readings), device, seed=0) == 3 * 4 / 2.0
    assert any(not torch.equal(a, b) for a, b in zip(before, coursekit.method.parameters()))  # fit trained it

    dataset = throughput.TimedBatches(throughput.PILViews(images, throughput.lightly_transform("simclr", 32)))
    lightly = throughput.lightly_pipeline("simclr", settings, images, dataset, 1, 2, device, "wall")
    readings = iter([0.0, 4.0])
    assert lightly.images_per_second(settings, 2, lambda: next(readings), device, seed=0) == 2 * 4 / 4.0
    assert lightly.lead == 3 and [worker for worker, _ in lightly.method.stamps] == [0] * 5
    assert lightly.method.batches is None  # the round ended its DataLoader workers


def test_workers_seconds_counts_each_workers_time_after_the_lead():
    import throughput

    stamps = [(0, 1.0), (1, 2.0), (0, 1.5), (1, 2.5), (0, 2.25), (1, 3.0), (0, 3.0)]
    assert throughput.workers_seconds(stamps, lead=3) == (3.0 - 1.5) + (3.0 - 2.0)


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_ceiling_trains_on_views_made_once(method):
    """The ceiling's method sets its documented ``views`` attribute: whatever images fit hands it,
    its training_step sees the same views (the real recipe makes new ones)."""
    import throughput

    settings = throughput.Settings(width=2, batch_size=4)
    images = throughput.random_images(8, 32, seed=0)
    losses = {}
    for ceiling in (False, True):
        model = throughput.coursekit_pipeline(method, settings, images, torch.device("cpu"), ceiling=ceiling).method
        losses[ceiling] = [model.training_step(batch, torch.Generator().manual_seed(seed)).item()
                           for batch, seed in ((images[:4], 1), (images[4:], 2))]
    assert losses[True][0] == losses[True][1] and losses[False][0] != losses[False][1]


@pytest.mark.parametrize("size, jitter, blur", [(32, 0.4, 0.0), (96, 0.8, 0.5)])
def test_lightly_simclr_transform_follows_coursekit_recipe(size, jitter, blur):
    """SimCLR's recipe: half-strength jitter and no blur up to 64 px, full jitter and blur above."""
    import throughput

    ops = throughput.lightly_transform("simclr", size).transforms[0].transform.transforms
    by_name = {type(op).__name__: op for op in ops}  # lightly picks torchvision's v1 or v2 classes
    crop, blur_op, jitter_op = by_name["RandomResizedCrop"], by_name["GaussianBlur"], by_name["RandomApply"].transforms[0]
    assert crop.size == (size, size) and blur_op.prob == blur
    assert jitter_op.brightness == pytest.approx((1 - jitter, 1 + jitter))
    assert blur_op.sigmas == pytest.approx((0.1 * size / 224, 2.0 * size / 224))


def test_lightly_dino_transform_has_the_recipes_views():
    import throughput

    views = throughput.lightly_transform("dino", 32)(throughput.TF.to_pil_image(throughput.random_images(1, 32, 0)[0]))
    assert [tuple(view.shape) for view in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 6


def test_worker_counts_and_cpu_clock_checks():
    import common
    import throughput

    assert throughput.worker_counts(2) == [0, 1, 2] and throughput.worker_counts(16) == [0, 1, 2, 4, 8, 16]
    with pytest.raises(ValueError, match="needs the CPU device"):
        common.make_clock("cpu", torch.device("cuda"))
    with pytest.raises(SystemExit):
        throughput.parse_args(["--steps", "0"])


def test_quality_runs(tmp_path):
    import quality

    quality.main(["--device", "cpu", "--epochs", "1", "--train-images", "32", "--test-images", "16",
                  "--width", "2", "--batch-size", "16", "--workers", "0", "--seeds", "0", "1",
                  "--results-dir", str(tmp_path)])
    result = read(tmp_path, "quality")
    methods = result["datasets"]["fashion_mnist"]["methods"]
    assert set(methods) == {"simclr", "byol"}
    for runs in methods.values():
        for implementation in ("coursekit", "lightly"):
            assert set(runs[implementation]) == {"0", "1"}
            for seed_run in runs[implementation].values():
                assert len(seed_run["knn_accuracy_per_epoch"]) == 1
                assert 0 <= seed_run["final_knn_accuracy"] <= 1
        assert len(runs["coursekit_minus_lightly_points"]["per_seed"]) == 2


def test_knn_methods_runs(tmp_path):
    import knn_methods

    knn_methods.main(["--profile", "smoke", "--methods", "simclr", "mae", "--seeds", "0", "1", "--epochs", "1",
                      "--train-images", "128", "--test-images", "32", "--results-dir", str(tmp_path)])
    for method, protocol in (("simclr", "knn"), ("mae", "linear")):
        result = read(tmp_path, f"knn_methods_{method}")
        assert set(result["runs"]) == {"0", "1"}
        for report in result["runs"].values():
            assert report["protocol"] == protocol and report["steps"] == 2 and report["cpu_seconds"] > 0
            assert set(report[protocol]) == {"random_init", "pretrained"}
    table = (tmp_path / "knn_methods_cpu.md").read_text()
    assert "| simclr | knn | 0,1 |" in table and "| mae | linear | 0,1 |" in table


def test_knn_methods_keeps_other_seeds_of_the_same_recipe(tmp_path):
    import knn_methods

    small = ["--profile", "smoke", "--methods", "simclr", "--epochs", "1", "--train-images", "128",
             "--test-images", "32", "--results-dir", str(tmp_path)]
    knn_methods.main([*small, "--seeds", "1"])
    knn_methods.main([*small, "--seeds", "0"])  # e.g. a second process: seed 1 stays
    assert set(read(tmp_path, "knn_methods_simclr")["runs"]) == {"0", "1"}
    assert "| simclr | knn | 0,1 |" in (tmp_path / "knn_methods_cpu.md").read_text()  # seeds in order
    path = tmp_path / "knn_methods_simclr_cpu.json"
    saved = json.loads(path.read_text())
    saved["recipe"]["base_lr"] *= 2  # runs of another recipe do not belong in this one's table
    path.write_text(json.dumps(saved))
    knn_methods.main([*small, "--seeds", "2"])
    assert set(read(tmp_path, "knn_methods_simclr")["runs"]) == {"2"}


@pytest.mark.parametrize("method", ["simclr", "mae"])
def test_the_command_reproduces_the_benchmark_row_of_its_seed(tmp_path, method):
    """coursekit pretrain --report with the profile's sizes and --seed 1 scores what knn_methods.py reports
    for seed 1: the same images, initial weights, training and protocol (issue 22 item 8)."""
    import knn_methods
    from coursekit.cli import main

    knn_methods.main(["--profile", "smoke", "--methods", method, "--seeds", "1", "--test-images", "128",
                      "--results-dir", str(tmp_path)])
    benchmark = read(tmp_path, f"knn_methods_{method}")["runs"]["1"]
    report_path = tmp_path / "command.json"
    assert main(["pretrain", "--method", method, "--profile", "smoke", "--device", "cpu", "--seed", "1",
                 "--num-test", "128", "--report", str(report_path)]) == 0
    command = json.loads(report_path.read_text())
    assert command["steps"] == benchmark["steps"]
    for protocol in {"knn", benchmark["protocol"]}:
        for key in ("random_init", "pretrained"):
            assert command[protocol][key] == pytest.approx(benchmark[protocol][key], abs=1e-4), (protocol, key)


def test_knn_methods_keeps_the_seed_0_run_for_the_lessons(tmp_path, monkeypatch):
    import knn_methods
    from coursekit.data import load_images
    from coursekit.profile import get_profile
    from coursekit.recipes import get_recipe, load_or_pretrain

    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "cache"))
    knn_methods.main(["--profile", "smoke", "--methods", "byol", "--seeds", "0", "--test-images", "32",
                      "--results-dir", str(tmp_path), "--keep-checkpoints"])
    profile = get_profile("smoke", device="cpu")
    train_set = load_images(profile.dataset, "train", n=profile.num_train,
                            image_size=get_recipe("byol", "smoke").image_size, seed=0)  # a lesson's data
    _, _, status = load_or_pretrain("byol", train_set.images, profile.checkpoint_dir("byol"), seed=0,
                                    profile_name="smoke", device="cpu", progress=False)
    assert status == "loaded"


def test_suite_time_runs(tmp_path):
    import suite_time

    suite_time.main(["--tests", "tests/test_profile.py", "--notebooks", "--results-dir", str(tmp_path)])
    result = read(tmp_path, "suite")
    assert result["unit_tests"]["seconds"] > 0 and "returncode" in result["unit_tests"]
    assert result["notebooks"] == {}


def test_augment_runs(tmp_path):
    import augment

    augment.main(["--device", "cpu", "--batch-size", "8", "--repeats", "1", "--results-dir", str(tmp_path)])
    result = read(tmp_path, "augment")
    assert result["settings"]["clock"] == "cpu" and result["torch_threads"] == 1
    assert result["images_per_s"]["coursekit_batched"] > 0 and result["images_per_s"]["torchvision_v2_per_image_cpu"] > 0


def test_folder_streaming_runs(tmp_path):
    import folder_streaming

    folder_streaming.main(["--device", "cpu", "--sizes", "32", "--num-images", "24", "--batch-size", "4",
                           "--width", "2", "--warmup", "1", "--rounds", "1", "--steps", "1", "--counts", "20",
                           "--memory-size", "32", "--memory-batch-size", "4", "--workers", "0",
                           "--results-dir", str(tmp_path)])
    result = read(tmp_path, "folder_streaming")
    assert set(result["throughput"]["32px"]) == {"in_memory", "folder", "in_memory_data_only", "folder_data_only",
                                                  "folder_over_in_memory"}
    assert set(result["peak_rss_mb"]["20"]) == {"folder", "in_memory"}


def test_epochs_curve_runs(tmp_path):
    import epochs_curve

    result = epochs_curve.main(["--profile", "smoke", "--method", "simclr", "--epochs", "2", "1",
                                "--train-images", "128", "--test-images", "32", "--results-dir", str(tmp_path)])
    saved = read(tmp_path, "epochs_curve_simclr")
    assert [run["epochs"] for run in saved["runs"]] == [1, 2]  # sorted: the curve's x
    assert [run["steps"] for run in saved["runs"]] == [2, 4]  # 128 images, batch 64
    assert 0 <= saved["raw_pixel_knn"] <= 1 and saved["raw_pixel_knn"] == result["raw_pixel_knn"]
    assert (tmp_path / "epochs_curve_simclr_cpu.png").stat().st_size > 0
    with pytest.raises(SystemExit):  # a one-line usage error before any training
        epochs_curve.main(["--profile", "smoke", "--epochs", "0", "--results-dir", str(tmp_path)])


def test_queue_ablation_runs_the_three_rows_per_seed(tmp_path):
    import queue_ablation

    queue_ablation.main(["--profile", "smoke", "--batch-size", "16", "--epochs", "1", "--seeds", "0", "1",
                         "--train-images", "64", "--test-images", "32", "--results-dir", str(tmp_path)])
    saved = read(tmp_path, "queue_ablation_b16_e1")
    rows = list(saved["knn"])
    assert len(rows) == 3 and rows[0].startswith("SimCLR (30 negatives)") and rows[2].endswith("K = 16 (one batch)")
    assert all(len(scores) == 2 and all(0 <= s <= 1 for s in scores) for scores in saved["knn"].values())
    with pytest.raises(SystemExit):  # a one-line usage error before any training
        queue_ablation.main(["--profile", "smoke", "--batch-size", "1", "--results-dir", str(tmp_path)])


@pytest.mark.slow
def test_transfer_runs_in_parts_and_reports_every_seed(tmp_path, monkeypatch):
    """Scratch first, then SSL with the shipped backbones: the second call reuses the first's runs and
    the report holds both, one score per seed, plus the majority-class mIoU."""
    pytest.importorskip("ultralytics")
    import transfer

    monkeypatch.chdir(tmp_path)  # ultralytics writes next to the working folder
    tiny = ["--work", str(tmp_path / "work"), "--small", "4", "--all", "6", "--test", "6", "--seeds", "0", "1",
            "--epochs-scale", "0.02"]
    transfer.main(tiny + ["--inits", "scratch"])
    finished = sorted(p.name for p in (tmp_path / "work" / "results").iterdir())
    assert len(finished) == 2 * 2 * 2  # tasks x regimes x seeds
    transfer.main(tiny + ["--report", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(list((tmp_path / "work" / "results").iterdir())) == 2 * 2 * 2 * 2  # x inits
    for task in ("detection", "segmentation"):
        assert {regime: row["labels"] for regime, row in report[task].items()} == {"small": 4, "all": 6}
        for row in report[task].values():
            assert len(row["ssl"]) == len(row["scratch"]) == 2
            assert all(0 <= score <= 1 for score in row["ssl"] + row["scratch"])
    assert 0 < report["segmentation"]["small"]["majority_class"] < 1


def test_transfer_refuses_bad_arguments_before_training(tmp_path, capsys):
    import transfer

    with pytest.raises(SystemExit):
        transfer.main(["--work", str(tmp_path), "--small", "50", "--all", "10"])
    assert "--small" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        transfer.main(["--work", str(tmp_path), "--detection-backbone", "no-such-run"])
    assert "no shipped run called 'no-such-run'" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_frozen_probe_reads_a_shipped_run_a_checkpoint_folder_and_random(tmp_path):
    """Three kinds of backbone, one decoder each, scored; a name that is none of them is refused first."""
    pytest.importorskip("ultralytics")
    import frozen_probe
    from coursekit.cli import main as coursekit_main

    run = tmp_path / "run"
    assert coursekit_main(["pretrain", "--method", "simclr", "--profile", "smoke", "--dataset", "shapes",
                           "--backbone", "yolo11n", "--image-size", "64", "--num-images", "64", "--num-test", "32",
                           "--batch-size", "32", "--epochs", "1", "--checkpoint-dir", str(run)]) == 0
    report = tmp_path / "probe.json"
    tiny = ["--masks", "4", "--test", "4", "--epochs-scale", "0.01", "--report", str(report)]
    assert frozen_probe.main(["scenes-yolo11n-simclr", str(run), "random", *tiny]) == 0
    probes = json.loads(report.read_text())["probes"]
    assert list(probes) == ["scenes-yolo11n-simclr", str(run), "random"]
    assert all(len(runs) == 1 and 0 < runs[0]["miou"] <= 1 for runs in probes.values())


def test_frozen_probe_refuses_what_is_not_a_yolo11n_backbone(tmp_path, capsys):
    import frozen_probe

    with pytest.raises(SystemExit):
        frozen_probe.main(["no-such-run", "--masks", "4"])
    assert "no shipped run called 'no-such-run'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        frozen_probe.main(["fmnist-simclr"])
    assert "this probe reads YOLO11n backbones" in capsys.readouterr().err


def test_label_fractions_stores_the_lesson_07_table_and_leaves_the_runs_in_the_cache(tmp_path, monkeypatch, capsys):
    """The five runs are trained into the cache (then finished, so lesson 07 would score them live),
    and the stored table has every row and protocol the lesson prints."""
    import label_fractions
    from coursekit.engine import finished_run
    from coursekit.evaluate import table_from_json
    from coursekit.profile import get_profile

    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "cache"))
    profile = get_profile("smoke")
    assert not any(finished_run(profile.checkpoint_dir(name)) for name in label_fractions.METHODS)
    report_path = tmp_path / "label_fractions.json"
    label_fractions.main(["--profile", "smoke", "--report", str(report_path)])
    assert all(finished_run(profile.checkpoint_dir(name)) for name in label_fractions.METHODS)
    report = json.loads(report_path.read_text())
    table = table_from_json(report["table"])
    assert report["profile"] == "smoke" and report["fine_tune_steps"] > 0
    assert {"raw pixels", "supervised", *label_fractions.METHODS} <= set(table)
    assert [row for row in table if "fine_tune" in table[row]] == ["simclr"]
    assert all(set(by_fraction) == {0.01, 0.1, 1.0} for row in table.values() for by_fraction in row.values())
    assert capsys.readouterr().out.count(": trained\n") == len(label_fractions.METHODS)
    with pytest.raises(SystemExit):  # a one-line usage error before any training
        label_fractions.main(["--profile", "smoke", "--draws", "0", "--report", str(report_path)])


def test_t4_estimate_scales_one_measured_step_to_the_full_recipe(tmp_path):
    import t4_estimate

    out = tmp_path / "t4.json"
    t4_estimate.main(["--lessons", "06", "--batches", "1", "2", "--tflops", "10", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["assumptions"]["sustained_tflops_fp16"] == 10 and result["assumptions"]["small_batches"] == [1, 2]
    (row,) = result["runs"]
    assert row["lesson"] == "06" and row["method"] == "mae" and row["batch"] == 512 and row["steps"] == 30 * (50000 // 512)
    assert row["flops_linearity"] == pytest.approx(1.0, rel=0.05)  # FLOPs grow with the batch
    minutes = row["flops_per_image"] * row["batch"] * row["steps"] / 10e12 / 60
    assert row["t4_minutes"] == pytest.approx(minutes, abs=0.051)
    assert result["lessons"]["06"]["t4_minutes"] == row["t4_minutes"]
