"""The Dagster UI as a user gets it, for end-to-end tests: `dagster dev -w workspace.yaml` (webserver,
daemon and code server, as `make dev` starts them) on a free loopback port, its GraphQL API, and
Debian's chromium driven through the DevTools protocol.

Nothing is faked: runs are launched through the webserver, queued by the instance's run coordinator,
dequeued by the daemon and executed by the code server's run worker, against the embedded servers.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from dual_db_tests.cli_support import BIN_DIR, REPO_ROOT

FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
# The text Dagster's UI shows instead of a region that failed to render (ui-components ErrorBoundary).
ERROR_BOUNDARY_TEXTS = ("can't be displayed", "can\u2019t be displayed", "Please report this error")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GraphQLError(AssertionError):
    pass


@dataclass
class DagsterUI:
    """A running `dagster dev`; `url` is the webserver's."""

    process: subprocess.Popen[bytes]
    url: str
    log_file: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:]

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60) -> Any:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise GraphQLError(json.dumps(payload["errors"], indent=1)[:4000])
        return payload["data"]

    def location_status(self, name: str) -> str | None:
        """The code location's load status (LOADING, LOADED), None while the webserver is not up."""
        try:
            data = self.graphql(LOCATION_STATUSES, timeout=10)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        entries = data["locationStatusesOrError"].get("entries") or []
        return next((e["loadStatus"] for e in entries if e["name"] == name), None)

    def location_error(self, name: str) -> str | None:
        data = self.graphql(WORKSPACE_LOCATIONS)
        for entry in data["workspaceOrError"]["locationEntries"]:
            if entry["name"] == name:
                loaded = entry["locationOrLoadError"] or {}
                return loaded.get("message")
        return f"no location {name} in the workspace"

    def launch(
        self,
        location: str,
        job: str,
        asset_selection: list[list[str]] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        selector: dict[str, Any] = {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "jobName": job,
        }
        if asset_selection is not None:
            selector["assetSelection"] = [{"path": path} for path in asset_selection]
        params = {
            "selector": selector,
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        result = self.graphql(LAUNCH_RUN, {"executionParams": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(json.dumps(result, indent=1)[:4000])
        return str(result["run"]["runId"])

    def run(self, run_id: str) -> dict[str, Any]:
        run = self.graphql(RUN, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        return dict(run)

    def wait_for_run(self, run_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in FINISHED:
                return run
            assert time.monotonic() < deadline, (
                f"run {run_id} still {run['status']} after {timeout} s\n{self.log_tail()}"
            )
            time.sleep(1)

    def failures(self, run_id: str) -> list[str]:
        """Messages of the run's failure events, for assertion messages."""
        events = self.graphql(RUN_EVENTS, {"runId": run_id})["logsForRun"]["events"]
        return [
            str(e.get("message")) + " " + str((e.get("error") or {}).get("message", ""))
            for e in events
            if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
        ]


LOCATION_STATUSES = """
query { locationStatusesOrError { __typename
  ... on WorkspaceLocationStatusEntries { entries { name loadStatus } } } }
"""

WORKSPACE_LOCATIONS = """
query { workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId status jobName pipelineSnapshotId parentPipelineSnapshotId
      repositoryOrigin { repositoryLocationName repositoryName }
      tags { key value }
      assetSelection { path }
      assetMaterializations { assetKey { path } }
    }
  }
}
"""

RUN_EVENTS = """
query Events($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    ... on EventConnection { events { __typename ... on MessageEvent { message }
      ... on ExecutionStepFailureEvent { error { message } } ... on RunFailureEvent { message } } }
  }
}
"""


def start_dagster_dev(
    *, cwd: Path, env: Mapping[str, str], log_file: Path, location: str, timeout: float = 240
) -> DagsterUI:
    """`dagster dev -w workspace.yaml` on a free loopback port; returns once `location` is loaded."""
    port = free_port()
    log = log_file.open("wb")
    process = subprocess.Popen(
        [
            str(BIN_DIR / "dagster"),
            "dev",
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=cwd,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole, and only it
    )
    log.close()
    ui = DagsterUI(process=process, url=f"http://127.0.0.1:{port}", log_file=log_file)
    deadline = time.monotonic() + timeout
    while ui.location_status(location) != "LOADED":
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process)
            raise AssertionError(f"dagster dev did not load the code location {location}:\n{ui.log_tail()}")
        time.sleep(1)
    error = ui.location_error(location)
    if error:
        stop_process_group(process)
        raise AssertionError(f"the code location {location} failed to load: {error}")
    return ui


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM to the process group this test started (dagster dev shuts its children down), then
    SIGKILL to what is left of that group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


# ---------------------------------------------------------------------------------------------------
# chromium

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def find_chromium() -> str:
    """Debian's chromium; fails (never skips) with what to do when it is missing."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(
        "chromium is not installed, and the browser tests need it: run `apt-get install -y chromium` "
        "(as root; `make test` does this when it can), or put a chromium on PATH"
    )


@dataclass
class Page:
    """One browser tab, driven through the DevTools protocol."""

    socket: ClientConnection
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def send(self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60) -> Any:
        message_id = next(self._ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": dict(params or {})}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no answer to {method} within {timeout} s"
            reply = json.loads(self.socket.recv(timeout=remaining))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML") or "")

    def wait_for(self, ready: Callable[[str], bool], what: str, timeout: float = 90) -> str:
        """Polls the rendered text until `ready(text)`; fails naming `what`, with what was shown."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            boundary = [t for t in ERROR_BOUNDARY_TEXTS if t in text]
            assert not boundary, f"an error boundary shows while waiting for {what}:\n{text[:3000]}"
            if ready(text):
                return text
            time.sleep(0.5)
        raise AssertionError(f"{what} did not render within {timeout} s; the page shows:\n{text[:3000]}")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        path.write_bytes(base64.b64decode(data["data"]))


@contextmanager
def chromium_page(width: int = 1600, height: int = 1000, timeout: float = 60) -> Iterator[Page]:
    """A headless chromium with a fresh profile, and its one tab."""
    binary = find_chromium()
    with tempfile.TemporaryDirectory(prefix="dual-db-chromium-") as profile:
        process = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (port_file.exists() and port_file.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                    raise AssertionError(f"chromium did not start ({binary}):\n{stderr[-3000:]}")
                time.sleep(0.2)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                targets = json.loads(response.read())
            [target] = [t for t in targets if t["type"] == "page"]
            with ws_connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout) as sock:
                page = Page(sock)
                page.send("Page.enable")
                page.send(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                )
                yield page
        finally:
            stop_process_group(process)  # type: ignore[arg-type]
