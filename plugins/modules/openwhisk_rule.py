#!/usr/bin/python
# Thin Ansible adapter over panfaas.deploy.ensure_rule.
DOCUMENTATION = r"""
---
module: openwhisk_rule
short_description: Connect an OpenWhisk trigger to an action with a rule
description:
  - Creates or updates the rule when its trigger or action differs, and enables or disables it
    (a POST of its new status) when only its status differs.
options:
  name:
    description: Rule name.
    type: str
    required: true
  trigger:
    description: Fully qualified trigger, e.g. C(/_/preview-tasks). Required when O(state=present).
    type: str
  action:
    description: Fully qualified action, e.g. C(/_/panfaas/hdf5-preview). Required when O(state=present).
    type: str
  active:
    description: Whether the rule fires its action (C(wsk rule enable/disable)).
    type: bool
    default: true
extends_documentation_fragment:
  - panfaas_openwhisk
author: panfaas
"""

EXAMPLES = r"""
- name: Run hdf5-preview for every preview task
  openwhisk_rule:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: preview-tasks-hdf5-preview
    trigger: /_/preview-tasks
    action: /_/panfaas/hdf5-preview

- name: Pause the previews (the feed keeps consuming; fires find no active rule)
  openwhisk_rule:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: preview-tasks-hdf5-preview
    trigger: /_/preview-tasks
    action: /_/panfaas/hdf5-preview
    active: false
"""

RETURN = r"""
changed:
  description: Whether the rule was (or would be) created, updated, enabled, disabled or deleted.
  returned: always
  type: bool
rule:
  description: The rule as the API returned it, with its C(status).
  returned: when present and not in check mode with a change
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.panfaas_openwhisk import COMMON_ARGS, run


def main():
    module = AnsibleModule(
        argument_spec=dict(COMMON_ARGS, name=dict(type="str", required=True),
                           trigger=dict(type="str"), action=dict(type="str"),
                           active=dict(type="bool", default=True)),
        required_if=[("state", "present", ("trigger", "action"))],
        supports_check_mode=True,
    )
    p = module.params
    run(module, "ensure_rule", p["name"], trigger=p["trigger"] or "", action=p["action"] or "",
        active=p["active"])


if __name__ == "__main__":
    main()
