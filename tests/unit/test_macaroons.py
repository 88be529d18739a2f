import datetime as dt

import pymacaroons
import pytest

from panfaas import macaroons as m

KEY = b"k" * 32


def authority(**kw):
    return m.MacaroonAuthority(KEY, **kw)


def mint(a, path="/data/run1", caveats=(), validity="PT1H", inherited=()):
    return a.mint(uid=1000, gids=[1000], username="alice", path=path, caveats=list(caveats),
                  validity=validity, inherited=list(inherited))


def test_roundtrip_carries_identity_path_and_activity():
    a = authority()
    g = a.verify(mint(a, caveats=["activity:DOWNLOAD,LIST"]))
    assert (g.uid, g.gids, g.username) == (1000, [1000], "alice")
    assert g.allows("DOWNLOAD") and g.allows("LIST") and g.allows("READ_METADATA")
    assert not g.allows("UPLOAD")
    assert g.within_path("/data/run1/x.cxi") and not g.within_path("/data/run2/x.cxi")
    assert g.iid


def test_serialised_form_is_url_safe():
    token = mint(authority())
    assert token.startswith("MDA")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def test_tampered_macaroon_is_refused():
    a = authority()
    mac = pymacaroons.Macaroon.deserialize(mint(a, caveats=["activity:DOWNLOAD"]))
    forged = pymacaroons.Macaroon(location=mac.location, identifier=mac.identifier, key=b"x" * 32)
    forged.add_first_party_caveat("activity:UPLOAD")
    with pytest.raises(m.MacaroonError, match="signature"):
        a.verify(forged.serialize())


def test_expired_macaroon_is_refused():
    a = authority()
    token = mint(a, validity="PT1S")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    with pytest.raises(m.MacaroonError, match="expired"):
        a.verify(token, now=later)


def test_lifetime_beyond_maximum_is_refused():
    a = authority(max_lifetime=dt.timedelta(days=7))
    with pytest.raises(m.MacaroonError, match="beyond maximum"):
        mint(a, validity="P8D")


def test_unknown_caveat_is_rejected():
    with pytest.raises(m.MacaroonError, match="unknown caveat"):
        mint(authority(), caveats=["colour:blue"])


def test_path_caveats_concatenate():
    g = m.check_caveats(["path:/data", "path:/run1", "id:1;1;a", "iid:x"])
    assert g.path == "/data/run1"


def test_activity_caveats_intersect():
    g = m.check_caveats(["activity:DOWNLOAD,UPLOAD", "activity:UPLOAD,DELETE", "id:1;1;a", "iid:x"])
    assert g.allows("UPLOAD") and not g.allows("DOWNLOAD") and not g.allows("DELETE")


def test_inherited_macaroon_keeps_caveats():
    a = authority()
    parent = a.verify(mint(a, path="/data", caveats=["activity:DOWNLOAD"]))
    child = a.verify(mint(a, path="/run1", inherited=parent.caveats))
    assert child.path == "/data/run1"
    assert not child.allows("UPLOAD")
    assert child.iid != parent.iid          # a new issue, with the same identity
    assert (child.uid, child.username) == (parent.uid, parent.username)


@pytest.mark.parametrize("text, seconds", [("PT15M", 900), ("P1DT12H", 129600), ("PT0.5S", 0.5), ("P1D", 86400)])
def test_parse_duration(text, seconds):
    assert m.parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "15M", "PTXM"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        m.parse_duration(text)


def test_ip_caveat():
    g = m.check_caveats(["ip:127.0.0.0/8,::1", "id:1;1;a", "iid:x"])
    assert g.allows_ip("127.0.0.1") and g.allows_ip("::1") and not g.allows_ip("192.0.2.1")


IDS = ["iid:x", "id:1;1;a"]


def grant(*caveats):
    return m.check_caveats(IDS + list(caveats))


def test_iid_comes_first_and_before_last():
    cavs = [c.caveat_id for c in pymacaroons.Macaroon.deserialize(mint(authority())).caveats]
    assert cavs[0].startswith("iid:") and cavs[1] == "id:1000;1000;alice" and cavs[-1].startswith("before:")


def test_path_allows_inside_and_ancestors_denies_siblings():
    g = grant("path:/data/run1")
    assert g.within_path("/data/run1/x") and not g.within_path("/data")
    assert g.allows_path("/data") and g.allows_path("/")            # ancestors stay visible
    assert not g.allows_path("/data/run2") and not g.allows_path("/data/run10")


