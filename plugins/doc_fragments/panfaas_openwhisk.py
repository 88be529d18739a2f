# Options shared by the openwhisk_* modules (see plugins/module_utils/panfaas_openwhisk.py).


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_host:
    description: OpenWhisk API host URL (the all-in-one runtime, or a site's controller).
    type: str
    required: true
  auth:
    description: The namespace's C(uuid:key).
    type: str
    required: true
  namespace:
    description: Namespace; C(_) is the default namespace of O(auth).
    type: str
    default: _
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
  state:
    description: C(present) or C(absent).
    type: str
    default: present
    choices: [present, absent]
"""
