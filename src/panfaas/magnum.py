"""Magnum Kubernetes clusters: the decisions behind the magnum_cluster role.

openstack.cloud 2.5's coe_cluster_template and coe_cluster cannot update anything (they fail
with "Cannot update parameters [...]"), Magnum cannot change a cluster's labels after creation,
and coe_cluster's own wait gives up after `timeout` *seconds* while the same number goes to Magnum
as the create timeout in *minutes*. So:

- every template setting, labels included, goes into the cluster template; label values are
  strings (Magnum compares strings; YAML's `true` or `3` never equal them);
- a template is named after a digest of its settings (`<cluster>-<8 hex>`): changed settings
  give a new template, never an update of the old one;
- an existing cluster is never "updated": if it was built from another template, the role stops
  and says so; node_count is only used at creation (the autoscaler owns it afterwards);
- waiting is a poll of the cluster status (create with wait=false), with its own timeout;
- a cluster being deleted (or whose deletion failed) stops the role: it is neither waited for
  nor used.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

# Labels the role sets from its own knobs; extra labels may not set them a second time.
MANAGED_LABELS = ("auto_scaling_enabled", "min_node_count", "max_node_count", "cinder_csi_enabled",
                  "cloud_provider_enabled")


class MagnumError(ValueError):
    """Bad settings or a cluster state the role must not act on; the message says what to do."""


def label_value(name: str, value: Any) -> str:
    """A label value as Magnum stores it: a string; booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise MagnumError(f"label {name}: {value!r} is not a string (labels are key=value strings)")


def labels(extra: dict | None, *, min_nodes: int, max_nodes: int, autoscaling: bool = True,
           cinder_csi: bool = True) -> dict[str, str]:
    """All the template's labels: autoscaling bounds, Cinder CSI (it needs the cloud
    provider), then the extra labels (kube_tag, containerd_version, ...), every value a string."""
    if min_nodes < 1 or max_nodes < min_nodes:
        raise MagnumError(f"autoscaling bounds min={min_nodes} max={max_nodes}: need 1 <= min <= max")
    result = {
        "auto_scaling_enabled": label_value("auto_scaling_enabled", autoscaling),
        "min_node_count": str(min_nodes),
        "max_node_count": str(max_nodes),
        "cinder_csi_enabled": label_value("cinder_csi_enabled", cinder_csi),
        "cloud_provider_enabled": label_value("cloud_provider_enabled", cinder_csi or autoscaling),
    }
    for name, value in (extra or {}).items():
        if name in MANAGED_LABELS:
            raise MagnumError(f"label {name} is set by the role's own variables; remove it from the extra labels")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise MagnumError(f"label name {name!r}: use letters, digits, '_', '.' and '-'")
        result[str(name)] = label_value(name, value)
    return result


def template_name(cluster: str, spec: dict) -> str:
    """`<cluster>-<first 8 hex of the settings' digest>`: one template per set of settings."""
    blob = json.dumps(spec, sort_keys=True, default=str)
    return f"{cluster}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def owned_template(cluster: str, name: str) -> bool:
    """Whether a cluster template name is one of this cluster's (teardown deletes those)."""
    return re.fullmatch(re.escape(cluster) + r"-[0-9a-f]{8}", name or "") is not None


def phase(status: str | None) -> str:
    """absent | in_progress | failed | ready, from a Magnum cluster status."""
    if not status or status == "DELETE_COMPLETE":
        return "absent"
    if status.endswith("_IN_PROGRESS"):
        return "in_progress"
    if status.endswith("_FAILED"):
        return "failed"
    return "ready"


@dataclass(frozen=True)
class Decision:
    action: str          # create | wait | none
    message: str
    template_id: str | None


def decide(name: str, cluster: dict | None, templates: list[dict], wanted: str) -> Decision:
    """What to do with cluster `name` whose settings describe template `wanted`, given the
    cluster (None: absent) and the cluster templates that exist."""
    by_name = {t.get("name"): t for t in templates}
    tmpl = by_name.get(wanted)
    tmpl_id = (tmpl.get("id") or tmpl.get("uuid")) if tmpl else None
    if cluster is None or phase(cluster.get("status")) == "absent":
        return Decision("create", f"cluster {name} does not exist", tmpl_id)
    status = cluster.get("status")
    if str(status).startswith("DELETE_"):  # waiting would end with the cluster gone, not created
        raise MagnumError(f"cluster {name} is {status}: wait until Magnum has deleted it (openstack coe cluster "
                          f"list; if the deletion failed, openstack coe cluster delete {name}), then run again.")
    current_id = cluster.get("cluster_template_id")
    if current_id != tmpl_id:
        current = next((t.get("name") for t in templates if current_id in (t.get("id"), t.get("uuid"))), current_id)
        raise MagnumError(
            f"cluster {name} was built from cluster template {current}, but the settings now describe {wanted}: "
            "Magnum cannot change the labels, image or flavors of an existing cluster. Put the settings back, "
            "or rebuild the cluster (docs/runbooks/site-kubernetes-scaling.md, 'Changing what Magnum cannot "
            "change').")
    p = phase(status)
    if p == "in_progress":
        return Decision("wait", f"cluster {name} is {status}", tmpl_id)
    if p == "failed" and str(status).startswith("CREATE"):
        raise MagnumError(f"cluster {name} is {status}: {cluster.get('status_reason') or 'no reason given'}. "
                          f"Delete it (openstack coe cluster delete {name}) and run again.")
    note = f" (last operation {status}: {cluster.get('status_reason') or 'no reason given'})" if p == "failed" else ""
    return Decision("none", f"cluster {name} exists{note}", tmpl_id)
