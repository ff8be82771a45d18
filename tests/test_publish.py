"""Published lessons: outputs of a real run, stamped, never stale; homework stays without outputs."""
import base64
import hashlib
import io
import re
from pathlib import Path

import nbformat
import pytest

from coursekit.profile import cache_dir

from coursekit.notebooks import (COMPARE_TAG, is_stale, markdown_sha256, publication, publish, shrink_png, source_sha256,
                                 staleness)

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p.relative_to(ROOT) for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", LESSONS, ids=str)
def test_published_lesson_outputs_come_from_its_current_code(path):
    notebook = nbformat.read(ROOT / path, as_version=4)
    stamp = publication(notebook)
    if stamp is None:
        pytest.skip("not published yet")
    assert set(stamp) == {"profile", "device", "date", "seconds", "load_average", "cache", "cells_over_a_minute", "source_sha256", "markdown_sha256",
                          "values"}
    assert not staleness(notebook), (
        f"{path}: {'; '.join(staleness(notebook))} since its outputs were made ({stamp['date']}); "
        f"run `coursekit publish {path}`")


def _announced_seconds(markdown: str) -> list[float]:
    """The times a "**Time:** ..." paragraph of a markdown cell announces, in seconds."""
    notes = [paragraph for paragraph in markdown.split("\n\n") if paragraph.startswith("**Time:**")]
    return [float(number) * (60 if unit.startswith("minute") else 1)
            for note in notes for number, unit in re.findall(r"about ([\d.]+) (minutes?|seconds)", note)]


@pytest.mark.parametrize("path", LESSONS, ids=str)
def test_every_cell_over_a_minute_is_announced_with_its_measured_time(path):
    """A learner is told before a long cell how long it took when the lesson was published, and the
    note agrees with the stamp (within 20%, or 20 s): a republish that changes a time fails here."""
    notebook = nbformat.read(ROOT / path, as_version=4)
    stamp = publication(notebook)
    if stamp is None:
        pytest.skip("not published yet")
    for cell, seconds in stamp["cells_over_a_minute"].items():
        before = int(cell) - 1
        while notebook.cells[before].cell_type != "markdown":
            before -= 1
        announced = _announced_seconds(notebook.cells[before].source)
        assert any(abs(note - seconds) <= max(20, 0.2 * seconds) for note in announced), (
            f"{path}: cell {cell} took {seconds} s when published, but the markdown before it announces "
            f"{announced or 'no time'} (a paragraph starting **Time:** ... about N minutes)")


def test_source_sha256_is_of_the_code_cells_joined_by_nul():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("a = 1"), nbformat.v4.new_markdown_cell("text"), nbformat.v4.new_code_cell("b = 2")])
    assert source_sha256(notebook) == hashlib.sha256(b"a = 1\0b = 2").hexdigest()
    notebook.cells[1].source = "other text"  # prose may change without republishing
    assert source_sha256(notebook) == hashlib.sha256(b"a = 1\0b = 2").hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _recipe_fingerprint(method: str, profile: str) -> str:
    """Built here from the recipe itself, not with coursekit.provenance's helper."""
    import dataclasses
    import json

    from coursekit.recipes import get_recipe

    return _sha256(json.dumps(dataclasses.asdict(get_recipe(method, profile)), sort_keys=True, default=repr))


def _stamped(code: str = "a = 1", text: str = "# Title", values: dict | None = None):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text), nbformat.v4.new_code_cell(code)])
    notebook.metadata["coursekit"] = {"outputs": {"date": "2026-12-05T12:00Z", "source_sha256": _sha256(code),
                                                  "markdown_sha256": _sha256(text),
                                                  "values": values or {}}}
    return notebook


