"""What a trial's gallery allows: valid queries, chance R1 and the deepest real CMC rank (hand-worked),
and how `evaluate` / `score` print them with every table."""

from __future__ import annotations

import numpy as np
import pytest

from crossreid.config import load_config
from crossreid.errors import UserError
from crossreid.evaluation import chance as chance_module
from crossreid.evaluation.chance import gallery_reach
from crossreid.evaluation.metrics import NO_EXCLUSION, SAME_CAMERA
from crossreid.evaluation.results import format_evaluation
from crossreid.evaluation.score import score_arrays
from crossreid.modality import Modality, direction_name, parse_direction

# q0: pid 1 cam 1, q1: pid 2 cam 1, q2: pid 3 cam 2
QUERY = {"pid": [1, 2, 3], "cam": [1, 1, 2]}
# g0 1@c1, g1 1@c2, g2 2@c1, g3 3@c1, g4 4@c2, g5 1@c2
GALLERY = {"pid": [1, 1, 2, 3, 4, 1], "cam": [1, 2, 1, 1, 2, 2]}


def test_gallery_reach_by_hand(monkeypatch):
    # same camera removed. q0 keeps g1 g4 g5: 3 items, 2 matches, ids {1, 4}.
    # q1 keeps g1 g4 g5: no pid 2 -> invalid. q2 keeps g0 g2 g3: 3 items, 1 match, ids {1, 2, 3}.
    for chunk in (1 << 22, 1):  # one chunk, and one query per chunk
        monkeypatch.setattr(chance_module, "_CHUNK_ELEMENTS", chunk)
        reach = gallery_reach(QUERY, GALLERY, SAME_CAMERA)
        assert reach.kept.tolist() == [3, 3, 3] and reach.matches.tolist() == [2, 0, 1]
        assert reach.kept_ids.tolist() == [2, 2, 3] and reach.valid.tolist() == [True, False, True]
        assert reach.chance_rank1("image") == pytest.approx((2 / 3 + 1 / 3) / 2)
        assert reach.chance_rank1("identity") == pytest.approx((1 / 2 + 1 / 3) / 2)
        assert reach.deepest_rank("image") == 3 and reach.deepest_rank("identity") == 2
    plain = gallery_reach(QUERY, GALLERY, NO_EXCLUSION)
    assert plain.kept.tolist() == [6, 6, 6] and plain.matches.tolist() == [3, 1, 1]
    assert plain.chance_rank1("image") == pytest.approx((3 / 6 + 1 / 6 + 1 / 6) / 3)
    assert plain.deepest_rank("identity") == 4


def single_shot(ids: int = 16, seed: int = 0):
    """rgb queries (cam 1) and a single-shot ir gallery (cam 2), one image each per identity."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(2 * ids, 8)).astype(np.float32)
    pids = np.tile(np.arange(ids), 2)
    return score_arrays(feats, pids, [1] * ids + [2] * ids, ["rgb"] * ids + ["ir"] * ids,
                        protocol_options={"query": "rgb", "gallery": "ir"})


def test_a_small_single_shot_gallery_prints_chance_and_no_padded_ranks():
    result = single_shot()
    assert result.chance_rank1() == pytest.approx(1 / 16) and result.deepest_rank() == 16
    assert result.shown_ranks() == (1, 5, 10) and result.counts() == {"queries": (16, 16), "valid": (16, 16),
                                                                     "gallery": (16, 16)}
    text = format_evaluation({"rgb->ir": result}).splitlines()
    assert text[0] == ("protocol synthetic on arrays: 1 trial, image-level CMC, exclusion same cam; "
                       "distance euclidean; no re-ranking")
    assert text[1].split() == ["direction", "queries", "valid", "gallery", "chance", "R1", "R1", "R5", "R10", "R20",
                               "mAP", "mINP"]
    row = text[2].split()
    assert row[:5] == ["rgb->ir", "16", "16", "16", "6.2"] and row[8] == "-"
    assert text[3].startswith("  - : R20 lie beyond the smallest gallery a query ranks (16 images)")
    saved = result.to_json()
    assert saved["chance_rank1"] == pytest.approx(1 / 16) and saved["deepest_rank"] == 16
    assert saved["trials"][0]["num_gallery"] == 16 and "rank20" in saved["mean"]  # still recorded
    assert "R20" not in result.format_table()


def test_a_large_enough_gallery_shows_every_rank():
    result = single_shot(ids=24)
    row = format_evaluation({"rgb->ir": result}).splitlines()[2].split()
    assert result.shown_ranks() == (1, 5, 10, 20) and "-" not in row and len(row) == 11


def test_directions_have_a_shell_safe_form():
    assert parse_direction("rgb:ir") == parse_direction("rgb->ir") == (Modality.RGB, Modality.IR)
    assert parse_direction("visible:thermal") == (Modality.RGB, Modality.IR)
    assert direction_name("NIR:visible") == "ir->rgb"
    with pytest.raises(UserError, match=r"must look like rgb:depth or 'rgb->depth'.*quote the arrow form"):
        parse_direction("rgb")
    assert load_config(None, ["eval.directions=[rgb:ir, 'thermal->visible']"]).eval.directions == ["rgb->ir",
                                                                                                   "ir->rgb"]
