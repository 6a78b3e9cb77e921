"""`medvl.bench.vlm_memory` at test size (~50 MB): loading a checkpoint holds one copy of its weights."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")


def test_loading_a_50mb_checkpoint_holds_one_copy_of_its_weights():
    from medvl.bench.vlm_memory import run

    r = run(size_mb=50, family="qwen2_5_vl", hidden=512, intermediate=1408)
    assert 40 <= r["weights_on_disk_mb"] <= 70 and r["weight_bytes_header_mb"] == pytest.approx(
        r["weights_on_disk_mb"], abs=0.5)
    assert r["peak_reset"] and r["tensors_touched"] > 0
    assert r["model_tensors_mb"] == pytest.approx(r["weights_on_disk_mb"], abs=0.5)  # every weight loaded
    # one copy (+ slack for the tokenizer, processor and temporaries), not a state dict next to the model
    assert r["peak_increase_mb"] < 1.5 * r["weights_on_disk_mb"], r
