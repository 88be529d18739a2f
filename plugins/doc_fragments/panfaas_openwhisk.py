# Options shared by the openwhisk_* modules (see plugins/module_utils/panfaas_openwhisk.py).
class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_host:
    description:
      - OpenWhisk API host URL, the all-in-one runtime (C(http://127.0.0.1:3233)) or a site's
        controller (C(https://openwhisk.example.org:31001)). A bare C(host:port) means https, as in wsk.
    type: str
    required: true
  auth:
    description: The namespace's C(uuid:key) (the wsk C(AUTH) property).
    type: str
    required: true
  namespace:
    description: Namespace; C(_) is the default namespace of O(auth).
    type: str
    default: _
  validate_certs:
    description: Verify the API's TLS certificate (C(false) for a self-signed one, as C(wsk -i)).
    type: bool
    default: true
  state:
    description: C(present) or C(absent).
    type: str
    default: present
    choices: [present, absent]
requirements:
  - the panfaas package importable by the module's Python (the project's venv)
notes:
  - Check mode reports what would change and changes nothing.
  - Idempotent - nothing is written when the deployed entity already equals the desired one.
"""
