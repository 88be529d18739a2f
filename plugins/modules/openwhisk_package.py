#!/usr/bin/python
# Thin Ansible adapter over panfaas.deploy.ensure_package.

DOCUMENTATION = r"""
---
module: openwhisk_package
short_description: Create, update or delete an OpenWhisk package
description:
  - A package groups actions and gives them shared default parameters. Idempotent, check mode.
options:
  name:
    description: Package name.
    type: str
    required: true
  parameters:
    description: Parameters every action of the package receives (actions and invokes override them).
    type: dict
    default: {}
  annotations:
    description: Annotations.
    type: dict
    default: {}
extends_documentation_fragment:
  - panfaas_openwhisk
author: panfaas
"""

EXAMPLES = r"""
- name: Ensure the panfaas package exists
  openwhisk_package:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: panfaas
    parameters: {storage: http://127.0.0.1:2880}
"""

RETURN = r"""
package:
  description: The package as the API returned it.
  returned: when changed and not in check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.panfaas_openwhisk import COMMON_ARGS, run


def main():
    module = AnsibleModule(
        argument_spec=dict(COMMON_ARGS, name=dict(type="str", required=True),
                           parameters=dict(type="dict", default={}),
                           annotations=dict(type="dict", default={})),
        supports_check_mode=True,
    )
    from panfaas.deploy import ensure_package
    p = module.params
    run(module, ensure_package, p["name"], parameters=p["parameters"], annotations=p["annotations"])


if __name__ == "__main__":
    main()
