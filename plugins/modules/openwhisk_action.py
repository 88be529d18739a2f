#!/usr/bin/python
# Thin Ansible adapter over panfaas.deploy.ensure_action.

DOCUMENTATION = r"""
---
module: openwhisk_action
short_description: Create, update or delete an OpenWhisk action
description:
  - PUTs the action through OpenWhisk's REST API only when the deployed action differs from
    the desired one (code, kind, image, main, limits, parameters, annotations).
    Works against the all-in-one runtime and a real OpenWhisk controller. Check mode supported.
options:
  name:
    description: Action name, C(package/name) for an action in a package.
    type: str
    required: true
  kind:
    description: C(python:3.11), C(python:3), C(blackbox) or C(sequence).
    type: str
    default: python:3.11
  src:
    description:
      - A function file or directory. A directory with more than C(__main__.py) (or C(exec)) is
        deployed as a zip, built deterministically so that unchanged code is no change.
    type: path
  code:
    description: Code as text, instead of O(src).
    type: str
  image:
    description: Container image for C(blackbox) actions (C(wsk action create --docker)).
    type: str
  main:
    description: Entry point function name.
    type: str
  components:
    description: Fully qualified actions of a C(sequence).
    type: list
    elements: str
  limits:
    description: C(timeout) (ms), C(memory) (MB), C(logs) (MB), C(concurrency).
    type: dict
    default: {}
  parameters:
    description: Default parameters.
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
- name: Deploy the preview function
  openwhisk_action:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: panfaas/hdf5-preview
    kind: python:3.11
    src: functions/hdf5-preview
    limits: {timeout: 60000, memory: 512}
"""

RETURN = r"""
action:
  description: The action as the API returned it after the change.
  returned: when changed and not in check mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.panfaas_openwhisk import COMMON_ARGS, run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            COMMON_ARGS,
            name=dict(type="str", required=True),
            kind=dict(type="str", default="python:3.11"),
            src=dict(type="path"),
            code=dict(type="str"),
            image=dict(type="str"),
            main=dict(type="str"),
            components=dict(type="list", elements="str"),
            limits=dict(type="dict", default={}),
            parameters=dict(type="dict", default={}),
            annotations=dict(type="dict", default={}),
        ),
        mutually_exclusive=[("src", "code")],
        supports_check_mode=True,
    )
    from panfaas.deploy import action_code, ensure_action
    p = module.params
    exec_ = {"kind": p["kind"]}
    if p["src"]:
        exec_["code"], exec_["binary"] = action_code(p["src"])
    elif p["code"] is not None:
        exec_["code"] = p["code"]
    for k in ("image", "main", "components"):
        if p[k]:
            exec_[k] = p[k]
    if p["state"] == "present" and p["kind"] != "sequence" and "code" not in exec_ and "image" not in exec_:
        module.fail_json(msg="one of src, code or image is required")
    run(module, ensure_action, p["name"], exec_=exec_, limits=p["limits"], parameters=p["parameters"],
        annotations=p["annotations"])


if __name__ == "__main__":
    main()
