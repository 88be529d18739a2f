#!/usr/bin/python
# Thin Ansible adapter over panfaas.kafka.

DOCUMENTATION = r"""
---
module: kafka_topic
short_description: Ensure Kafka topics exist
description:
  - Creates the topics that do not exist yet on a Kafka-compatible broker (aiokafka admin client).
    Existing topics are left as they are. Idempotent, with check mode.
options:
  bootstrap:
    description: C(host:port) of a broker.
    type: str
    required: true
  names:
    description: Topic names.
    type: list
    elements: str
    required: true
  partitions:
    description: Partitions of a new topic.
    type: int
    default: 1
  replication:
    description: Replication factor of a new topic.
    type: int
    default: 1
author: panfaas
"""

EXAMPLES = r"""
- name: Ensure the event topics exist
  kafka_topic:
    bootstrap: 127.0.0.1:9092
    names: [billing, preview-tasks, dead-letter]
"""

RETURN = r"""
created:
  description: Topics created by this run (or that would be, in check mode).
  returned: always
  type: list
  elements: str
"""

import asyncio

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bootstrap=dict(type="str", required=True),
            names=dict(type="list", elements="str", required=True),
            partitions=dict(type="int", default=1),
            replication=dict(type="int", default=1),
        ),
        supports_check_mode=True,
    )
    try:
        from panfaas.kafka import ensure_topics, list_topics
    except ImportError as e:
        module.fail_json(msg=f"panfaas is not importable ({e}); run ansible from the project's venv")
    p = module.params
    try:
        if module.check_mode:
            try:
                existing = set(asyncio.run(list_topics(p["bootstrap"])))
            except Exception:  # no broker yet: a real run would start it and create them all
                existing = set()
            created = [t for t in p["names"] if t not in existing]
        else:
            created = asyncio.run(ensure_topics(p["bootstrap"], p["names"], p["partitions"],
                                                p["replication"]))
    except Exception as e:
        module.fail_json(msg=f"cannot manage topics on {p['bootstrap']}: {e!r}")
    module.exit_json(changed=bool(created), created=created)


if __name__ == "__main__":
    main()
