"""The router's configuration: dynamic-processing's sample config as the reference notes give it
(shared/reference/dcache-events-macaroons-cxi.md §4.3), and errors explained with their line."""

import textwrap

import pytest

from panfaas import events, router
from panfaas.router import config as rconfig

# The sample of §4.3, with the second rule the notes describe (create-path, '\1-output').
SAMPLE = textwrap.dedent(r"""
    kafka-client:
        id: my-unique-ID
        bootstrap-servers: localhost:9092
    url-generator:
        base: https://dcache.example.org/
        macaroons:
            username: dyn-data-agent
            password: dyn-data-password
            default-lifetime: PT15M
    files:
      - target: uploaded-foo-movies          # which topic to send event
        path-predicate:
            matching: '/data/foo/[^/]*\.mp4' # must match whole path
            ignoring: '-derived\.[^/.]*$'    # partial match, unless anchored
        urls:
            read:
                with-macaroon:
                    activity: DOWNLOAD
            write:
                with-macaroon:
                    activity: UPLOAD
                derived-path:
                    replacing: '([^/]*)\.([^.]*)$'
                    with: '\1-derived.\2'
            log:
                with-macaroon:
                    activity: UPLOAD
                derived-path:
                    replacing: '([^/]*)\.[^.]*$'
                    with: '\1-derived.log'
      - target: uploaded-foo-images
        path-predicate:
            matching: '/data/foo/incoming/[^/]*\.(jpe?g|tiff?)'
            ignoring: '-derived\.[^/.]*$'
        urls:
            read:
                with-macaroon:
                    activity: DOWNLOAD
            write:
                with-macaroon:
                    activity: UPLOAD
                derived-path:
                    replacing: '([^/]*)\.([^.]*)$'
                    with: '\1-output'
                create-path: true            # Create the path
    """).lstrip()


