"""Run inside the hub's network namespace by test_multihost.py (not a test module itself).

The controller, Redis and SeaweedFS listen on the hub's address; two workers run on their
own test hosts (network namespaces). A build starts on worker 1, then worker 1's link is
cut. Prints one JSON document of what happened.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from gate import gate, open_gate, wait_at_gate
from polling import until

REPO = Path(__file__).resolve().parents[2]
# The local-farm launcher is a script, not a package module: import it from its folder.
sys.path.insert(0, str(REPO / "deploy" / "local"))
import farm as localfarm  # noqa: E402

X86 = "x86_64-unknown-linux-gnu"




def main() -> None:
    state_dir, hub_ip, w1_ns, w2_ns, net_ns, cut_link = sys.argv[1:7]
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    farm = localfarm.Farm(dir=Path(state_dir), host=hub_ip)
    result: dict[str, object] = {}
    try:
        farm.start_redis()
        farm.start_s3()
        farm.start_controller(CROSSFARM_LOST_AFTER_S="6", CROSSFARM_PLACER_INTERVAL_S="0.5",
                              CROSSFARM_LEASE_GRACE_S="5")
        fast = {"CROSSFARM_HEARTBEAT_S": "1"}
        farm.start_worker("mh-w1", netns=w1_ns, **fast)
        farm.start_worker("mh-w2", netns=w2_ns, **fast)
        result = _scenario(farm, ["ip", "netns", "exec", net_ns, "ip", "link", "set",
                                  cut_link, "down"])
    except Exception as exc:  # the test reads the document; say what broke
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        farm.stop()
    print(json.dumps(result))


def _scenario(farm, cut: list[str]) -> dict[str, object]:
    from crossfarm.client.api import FarmClient
    from crossfarm.client.source import scan, send
    from crossfarm.shared.storage import S3Store, StorageSettings

    api = httpx.Client(base_url=farm.controller_url, timeout=30)
    crate = Path(farm.dir) / "crate"
    shutil.copytree(REPO / "tests/fixtures/hello-c", crate)
    gate(crate)  # never opened on worker 1: only its own fence can stop that build
    with FarmClient(farm.controller_url) as client:
        source = send(client, scan(crate)).status.digest
    api.post("/v1/workers/mh-w2/drain")  # so the build starts on worker 1
    until(lambda: farm.worker_state("mh-w2") == "drained", "w2 drained")
    build_id = api.post("/v1/builds", json={"source": source, "targets": [X86]}).json()[
        "build_id"]

    def job():
        return api.get(f"/v1/builds/{build_id}").json()["jobs"][0]

    first = until(lambda: (j := job())["state"] == "running" and j, "start")
    wait_at_gate(first["job_id"], attempt=1)
    api.delete("/v1/workers/mh-w2/drain")
    subprocess.run(cut, check=True)  # worker 1 is cut off from the hub
    cut = time.monotonic()
    rerun = until(lambda: (j := job())["attempt"] == 2 and j, "re-run")
    rerun_after = time.monotonic() - cut
    open_gate(first["job_id"], attempt=2)
    # Worker 1 cannot hear that: it stops its own build once its lease has lapsed
    # (twice the controller's 6 s bound); its build would otherwise wait for ever.
    until(lambda: not _containers("mh-w1"), "worker 1's build stopped")
    fenced_after = time.monotonic() - cut
    final = until(lambda: (j := job())["state"] in ("succeeded", "failed") and j, "end", 300)
    w1_log = Path(farm.dir) / "mh-w1.log"
    until(lambda: "abandoned: cut off from the controller" in w1_log.read_text(),
          "worker 1 to give its job up")  # and so to have published nothing, or never
    store = S3Store(StorageSettings(endpoint_url=farm.s3_url, bucket="crossfarm",
                                    access_key="crossfarm", secret_key="crossfarm-local-secret"))
    manifests = sorted(k for k in store.list_keys(f"builds/{build_id}/")
                       if k.endswith("manifest.json"))
    return {"first": first, "rerun": rerun, "final": job(), "finished": final,
            "manifests": manifests, "rerun_after_s": rerun_after,
            "fenced_after_s": fenced_after, "w1_state": farm.worker_state("mh-w1"),
            "w1_log": w1_log.read_text()[-20000:]}


def _containers(worker: str) -> list[str]:
    """The build containers of a worker, from the one Docker engine all hosts share."""
    return subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=io.crossfarm.worker={worker}"],
        capture_output=True, text=True, check=True).stdout.split()


if __name__ == "__main__":
    main()
