#!/usr/bin/python
# Thin Ansible adapter over panfaas.heatstack.

DOCUMENTATION = r"""
---
module: heat_stack_plan
short_description: Decide whether a Heat stack must be created or updated
description:
  - Computes a digest of a stack's template (with its nested templates and get_file files), its
    environment files and its parameters, and compares it with the digest tag the existing stack
    carries (as returned by openstack.cloud.stack_info). Never changes anything; the
    openstack_stack role calls openstack.cloud.stack only when I(action) is not C(none), so that
    an unchanged stack reports C(changed=false).
  - Fails when the stack has an operation in progress or is being deleted.
options:
  name:
    description: Stack name (for messages and placeholder outputs).
    type: str
    required: true
  template:
    description: Path of the HOT template.
    type: path
    required: true
  environment:
    description: Paths of the environment files, in order.
    type: list
    elements: path
    default: []
  parameters:
    description: Stack parameters.
    type: dict
    default: {}
  current:
    description: The stack as openstack.cloud.stack_info returned it, or null when it does not exist.
    type: dict
author: panfaas
"""

EXAMPLES = r"""
- name: Compare the template, environment and parameters with what the stack was built from
  heat_stack_plan:
    name: example-network
    template: heat/network.yaml
    environment: [heat/env/example-site.yaml]
    parameters: {name_prefix: example, external_network: public, admin_cidr: 192.0.2.0/24}
    current: "{{ stack_info.stacks | first | default(None) }}"
"""

RETURN = r"""
action:
  description: C(create), C(update) or C(none).
  returned: always
  type: str
reason:
  description: Why, in words.
  returned: always
  type: str
tag:
  description: The digest tag to set on the stack.
  returned: always
  type: str
digest:
  description: The full sha256 digest.
  returned: always
  type: str
outputs:
  description: The current stack's outputs as a dict; placeholders when the stack does not exist yet.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            template=dict(type="path", required=True),
            environment=dict(type="list", elements="path", default=[]),
            parameters=dict(type="dict", default={}),
            current=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    try:
        from panfaas import heatstack
    except ImportError as e:
        module.fail_json(msg=f"panfaas is not importable ({e}); run ansible from the project's venv")
    p = module.params
    try:
        wanted = heatstack.digest(p["template"], p["environment"], p["parameters"])
        result = heatstack.plan(p["name"], p["current"], wanted)
    except heatstack.StackStateError as e:
        module.fail_json(msg=str(e))
    except Exception as e:  # unreadable or invalid YAML: say which file and why
        module.fail_json(msg=f"cannot read the files of stack {p['name']}: {e}")
    if p["current"]:
        outputs = heatstack.outputs(p["current"])
    else:
        outputs = heatstack.placeholder_outputs(p["template"], p["name"])
    module.exit_json(changed=False, action=result.action, reason=result.reason, tag=result.tag,
                     digest=result.digest, outputs=outputs)


if __name__ == "__main__":
    main()