@pytest.fixture
def sample(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text(SAMPLE)
    return p


def upload(path):
    return events.parse_billing(events.billing_transfer(
        path=path, pnfsid="00", size=1, is_write=True, client="192.0.2.1", client_port=1, user="a", uid=1,
        gid=1, session="door:x@d:s", transfer_ms=1))


def test_sample_config_loads_as_dynamic_processing_reads_it(sample):
    conf = router.load_config(sample)
    assert (conf.client_id, conf.bootstrap) == ("my-unique-ID", "localhost:9092")
    assert (conf.username, conf.password, conf.default_lifetime) == ("dyn-data-agent", "dyn-data-password", "PT15M")
    assert conf.source.topic == "billing"          # hard-coded in dynamic-processing
    movies, images = conf.rules
    assert movies.target == "uploaded-foo-movies" and images.target == "uploaded-foo-images"
    assert [(u.name, u.activity, u.lifetime) for u in movies.urls] == [
        ("read", "DOWNLOAD", None), ("write", "UPLOAD", None), ("log", "UPLOAD", None)]
    write = images.urls[1]
    assert write.create_path and write.derive("/data/foo/incoming/pic.jpg") == "/data/foo/incoming/pic-output"


def test_sample_config_semantics(sample):
    conf = router.load_config(sample)
    m = lambda p: [r.target for r in router.matching_rules(conf.rules, upload(p))]  # noqa: E731
    assert m("/data/foo/clip.mp4") == ["uploaded-foo-movies"]
    assert m("/data/foo/clip-derived.mp4") == []                  # its own output is ignored
    assert m("/data/foo/incoming/pic.jpeg") == ["uploaded-foo-images"]
    assert m("/data/foo/incoming/pic.tif") == ["uploaded-foo-images"]
    assert m("/data/foo/incoming/pic-derived.jpg") == []
    assert m("/data/foo/incoming/clip.mp4") == []                 # [^/]* does not cross directories
    assert m("/data/foo/clip.mp4x") == []


def test_the_tab_in_the_original_sample_is_explained_with_its_line(tmp_path):
    # The upstream file indents create-path with a TAB (reference §4.3): invalid YAML.
    broken = SAMPLE.replace("            create-path: true", "    \t    create-path: true")
    p = tmp_path / "sample-config.yaml"
    p.write_text(broken)
    line = broken.splitlines().index("    \t    create-path: true            # Create the path") + 1
    conf, problems = router.check(p)
    assert conf is None
    assert len(problems) == 1 and problems[0].startswith(f"{p}:{line}: invalid YAML: a TAB character")
    with pytest.raises(router.RouterConfigError, match="TAB"):
        router.load_config(p)


def test_every_error_is_reported_with_its_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(textwrap.dedent(r"""
        kafka-client:
          id: x
          bootstrap-servers: localhost:9092
        url-generator:
          base: dcache.example.org
          macaroons:
            default-lifetime: 15 minutes
        files:
          - target: "bad topic"
            path-predicate:
              matching: '/data/(unclosed'
              ignorng: 'x'
            urls:
              read:
                with-macaroon:
                  activity: READ
              event: {}
            event-predicate:
              client: 300.1.2.3
              file-size: {min: 10 MB, max: 1 kB}
        """).lstrip())
    conf, problems = router.check(p)
    assert conf is None
    text = "\n".join(problems)
    expected = {
        5: "url-generator.base: must be an absolute http(s) URL",
        7: "url-generator.macaroons.default-lifetime: not an ISO-8601 duration",
        9: "files[0].target: 'bad topic' is not a valid Kafka topic name",
        11: "files[0].path-predicate.matching: invalid regular expression",
        12: "files[0].path-predicate.ignorng: unknown setting (did you mean 'ignoring'?)",
        16: "files[0].urls.read.with-macaroon.activity: unknown activity READ",
        17: "files[0].urls.event: 'event' is reserved",
        19: "files[0].event-predicate.client: not an IP address or CIDR network",
        20: "files[0].event-predicate.file-size: min (10000000) is larger than max (1000)",
    }
    for line, message in expected.items():
        assert f"{p}:{line}: {message}" in text, (line, text)
    lines = [int(x.split(":")[1]) for x in problems]
    assert lines == sorted(lines)   # in file order


def test_urls_with_macaroons_need_an_account():
    conf = {"kafka-client": {"id": "x", "bootstrap-servers": "b:1"}, "url-generator": {"base": "https://d/"},
            "files": [{"target": "t", "path-predicate": {"matching": ".*"},
                       "urls": {"read": {"with-macaroon": {}}}}]}
    with pytest.raises(router.RouterConfigError, match="macaroons.username: required: files.0..urls.read needs"):
        router.from_dict(conf)


def test_missing_rules_and_sections():
    _, problems = rconfig.validate({"kafka-client": {"id": "x", "bootstrap-servers": "b:1"}})
    messages = [p.format("c") for p in problems]
    assert "c: url-generator: required" in messages
    assert "c: files: at least one rule is required" in messages


def test_warnings_do_not_fail(tmp_path):
    p = tmp_path / "warn.yaml"
    p.write_text(SAMPLE.replace("            with-macaroon:\n                activity: DOWNLOAD\n",
                                "            with-macaroon:\n                activity: DOWNLOAD\n"
                                "            create-path: true\n", 1))
    conf, problems = router.check(p)
    assert conf is not None
    assert any("warning: files[0].urls.read.create-path: has no effect without derived-path" in x for x in problems)


def test_environment_overrides_the_file(sample, monkeypatch):
    monkeypatch.setenv("PANFAAS_ROUTER__URL_GENERATOR__MACAROONS__PASSWORD", "from-a-secret")
    monkeypatch.setenv("PANFAAS_ROUTER__KAFKA_CLIENT__BOOTSTRAP_SERVERS", "kafka:9093")
    conf = router.load_config(sample)
    assert conf.password == "from-a-secret" and conf.bootstrap == "kafka:9093"


def test_extensions_parse(tmp_path):
    p = tmp_path / "ext.yaml"
    p.write_text(SAMPLE + textwrap.dedent("""
        source:
          type: sse
          url: https://dcache.example.org:3880/api/v1
          paths: [/data/foo]
          state-file: /var/lib/router/sse.json
        dead-letter-topic: router-dead
        listen: {host: 0.0.0.0, port: 8089}
        """))
    conf = router.load_config(p)
    assert conf.source.type == "sse" and conf.source.paths == ["/data/foo"]
    assert conf.source.client_id == "my-unique-ID" and conf.source.username == "dyn-data-agent"
    assert (conf.dead_letter_topic, conf.listen_host, conf.listen_port) == ("router-dead", "0.0.0.0", 8089)


def test_sse_source_needs_its_settings(tmp_path):
    p = tmp_path / "sse.yaml"
    p.write_text(SAMPLE + "source:\n  type: sse\n  paths: [data/]\n")
    _, problems = router.check(p)
    text = "\n".join(problems)
    assert "source.url: required" in text and "source.state-file: required" in text
    assert "source.paths[0]: must be an absolute path" in text


@pytest.mark.parametrize("value, expected", [
    (1024, 1024), ("1 KiB", 1024), ("1kB", 1000), ("2 MB", 2_000_000), ("1M", 1024 ** 2), ("1.5 GiB", 1610612736),
])
def test_sizes(value, expected):
    assert rconfig.parse_size(value) == expected
