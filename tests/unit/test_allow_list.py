"""The run conf's connection id and locations must lie inside the deployment's allow-list (xray_tasks.settings)."""

from __future__ import annotations

import pytest

from xray_tasks.errors import BadInput
from xray_tasks.settings import NotAllowed, Sources, check_allowed, check_run_conf, resolve

DEPLOYMENT = Sources(
    config={"allowed_conn_ids": "xray_s3, xray_s3_archive", "allowed_locations": "s3://xray/ /data/xray"}.get,
    environ={"AIRFLOW_HOME": "/h"},
)


def test_defaults_allow_the_default_connection_and_any_location():
    open_sources = Sources(environ={"AIRFLOW_HOME": "/h"})
    assert resolve("s3_conn_id", open_sources, {"s3_conn_id": "xray_s3"}) == "xray_s3"
    assert resolve("workspace", open_sources, {"workspace": "/tmp/anywhere"}) == "/tmp/anywhere"
    with pytest.raises(
        NotAllowed, match=r"s3_conn_id='aws_default' is not allowed.*allowed_conn_ids: 'xray_s3'"
    ):
        resolve("s3_conn_id", open_sources, {"s3_conn_id": "aws_default"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("s3_conn_id", "xray_s3_archive"),
        ("source", "s3://xray/source"),
        ("workspace", "s3://xray"),
        ("registry", "s3://xray/registry/"),
        ("images", "/data/xray/incoming"),
        ("worklists", "/data/xray/./w"),
    ],
)
def test_values_inside_the_allow_list_pass(name, value):
    assert resolve(name, DEPLOYMENT, {name: value}) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("s3_conn_id", "aws_default"),
        ("s3_conn_id", "xray_s"),  # exact ids only
        ("source", "s3://other-bucket/source"),
        ("workspace", "s3://xray-evil/ws"),  # a prefix of the name is not the bucket
        ("registry", "s3://xray/../other/registry"),
        ("images", "/data/xray/../../etc"),
        ("worklists", "/data/xray-other"),
        ("source", "file:///etc"),
    ],
)
def test_values_outside_fail_naming_the_allowed_values(name, value):
    with pytest.raises(NotAllowed) as info:
        resolve(name, DEPLOYMENT, {name: value})
    message = str(info.value)
    assert f"{name}={value!r} is not allowed" in message
    if name == "s3_conn_id":
        assert "'xray_s3', 'xray_s3_archive'" in message
    else:
        assert "'s3://xray/', '/data/xray'" in message
    assert isinstance(info.value, BadInput)


def test_the_deployment_own_settings_are_not_checked_and_a_run_conf_cannot_widen_the_list():
    sources = Sources(
        variable={"xray_workspace": "s3://elsewhere/ws"}.get,
        config={"allowed_locations": "s3://xray/"}.get,
        environ={},
    )
    assert resolve("workspace", sources) == "s3://elsewhere/ws"  # set by the deployment itself
    with pytest.raises(NotAllowed, match="set by the deployment only"):
        resolve("allowed_locations", sources, {"allowed_locations": "*"})
    with pytest.raises(NotAllowed, match="set by the deployment only"):
        check_run_conf({"allowed_locations": "*", "workspace": "s3://other/x"}, sources)


def test_a_whole_run_conf_is_checked_before_any_work():
    check_run_conf({"source": "s3://xray/src", "workspace": "", "top": 5, "profile": "demo"}, DEPLOYMENT)
    with pytest.raises(NotAllowed, match="registry='s3://other/r'"):
        check_run_conf({"source": "s3://xray/src", "registry": "s3://other/r"}, DEPLOYMENT)
    check_run_conf(None, DEPLOYMENT)


def test_check_allowed_refuses_unknown_settings():
    with pytest.raises(ValueError, match="unknown setting"):
        check_allowed("registy", "x", DEPLOYMENT)
