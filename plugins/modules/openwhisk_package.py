#!/usr/bin/python
# Thin Ansible adapter over panfaas.deploy.ensure_package.
DOCUMENTATION = r"""
---
module: openwhisk_package
short_description: Create, update or delete an OpenWhisk package or package binding
description:
  - A package groups actions and gives them default parameters (an action's own parameters and
    the invocation's override them). A package binding (O(binding)) points at another package and
    adds parameters of its own, as C(wsk package bind) does.
  - Written only when the deployed package differs (parameters, annotations, binding).
options:
  name:
    description: Package name.
    type: str
    required: true
  parameters:
    description: Parameters every action of the package receives.
    type: dict
    default: {}
  annotations:
    description: Annotations.
    type: dict
    default: {}
  binding:
    description: Make this a binding of the package C(/namespace/package), e.g. C(/whisk.system/messaging).
    type: str
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

- name: Bind the Kafka feed package with the site's brokers
  openwhisk_package:
    api_host: https://openwhisk.example.org:31001
    auth: "{{ vault_openwhisk_auth }}"
    name: site-kafka
    binding: /whisk.system/messaging
    parameters: {brokers: ["kafka-0.kafka:9092"]}
"""

RETURN = r"""
changed:
  description: Whether the package was (or would be) created, updated or deleted.
  returned: always
  type: bool
package:
  description: The package as the API returned it.
  returned: when present and not in check mode with a change
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.panfaas_openwhisk import COMMON_ARGS, run


def main():
    module = AnsibleModule(
        argument_spec=dict(COMMON_ARGS, name=dict(type="str", required=True),
                           parameters=dict(type="dict", default={}),
                           annotations=dict(type="dict", default={}),
                           binding=dict(type="str")),
        supports_check_mode=True,
    )
    p = module.params
    run(module, "ensure_package", p["name"], parameters=p["parameters"], annotations=p["annotations"],
        binding=p["binding"])


if __name__ == "__main__":
    main()
