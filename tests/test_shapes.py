"""The procedural shapes data set: reproducible from its seed, split by split, in YOLO format."""

import numpy as np
import pytest

from attn_deploy import shapes
from attn_deploy.data import load_split
from attn_deploy.errors import AttnDeployError

SMALL = shapes.ShapesSpec(seed=3, train=6, val=4)


def test_an_image_depends_only_on_seed_split_and_index():
    image, labels = shapes.draw_image(SMALL, "val", 2)
    again, labels_again = shapes.draw_image(SMALL, "val", 2)
    assert np.array_equal(image, again) and np.array_equal(labels, labels_again)
    other, _ = shapes.draw_image(shapes.ShapesSpec(seed=4), "val", 2)
    assert not np.array_equal(image, other)
    assert not np.array_equal(image, shapes.draw_image(SMALL, "train", 2)[0])


def test_val_split_regenerated_alone_equals_the_full_generation(tmp_path):
    full = load_split(shapes.generate(tmp_path / "full", SMALL))
    alone = load_split(shapes.generate(tmp_path / "alone", SMALL, splits=("val",)))
    assert [p.name for p in full.images] == [p.name for p in alone.images]
    for a, b in zip(full.labels, alone.labels):
        assert np.allclose(a, b)
    assert full.names == dict(enumerate(shapes.CLASSES))


def test_labels_are_inside_the_image_and_every_class_appears(tmp_path):
    split = load_split(shapes.generate(tmp_path / "d", shapes.ShapesSpec(seed=0, train=1, val=40), ("val",)))
    labels = np.concatenate(split.labels)
    assert labels[:, 1:].min() > -1e-3 and labels[:, 1:].max() < SMALL.imgsz + 1e-3  # 6-decimal YOLO rows
    assert (labels[:, 3] > labels[:, 1]).all() and (labels[:, 4] > labels[:, 2]).all()
    assert set(labels[:, 0].astype(int)) == set(range(len(shapes.CLASSES)))


def test_unknown_split_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(AttnDeployError, match="unknown split"):
        shapes.generate(tmp_path / "d", SMALL, splits=("test",))
    assert not (tmp_path / "d").exists()


def test_data_command_writes_the_fixtures_split_and_refuses_to_overwrite(tmp_path):
    from typer.testing import CliRunner

    from attn_deploy import fixtures
    from attn_deploy.cli import app

    out = tmp_path / "shapes"
    result = CliRunner().invoke(app, ["data", str(out), "--split", "val"])
    assert result.exit_code == 0, result.output
    split = load_split(out / "data.yaml")
    assert len(split.images) == fixtures.record()["cga"]["shapes_spec"]["val"]
    again = CliRunner().invoke(app, ["data", str(out), "--split", "val"])
    assert again.exit_code == 2 and "--force" in again.stderr
