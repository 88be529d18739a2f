"""The decisions behind the magnum_cluster role (panfaas.magnum).

Magnum itself needs a cloud: the clusters and templates here are records shaped like
openstacksdk's (what magnum_cluster_plan reads); the module's calls to Magnum are not run in
make test."""

from __future__ import annotations

import pytest

from panfaas import magnum


def test_every_label_is_a_string_and_the_managed_ones_come_from_the_knobs():
    got = magnum.labels({"kube_tag": "v1.28.9-rancher1", "auto_healing_enabled": True, "etcd_volume_size": 10},
                        min_nodes=2, max_nodes=6)
    assert got == {"auto_scaling_enabled": "true", "min_node_count": "2", "max_node_count": "6",
                   "cinder_csi_enabled": "true", "cloud_provider_enabled": "true",
                   "kube_tag": "v1.28.9-rancher1", "auto_healing_enabled": "true", "etcd_volume_size": "10"}
    assert all(isinstance(v, str) for v in got.values())
    off = magnum.labels({}, min_nodes=1, max_nodes=1, autoscaling=False, cinder_csi=False)
    assert (off["auto_scaling_enabled"], off["cinder_csi_enabled"], off["cloud_provider_enabled"]) == \
        ("false", "false", "false")


@pytest.mark.parametrize("extra,bounds,message", [
    ({"min_node_count": "3"}, (1, 5), "label min_node_count is set by the role's own variables"),
    ({"kube_tag": ["v1"]}, (1, 5), "label kube_tag: ['v1'] is not a string"),
    ({"bad name": "x"}, (1, 5), "label name 'bad name'"),
    ({}, (3, 2), "autoscaling bounds min=3 max=2"),
    ({}, (0, 2), "autoscaling bounds min=0 max=2"),
])
def test_bad_labels_are_refused_with_the_reason(extra, bounds, message):
    with pytest.raises(magnum.MagnumError, match=message.replace("[", r"\[").replace("]", r"\]")):
        magnum.labels(extra, min_nodes=bounds[0], max_nodes=bounds[1])


def test_a_template_is_named_after_its_settings():
    spec = {"image_id": "fcos-38", "labels": {"kube_tag": "v1.28.9-rancher1"}}
    name = magnum.template_name("site-k8s", spec)
    assert name.startswith("site-k8s-") and len(name) == len("site-k8s-") + 8
    assert magnum.template_name("site-k8s", dict(reversed(spec.items()))) == name
    assert magnum.template_name("site-k8s", {**spec, "labels": {"kube_tag": "v1.27.8-rancher2"}}) != name
    assert magnum.owned_template("site-k8s", name)
    assert not magnum.owned_template("site-k8s", "site-k8s-prod-1234abcd")
    assert not magnum.owned_template("site-k8s", "other-k8s-1234abcd")


@pytest.mark.parametrize("status,expected", [
    (None, "absent"), ("DELETE_COMPLETE", "absent"), ("CREATE_IN_PROGRESS", "in_progress"),
    ("UPDATE_IN_PROGRESS", "in_progress"), ("CREATE_FAILED", "failed"), ("UPDATE_FAILED", "failed"),
    ("CREATE_COMPLETE", "ready"), ("UPDATE_COMPLETE", "ready"), ("RESUME_COMPLETE", "ready"),
])
def test_phases(status, expected):
    assert magnum.phase(status) == expected


T1 = {"name": "site-k8s-1111aaaa", "id": "t1"}
T2 = {"name": "site-k8s-2222bbbb", "id": "t2"}


def cluster(status: str, template: str = "t1", reason: str = "") -> dict:
    return {"name": "site-k8s", "status": status, "cluster_template_id": template, "status_reason": reason,
            "node_count": 4}


def test_decisions():
    d = magnum.decide("site-k8s", None, [], T1["name"])
    assert (d.action, d.template_id) == ("create", None)
    assert magnum.decide("site-k8s", None, [T1], T1["name"]).template_id == "t1"
    assert magnum.decide("site-k8s", cluster("CREATE_IN_PROGRESS"), [T1], T1["name"]).action == "wait"
    ready = magnum.decide("site-k8s", cluster("CREATE_COMPLETE"), [T1], T1["name"])
    assert (ready.action, ready.message) == ("none", "cluster site-k8s exists")
    # a failed resize leaves a usable cluster: reported, not fatal
    resized = magnum.decide("site-k8s", cluster("UPDATE_FAILED", reason="quota"), [T1], T1["name"])
    assert resized.action == "none" and "UPDATE_FAILED: quota" in resized.message


def test_a_failed_creation_stops_with_magnums_reason():
    with pytest.raises(magnum.MagnumError, match="cluster site-k8s is CREATE_FAILED: Timed out.*coe cluster delete"):
        magnum.decide("site-k8s", cluster("CREATE_FAILED", reason="Timed out"), [T1], T1["name"])


def test_changed_settings_on_an_existing_cluster_stop_instead_of_updating_or_duplicating():
    with pytest.raises(magnum.MagnumError) as e:
        magnum.decide("site-k8s", cluster("CREATE_COMPLETE", template="t1"), [T1, T2], T2["name"])
    assert ("built from cluster template site-k8s-1111aaaa, but the settings now describe site-k8s-2222bbbb"
            in str(e.value))
    assert "docs/runbooks/site-kubernetes-scaling.md" in str(e.value)
    # ... also when the new template does not exist yet
    with pytest.raises(magnum.MagnumError, match="built from cluster template site-k8s-1111aaaa"):
        magnum.decide("site-k8s", cluster("CREATE_COMPLETE", template="t1"), [T1], "site-k8s-3333cccc")


@pytest.mark.parametrize("status", ["DELETE_IN_PROGRESS", "DELETE_FAILED"])
def test_a_cluster_being_deleted_stops_instead_of_being_waited_for_or_used(status):
    with pytest.raises(magnum.MagnumError, match=f"cluster site-k8s is {status}: wait until Magnum has deleted it"):
        magnum.decide("site-k8s", cluster(status), [T1], T1["name"])
