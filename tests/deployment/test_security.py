"""The deployed federation closed to outsiders, attacked on loopback (issue 16).

One federation (coordinator + two site processes) is started once for the module:

* an outsider holding only ``ca.crt`` and the address the sites use cannot list runs,
  register a key, start a run, or acquire a Runtime task (four refusals), while the
  operator's own ``fedmi-server`` on the coordinator host can;
* a copy of fedmi with one added line (writing a marker file), submitted by the operator
  with plain ``flwr run``, never executes: the coordinator's launcher refuses its
  ServerApp; once the coordinator approves it, the site refuses it; the marker never
  appears, and the site answers the next, approved run;
* site-b's registered node, joined with site-a's folder, claims to be site-a: refused and
  reported, site-a's row is site-a's.

Every process is started in its own session and killed by PID in the finalizer.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.deployment.test_deployment import ROOT, Deployment, _free_ports, _ok, _wait

pytestmark = pytest.mark.slow

RUN_CONFIG = (
    "num-server-rounds=1 local-epochs=1 min-nodes=2 min-train-replies=1 "
    "round-timeout=30 validation-timeout=60 node-wait=60"
)


@pytest.fixture(scope="module")
def federation(tiny_fdg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    dep = Deployment(tmp)
    link, port_a, port_b = _free_ports(3)
    certs, state = tmp / "certs", tmp / "coordinator"
    site_a = tiny_fdg / "site-a"
    try:
        _ok(dep.cli("server", "certs", "--out", str(certs), "--address", "127.0.0.1"))
        dep.pid_files += [state / n for n in ("superlink.pid", "front.pid", "executor.pid")]
        start = ("start", "--certs", str(certs), "--state", str(state), "--port", str(link))
        _ok(dep.cli("server", *start, "--background"))
        for name, port in (("a", port_a), ("b", port_b)):
            sdir = tmp / f"state-{name}"
            _ok(dep.cli("client", "keygen", "--out", str(tmp / "keys" / name)))
            pub = str(tmp / "keys" / name / "site.pub")
            _ok(dep.cli("server", "register", "--key", pub, "--site", f"site-{name}"))
            # site-b's node joins with site-a's folder: it will claim to be site-a
            check = ("check", "--site-dir", str(site_a), "--task", "fdg-ad")
            _ok(dep.cli("client", *check, "--state-dir", str(sdir), timeout=300))
            dep.pid_files += [sdir / "supernode.pid", sdir / "site.pid"]
            joined = dep.cli(
                "client", "join", "--superlink", f"127.0.0.1:{link}", "--ca",
                str(certs / "ca.crt"), "--key", str(tmp / "keys" / name / "site"),
                "--site-dir", str(site_a), "--state-dir", str(sdir), "--port", str(port),
                "--node-config", 'dp="off"', "--background",
            )  # fmt: skip
            assert "connected" in _ok(joined)
        yield dep, tmp, link
    finally:
        dep.stop_all()


def _flwr(dep: Deployment, home: Path, *args: str, timeout: float = 120):
    env = {**dep.env, "FLWR_HOME": str(home)}
    exe = shutil.which("flwr") or "flwr"
    return subprocess.run(
        [exe, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_an_outsider_with_ca_crt_reaches_nothing_but_fleet(federation):
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.runtime import RuntimeHttpClient

    from fedmi.server.deploy.flower import write_connection

    dep, tmp, link = federation
    outsider = tmp / "outsider-home"
    write_connection(f"127.0.0.1:{link}", tmp / "certs" / "ca.crt", name="x", home=outsider)
    _ok(dep.cli("client", "keygen", "--out", str(tmp / "keys" / "outsider")))
    refusals = {
        "list runs": _flwr(dep, outsider, "ls", "x", "--format", "json"),
        "register a key": _flwr(
            dep,
            outsider,
            "supernode",
            "register",
            str(tmp / "keys" / "outsider" / "site.pub"),
            "x",
            "--format",
            "json",
        ),  # fmt: skip
        "start a run": _flwr(dep, outsider, "run", str(ROOT), "x", "--format", "json"),
    }
    for what, proc in refusals.items():
        doc = proc.stdout[proc.stdout.find("{") :] if "{" in proc.stdout else "{}"
        assert proc.returncode != 0 or not json.loads(doc).get("success"), (what, proc.stdout)
    client = RuntimeHttpClient.from_server_address(
        server_address=f"127.0.0.1:{link}",
        insecure=False,
        root_certificates=(tmp / "certs" / "ca.crt").read_bytes(),
        interceptors=[],
    )
    with pytest.raises(Exception, match="404"):
        client.AcquireTask(AcquireTaskRequest(supported_task_types=["flwr-serverapp"]))
    client.close()
    # the operator on the coordinator host reaches Control (loopback): nothing was added
    status = _ok(dep.cli("server", "status"))
    assert "sites: 2 registered, 2 online" in status and "runs: 0" in status, status


def _submit(dep: Deployment, home: Path, app: Path, run_dir: Path) -> str:
    """Plain `flwr run` by the coordinator's operator; returns the run id."""
    submitted = _flwr(
        dep, home, "run", str(app), "fedmi", "--run-config", f'{RUN_CONFIG} out-dir="{run_dir}"'
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    return re.search(r"started run (\d+)", submitted.stdout).group(1)


def test_an_unapproved_app_never_runs_and_the_site_stays_usable(federation):
    from fedmi.shared.trust import installed_fab_hash

    dep, tmp, link = federation
    copy, marker = tmp / "fedmi-copy", tmp / "marker"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "tests", "__pycache__", ".*"))
    app = copy / "client" / "app.py"
    app.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + app.read_text())
    home = tmp / "flwr-home"
    # the coordinator's launcher refuses it: its ServerApp never starts
    _submit(dep, home, copy, tmp / "run-refused")
    executor_log = tmp / "coordinator" / "executor.log"
    _wait(
        lambda: "has not approved this app" in executor_log.read_text(errors="replace"),
        120,
        "the coordinator's refusal",
    )
    # a coordinator that approved it: the site still refuses it
    _ok(dep.cli("server", "approve", installed_fab_hash(copy)))
    run_id = _submit(dep, home, copy, tmp / "run-unapproved")
    site_log = tmp / "state-a" / "site.log"
    _wait(
        lambda: "has not approved this app" in site_log.read_text(errors="replace"),
        120,
        "the site's refusal",
    )
    _flwr(dep, home, "stop", run_id, "fedmi")
    time.sleep(1)
    assert not marker.exists()

    # the next run, of the approved (installed) release, runs at the same site
    out = tmp / "run-approved"
    proc = dep.cli("server", "run", "--out", str(out), "--run-config", RUN_CONFIG, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert not marker.exists()
    # site-b's node claimed to be site-a: refused and reported, site-a's row is site-a's
    assert [s["site_id"] for s in report["sites"]] == ["site-a"]
    refused = report["identity_refusals"]
    assert len(refused) == 1 and refused[0]["claimed"] == "site-a"
    assert refused[0]["reason"] == "node is registered as 'site-b'"
    assert report["rounds"][0]["train"]["site-a"]["status"] == "ok"
    assert "Traceback" not in proc.stderr
