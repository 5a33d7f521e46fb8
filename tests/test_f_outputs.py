"""`--f-outputs DIR` (data side): one output file per manifest id, validated against the manifest."""
from __future__ import annotations

import numpy as np
import pytest

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import read_image, write_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.ptgrm.f_outputs import open_f_outputs

from .test_train_units import make_samples


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return load_manifest(make_samples(tmp_path_factory.mktemp("fo") / "samples")).samples


def _outputs(rows, folder, bits=16):
    """A real F's outputs (a 3×3 box blur of each input, as some other tool would write them)."""
    folder.mkdir()
    for s in rows:
        x = read_image(s.input)
        pad = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        y = sum(pad[i : i + x.shape[0], j : j + x.shape[1]] for i in range(3) for j in range(3)) / 9
        write_image(folder / f"{s.id}.{'tif' if bits == 16 else 'png'}", y, bits=bits)
    return folder


def test_reads_one_output_per_id(rows, tmp_path):
    outs = open_f_outputs(_outputs(rows, tmp_path / "o"), rows)
    assert not outs.runs_on_new_photos and set(outs.files) == {s.id for s in rows}
    for s in rows[:3]:
        y, x = outs.read(s.id), read_image(s.input)
        assert y.shape == x.shape and y.dtype == np.float32
        assert 0 < np.abs(y - x).mean() < 0.2  # the blurred input, read back at 16 bits
    assert outs.describe() == {"kind": "f-outputs", "folder": str(tmp_path / "o"), "images": len(rows)}
    with pytest.raises(PtgError, match="not opened for"):
        outs.read("no-such-id")


def test_missing_duplicate_and_wrong_size_outputs_are_named(rows, tmp_path):
    d = _outputs(rows, tmp_path / "o", bits=8)
    (d / f"{rows[0].id}.png").unlink()
    with pytest.raises(PtgError, match=f"no output for manifest id.*{rows[0].id}"):
        open_f_outputs(d, rows)
    write_image(d / f"{rows[0].id}.png", read_image(rows[0].input))
    write_image(d / f"{rows[0].id}.tif", read_image(rows[0].input))
    with pytest.raises(PtgError, match=f"several outputs.*{rows[0].id}"):
        open_f_outputs(d, rows)
    (d / f"{rows[0].id}.tif").unlink()
    write_image(d / f"{rows[1].id}.png", read_image(rows[1].input)[:-2])
    with pytest.raises(PtgError, match=f"size differs.*{rows[1].id}"):
        open_f_outputs(d, rows)
    with pytest.raises(PtgError, match="not a folder"):
        open_f_outputs(tmp_path / "nope", rows)


def test_links_out_of_the_folder_are_refused(rows, tmp_path):
    d = _outputs(rows, tmp_path / "o")
    elsewhere = tmp_path / "elsewhere.png"
    write_image(elsewhere, read_image(rows[2].input))
    (d / f"{rows[2].id}.tif").unlink()
    (d / f"{rows[2].id}.png").symlink_to(elsewhere)
    with pytest.raises(PtgError, match="outside the folder"):
        open_f_outputs(d, rows)


def test_a_file_replaced_after_opening_is_caught(rows, tmp_path):
    d = _outputs(rows, tmp_path / "o")
    outs = open_f_outputs(d, rows)
    write_image(d / f"{rows[0].id}.tif", read_image(rows[0].input)[:, :-4])
    with pytest.raises(PtgError, match="was it replaced"):
        outs.read(rows[0].id)
