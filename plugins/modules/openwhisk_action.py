#!/usr/bin/python
# Thin Ansible adapter over panfaas.deploy.ensure_action.
DOCUMENTATION = r"""
---
module: openwhisk_action
short_description: Create, update or delete an OpenWhisk action
description:
  - PUTs the action through OpenWhisk's REST API (C(?overwrite=true), as C(wsk action update))
    only when the deployed action differs from the desired one in code, kind, image, main,
    components, the given limits, parameters or annotations.
  - Works against the all-in-one runtime and a real OpenWhisk controller.
options:
  name:
    description: Action name, C(package/name) for an action in a package (the package must exist).
    type: str
    required: true
  kind:
    description: C(python:3.11) (or another C(python:3.x)), C(blackbox) or C(sequence).
    type: str
    default: python:3.11
  src:
    description:
      - A function file or directory. A directory holding only C(__main__.py) (or only C(exec)),
        with no O(include), is deployed as text; with more files as a zip, built deterministically
        so that unchanged code is no change. C(function.yml), C(Dockerfile), C(README.md),
        C(requirements.txt) and C(tests/) are left out.
    type: path
  include:
    description:
      - More files to deploy beside the code of O(src), each at the top of the zip under its own
        name, e.g. modules several functions share. With it the code is always a zip.
      - A relative path is taken from the directory that holds O(src), so with
        O(src=functions/hdf5-preview) the item C(lib/storagehttp.py) is C(functions/lib/storagehttp.py)
        (the C(include) key of a C(function.yml), as the C(functions) role passes it).
      - A name that is already part of the code, or a file that does not exist, fails the task.
    type: list
    elements: path
    default: []
  code:
    description: Code as text, instead of O(src).
    type: str
  image:
    description:
      - Container image of a C(blackbox) action (C(wsk action create --docker IMAGE)). Without it a
        blackbox action gets C(openwhisk/dockerskeleton), as C(wsk action create --native) does, and
        its O(src) must provide an executable C(exec).
    type: str
  main:
    description: Entry point function name (python; default C(main)).
    type: str
  components:
    description: Fully qualified actions of a C(sequence), e.g. C(/_/panfaas/extract).
    type: list
    elements: str
  limits:
    description: C(timeout) (ms), C(memory) (MB), C(logs) (MB), C(concurrency). Only the given ones are compared.
    type: dict
    default: {}
  parameters:
    description: Default parameters (invocations override them, package parameters are overridden by them).
    type: dict
    default: {}
  annotations:
    description: Annotations, e.g. C(provide-api-key) or C(final).
    type: dict
    default: {}
extends_documentation_fragment:
  - panfaas_openwhisk
author: panfaas
"""

EXAMPLES = r"""
- name: Deploy the preview function from its directory
  openwhisk_action:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: panfaas/hdf5-preview
    kind: python:3.11
    src: functions/hdf5-preview
    include: [lib/storagehttp.py, lib/remotehdf5.py]   # from functions/lib, beside __main__.py
    limits: {timeout: 60000, memory: 512}
    parameters: {binning: 2}

- name: Deploy a blackbox action on its image, with its code injected at init (site OpenWhisk)
  openwhisk_action:
    api_host: https://openwhisk.example.org:31001
    auth: "{{ vault_openwhisk_auth }}"
    name: panfaas/video-deshake
    kind: blackbox
    image: registry.example.org/panfaas/video-deshake:0.1.0
    src: functions/video-deshake
    include: [lib/storagehttp.py]   # beside exec, which imports it

- name: Chain two actions
  openwhisk_action:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: panfaas/extract-and-check
    kind: sequence
    components: [/_/panfaas/metadata-extract, /_/panfaas/checksum-validate]

- name: Remove an action
  openwhisk_action:
    api_host: http://127.0.0.1:3233
    auth: "{{ functions_auth }}"
    name: old-function
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the action was (or, in check mode, would be) created, updated or deleted.
  returned: always
  type: bool
action:
  description: The action as the API returned it (after the change, or as deployed when unchanged).
  returned: when present and not in check mode with a change
  type: dict
  sample: {"namespace": "guest/panfaas", "name": "hdf5-preview", "version": "0.0.2",
           "exec": {"kind": "python:3.11", "binary": false}, "limits": {"timeout": 60000, "memory": 512}}
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
            include=dict(type="list", elements="path", default=[]),
            code=dict(type="str"),
            image=dict(type="str"),
            main=dict(type="str"),
            components=dict(type="list", elements="str"),
            limits=dict(type="dict", default={}),
            parameters=dict(type="dict", default={}),
            annotations=dict(type="dict", default={}),
        ),
        mutually_exclusive=[("src", "code"), ("src", "components"), ("code", "components")],
        supports_check_mode=True,
    )
    p = module.params
    exec_ = {"kind": p["kind"]}
    if p["state"] == "present":
        if p["src"]:
            from panfaas.deploy import action_code
            try:
                exec_["code"], exec_["binary"] = action_code(p["src"], p["include"])
            except (OSError, ValueError) as e:
                module.fail_json(msg=f"cannot read the code of {p['src']}: {e}")
        elif p["include"]:
            module.fail_json(msg="include needs src (the function directory the files go beside)")
        elif p["code"] is not None:
            exec_["code"] = p["code"]
        for k in ("image", "main", "components"):
            if p[k]:
                exec_[k] = p[k]
        if p["kind"] == "sequence" and not p["components"]:
            module.fail_json(msg="a sequence needs components")
        if p["kind"] != "sequence" and "code" not in exec_ and p["kind"] != "blackbox":
            module.fail_json(msg="one of src or code is required for a python action")
    run(module, "ensure_action", p["name"], exec_=exec_, limits=p["limits"], parameters=p["parameters"],
        annotations=p["annotations"])


if __name__ == "__main__":
    main()
