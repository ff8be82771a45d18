"""The benchmark scripts run end to end at tiny settings (seconds), so that they cannot rot.

Only that they run and write well-formed JSON is checked: a test never asserts a timing.
"""
import json
import sys
from pathlib import Path

import pytest

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

    throughput.main(["--device", "cpu", "--methods", "simclr", "dino", "--width", "2", "--batch-size", "4",
                     "--num-images", "16", "--workers", "0", "--warmup", "1", "--rounds", "1", "--steps", "1",
                     "--results-dir", str(tmp_path)])
    result = read(tmp_path, "throughput")
    assert set(result["methods"]) == {"simclr", "dino"}
    for method in result["methods"].values():
        assert set(method["images_per_s"]) == {"coursekit", "lightly", "ceiling"}
        assert method["coursekit_over_lightly"] > 0 and method["coursekit_over_ceiling"] > 0
    assert "load_average_1min_start" in result and result["versions"]["lightly"]


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


def test_suite_time_runs(tmp_path):
    import suite_time

    suite_time.main(["--tests", "tests/test_profile.py", "--notebooks", "--results-dir", str(tmp_path)])
    result = read(tmp_path, "suite")
    assert result["unit_tests"]["seconds"] > 0 and "returncode" in result["unit_tests"]
    assert result["notebooks"] == {}


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
