"""`VolumeSession` as the one owner of an object's state: prompt log, undo steps, clip, whole masks."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.errors import PromptError, SessionError
from medvl.session import BoxPrompt, PointPrompt, VolumeSession
from tests.server.test_interactive import BrightEngine
from tests.conftest import make_synthetic_volume


@pytest.fixture
def session():
    s = VolumeSession(BrightEngine())
    s.set_volume(make_synthetic_volume(shape_kji=(12, 20, 16), seed=1, radius=4.0))
    return s


def test_the_prompt_log_holds_prompts_as_given_and_undo_steps_back(session):
    session.add_box((5, 6, 6), (11, 13, 6), obj_id=1)
    session.add_point((8, 10, 6), positive=False, obj_id=1)
    assert session.prompt_log(1) == [BoxPrompt((5, 6, 6), (11, 13, 6)), PointPrompt((8, 10, 6), False)]
    assert session.needs_propagation(1)
    session.run_propagation(1)
    assert not session.needs_propagation(1)
    session.undo_prompts(1, 1)  # the propagation after it and the click go
    assert session.prompt_log(1) == [BoxPrompt((5, 6, 6), (11, 13, 6))] and session.needs_propagation(1)
    with pytest.raises(SessionError, match="has 1"):
        session.undo_prompts(1, 2)
    session.undo_prompts(1, 1)
    assert 1 not in session.objects and session.prompt_log(1) == []


def test_a_whole_mask_is_an_undoable_object_replaced_by_prompts(session):
    truth = session.volume.meta["truth"]
    session.set_mask(2, truth)
    assert session.is_whole_mask(2) and np.array_equal(session.mask(2), truth) and 2 in session.objects
    assert not session.needs_propagation(2) and session.run_propagation(2) == 0
    session.add_point((8, 10, 6), obj_id=2)  # a click replaces the text result
    assert not session.is_whole_mask(2) and session.prompt_log(2) == [PointPrompt((8, 10, 6), True)]
    session.undo(2)
    assert session.is_whole_mask(2) and np.array_equal(session.mask(2), truth)
    with pytest.raises(PromptError, match="does not match"):
        session.set_mask(3, truth[:-1])


def test_the_clip_limits_the_mask_and_comes_back_with_undo(session):
    session.add_point((8, 10, 6), obj_id=1)
    session.run_propagation(1)
    full = session.mask(1)
    session.set_clip(1, (0, 15, 0, 19, 5, 7))
    clipped = session.mask(1)
    assert clipped.sum() < full.sum() and not clipped[:5].any() and not clipped[8:].any()
    assert np.array_equal(clipped[5:8], full[5:8])
    session.add_point((8, 10, 7), obj_id=1)
    session.set_clip(1, None)
    session.undo(1)  # back to the state before that click: clipped
    assert session.clip(1) == (0, 15, 0, 19, 5, 7)
