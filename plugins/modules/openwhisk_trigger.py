#!/usr/bin/python
# Thin Ansible adapter over panfaas.deploy.ensure_trigger.
DOCUMENTATION = r"""
---
module: openwhisk_trigger
short_description: Create, update or delete an OpenWhisk trigger, optionally fed from Kafka
description:
  - Does what C(wsk trigger create T --feed /whisk.system/messaging/kafkaFeed -p brokers ... -p topic ...)
    does - PUT the trigger with a C(feed) annotation, then run the feed action's C(CREATE) lifecycle
    event - and only when the trigger or its feed configuration (read with the C(READ) event)
    differs. A changed feed is deleted and created again; the feed provider resumes the topic
    from the trigger's consumer group.
  - O(state=absent) runs the feed's C(DELETE) event, then deletes the trigger.
options:
  name:
    description: Trigger name.
    type: str
    required: true
  parameters:
    description: Trigger parameters (merged into every fire's payload; the payload wins).
    type: dict
    default: {}
  feed:
    description: Feed action, e.g. C(/whisk.system/messaging/kafkaFeed).
    type: str
  feed_parameters:
    description:
      - Feed parameters. For the Kafka feed C(brokers) (list of C(host:port), as the feed provider
        reaches them), C(topic), and C(isJSONData), C(isBinaryKey), C(isBinaryValue).
    type: dict
    default: {}
extends_documentation_fragment:
  - panfaas_openwhisk
author: panfaas
"""

EXAMPLES = r"""
- name: Fire preview-tasks for the messages on the preview-tasks topic
  openwhisk_trigger:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: preview-tasks
    feed: /whisk.system/messaging/kafkaFeed
    feed_parameters: {brokers: ["127.0.0.1:9092"], topic: preview-tasks, isJSONData: true}

- name: A plain trigger, fired through the API
  openwhisk_trigger:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: nightly
    parameters: {mode: full}
"""

RETURN = r"""
changed:
  description: Whether the trigger or its feed was (or would be) created, updated or deleted.
  returned: always
  type: bool
trigger:
  description: The trigger as the API returned it.
  returned: when present and not in check mode with a change
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.panfaas_openwhisk import COMMON_ARGS, run


def main():
    module = AnsibleModule(
        argument_spec=dict(COMMON_ARGS, name=dict(type="str", required=True),
                           parameters=dict(type="dict", default={}),
                           feed=dict(type="str"),
                           feed_parameters=dict(type="dict", default={})),
        supports_check_mode=True,
    )
    p = module.params
    run(module, "ensure_trigger", p["name"], parameters=p["parameters"], feed=p["feed"],
        feed_parameters=p["feed_parameters"], auth=p["auth"])


if __name__ == "__main__":
    main()
