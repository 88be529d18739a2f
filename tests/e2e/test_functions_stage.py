"""The functions stage of the deployed all-in-one (playbooks/functions.yml, the final stage of
site.yml) with a blackbox `exec` function and a python one: deployed by the `functions` role
through the runtime's REST API, then run from their Kafka topics."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from panfaas.client import Functions
from services import BIN, REPO, endpoints, playbook, produce, recap, unique_topic, wait_until

pytestmark = pytest.mark.slow


def test_functions_stage_deploys_and_runs_a_blackbox_exec_function(aio, tmp_path):
    ep = endpoints(aio)
    sums, words = unique_topic("e2e-sums"), unique_topic("e2e-words")
    subprocess.run([str(BIN / "panfaas"), "kafka", "ensure-topics", "--bootstrap", ep["broker"]["bootstrap"],
                    sums, words], check=True, capture_output=True)
    fdir = tmp_path / "functions"
    shutil.copytree(REPO / "tests" / "fixtures" / "functions", fdir)
    for yml in fdir.glob("*/function.yml"):
        yml.write_text(yml.read_text().replace("TOPIC_SUMS", sums).replace("TOPIC_WORDS", words))
    extra = ("-e", json.dumps({"platform_functions_dir": str(fdir)}))
    assert recap(playbook("functions.yml", aio["state"], aio["ports"], *extra).stdout)["changed"] > 0
    assert recap(playbook("functions.yml", aio["state"], aio["ports"], *extra).stdout)["changed"] == 0

    fn = Functions.from_endpoints(aio["state"] / "endpoints.json")
    assert fn.get("actions", "fixtures/bb-wordcount")["exec"]["kind"] == "blackbox"
    since = int(time.time() * 1000)
    produce(ep["broker"]["bootstrap"], words, [{"text": "one two three four"}])
    produce(ep["broker"]["bootstrap"], sums, [{"numbers": [4, 5]}])

    def done(name):
        recs = [a for a in fn.activations(name=name, since=since) if a["response"]["success"]]
        return recs[0]["response"]["result"] if recs else None
    assert wait_until(lambda: done("bb-wordcount"), 30, what="the blackbox function") == {"words": [4],
                                                                                         "lang": "en"}
    assert wait_until(lambda: done("py-summarize"), 30, what="the python function") == {"sums": [18],
                                                                                       "unit": "counts"}