def test_changed_code_makes_a_published_notebook_stale():
    notebook = _stamped()
    assert not is_stale(notebook)
    notebook.cells[1].source = "a = 2"
    assert staleness(notebook) == ["its code cells changed"]
    assert not is_stale(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a = 1")])), "never published"


def test_changed_markdown_makes_a_published_notebook_stale():
    notebook = _stamped(text="Accuracy 71.1%.")
    assert markdown_sha256(notebook) == _sha256("Accuracy 71.1%.") and not is_stale(notebook)
    notebook.cells[0].source = "Accuracy 72.0%."
    assert [r.split(" (")[0] for r in staleness(notebook)] == ["its markdown cells changed"]


def test_a_changed_recipe_or_a_vanished_shipped_run_makes_a_published_notebook_stale(monkeypatch):
    from coursekit import recipes

    notebook = _stamped(values={"recipe:byol/demo": _recipe_fingerprint("byol", "demo")})
    assert not is_stale(notebook)
    changed = {**recipes._RECIPES["byol"]["demo"], "base_lr": recipes._RECIPES["byol"]["demo"]["base_lr"] * 2}
    monkeypatch.setitem(recipes._RECIPES["byol"], "demo", changed)
    assert staleness(notebook) == ["recipe:byol/demo changed since it was read"]
    monkeypatch.undo()
    gone = _stamped(values={"pretrained:no-such-run": _sha256("{}")})
    assert staleness(gone) == ["pretrained:no-such-run changed since it was read"]
    old_stamp = _stamped()
    del old_stamp.metadata["coursekit"]["outputs"]["values"]
    assert staleness(old_stamp) == ["its stamp does not record the coursekit values it read"]


def _png(width: int, height: int) -> str:
    from PIL import Image

    image = Image.new("RGB", (width, height), "white")
    for x in range(width):  # a gradient: many colours, as in a photo-like panel
        image.putpixel((x, height // 2), (x % 256, 0, 255 - x % 256))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_shrink_png_scales_wide_pictures_down_and_never_up():
    from PIL import Image

    def size(data):
        return Image.open(io.BytesIO(base64.b64decode(data))).size

    assert size(shrink_png(_png(1800, 600), max_width=900)) == (900, 300)
    assert size(shrink_png(_png(400, 300), max_width=900)) == (400, 300)


def _lesson(tmp_path: Path) -> Path:
    cells = [
        nbformat.v4.new_code_cell("import os\nprint('profile', os.environ['COURSEKIT_PROFILE'])",
                                  metadata={"tags": [COMPARE_TAG]}),
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(20, 4), dpi=100)\n"
            "ax.plot([0, 1], [0, 1])\nplt.show()"),
        nbformat.v4.new_code_cell("import sys\nfor i in range(3):\n    print(f'\\r{i}/2', end='', file=sys.stderr)"),
        nbformat.v4.new_code_cell("from coursekit.profile import cache_dir\nfrom coursekit.recipes import get_recipe\n"
                                  "lr = get_recipe('simclr').base_lr\n"
                                  "print(cache_dir(), sorted(p.name for p in cache_dir().glob('*')))"),
    ]
    cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="profile smoke\n")]
    cells[0].execution_count = 1
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_publish_runs_keeps_outputs_shrinks_pictures_and_stamps(tmp_path):
    from PIL import Image

    path = _lesson(tmp_path)
    stamp = publish(path, profile="smoke", timeout=120)
    notebook = nbformat.read(path, as_version=4)
    assert publication(notebook) == stamp and stamp["profile"] == "smoke"
    assert stamp["source_sha256"] == source_sha256(notebook) and not is_stale(notebook)
    figure = next(o for o in notebook.cells[1].outputs if "image/png" in o.get("data", {}))
    assert Image.open(io.BytesIO(base64.b64decode(figure["data"]["image/png"]))).width <= 900
    assert notebook.cells[2].outputs[0]["text"] == "2/2", "a progress bar keeps only its last state"
    cache, contents = notebook.cells[3].outputs[0]["text"].rsplit(" ", 1)
    assert contents.strip() == "[]" and cache != str(cache_dir()), "a publish runs with an empty cache of its own"
    assert stamp["values"] == {"profile:smoke": stamp["values"]["profile:smoke"],
                               "recipe:simclr/smoke": _recipe_fingerprint("simclr", "smoke")}
    assert isinstance(stamp["seconds"], int) and stamp["seconds"] >= 0 and stamp["load_average"] >= 0
    assert stamp["cells_over_a_minute"] == {} and stamp["cache"] == "empty"


