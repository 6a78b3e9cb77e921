"""medvl.server.interactive on a seeded synthetic ball, with a deterministic test-double engine.

The double implements `medvl.engines.base.Engine` (bright voxels inside the box / near a
positive click; propagation keeps the bright voxels under the previous slice's mask), so
these tests check the server logic - diffing prompt sets, undo, replay, ROI clip, crop,
geometry of what is written, sessions and locks - in milliseconds and exactly.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage

from medvl.engines.base import SliceResult
from medvl.errors import PromptError
from medvl.geometry import Geometry
from medvl.io import read_mask, write_volume
from medvl.server.interactive import InteractiveService
from medvl.server.sessions import SessionGoneError
from medvl.server.settings import ServerSettings
from medvl.slicing import num_slices, take_slice
from tests.conftest import make_synthetic_volume


class BrightEngine:
    name = "bright"

    def bind(self, volume, axis):
        return {"volume": volume, "axis": axis, "encoded": set(), "passes": 0}

    def _bright(self, state, index):
        if index not in state["encoded"]:
            state["encoded"].add(index)
            state["passes"] += 1
        return take_slice(state["volume"].array, state["axis"], index) > -500

    def segment_slice(self, state, index, prompt, obj_id=None):
        bright = self._bright(state, index)
        rows, cols = np.indices(bright.shape)
        region = np.zeros_like(bright)
        for x0, y0, x1, y1 in prompt.boxes:
            region[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
        components, _ = ndimage.label(bright)
        for (x, y), positive in zip(prompt.points, prompt.labels):
            if positive:  # the bright component under the click
                region |= components == components[int(round(y)), int(round(x))]
            else:  # a background click cuts a small disk
                region &= (cols - x) ** 2 + (rows - y) ** 2 > 4
        return SliceResult(bright & region, 1.0)

    def propagate(self, state, seeds, prompts, should_stop=None, obj_id=None):
        last = num_slices(state["volume"].array.shape, state["axis"]) - 1
        for start, step in ((min(seeds), -1), (max(seeds), 1)):
            prev, index = seeds[start], start + step
            while 0 <= index <= last:
                if should_stop is not None and should_stop():
                    return
                mask = self._bright(state, index) & prev
                if not mask.any():
                    break
                yield index, mask
                prev, index = mask, index + step

    def forget(self, state, obj_id):
        pass  # stateless between calls

    def stats(self, state):
        return {"encoder_passes": state["passes"], "cache_bytes": 100 * len(state["encoded"])}


GEOMETRY = Geometry(origin=(-10.0, 5.0, 30.0), spacing=(0.8, 0.7, 2.5), direction=(0, 1, 0, 1, 0, 0, 0, 0, -1))


@pytest.fixture
def ball(tmp_path):
    volume = make_synthetic_volume(shape_kji=(12, 20, 16), geometry=GEOMETRY, seed=3, radius=4.0)
    path = tmp_path / "ball.nii.gz"
    write_volume(path, volume)
    return volume, str(path)


@pytest.fixture
def service():
    return InteractiveService(ServerSettings(labels=("lesion", "other")), engine=BrightEngine())


def run(service, path, tmp_path, name="out.nrrd", image_id="ball", **params):
    params.setdefault("client_id", "c1")
    out, info = service.run(params, path, image_id, str(tmp_path / name))
    return (read_mask(out) if out else None), info


CENTRE = [8, 10, 6]  # ITK (i, j, k) inside the ball (centre at numpy (5.5, 9.5, 7.5))


def test_click_gives_the_ball_in_the_image_geometry(service, ball, tmp_path):
    volume, path = ball
    mask, info = run(service, path, tmp_path, foreground=[CENTRE])
    truth = volume.meta["truth"]
    assert mask.geometry.same_as(volume.geometry) and mask.array.shape == truth.shape
    assert np.array_equal(mask.array.astype(bool), truth)
    assert info["action"] == "add" and info["encoder_passes"] > 0 and info["voxels"] == truth.sum()
    ks = np.flatnonzero(truth.any(axis=(1, 2)))
    assert info["slice_range"] == [int(ks[0]), int(ks[-1])]
    assert info["volume_ml"] == pytest.approx(truth.sum() * 0.8 * 0.7 * 2.5 / 1000, abs=1e-3)
    assert {"pre", "infer", "post", "write", "total", "stages"} <= info["latencies"].keys()


def test_prompt_set_diff_add_none_undo_replay(service, ball, tmp_path):
    _, path = ball
    _, first = run(service, path, tmp_path, foreground=[CENTRE])
    _, same = run(service, path, tmp_path, foreground=[CENTRE])
    assert same["action"] == "none" and same["encoder_passes"] == 0 and same["engine_seconds"] == 0
    _, more = run(service, path, tmp_path, foreground=[CENTRE], background=[[8, 10, 7]])
    assert more["action"] == "add" and more["prompts"] == 2 and more["encoder_passes"] == 0
    _, back = run(service, path, tmp_path, foreground=[CENTRE])
    assert back["action"] == "undo" and back["voxels"] == first["voxels"] and back["prompts"] == 1
    _, moved = run(service, path, tmp_path, foreground=[[9, 10, 6]])
    assert moved["action"] == "replay" and moved["encoder_passes"] == 0
    _, reset = run(service, path, tmp_path, foreground=[[9, 10, 6]], reset_state=True)
    assert reset["action"] == "replay"
    _, cleared = run(service, path, tmp_path)
    assert cleared["voxels"] == 0 and cleared["prompts"] == 0


def test_explicit_undo_and_gone_sessions(service, ball, tmp_path):
    _, path = ball
    _, first = run(service, path, tmp_path, foreground=[CENTRE])
    run(service, path, tmp_path, foreground=[CENTRE], background=[[8, 10, 7]])
    _, undone = run(service, path, tmp_path, foreground=[CENTRE], undo=1)
    assert undone["action"] == "undo" and undone["voxels"] == first["voxels"]
    generation = first["session"]["medvl_session"]
    _, again = run(service, path, tmp_path, foreground=[CENTRE], medvl_session=generation)
    assert again["session"]["medvl_session"] == generation
    with pytest.raises(SessionGoneError, match="does not exist"):
        run(service, path, tmp_path, foreground=[CENTRE], medvl_session="0123456789ab", client_id="c2")
    with pytest.raises(SessionGoneError):
        run(service, path, tmp_path, undo=1, client_id="c3")


def test_crop_carries_only_the_changed_box_with_its_offset(service, ball, tmp_path):
    volume, path = ball
    full, _ = run(service, path, tmp_path, "full.nrrd", foreground=[CENTRE])
    crop, info = run(service, path, tmp_path, "crop.nrrd", foreground=[CENTRE], background=[[8, 10, 7]], crop=True)
    after, _ = run(service, path, tmp_path, "after.nrrd", foreground=[CENTRE], background=[[8, 10, 7]])
    (i0, j0, k0), (si, sj, sk) = info["crop"]["offset_ijk"], info["crop"]["size_ijk"]
    assert crop.array.shape == (sk, sj, si)
    assert np.array_equal(after.array[k0:k0 + sk, j0:j0 + sj, i0:i0 + si], crop.array)
    outside = full.array.copy()
    outside[k0:k0 + sk, j0:j0 + sj, i0:i0 + si] = after.array[k0:k0 + sk, j0:j0 + sj, i0:i0 + si]
    assert np.array_equal(outside, after.array)  # nothing changed outside the crop
    assert np.allclose(crop.geometry.origin, volume.geometry.index_to_physical([i0, j0, k0]))
    nothing, info = run(service, path, tmp_path, "none.nrrd", foreground=[CENTRE], background=[[8, 10, 7]], crop=True)
    assert nothing is None and info["changed"] is False


def test_thick_roi_box_on_central_slice_and_mask_clipped(service, ball, tmp_path):
    volume, path = ball
    roi = [2, 13, 4, 15, 4, 7]  # i, j, k bounds: k 4..7 cuts the ball (k 2..9)
    mask, info = run(service, path, tmp_path, roi=roi)
    truth = volume.meta["truth"]
    assert info["slice_range"] == [4, 7] and info["prompts"] == 1
    assert np.array_equal(mask.array.astype(bool), truth & (np.arange(12) >= 4)[:, None, None]
                          & (np.arange(12) <= 7)[:, None, None])
    flat, info = run(service, path, tmp_path, label="other", roi=[2, 13, 4, 15, 5, 5], propagate=False)
    assert info["obj_id"] == 2 and info["slice_range"] == [5, 5]


def test_objects_by_label_and_all_labels_output(service, ball, tmp_path):
    _, path = ball
    run(service, path, tmp_path, label="lesion", foreground=[CENTRE])
    labels, info = run(service, path, tmp_path, label="other", boxes=[[[3, 4, 6], [12, 15, 6]]], propagate=False,
                       output_labels="all")
    assert set(np.unique(labels.array)) == {0, 1, 2} and info["label_names"] == {"lesion": 1, "other": 2}
    _, new = run(service, path, tmp_path, label="vessel", foreground=[CENTRE])
    assert new["obj_id"] == 3


def test_bad_prompts_raise_prompt_error_and_leave_the_session_usable(service, ball, tmp_path):
    _, path = ball
    with pytest.raises(PromptError, match="outside the volume"):
        run(service, path, tmp_path, foreground=[[16, 0, 0]])
    with pytest.raises(PromptError, match="empty"):
        run(service, path, tmp_path, roi=[0, 0, 0, 0, 0, 0])
    mask, _ = run(service, path, tmp_path, foreground=[CENTRE])
    assert mask.array.any()


def test_memory_bound_evicts_the_least_recent_session(ball, tmp_path):
    _, path = ball
    service = InteractiveService(ServerSettings(cache_mb=1), engine=BrightEngine())
    service.store.max_bytes = 20_000  # about one session of this 12x20x16 volume
    _, a = run(service, path, tmp_path, client_id="a", foreground=[CENTRE])
    run(service, path, tmp_path, client_id="b", foreground=[CENTRE])
    with pytest.raises(SessionGoneError, match="evicted"):
        run(service, path, tmp_path, client_id="a", foreground=[CENTRE], medvl_session=a["session"]["medvl_session"])
    assert service.store.evictions >= 1


def test_parallel_sessions_on_two_images_do_not_mix(service, ball, tmp_path):
    volume, path = ball
    other = make_synthetic_volume(shape_kji=(10, 24, 18), seed=5, radius=3.0)
    other_path = tmp_path / "other.nii.gz"
    write_volume(other_path, other)
    out, errors = {}, []

    def client(name, image, image_id, point):
        try:
            for n in range(3):
                mask, _ = run(service, image, tmp_path, f"{name}{n}.nrrd", image_id=image_id, client_id=name,
                              foreground=[point])
            out[name] = mask
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=("a", path, "ball", CENTRE)),
               threading.Thread(target=client, args=("b", str(other_path), "other", [9, 12, 5]))]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not errors
    assert np.array_equal(out["a"].array.astype(bool), volume.meta["truth"])
    assert np.array_equal(out["b"].array.astype(bool), other.meta["truth"])
    assert out["b"].geometry.same_as(other.geometry)
