"""Check in a real browser what a researcher sees in MLflow's UI for one sweep, and save a screenshot of it.

It serves the store with `mlflow server` on a free local port, opens the sweep's experiment in headless Chromium
(1400x900) and prints one PASS/FAIL line per check:
  landing   the link sweep.py prints opens the model-training runs table, not the GenAI overview;
  grouping  the trials are nested under the sweep's summary run: its row has an expander that shows their rows;
  charts    the runs page's chart view lists the validation-loss curves in its first section.
It saves a PNG, 1200 px wide, of the chart view beside the expanded runs, stops the server in all cases, and exits
1 when a check fails, 2 when the store, the sweep or the browser is not there.

Requirements (Debian's Chromium and its driver; Playwright's browser download is not reachable here):
    apt-get install -y chromium chromium-driver && .venv/bin/pip install selenium -c constraints.txt
Usage (point --backend-store-uri at a copy of a store to try things out: the server may migrate its schema):
    .venv/bin/python tools/mlflow_ui_check.py --sweep demo-lr6 [--backend-store-uri sqlite:///mlflow.db]
        [--val-loss-key loss/val] [--out docs/mlflow_ui.png]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from abcmusic.tracking.metric_names import mlflow_key  # noqa: E402
from abcmusic.tracking.mlflow_store import (  # noqa: E402
    DEFAULT_ARTIFACTS, DEFAULT_DB, PARENT_RUN_TAG, SUMMARY_KEY, client, experiment_page, find_run)

SERVER_START_S = 600  # a cold `mlflow server` takes minutes on a loaded two-core machine
PAGE_S = 300  # so does a first load of the UI's bundle in a cold browser
WINDOW = (1400, 900)
SCREENSHOT_WIDTH = 1200
SCREENSHOT_MAX_KIB = 200
# Markers of MLflow 3.17's UI: the runs page's Table/Chart/Artifact switch, and its chart sections and cards.
VIEW_MODE = 'input[name="runs-view-mode"]'
SECTION_HEADER = '[data-testid="experiment-view-compare-runs-section-header"]'
CHART_CARD = '[data-testid="experiment-view-compare-runs-card"]'
CHART_SEARCH = 'input[placeholder="Search metric charts"]'
SPINNER = '[class*="spin-spinning"]'  # a chart card while its metric histories load
ROW_EXPANDER = 'button[data-component-id$="runnamecellrenderer.tsx_46"]'
ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'


@dataclass(frozen=True)
class Sweep:
    experiment_id: str
    summary_run_id: str | None
    trial_run_ids: tuple[str, ...]  # the runs nested under the summary run
    metric_keys: frozenset[str]  # logged by any of the sweep's runs


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(store_uri: str) -> Iterator[str]:
    """The base URL of an `mlflow server` over `store_uri`, stopped (with its workers) on exit."""
    port = free_port()
    # Experiments carry absolute artifact locations, so the read-only UI needs no artifact proxy; without one
    # the server creates no ./mlartifacts in whatever directory it is started from.
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
               "--default-artifact-root", (REPO / DEFAULT_ARTIFACTS).resolve().as_uri(), "--no-serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tempfile.TemporaryFile()  # not a pipe: unread, its request log would fill it and stall the server
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not answers(f"{base_url}/health"):
            if server.poll() is not None:
                log.seek(0)
                last_line = log.read().decode(errors="replace").strip().splitlines()[-1:]
                raise SystemExit(f"mlflow server exited: {' '.join(last_line)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"mlflow server did not answer {base_url}/health within {SERVER_START_S} s")
            time.sleep(2)  # polling an HTTP endpoint, not the page
        yield base_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # its own session: the workers go too, nothing else does
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def find_sweep(base_url: str, name: str) -> Sweep:
    experiment = client(base_url).get_experiment_by_name(name)
    if experiment is None:
        raise SystemExit(f"no experiment named {name!r} in this store")
    runs = client(base_url).search_runs([experiment.experiment_id], max_results=10_000)
    metric_keys = frozenset(key for run in runs for key in run.data.metrics)
    summary = find_run(base_url, experiment.experiment_id, SUMMARY_KEY, kind="summary")
    if summary is None:
        return Sweep(experiment.experiment_id, None, (), metric_keys)
    trial_run_ids = tuple(run.info.run_id for run in runs if run.data.tags.get(PARENT_RUN_TAG) == summary.info.run_id)
    return Sweep(experiment.experiment_id, summary.info.run_id, trial_run_ids, metric_keys)


def chromium() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    except WebDriverException as error:
        raise SystemExit(f"cannot start chromium (apt-get install -y chromium chromium-driver): {error.msg}")
    set_viewport(driver, *WINDOW)
    driver.set_page_load_timeout(PAGE_S)
    return driver


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    # Sizes the page itself; --window-size would size the outer window, whose page is 150 px shorter.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], object], what: str) -> None:
    """Waits for `condition`; a page that never gets there ends the run with one line naming `what`."""
    if not appears(driver, condition):
        raise SystemExit(f"the UI showed no {what} within {PAGE_S} s at {driver.current_url}")


def appears(driver: WebDriver, condition: Callable[[WebDriver], object]) -> bool:
    try:
        WebDriverWait(driver, PAGE_S).until(condition)
        return True
    except TimeoutException:
        return False


def row_ids(driver: WebDriver) -> set[str]:
    return {row.get_attribute("row-id") for row in driver.find_elements(By.CSS_SELECTOR, "[role=row][row-id]")}


def check_landing(driver: WebDriver, base_url: str, sweep: Sweep) -> Check:
    """The link the sweep prints opens the runs table. A plain experiment link opens whichever view the browser's
    GenAI/model-training switch last chose (GenAI in a fresh browser): MLflow 3.17 reads that switch, not the
    experiment's mlflow.experimentKind tag, so the plain link's view is reported, not checked."""
    driver.get(f"{base_url}/#/experiments/{sweep.experiment_id}")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, VIEW_MODE) or "/overview" in d.current_url,
             "runs table or GenAI overview")
    plain = "runs table" if driver.find_elements(By.CSS_SELECTOR, VIEW_MODE) else "GenAI overview"
    driver.get(f"{base_url}/{experiment_page(sweep.experiment_id)}")
    if appears(driver, lambda d: d.find_elements(By.CSS_SELECTOR, VIEW_MODE)):
        return Check("landing", True, f"the printed link opens the runs table (a plain link in a fresh browser: "
                                      f"{plain})")
    return Check("landing", False, f"the printed link does not open the runs table (a plain link: {plain})")


def check_grouping(driver: WebDriver, base_url: str, sweep: Sweep) -> Check:
    driver.get(f"{base_url}/{experiment_page(sweep.experiment_id)}")
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=row][row-id]"), "runs table rows")
    for close in driver.find_elements(By.CSS_SELECTOR, ASSISTANT_CLOSE):
        close.click()  # the assistant panel opens itself on first visit and hides half the charts
    if sweep.summary_run_id is None:
        return Check("grouping", False, "the sweep has no summary run")
    if not sweep.trial_run_ids:
        return Check("grouping", False, f"no run carries {PARENT_RUN_TAG}: {len(row_ids(driver))} runs listed flat")
    summary_row = f'[role=row][row-id="{sweep.summary_run_id}"]'
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, summary_row), "summary run row")
    shown_before = set(sweep.trial_run_ids) & row_ids(driver)
    expanders = driver.find_elements(By.CSS_SELECTOR, f"{summary_row} {ROW_EXPANDER}")
    if shown_before or not expanders:
        return Check("grouping", False, f"{len(shown_before)} trial rows listed beside the summary run, "
                                        f"{len(expanders)} expanders on it")
    expanders[0].click()
    if not appears(driver, lambda d: set(sweep.trial_run_ids) & row_ids(d)):
        return Check("grouping", False, "expanding the summary run shows no trial rows")
    shown = len(set(sweep.trial_run_ids) & row_ids(driver))
    return Check("grouping", True, f"summary run expands to {shown} of {len(sweep.trial_run_ids)} trial rows")


def open_chart_view(driver: WebDriver) -> list[str]:
    """Switches the runs page to its chart view; the chart sections as the UI lists them, e.g. 'cell (16)'."""
    chart_mode = driver.find_element(By.CSS_SELECTOR, f'{VIEW_MODE}[value="CHART"]')
    chart_mode.find_element(By.XPATH, "ancestor::label").click()  # the radio input itself lies under its icon
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, CHART_CARD), "chart cards")
    wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, f"{CHART_CARD} {SPINNER}"), "drawn charts")
    return [section_label(header.text) for header in driver.find_elements(By.CSS_SELECTOR, SECTION_HEADER)]


def section_label(header_text: str) -> str:
    return " ".join(header_text.split()).removesuffix(" Add chart")


def check_charts(driver: WebDriver, sweep: Sweep, sections: list[str], metric_key: str) -> Check:
    order = f"sections in order: {', '.join(sections) or 'none'}"
    if metric_key not in sweep.metric_keys:
        return Check("charts", False, f"no run logs {metric_key}; {order}")
    # Chart cards render only in view: filtering by the key and a tall page bring its card into view.
    search = driver.find_element(By.CSS_SELECTOR, CHART_SEARCH)
    search.send_keys(Keys.CONTROL, "a")  # the filter outlives a reload (local storage): replace it
    search.send_keys(metric_key)
    set_viewport(driver, WINDOW[0], 4 * WINDOW[1])
    curves = f'{CHART_CARD}:has(h4[title="{metric_key}"]) .scatterlayer .trace'
    if not appears(driver, lambda d: d.find_elements(By.CSS_SELECTOR, curves)):
        return Check("charts", False, f"no line chart of {metric_key}; {order}")
    header_text = driver.execute_script(
        "return arguments[0].closest('[class*=\"collapse-item\"]').querySelector(arguments[1]).innerText",
        driver.find_element(By.CSS_SELECTOR, curves), SECTION_HEADER)
    section = section_label(header_text).rsplit(" (", 1)[0]
    first = sections[0].rsplit(" (", 1)[0]
    where = "the first section" if section == first else f"section {section!r}, not the first ({first!r})"
    return Check("charts", section == first, f"{metric_key} curves in {where}; {order}")


def save_screenshot(driver: WebDriver, out: Path) -> Check:
    """Saves the page scaled to SCREENSHOT_WIDTH and reduced to a palette, which keeps a README image small."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    height = round(image.height * SCREENSHOT_WIDTH / image.width)
    image = image.resize((SCREENSHOT_WIDTH, height), Image.LANCZOS).quantize(colors=128)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    size_kib = out.stat().st_size // 1024
    return Check("screenshot", size_kib <= SCREENSHOT_MAX_KIB, f"{out} ({image.width}x{height}, {size_kib} KiB)")


