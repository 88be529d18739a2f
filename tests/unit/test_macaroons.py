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
