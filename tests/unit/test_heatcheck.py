"""The offline Heat validator (panfaas.heatcheck) against the shipped templates and against
deliberately broken copies of them, made in a temporary directory by each test.

Real Heat: the openstack-heat package's resource plugins and schemas, loaded in-process. No
cloud is involved (custom constraints such as nova.flavor need one and are left to Heat)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from panfaas import cli, heatcheck
from services import REPO

HEAT = REPO / "heat"


@pytest.fixture
def tree(tmp_path):
    """A copy of heat/ to break; returns (root, edit) where edit(file, old, new) replaces text
    that must be there (a mutation that no longer applies fails the test instead of passing)."""
    root = tmp_path / "heat"
    shutil.copytree(HEAT, root)

    def edit(name: str, old: str, new: str) -> None:
        path = root / name
        text = path.read_text()
        assert old in text, f"{name} no longer contains {old!r}: update the test"
        path.write_text(text.replace(old, new, 1))
    return root, edit


def problems(root) -> list[str]:
    return [str(p) for p in heatcheck.validate_tree(root)]


def test_the_shipped_templates_and_environments_are_valid():
    assert problems(HEAT) == []


def test_every_template_uses_wallaby_and_the_stacks_are_the_expected_ones():
    for path in heatcheck.templates_in(HEAT):
        assert yaml.safe_load(path.read_text())["heat_template_version"] == "wallaby", path.name
    assert sorted(p.name for p in heatcheck.stack_templates(HEAT)) == [
        "gitlab.yaml", "mirror.yaml", "network.yaml", "runner-manager.yaml"]


def test_the_server_template_never_recreates_a_vm_for_a_user_data_change():
    server = yaml.safe_load((HEAT / "server.yaml").read_text())["resources"]
    props = server["server"]["properties"]
    assert props["user_data_format"] == "RAW"
    assert props["user_data_update_policy"] == "IGNORE"
    assert server["data_volume"]["deletion_policy"] == "Retain"
    assert server["data_volume_attachment"]["type"] == "OS::Cinder::VolumeAttachment"
    assert server["floating_ip"]["condition"] == "has_floating_ip"


def test_security_groups_are_least_privilege():
    net = yaml.safe_load((HEAT / "network.yaml").read_text())["resources"]
    groups = {name: r["properties"]["rules"] for name, r in net.items() if r["type"] == "OS::Neutron::SecurityGroup"}
    ports = {name: {(str(rule["port_range_min"]), str(rule["port_range_max"])) for rule in rules}
             for name, rules in groups.items()}
    # SSH is open only in the ssh group, and only from the admin CIDR parameter.
    assert [g for g, p in ports.items() if ("22", "22") in p] == ["ssh_security_group"]
    assert [rule["remote_ip_prefix"] for rule in groups["ssh_security_group"]] == [{"get_param": "admin_cidr"}]
    # 80/443 only in the web group; the mirror's ports only from the site subnet.
    assert [g for g, p in ports.items() if {("80", "80"), ("443", "443")} & p] == ["web_security_group"]
    mirror_sources = {str(rule["remote_ip_prefix"]) for rule in groups["mirror_security_group"]}
    assert mirror_sources == {"{'get_param': 'subnet_cidr'}"}
    # ... and only the GitLab VM, which serves the web, gets the web group.
    for stack in ("gitlab.yaml", "runner-manager.yaml", "mirror.yaml"):
        sgs = yaml.safe_load((HEAT / stack).read_text())["resources"]["vm"]["properties"]["security_groups"]
        assert ({"get_param": "web_security_group"} in sgs) == (stack == "gitlab.yaml"), stack


def test_parameters_carry_custom_constraints():
    for stack in ("gitlab.yaml", "runner-manager.yaml", "mirror.yaml"):
        params = yaml.safe_load((HEAT / stack).read_text())["parameters"]
        cons = {name: [c.get("custom_constraint") for c in p.get("constraints", [])] for name, p in params.items()}
        assert cons["image"] == ["glance.image"] and cons["flavor"] == ["nova.flavor"]
        assert cons["key_name"] == ["nova.keypair"] and cons["network"] == ["neutron.network"]


# -- the "done when" of the issue: a broken template names the file, resource and property --

def test_a_wrong_property_name_names_file_resource_and_property(tree):
    root, edit = tree
    edit("server.yaml", "      flavor: {get_param: flavor}\n", "      flavour: {get_param: flavor}\n")
    found = problems(root)
    assert "heat/server.yaml: resources.server.properties.flavour: unknown property 'flavour' of " \
           "OS::Nova::Server (did you mean 'flavor'?)" in found
    assert "heat/server.yaml: resources.server.properties.flavor: missing required property 'flavor' of " \
           "OS::Nova::Server" in found


def test_a_dangling_get_resource_names_file_resource_and_property(tree):
    root, edit = tree
    edit("server.yaml", "instance_uuid: {get_resource: server}", "instance_uuid: {get_resource: servr}")
    assert problems(root) == [
        "heat/server.yaml: resources.data_volume_attachment.properties.instance_uuid: get_resource 'servr': "
        "no such resource (did you mean 'server'?)"]


def test_the_cli_fails_and_prints_one_line_per_problem(tree, capsys):
    root, edit = tree
    edit("network.yaml", "      router: {get_resource: router}", "      router: {get_resource: routr}")
    assert cli.main(["heat", "validate", str(root)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == ["heat/network.yaml: resources.router_interface.properties.router: "
                                "get_resource 'routr': no such resource (did you mean 'router'?)"]
    assert "1 problem(s)" in err
    assert cli.main(["heat", "validate", str(HEAT)]) == 0
    assert "5 templates valid" in capsys.readouterr().out


@pytest.mark.parametrize("name,old,new,expected", [
    ("network.yaml", "type: OS::Neutron::Router\n", "type: OS::Neutron::Routr\n",
     "heat/network.yaml: resources.router.type: unknown resource type 'OS::Neutron::Routr' "
     "(did you mean 'OS::Neutron::Router'?)"),
    ("network.yaml", "type: OS::Neutron::Net\n", "type: OS::Nova::FloatingIP\n",
     "heat/network.yaml: resources.net.type: OS::Nova::FloatingIP is hidden: "
     "Please use OS::Neutron::FloatingIP instead."),
    ("network.yaml", "port_range_min: 22", "port_range_min: twenty-two",
     "heat/network.yaml: resources.ssh_security_group.properties.rules[0].port_range_min: expects Integer, "
     "got a string 'twenty-two'"),
    ("network.yaml", "port_range_min: 22", "port_range_min: 70000",
     "heat/network.yaml: resources.ssh_security_group.properties.rules[0].port_range_min: 70000 is out of range "
     "(min: 0, max: 65535)"),
    ("network.yaml", "port_range_min: {get_param: registry_port}", "port_range_min: {get_param: admin_cidr}",
     "heat/network.yaml: resources.mirror_security_group.properties.rules[0].port_range_min: expects number, "
     "but get_param gives string (get_param: admin_cidr)"),
    ("network.yaml", "          protocol: tcp\n", "          protocl: tcp\n",
     "heat/network.yaml: resources.ssh_security_group.properties.rules[0].protocl: unknown property 'protocl' "
     "of OS::Neutron::SecurityGroup rules (did you mean 'protocol'?)"),
    ("network.yaml", "network: {get_param: external_network}", "network: {get_param: external_net}",
     "heat/network.yaml: resources.router.properties.external_gateway_info.network: get_param 'external_net': "
     "no such parameter (did you mean 'external_network'?)"),
    ("network.yaml", "value: {get_attr: [subnet, cidr]}", "value: {get_attr: [subnet, cdir]}",
     "heat/network.yaml: outputs.subnet_cidr.value: get_attr: OS::Neutron::Subnet 'subnet' has no attribute "
     "'cdir' (did you mean 'cidr'?)"),
    ("server.yaml", "user_data_format: RAW", "user_data_format: RAWW",
     "heat/server.yaml: resources.server.properties.user_data_format: \"RAWW\" is not an allowed value "
     "[\"HEAT_CFNTOOLS\", \"RAW\", \"SOFTWARE_CONFIG\"]"),
    ("server.yaml", "value: {get_resource: server}", "value: {get_attr: [server, first_address]}",
     "heat/server.yaml: outputs.server_id.value: get_attr: attribute 'first_address' of OS::Nova::Server is "
     "hidden (removed)"),
    ("server.yaml", "- subnet: {get_param: subnet}", "- subnet_id: {get_param: subnet}",
     "heat/server.yaml: resources.port.properties.fixed_ips[0].subnet_id: property 'subnet_id' of "
     "OS::Neutron::Port fixed_ips is hidden: Use property subnet."),
    ("server.yaml", "condition: create_volume\n", "condition: create_volumes\n",
     "heat/server.yaml: resources.data_volume.condition: no condition 'create_volumes' "
     "(did you mean 'create_volume'?)"),
    ("server.yaml", "deletion_policy: Retain", "deletion_policy: Keep",
     "heat/server.yaml: resources.data_volume.deletion_policy: unknown deletion policy 'Keep' "
     "(Delete, Retain or Snapshot)"),
    ("server.yaml", "get_file: files/cloud-config.cfg", "get_file: files/cloud-init.yaml",
     "heat/server.yaml: resources.server.properties.user_data.str_replace_strict.template: get_file "
     "'files/cloud-init.yaml': no such file next to the template"),
    ("server.yaml", "__MOUNT_POINT__: {get_param: data_mount_point}",
     "__MOUNT_POINT__: {get_param: data_mount_point}\n            __HOSTNAME__: {get_param: name}",
     "heat/server.yaml: resources.server.properties.user_data.str_replace_strict.params.__HOSTNAME__: "
     "placeholder '__HOSTNAME__' does not occur in the template text"),
    ("server.yaml", "custom_constraint: nova.flavor", "custom_constraint: nova.flavr",
     "heat/server.yaml: parameters.flavor.constraints: unknown custom constraint 'nova.flavr' "
     "(did you mean 'nova.flavor'?)"),
    ("server.yaml", "heat_template_version: wallaby", "heat_template_version: 2016-10-14",
     "heat/server.yaml: heat_template_version: is '2016-10-14'; this project's templates use 'wallaby'"),
    ("server.yaml", "      metadata: {get_param: metadata}\n\n  server:",
     "      metadata: {get_param: metadata}\n    depends_on: [prt]\n\n  server:",
     "heat/server.yaml: resources.data_volume.depends_on: no resource 'prt' (did you mean 'port'?)"),
    ("mirror.yaml", "  data_volume_id:\n    type: string\n",
     "  spare:\n    type: string\n    default: x\n  data_volume_id:\n    type: string\n",
     "heat/mirror.yaml: parameters.spare: parameter is never used (no get_param refers to it)"),
    ("mirror.yaml", "  data_volume_size:\n    type: number\n", "  data_volume_size:\n    type: integer\n",
     "heat/mirror.yaml: parameters.data_volume_size: Invalid type (integer)"),
    ("mirror.yaml", "default: 200\n", "default: 2\n",
     "heat/mirror.yaml: parameters.data_volume_size: Invalid default 2 (2 is out of range (min: 10, max: None))"),
])
def test_a_broken_template_is_reported_precisely(tree, name, old, new, expected):
    root, edit = tree
    edit(name, old, new)
    found = problems(root)
    assert expected in found, "\n".join(found)


def test_a_nested_template_use_is_checked_against_its_parameters_and_outputs(tree):
    root, edit = tree
    edit("gitlab.yaml", "      subnet: {get_param: subnet}\n", "      subnets: {get_param: subnet}\n")
    edit("gitlab.yaml", "      data_volume_size: {get_param: data_volume_size}",
         "      data_volume_size: {get_param: site_name}")
    edit("gitlab.yaml", "value: {get_attr: [vm, fixed_ip]}", "value: {get_attr: [vm, fixed_address]}")
    found = problems(root)
    assert found == [
        "heat/gitlab.yaml: outputs.fixed_ip.value: get_attr: server.yaml 'vm' has no attribute 'fixed_address' "
        "(did you mean 'address'?)",
        "heat/gitlab.yaml: parameters.data_volume_size: parameter is never used (no get_param refers to it)",
        "heat/gitlab.yaml: resources.vm.properties.data_volume_size: expects number, but get_param gives string "
        "(get_param: site_name)",
        "heat/gitlab.yaml: resources.vm.properties.subnet: missing required property 'subnet' of server.yaml",
        "heat/gitlab.yaml: resources.vm.properties.subnets: unknown property 'subnets' of server.yaml "
        "(did you mean 'subnet'?)",
    ], "\n".join(found)


def test_the_nested_template_itself_is_validated_and_must_exist(tree):
    root, edit = tree
    edit("server.yaml", "      image: {get_param: image}\n", "      imag: {get_param: image}\n")
    edit("mirror.yaml", "type: server.yaml", "type: servers.yaml")
    found = problems(root)
    assert "heat/server.yaml: resources.server.properties.imag: unknown property 'imag' of OS::Nova::Server " \
           "(did you mean 'image'?)" in found
    assert "heat/mirror.yaml: resources.vm.type: nested template 'servers.yaml' does not exist" in found


@pytest.mark.parametrize("env,expected", [
    ("parameter_defaults:\n  subnet_cdir: 10.0.0.0/24\n",
     "heat/env/site.yaml: parameter_defaults.subnet_cdir: no template declares parameter 'subnet_cdir' "
     "(did you mean 'subnet_cidr'?)"),
    ("parameters:\n  subnet_cidr: 10.0.0.0/24\n",
     "heat/env/site.yaml: parameters.subnet_cidr: not declared by heat/gitlab.yaml, heat/mirror.yaml, "
     "heat/runner-manager.yaml (an environment's 'parameters' apply to every stack it is used with; "
     "use parameter_defaults)"),
    ("parameter_defaults:\n  registry_port: many\n",
     "heat/env/site.yaml: parameter_defaults.registry_port: does not fit parameter 'registry_port' of "
     "heat/network.yaml: Parameter 'registry_port' is invalid: could not convert string to float: 'many'"),
    ("parameter_default:\n  subnet_cidr: 10.0.0.0/24\n",
     "heat/env/site.yaml: not a valid environment file: environment has wrong section \"parameter_default\""),
])
def test_an_environment_may_set_only_declared_parameters(tree, env, expected):
    root, _ = tree
    (root / "env" / "site.yaml").write_text(env)
    found = problems(root)
    assert expected in found, "\n".join(found)


def test_the_cloud_config_renders_to_valid_cloud_init_with_a_valid_script(tmp_path):
    """What Heat's str_replace_strict makes of files/cloud-config.cfg: a #cloud-config YAML
    document whose data-volume script passes `sh -n`."""
    import subprocess

    server = yaml.safe_load((HEAT / "server.yaml").read_text())
    params = server["resources"]["server"]["properties"]["user_data"]["str_replace_strict"]["params"]
    text = (HEAT / "files" / "cloud-config.cfg").read_text()
    for key, value in {"__VOLUME_ID__": "0b7c2f1e-4d6a-4c3e-9a51-6f1d2e3c4b5a", "__MOUNT_POINT__": "/srv/data"}.items():
        assert key in params and key in text
        text = text.replace(key, value)
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["ssh_pwauth"] is False and doc["disable_root"] is True
    (script,) = [f for f in doc["write_files"] if f["path"] == "/usr/local/sbin/panfaas-data-volume"]
    assert doc["runcmd"] == [[script["path"]]]
    (tmp_path / "script.sh").write_text(script["content"])
    out = subprocess.run(["sh", "-n", str(tmp_path / "script.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'serial=$(printf %s "$id" | cut -c1-20)' in script["content"]
