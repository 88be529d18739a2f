#!/usr/bin/python
# Thin Ansible adapter over panfaas.magnum (reads Magnum through openstacksdk; changes nothing).

DOCUMENTATION = r"""
---
module: magnum_cluster_plan
short_description: Read a Magnum cluster and decide what the magnum_cluster role must do
description:
  - Normalises the cluster template settings (every label a string), names the template after
    a digest of them (C(<cluster>-<8 hex>)), reads the cluster and this cluster's templates from
    Magnum, and returns the cluster's phase and the action (C(create), C(wait) or C(none)).
  - Fails with an explanation when the cluster exists but was built from other settings (Magnum
    cannot change labels, image or flavors of a cluster), or when its creation failed.
  - Never changes anything. openstack.cloud 2.5 has no coe_cluster_info module; this is it.
extends_documentation_fragment:
  - openstack.cloud.openstack
options:
  name:
    description: Cluster name.
    type: str
    required: true
  template:
    description:
      - The cluster template settings, as openstack.cloud.coe_cluster_template options
        (image_id, external_network_id, flavor_id, ...), with C(labels) holding only the extra
        labels and C(min_node_count), C(max_node_count), C(auto_scaling_enabled),
        C(cinder_csi_enabled) for the managed ones.
      - Without it the module only reads the cluster and its templates (teardown).
    type: dict
author: panfaas
"""

EXAMPLES = r"""
- name: Read the cluster and decide
  magnum_cluster_plan:
    cloud: mysite
    name: mysite-k8s
    template: {coe: kubernetes, image_id: fedora-coreos-38, external_network_id: public,
               min_node_count: 1, max_node_count: 5, labels: {kube_tag: v1.28.9-rancher1}}
  register: plan
"""

RETURN = r"""
action:
  description: C(create), C(wait) or C(none).
  returned: always
  type: str
message:
  description: The decision in words.
  returned: always
  type: str
phase:
  description: C(absent), C(in_progress), C(failed) or C(ready).
  returned: always
  type: str
template_name:
  description: Name of the cluster template for these settings.
  returned: always
  type: str
template_id:
  description: Id of that template, or null when it does not exist yet.
  returned: always
  type: str
template:
  description: The template options to pass to coe_cluster_template (labels normalised, all strings).
  returned: always
  type: dict
templates:
  description: This cluster's templates that exist (name, id), oldest first.
  returned: always
  type: list
cluster:
  description: The cluster (openstacksdk's to_dict), or null.
  returned: always
  type: dict
"""

from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.openstack.cloud.plugins.module_utils.openstack import OpenStackModule


class MagnumClusterPlanModule(OpenStackModule):
    argument_spec = dict(
        name=dict(required=True),
        template=dict(type="dict"),
    )
    module_kwargs = dict(supports_check_mode=True)

    def run(self):
        try:
            from panfaas import magnum
        except ImportError as e:
            self.fail_json(msg=f"panfaas is not importable ({e}); run ansible from the project's venv")
        name = self.params["name"]
        spec = None
        if self.params["template"] is not None:  # settings first: a bad label fails before any API call
            settings = dict(self.params["template"])
            try:
                settings["labels"] = magnum.labels(
                    settings.pop("labels", None) or {},
                    min_nodes=int(settings.pop("min_node_count", 1)),
                    max_nodes=int(settings.pop("max_node_count", 1)),
                    autoscaling=boolean(settings.pop("auto_scaling_enabled", True)),
                    cinder_csi=boolean(settings.pop("cinder_csi_enabled", True)))
            except magnum.MagnumError as e:
                self.fail_json(msg=str(e))
            spec = {k: v for k, v in settings.items() if v not in (None, "")}
        coe = self.conn.container_infrastructure_management
        found = self.conn.get_coe_cluster(name)
        cluster = found.to_dict(computed=False) if found else None
        phase = magnum.phase(cluster.get("status") if cluster else None)
        if spec is None:  # read only (teardown)
            templates = self._templates(magnum, coe, name, None)
            self.exit_json(changed=False, action="none", message="read only", phase=phase, template_name=None,
                           template_id=None, template=None, templates=templates, cluster=cluster)
        wanted = magnum.template_name(name, spec)
        templates = self._templates(magnum, coe, name, wanted)
        try:
            decision = magnum.decide(name, cluster, templates, wanted)
        except magnum.MagnumError as e:
            self.fail_json(msg=str(e), cluster=cluster, templates=templates, template_name=wanted)
        self.exit_json(changed=False, action=decision.action, message=decision.message, phase=phase,
                       template_name=wanted, template_id=decision.template_id, template=spec,
                       templates=templates, cluster=cluster)

    @staticmethod
    def _templates(magnum, coe, name, wanted):
        """This cluster's templates (named <cluster>-<8 hex>), oldest first."""
        return sorted(
            ({"name": t.name, "id": t.id, "created_at": t.created_at} for t in coe.cluster_templates()
             if t.name == wanted or magnum.owned_template(name, t.name)),
            key=lambda t: t["created_at"] or "")


def main():
    module = MagnumClusterPlanModule()
    module()


if __name__ == "__main__":
    main()
