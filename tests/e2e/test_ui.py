"""The Airflow UI as a person uses it: headless Chromium (Debian's `chromium` and `chromium-driver`,
never a downloaded browser) signs in, opens the bad release's failed canary gate and finds the cause
in its log view, follows the gate's extra links and opens the Releases page. Reads the one demo run
of the session (tests/e2e/conftest.py), before any test changes it. Screenshots: var/e2e/artifacts/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import require
from tests.e2e.conftest import AIRFLOW_URL, APP, ARTIFACTS, BAD_VERSION, PLATFORM_FILE, api, releases_api

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("docker_engine")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's; set explicitly so selenium-manager never downloads one
GATE_TASK = "canary.analysis"
CAUSE = "failed its analysis"
PAGE_WAIT_S = 90.0  # seconds for the UI to load and render the log (the 2-core machine is busy)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    have = CHROMIUM.exists() and CHROMEDRIVER.exists()
    require("Chromium", have, "Debian: `apt-get install chromium chromium-driver` (scripts/setup.sh does it)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require("selenium", False, "`.venv/bin/pip install -c constraints.txt -r requirements.txt`")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def bad_release_run(password: str) -> str:
    runs = api(password).get(f"/dags/release_{APP}/dagRuns", limit=100, order_by="-start_date")["dag_runs"]
    failed = [r for r in runs if (r.get("conf") or {}).get("version") == BAD_VERSION and r["state"] == "failed"]
    assert failed, f"no failed release_{APP} run of {BAD_VERSION}: {[(r['conf'], r['state']) for r in runs]}"
    return str(failed[0]["dag_run_id"])


def task_page(dag_id: str, run_id: str, task_id: str) -> str:
    """The UI's route for one task instance: its log view is the page's first tab."""
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}"


def sign_in(driver: Any, password: str, then: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{AIRFLOW_URL}/auth/login?next={quote(then, safe='')}")
    wait = WebDriverWait(driver, PAGE_WAIT_S)
    wait.until(expected_conditions.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: "/auth/login" not in d.current_url)


def find_in_log_view(driver: Any, text: str) -> bool:
    """The log view renders only the lines in sight (a virtual list): look from the end, then scroll up.
    A view that re-renders while we look (the log still loading) is looked at again by the caller."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    containers = driver.find_elements(By.CSS_SELECTOR, "[data-testid=virtual-scroll-container]")
    if not containers:
        return False
    container = containers[0]
    try:
        height = int(driver.execute_script("return arguments[0].scrollHeight", container))
        step = max(100, int(driver.execute_script("return arguments[0].clientHeight", container)) // 2)
        for offset in range(height, -step, -step):
            driver.execute_script("arguments[0].scrollTop = arguments[1]", container, max(0, offset))
            time.sleep(0.2)
            if text in container.text:
                return True
    except StaleElementReferenceException:
        return False
    return False


def test_the_ui_shows_why_the_bad_release_was_stopped(
    demo: dict[str, Any], browser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = bad_release_run(demo["password"])
    page = task_page(f"release_{APP}", run_id, GATE_TASK)
    sign_in(browser, demo["password"], then=page)
    deadline = time.monotonic() + PAGE_WAIT_S
    found = False
    while not found and time.monotonic() < deadline:
        found = find_in_log_view(browser, CAUSE)
        if not found:
            time.sleep(2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "ui-failed-canary-gate.png"
    assert browser.save_screenshot(str(screenshot)), "the screenshot was not written"
    (ARTIFACTS / "ui-failed-canary-gate.txt").write_text(f"{browser.current_url}\n\n{browser.page_source}")
    with capsys.disabled():
        print(f"\n[e2e] screenshot of the failed gate's log view: {screenshot}")
    assert f"/runs/{quote(run_id, safe='')}/tasks/{GATE_TASK}" in browser.current_url, browser.current_url
    assert found, f"'{CAUSE}' not in the log view of {GATE_TASK} (see {screenshot})"


def test_the_failed_gate_links_to_its_graph_stats_and_image(demo: dict[str, Any], browser: Any) -> None:
    """The gate's extra links: right for the pilot region and the canary's digest, each one answers,
    and the UI shows them on the task's Details tab."""
    import httpx

    from immutable.app_spec import app_spec
    from immutable.config import load_platform
    from immutable.registry import MANIFEST_TYPES

    client = api(demo["password"])
    run_id = bad_release_run(demo["password"])
    links = client.get(f"/dags/release_{APP}/dagRuns/{run_id}/taskInstances/{GATE_TASK}/links")["extra_links"]
    canary = client.xcom(f"release_{APP}", run_id, "canary.prepare_canary")
    pilot = load_platform(PLATFORM_FILE).region(canary["region"])
    digest = canary["canary_digest"]
    assert links["Image"] == (
        f"http://127.0.0.1:{pilot.registry_port}/v2/{app_spec(APP).repository}/manifests/{digest}"
    ), links
    manifest = httpx.get(links["Image"], headers={"Accept": MANIFEST_TYPES}, timeout=10)
    assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == digest
    assert links["Load balancer"] == f"http://127.0.0.1:{pilot.lb_admin_port}/stats#app_{APP}", links
    assert "app_sample" in httpx.get(links["Load balancer"], timeout=10).text
    graph = links["Metrics of the gate's window"]
    assert graph.startswith("http://127.0.0.1:9790/graph?g0.expr="), links
    assert httpx.get(graph, timeout=10, follow_redirects=True).status_code == 200

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sign_in(browser, demo["password"], then=task_page(f"release_{APP}", run_id, GATE_TASK) + "/details")

    def shown_links(driver: Any) -> dict[str, str]:
        return {a.text: a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "a[target=_blank]")}

    WebDriverWait(browser, PAGE_WAIT_S).until(lambda d: len(shown_links(d)) >= len(links))
    shown = shown_links(browser)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "ui-gate-extra-links.png"))
    for name, url in links.items():
        assert shown.get(name) == url, (name, shown)


