# Shared by the openwhisk_* modules: connection options and the call into panfaas.deploy,
# where the comparison and the REST calls live (and are tested).

COMMON_ARGS = dict(
    api_host=dict(type="str", required=True),
    auth=dict(type="str", required=True, no_log=True),
    namespace=dict(type="str", default="_"),
    validate_certs=dict(type="bool", default=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
)


def _import(module):
    try:
        from panfaas import client, deploy
    except ImportError as e:
        module.fail_json(msg=f"panfaas is not importable by {module._name}'s Python ({e}); "
                             "run ansible from the project's venv (make deploy)")
    return client, deploy


def connect(module):
    client, _ = _import(module)
    p = module.params
    return client.Functions(p["api_host"], p["auth"], p["namespace"], verify=p["validate_certs"])


def run(module, ensure_name, name, **kwargs):
    """Call panfaas.deploy.<ensure_name> and exit with its result (changed, the entity)."""
    client, deploy = _import(module)
    try:
        result = getattr(deploy, ensure_name)(connect(module), name, state=module.params["state"],
                                              check_mode=module.check_mode, **kwargs)
    except client.ClientError as e:
        module.fail_json(msg=str(e), status=e.status, body=e.body)
    except Exception as e:  # connection refused and the like, phrased for the operator
        module.fail_json(msg=f"{module.params['api_host']}: {type(e).__name__}: {e}")
    module.exit_json(**result)
