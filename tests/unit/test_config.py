import pytest

from panfaas import config


def test_env_overrides_nested_keys_with_yaml_values(tmp_path, monkeypatch):
    p = tmp_path / "c.yml"
    p.write_text("listen: {host: 127.0.0.1, port: 1}\nname: x\n")
    monkeypatch.setenv("PANFAAS_DEMO__LISTEN__PORT", "8080")
    monkeypatch.setenv("PANFAAS_DEMO__LOG_LEVEL", "debug")
    conf = config.load("demo", p, {"listen": {"host": "0.0.0.0", "port": 0}, "log-level": "info"})
    assert conf["listen"] == {"host": "127.0.0.1", "port": 8080}
    assert conf["log-level"] == "debug" and conf["name"] == "x"


def test_broken_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text("a: 1\nb: [unclosed\n")
    with pytest.raises(config.ConfigError, match=r"c\.yml:\d+: invalid YAML"):
        config.load("demo", p, {})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load("demo", tmp_path / "nope.yml", {})
