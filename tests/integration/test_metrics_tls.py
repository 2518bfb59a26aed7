"""A real Prometheus server scrapes a real agent's /metrics over TLS, with a client certificate
and a password (`up --metrics-web-config`), from the node's namespace; one without the password
is refused. Prometheus runs in the namespace at the other end of the node's uplink, as from
another machine. Before, the metrics were plain HTTP to anyone who reached the address: an operator
who served them beyond loopback, as Prometheus on another machine needs, had no way to protect
them."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import time

import bcrypt
import yaml

from dataplane.core import state
from lab import certs
from tests.integration.conftest import dp, dp_json
from tests.integration.test_cli import host, nothing_created  # noqa: F401 - the namespace-with-uplink fixture

DOCS = pathlib.Path(__file__).parents[2] / "docs/prometheus"
ADDRESS = "198.18.1.1:9469"          # the node's uplink address (test_cli's host fixture)
PROM = "127.0.0.1:9090"              # Prometheus's own, in the uplink's peer namespace: another machine


def _query(netns: str, q: str) -> dict:
    """Prometheus's instant query q, from inside netns: {job: value} ({} while it does not answer)."""
    code = ("import json, sys, urllib.parse, urllib.request; "
            f"u = 'http://{PROM}/api/v1/query?' + urllib.parse.urlencode({{'query': sys.argv[1]}}); "
            "print(urllib.request.urlopen(u, timeout=5).read().decode())")
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, q],
                       capture_output=True, text=True, timeout=30)
    if r.returncode:
        return {}
    return {s["metric"].get("job"): float(s["value"][1]) for s in json.loads(r.stdout)["data"]["result"]}


def _prometheus_config(tmp_path, pki, client, password_file: str) -> str:
    """docs/prometheus/scrape.yml's job with this test's files and target; beside it, the same
    job without the password, and one in plain HTTP."""
    job = yaml.safe_load((DOCS / "scrape.yml").read_text())["scrape_configs"][0]
    job["tls_config"] = {"ca_file": pki.cert, "cert_file": client.cert, "key_file": client.key}
    job["basic_auth"]["password_file"] = password_file
    job["static_configs"] = [{"targets": [ADDRESS]}]
    bare = {k: v for k, v in job.items() if k != "basic_auth"}
    cfg = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
           "scrape_configs": [job, {**bare, "job_name": "no-password"},
                              {"job_name": "plain-http", "scheme": "http", "static_configs": job["static_configs"]}]}
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(cfg))          # (JSON is YAML)
    return str(path)


def test_prometheus_scrapes_the_agent_over_tls_with_a_certificate_and_a_password(host, tmp_path):  # noqa: F811
    d = tmp_path / "etc"                      # docs/prometheus/web-config.yml's files, by its names
    ca = certs.make_ca(str(d), "ca", "metrics CA")
    certs.make_cert(str(d), ca, "metrics", "/CN=dataplane-metrics", ips=("198.18.1.1",), server=True)
    shutil.copy(ca.cert, d / "prometheus-ca.crt")
    client = certs.make_cert(str(d), ca, "prometheus", "/O=monitoring/OU=prometheus")
    password = tmp_path / "password"
    password.write_text("a long random one")
    hashed = bcrypt.hashpw(password.read_bytes(), bcrypt.gensalt(6)).decode()
    example = (DOCS / "web-config.yml").read_text()
    placeholder = d / "as-shipped.yml"
    placeholder.write_text(example)
    web = d / "web-config.yml"
    web.write_text(example.replace("PUT-A-BCRYPT-HASH-HERE", hashed))
    bad = tmp_path / "bad.yml"
    bad.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    up = ["--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--registry", f"sqlite://{tmp_path}/reg.db",
          "--host-name", "me", "--metrics-address", ADDRESS]
    prom = None
    try:
        r = dp(*up, "--metrics-web-config", str(bad), check=False)
        assert r.returncode == 2 and "would send the passwords in clear" in r.stderr, (r.returncode, r.stderr)
        nothing_created(host)
        r = dp(*up, "--metrics-web-config", str(placeholder), check=False)
        assert r.returncode == 2 and "'prometheus' is no bcrypt hash" in r.stderr, "the example ships no password"
        nothing_created(host)
        r = dp(*up)
        assert "plain HTTP to anyone who reaches that address" in r.stderr, r.stderr
        dp("--netns", host, "down")
        r = dp(*up, "--metrics-web-config", str(web))
        assert "plain HTTP" not in r.stderr, r.stderr
        st = dp_json("--netns", host, "status")
        assert st["metrics_web_config"] == str(web) and not st["errors"], st
        assert state.load_boot(host)["metrics_web_config"] == str(web), "kept for the next boot"
        config = _prometheus_config(tmp_path, ca, client, str(password))
        there = host + "p"
        subprocess.run(["ip", "-n", there, "link", "set", "lo", "up"], check=True)
        prom = subprocess.Popen(
            ["ip", "netns", "exec", there, "prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={tmp_path}/tsdb", f"--web.listen-address={PROM}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
        deadline, up_by_job, synced = time.monotonic() + 60, {}, {}
        while time.monotonic() < deadline and not (len(up_by_job) == 3 and synced.get("dataplane") == 1):
            time.sleep(1)
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            up_by_job = _query(there, "up")
            synced = _query(there, "dataplane_agent_synced")
        assert up_by_job == {"dataplane": 1, "no-password": 0, "plain-http": 0}, up_by_job
        assert synced == {"dataplane": 1}, synced
        assert _query(there, 'dataplane_map_capacity{map="dp_fdb"}') == {"dataplane": 65536}
        # Taken at the agent's start: a change on a running node is a restart away, and status says so.
        r = dp(*up, "--metrics-web-config", "off")
        assert "the running agent serves /metrics as it started: restart it" in r.stderr, r.stderr
        errors = dp_json("--netns", host, "status")["errors"]
        assert any(f"web config none, the agent serves with {web}: restart the agent" in e for e in errors), errors
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        dp("--netns", host, "down", check=False)