def test_tidy_drops_progress_widgets_and_keeps_the_last_progress_state():
    from coursekit.notebooks import _tidy_outputs

    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                     "text/plain": "  0%|          | 0/80"}),
        nbformat.v4.new_output("stream", name="stderr", text="\r 10%|#  | 8/80\r100%|###| 80/80\nTrained.\n"),
    ]
    _tidy_outputs(cell)
    assert [o.output_type for o in cell.outputs] == ["stream"]
    assert cell.outputs[0]["text"] == "100%|###| 80/80\nTrained.\n"


def test_tidy_keeps_the_last_state_of_bars_redrawn_by_erase_line_outputs():
    """ultralytics redraws a bar as separate outputs that start with ESC[K (erase the line)."""
    from coursekit.notebooks import _tidy_outputs

    cell = nbformat.v4.new_code_cell("model.train()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text) for text in
                    ["\n  Epoch  box_loss\n", "\x1b[K  1/5  6.4: 0% 0/7", "\x1b[K  1/5  6.3: 100% 7/7",
                     "\n  Epoch  box_loss\n", "\x1b[K  2/5  6.1: 100% 7/7", "\ndone\n"]]
    cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text="a warning\n"))
    _tidy_outputs(cell)
    assert [(o.name, o.text) for o in cell.outputs] == [
        ("stdout", "\n  Epoch  box_loss\n  1/5  6.3: 100% 7/7\n  Epoch  box_loss\n  2/5  6.1: 100% 7/7\ndone\n"),
        ("stderr", "a warning\n")]


def test_publish_refuses_a_compared_cell_that_depends_on_the_profile(tmp_path):
    path = _lesson(tmp_path)
    before = path.read_text()
    with pytest.raises(ValueError, match="cell 0 .* independent of the profile"):
        publish(path, profile="demo", timeout=120)
    assert path.read_text() == before, "a refused publication leaves the file as it was"


def test_publish_rejects_a_path_that_is_not_a_notebook(tmp_path):
    with pytest.raises(ValueError, match="not a notebook"):
        publish(tmp_path / "missing.ipynb")


def test_coursekit_publish_refuses_a_path_that_is_not_a_notebook_in_one_line(tmp_path, capsys):
    from coursekit.cli import main

    status = main(["publish", str(tmp_path / "lesson.txt")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert lines == [f"coursekit: error: {tmp_path / 'lesson.txt'} is not a notebook file: give the .ipynb path "
                     "of a lesson (e.g. notebooks/02_simclr.ipynb)"]


def test_coursekit_publish_markdown_only_stamps_edited_text_and_refuses_changed_code(tmp_path, capsys):
    from coursekit.cli import main

    path = tmp_path / "lesson.ipynb"
    nbformat.write(_stamped(code="a = 1", text="Accuracy 71.1%."), path)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0].source = "Accuracy 72.0%."
    nbformat.write(notebook, path)
    assert main(["publish", str(path), "--markdown-only"]) == 0
    assert not is_stale(nbformat.read(path, as_version=4))
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0].source, notebook.cells[1].source = "Accuracy 73.0%.", "a = 2"
    nbformat.write(notebook, path)
    assert main(["publish", str(path), "--markdown-only"]) == 2
    assert "needs a new run" in capsys.readouterr().err and is_stale(nbformat.read(path, as_version=4))


def test_readme_times_table_is_the_one_the_stamps_give(capsys):
    """The README's lesson times come from the published stamps, through the command that prints them."""
    from coursekit.cli import main

    assert main(["publish", *map(str, (ROOT / p for p in LESSONS)), "--times"]) == 0
    table = capsys.readouterr().out
    assert table.count("\n") == len(LESSONS) + 2
    assert table in (ROOT / "README.md").read_text(), "README's times table is stale: run coursekit publish --times"


def test_publish_with_a_given_cache_keeps_it_and_says_it_was_prepared(tmp_path):
    path = _lesson(tmp_path)
    cache = tmp_path / "held"
    (cache / "checkpoints").mkdir(parents=True)
    (cache / "checkpoints" / "run.pt").write_text("a run an earlier lesson made")
    stamp = publish(path, profile="smoke", timeout=120, cache=cache)
    assert stamp["cache"] == "prepared" and (cache / "checkpoints" / "run.pt").exists()
    printed = nbformat.read(path, as_version=4).cells[3].outputs[0]["text"]
    assert printed.startswith(str(cache)) and "checkpoints" in printed
