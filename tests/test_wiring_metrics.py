"""The evaluator's less travelled paths against the per-query reference (found by mutation testing):
float64 distances whose exact ties with a true match send some rows of a chunk to the sorting kernel
while an exclusion rule removes pairs, and rules built from text or a results file."""

import numpy as np
import pytest

from crossreid.evaluation.metrics import (SAME_CAMERA, SAME_FRAME, SAME_ID_AND_CAMERA, SAME_ID_AND_SEQUENCE,
                                          SYSU_LOCATION, ExclusionRule, compute_metrics)
from crossreid.evaluation.reference import reference_metrics
from test_metrics import assert_same, random_case


@pytest.mark.parametrize("rule", [SAME_ID_AND_CAMERA, SAME_CAMERA, SYSU_LOCATION, SAME_FRAME, SAME_ID_AND_SEQUENCE,
                                  ExclusionRule.parse("pid+cam", "frame")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_ties_under_exclusion_equal_the_reference(rule, seed):
    rng = np.random.default_rng(seed)
    q, g, d32 = random_case(rng, 30, 50, ties=True)
    d = d32.astype(np.float64)
    d[::3] += rng.normal(scale=1e-3, size=d[::3].shape)  # a third of the rows have no exact tie
    ref = reference_metrics(d, q["ids"], g["ids"], q["cams"], g["cams"], exclusion=rule,
                            query_keys=q["keys"], gallery_keys=g["keys"], cmc="identity")
    for method, chunk in (("count", 7), ("count", None), ("auto", 4), ("sort", 5)):
        fast = compute_metrics(q["ids"], g["ids"], q["cams"], g["cams"], distances=d, exclusion=rule,
                               query_keys=q["keys"], gallery_keys=g["keys"], cmc="identity", per_query=True,
                               method=method, chunk_size=chunk)
        assert_same(fast, ref)


def test_rules_from_text_and_from_a_results_file():
    rule = ExclusionRule.parse(" pid + cam ", "frame", relabel={"cam": {3: 2}})
    assert rule.clauses == (("pid", "cam"), ("frame",)) and rule.keys == ("cam", "frame", "pid")
    assert ExclusionRule.from_dict(rule.to_dict()) == rule
    assert rule.to_dict() == {"clauses": [["pid", "cam"], ["frame"]], "relabel": {"cam": [[3, 2]]}}
    assert ExclusionRule.from_dict({}) == ExclusionRule()
    assert ExclusionRule.from_dict(SAME_ID_AND_CAMERA.to_dict()).describe() == ["same pid+cam"]
    with pytest.raises(ValueError, match="empty clause"):
        ExclusionRule.parse("pid+cam", " + ")
