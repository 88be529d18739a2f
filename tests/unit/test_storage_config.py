"""The storage element's configuration: one clear line for each kind of mistake."""

import pytest
import yaml

from panfaas import config as cfg
from panfaas.storage.server import DEFAULTS, Storage


@pytest.fixture
def conf(tmp_path):
    (tmp_path / "users.yml").write_text(yaml.safe_dump({"users": {"a": {"password": "p", "uid": 1, "gid": 1}}}))
    (tmp_path / "key").write_text("k" * 32)
    return cfg.deep_merge(DEFAULTS, {"data-dir": str(tmp_path / "data"), "users-file": str(tmp_path / "users.yml"),
                                     "macaroons": {"root-key-file": str(tmp_path / "key")}})


def test_a_good_configuration_builds(conf):
    s = Storage(conf)
    assert s.url == "http://127.0.0.1:2880" and s.frontend_url == s.url
    assert s.door.frontend is s.frontend


def test_a_frontend_listener_of_its_own(conf):
    conf["frontend"]["listen"] = {"host": "127.0.0.1", "port": 3880}
    s = Storage(conf)
    assert s.frontend_url == "http://127.0.0.1:3880" and s.door.frontend is None


@pytest.mark.parametrize("change, message", [
    ({"users-file": None}, "missing required setting 'users-file'"),
    ({"macaroons": {"root-key-file": None}}, "missing required setting 'macaroons.root-key-file'"),
    ({"macaroons": {"max-lifetime": "7 days"}}, "not an ISO-8601 duration"),
    ({"macaroons": {"default-lifetime": "P8D"}}, "longer than 'macaroons.max-lifetime'"),
    ({"frontend": {"backlog": 0}}, "'frontend.backlog' must be a positive number"),
    ({"macaroons": {"root-key-file": "/no/such/key"}}, "cannot read macaroon root key"),
])
def test_mistakes_are_one_clear_line(conf, change, message):
    with pytest.raises(cfg.ConfigError, match=message.replace("(", r"\(")):
        Storage(cfg.deep_merge(conf, change))


def test_users_file_is_checked(conf, tmp_path):
    (tmp_path / "users.yml").write_text(yaml.safe_dump({"users": {"a": {"password": "p", "uid": 1}}}))
    with pytest.raises(cfg.ConfigError, match="needs password, uid and gid"):
        Storage(conf)
    (tmp_path / "users.yml").write_text(yaml.safe_dump({"users": {"a": {"password": "p", "uid": 1, "gid": 1,
                                                                       "root": "data"}}}))
    with pytest.raises(cfg.ConfigError, match="must be an absolute path"):
        Storage(conf)