def test_root_is_a_prefix_for_everything():
    g = grant("root:/data", "root:/run1", "path:/sub")
    assert g.root == "/data/run1" and g.limit == "/data/run1/sub"
    assert g.within_path("/data/run1/sub/f") and not g.within_path("/data/run1/other")


@pytest.mark.parametrize("bad", ["path:relative", "root:/a/../b", "home:~alice", "path:/a/./../.."])
def test_paths_must_be_absolute_without_dot_dot(bad):
    with pytest.raises(m.MacaroonError, match="bad"):
        grant(bad)


def test_home_is_kept():
    assert grant("home:/users/alice").home == "/users/alice"


def test_before_every_one_must_hold():
    g = grant("before:2030-01-01T00:00:00Z", "before:2029-06-01T12:00:00.500Z")
    assert g.before == dt.datetime(2029, 6, 1, 12, 0, 0, 500000, tzinfo=dt.UTC)
    with pytest.raises(m.MacaroonError, match="bad before"):
        grant("before:2030-01-01T00:00:00")          # no Z


def test_ip_caveats_intersect_and_take_lists_and_cidrs():
    g = grant("ip:10.0.0.0/8,192.0.2.7,2001:db8::/32", "ip:10.1.0.0/16,2001:db8::1")
    assert g.allows_ip("10.1.2.3") and g.allows_ip("2001:db8::1")
    assert not g.allows_ip("10.2.0.1") and not g.allows_ip("192.0.2.7") and not g.allows_ip("not-an-ip")
    assert grant().allows_ip("203.0.113.5")              # no ip caveat: any address
    with pytest.raises(m.MacaroonError, match="bad ip"):
        grant("ip:")


def test_max_upload_smallest_wins_and_must_be_bytes():
    assert grant("max-upload:100", "max-upload:10").max_upload == 10
    for bad in ("max-upload:-1", "max-upload:1e3"):
        with pytest.raises(m.MacaroonError, match="bad max-upload"):
            grant(bad)


def test_empty_activity_allows_nothing_and_read_metadata_is_implied():
    assert not grant("activity:").allows("READ_METADATA")
    assert grant("activity:DOWNLOAD").allows("READ_METADATA")
    assert grant().allows("DELETE")                      # no activity caveat: unrestricted


@pytest.mark.parametrize("cavs, reason", [
    (["iid:x"], "exactly one id"), (["id:1;1;a"], "exactly one id"),
    (["iid:x", "iid:y", "id:1;1;a"], "exactly one"), (["iid:x", "id:1;1;a", "id:0;0;root"], "exactly one"),
    (["iid:x", "id:one;1;a"], "bad id"), (["iid:x", "id:1;1;"], "no username"),
])
def test_id_and_iid_exactly_once(cavs, reason):
    with pytest.raises(m.MacaroonError, match=reason):
        m.check_caveats(cavs)


def test_minting_errors_are_400_and_use_errors_are_401():
    with pytest.raises(m.MacaroonError) as e:
        m.check_caveats(["colour:red"], for_minting=True)
    assert e.value.status == 400
    with pytest.raises(m.MacaroonError) as e:
        m.check_caveats(["colour:red"])
    assert e.value.status == 401


def test_default_lifetime_and_requested_before():
    a = authority(default_lifetime=dt.timedelta(hours=2))
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    g = a.verify(mint(a, validity=None), now=now - dt.timedelta(days=3650))
    assert g.before is not None
    token = a.mint(uid=1, gids=[1], username="a", path="/", now=now)
    assert a.verify(token, now=now).before == now + dt.timedelta(hours=2)
    with pytest.raises(ValueError, match="longer than the maximum"):
        m.MacaroonAuthority(KEY, default_lifetime=dt.timedelta(days=8))


def test_attenuated_caveats_are_checked():
    a = authority()
    token = mint(a, caveats=["activity:DOWNLOAD,UPLOAD"])
    mac = pymacaroons.Macaroon.deserialize(token)
    mac.add_first_party_caveat("activity:DOWNLOAD")
    assert not a.verify(mac.serialize()).allows("UPLOAD")
    mac.add_first_party_caveat("id:0;0;root")
    with pytest.raises(m.MacaroonError, match="exactly one id"):
        a.verify(mac.serialize())


def test_relative_path_for_inheritance():
    g = grant("path:/data/run1")
    assert g.relative("/data/run1/sub") == "/sub"
    assert g.relative("/data/run1") == "" and g.relative("/data") == ""
    assert g.relative("/data/run2") is None