def run_checks(base_url: str, sweep_name: str, metric_key: str, out: Path) -> Iterator[Check]:
    sweep = find_sweep(base_url, sweep_name)
    driver = chromium()
    try:
        yield check_landing(driver, base_url, sweep)
        yield check_grouping(driver, base_url, sweep)
        sections = open_chart_view(driver)
        yield save_screenshot(driver, out)  # before the chart search below narrows the view
        yield check_charts(driver, sweep, sections, metric_key)
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", required=True, help="the sweep's name, which is its experiment's name")
    parser.add_argument("--backend-store-uri", default=f"sqlite:///{(REPO / DEFAULT_DB).resolve()}")
    parser.add_argument("--val-loss-key", default=mlflow_key("val_loss"), help="the validation-loss metric key")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "mlflow_ui.png")
    args = parser.parse_args()
    store = Path(args.backend_store_uri.removeprefix("sqlite:///"))
    if args.backend_store_uri.startswith("sqlite:///") and not store.is_file():
        raise SystemExit(f"no store at {store}")  # `mlflow server` would create an empty one there
    passed = True
    with mlflow_server(args.backend_store_uri) as base_url:
        for check in run_checks(base_url, args.sweep, args.val_loss_key, args.out):
            print(f"{'PASS' if check.passed else 'FAIL'} {check.name}: {check.detail}", flush=True)
            passed &= check.passed
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as error:
        if isinstance(error.code, str):  # one clear line for the errors a user can cause
            print(f"error: {error.code}", file=sys.stderr)
            sys.exit(2)
        raise