def test_the_releases_page_shows_what_the_demo_left(demo: dict[str, Any], browser: Any) -> None:
    """The plugin's page, served by Airflow's API server, agrees with the demo's summary; and it is
    in the UI's navigation."""
    import httpx

    from tests.e2e.test_demo import summary_rows

    rows = summary_rows(demo["output"])
    assert httpx.get(f"{AIRFLOW_URL}/releases/api", timeout=30).status_code == 401  # signed-in users only
    served = releases_api(demo["password"])
    shown = {(p["app"], p["region"]): p for p in served["placements"]}
    assert set(shown) == set(rows), served
    for where, row in rows.items():
        live, kept = shown[where]["live"], shown[where]["kept"]
        assert [live["version"], live["color"]] == row[3:5], (where, live, row)
        assert live["digest"].startswith(row[5]), (where, live, row)
        expected_kept = f"{kept['version']} ({kept['color']})" if kept else "-"
        assert " ".join(row[-2:] if kept else row[-1:]) == expected_kept, (where, kept, row)
    plugins = api(demo["password"]).get("/plugins")["plugins"]
    views = [v for p in plugins for v in p["external_views"]]
    assert any(v["name"] == "Releases" and v["href"] == "/releases/" for v in views), views
    sign_in(browser, demo["password"], then="/plugin/releases")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    frame = WebDriverWait(browser, PAGE_WAIT_S).until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0]
    browser.switch_to.frame(frame)
    try:
        body = WebDriverWait(browser, PAGE_WAIT_S).until(lambda d: d.find_element(By.TAG_NAME, "body"))
        WebDriverWait(browser, PAGE_WAIT_S).until(lambda _: "what runs where" in body.text)
        text = body.text
    finally:
        browser.switch_to.default_content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "ui-releases-page.png"))
    for (app, region), row in rows.items():
        assert app in text and region in text and row[3] in text, text
