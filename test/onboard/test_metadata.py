"""Model metadata (depth_perception.metadata): round trip and refusals."""
import json

import pytest

from depth_perception.metadata import ModelMetadata


def test_metadata_round_trip_and_refusals(tmp_path):
    meta = ModelMetadata(output_kind="disparity", input_height=196, input_width=644,
                         provenance={"checkpoint": "runs/x"})
    assert ModelMetadata.load(meta.save(tmp_path / "metadata.json")) == meta
    assert meta.fixed_size == (196, 644)
    with pytest.raises(ValueError, match="output_kind"):
        ModelMetadata(output_kind="depthish")
    with pytest.raises(ValueError, match="unknown model metadata keys"):
        ModelMetadata.from_dict({**meta.to_dict(), "max_dpeth": 3})
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        ModelMetadata(min_depth=10, max_depth=1)
    with pytest.raises(FileNotFoundError):
        ModelMetadata.load(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelMetadata.from_json("{", "x.json")
    assert json.loads(meta.to_json())["mean"] == list(meta.mean)
