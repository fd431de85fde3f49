"""The forced-publish rule (xray_tasks.governance): the gate policy and the approval policy are the deployment's."""

from __future__ import annotations

import pytest

from xray_tasks.config import override, profile
from xray_tasks.errors import BadInput
from xray_tasks.governance import approval_outcome, changed_keys, check_run_overrides, govern

DEPLOYMENT = override(profile("full"), {"gate.min_auroc": 0.7})  # an admin's deployment-wide override


def _run(**assignments):
    return override(profile("full"), {"gate.min_auroc": 0.7, **assignments})


def test_a_run_that_keeps_the_deployments_gate_is_not_forced():
    ruling = govern(_run(**{"head.epochs": 3}), DEPLOYMENT, force_publish=False, reason="", actor=None)
    assert not ruling.forced and ruling.changed_keys == () and ruling.reason == ""
    # The deployment's own override is policy, not a change; under a demo deployment a demo run keeps its gate.
    demo = override(profile("demo"), {"gate.min_auroc": 0.7})
    assert not govern(demo, demo, force_publish=False, reason="", actor=None).forced


def test_choosing_a_laxer_profile_than_the_deployments_is_a_forced_publish():
    # Profile demo's gate is laxer (no baseline floor, a wider sensitivity tolerance): picking it on a full
    # deployment is a change of the gate policy like any other, not a way around it.
    demo = override(profile("demo"), {"gate.min_auroc": 0.7})
    with pytest.raises(BadInput, match=r"gate policy \(gate.require_baseline, gate.sensitivity_tolerance\)"):
        govern(demo, DEPLOYMENT, force_publish=False, reason="", actor="ana")


def test_a_gate_override_is_a_forced_publish_naming_the_keys_changed():
    weakened = _run(**{"gate.min_auroc": 0.0, "gate.min_auroc_ci_low": 0.0, "head.epochs": 2})
    with pytest.raises(
        BadInput, match=r"gate policy \(gate.min_auroc, gate.min_auroc_ci_low\).*force_reason"
    ):
        govern(weakened, DEPLOYMENT, force_publish=False, reason="  ", actor="ana")
    with pytest.raises(BadInput, match="needs the user who triggered the run"):
        govern(weakened, DEPLOYMENT, force_publish=False, reason="hotfix", actor=None)
    ruling = govern(weakened, DEPLOYMENT, force_publish=False, reason=" hotfix ", actor="ana")
    assert ruling.forced and ruling.reason == "hotfix" and ruling.actor == "ana"
    assert ruling.changed_keys == ("gate.min_auroc", "gate.min_auroc_ci_low")
    # Tightening the gate is a change of policy all the same.
    assert govern(
        _run(**{"gate.min_healthy_cleared": 0.9}), DEPLOYMENT, force_publish=False, reason="r", actor="a"
    ).changed_keys == ("gate.min_healthy_cleared",)


def test_force_publish_needs_a_reason_and_an_actor_even_with_the_deployments_gate():
    with pytest.raises(BadInput, match="force_publish needs a force_reason"):
        govern(_run(), DEPLOYMENT, force_publish=True, reason="", actor="ana")
    ruling = govern(_run(), DEPLOYMENT, force_publish=True, reason="first model", actor="ana")
    assert ruling.forced and ruling.changed_keys == ()


def test_a_run_cannot_touch_the_approval_policy():
    with pytest.raises(BadInput, match=r"\['approval.policy'\].*belongs to the deployment"):
        check_run_overrides({"approval.policy": "auto", "head.epochs": 2})
    check_run_overrides({"head.epochs": 2, "gate.min_auroc": 0.1})  # gate keys: forced, not refused


def test_approval_policy_defaults_follow_the_profile_and_are_checked():
    assert profile("full").approval.policy == "required"
    assert profile("demo").approval.policy == "auto"
    with pytest.raises(BadInput, match="approval.policy must be one of"):
        override(profile("full"), {"approval.policy": "sometimes"})
    with pytest.raises(BadInput, match="approval.timeout_hours"):
        override(profile("full"), {"approval.timeout_hours": 0})
    assert changed_keys("approval", profile("demo"), profile("full")) == ["approval.policy"]


def test_an_approval_response_becomes_a_registry_decision_with_who_and_the_comment():
    ana = {"id": "7", "name": "ana"}
    approved = {"chosen_options": ["Approve"], "params_input": {"comment": " ok "}, "responded_by_user": ana}
    assert approval_outcome(approved) == {"decision": "approved", "actor": "airflow:ana", "comment": "ok"}
    rejected = {**approved, "chosen_options": ["Reject"], "params_input": {"comment": "misses effusions"}}
    assert approval_outcome(rejected) == {
        "decision": "rejected_by_reviewer",
        "actor": "airflow:ana",
        "comment": "misses effusions",
    }
    # The scheduler's timeout sweep answers with the default (Reject) and no user.
    timed_out = {"chosen_options": ["Reject"], "params_input": {"comment": ""}, "responded_by_user": None}
    assert approval_outcome(timed_out) == {
        "decision": "approval_timed_out",
        "actor": "airflow:approval-timeout",
        "comment": "",
    }
    auto = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": None, "auto": True}
    assert (
        approval_outcome(auto)["actor"] == "policy:auto" and approval_outcome(auto)["decision"] == "approved"
    )
    assert approval_outcome(None) is None and approval_outcome({"chosen_options": []}) is None
