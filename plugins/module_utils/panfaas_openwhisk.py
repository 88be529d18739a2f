# Shared by the openwhisk_* modules: connection options and the call into panfaas.deploy.

COMMON_ARGS = dict(
    api_host=dict(type="str", required=True),
    auth=dict(type="str", required=True, no_log=True),
    namespace=dict(type="str", default="_"),
    validate_certs=dict(type="bool", default=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
)

def connect(module):
    try:
        from panfaas.client import Functions
    except ImportError as e:
        module.fail_json(msg=f"panfaas is not importable ({e}); run ansible from the project's venv")
    p = module.params
    return Functions(p["api_host"], p["auth"], p["namespace"], verify=p["validate_certs"])


def run(module, ensure, name, **kwargs):
    try:
        from panfaas.client import ClientError
    except ImportError as e:
        module.fail_json(msg=f"panfaas is not importable ({e})")
    try:
        result = ensure(connect(module), name, state=module.params["state"],
                        check_mode=module.check_mode, **kwargs)
    except ClientError as e:
        module.fail_json(msg=str(e), status=e.status, body=e.body)
    except Exception as e:  # connection refused and the like, phrased for the operator
        module.fail_json(msg=f"{module.params['api_host']}: {e}")
    module.exit_json(**result)
