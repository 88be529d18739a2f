#!/usr/bin/python
# Thin Ansible adapter over panfaas.supervise; the logic and its tests live there.

DOCUMENTATION = r"""
---
module: supervisor_program
short_description: Keep an all-in-one service under supervisord in its desired state
description:
  - Writes C([program:NAME]) into C(<state_dir>/supervisor.d/), applies it to the running
    supervisord of that state directory, and restarts the program when its command, environment
    or one of the O(watch) files changed. Idempotent, with check mode.
options:
  state_dir:
    description: The all-in-one state directory (its supervisord must be running).
    type: path
    required: true
  name:
    description: Program name.
    type: str
    required: true
  command:
    description: Command and arguments (no shell).
    type: list
    elements: str
  directory:
    description: Working directory of the program.
    type: path
  environment:
    description: Extra environment variables.
    type: dict
    default: {}
  watch:
    description: Files whose content, when changed, restarts the program (its configuration).
    type: list
    elements: path
    default: []
  state:
    description: C(started) (the default), C(restarted), C(stopped) or C(absent).
    type: str
    default: started
    choices: [started, restarted, stopped, absent]
author: panfaas
"""

EXAMPLES = r"""
- name: Ensure the storage element runs
  supervisor_program:
    state_dir: "{{ storage_element_state_dir }}"
    name: storage
    command: ["{{ storage_element_bin_dir }}/panfaas", storage, serve, --config, /path/storage.yml]
    directory: "{{ storage_element_state_dir }}"
    watch: [/path/storage.yml]
"""

RETURN = r"""
actions:
  description: What was done (configured, reconfigured, added, started, restarted, stopped, removed).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state_dir=dict(type="path", required=True),
            name=dict(type="str", required=True),
            command=dict(type="list", elements="str"),
            directory=dict(type="path"),
            environment=dict(type="dict", default={}),
            watch=dict(type="list", elements="path", default=[]),
            state=dict(type="str", default="started",
                       choices=["started", "restarted", "stopped", "absent"]),
        ),
        required_if=[("state", "started", ("command", "directory")),
                     ("state", "restarted", ("command", "directory"))],
        supports_check_mode=True,
    )
    try:
        from panfaas.supervise import ensure_program
    except ImportError as e:
        module.fail_json(msg=f"panfaas is not importable by {module._name}'s Python ({e}); "
                             "run ansible from the project's venv (make deploy)")
    p = module.params
    try:
        result = ensure_program(p["state_dir"], p["name"], p["command"] or [], p["directory"] or "/",
                                {k: str(v) for k, v in p["environment"].items()}, p["watch"],
                                p["state"], module.check_mode)
    except Exception as e:
        module.fail_json(msg=f"supervisor program {p['name']}: {e}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
