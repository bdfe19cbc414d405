"""Headless Chromium on the trends page (server-rendered SVG chart, readable without
JavaScript) and the privacy page of a real `mask-web` on 127.0.0.1, after uploads through the
API. Screenshots go to target/screenshots/ (trends.png, privacy.png)."""

from __future__ import annotations

import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_support"))
from chromium import start_chromium  # noqa: E402
from mask_web_process import (  # noqa: E402
    PHOTOS,
    ROOT,
    MaskWebProcess,
    base_env,
    free_port,
    multipart,
)

SHOTS = ROOT / "target" / "screenshots"
ADMIN_PASSWORD = "reports-admin-password"
USER, PASSWORD = "trend-user", "trend-user-password"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base_dir = tmp_path_factory.mktemp("reports")
    port = free_port()
    proc = MaskWebProcess(
        base_dir / "data", base_dir / "server.log", base_env(base_dir / "data", port, ADMIN_PASSWORD), base_dir, port
    )

    def ready():
        with urllib.request.urlopen(proc.url + "/healthz", timeout=1) as r:
            return r.status == 200

    proc.wait_until(ready, 60, 0.1)
    register = urllib.parse.urlencode({"username": USER, "password": PASSWORD}).encode()
    with urllib.request.urlopen(proc.url + "/api/register", register, timeout=30) as r:
        assert r.status == 201
    for name in ["maksssksksss0.png", "maksssksksss1.png", "maksssksksss2.png", "maksssksksss7.png"]:
        body, ctype = multipart(
            {"username": USER, "password": PASSWORD}, [("file", name, (PHOTOS / name).read_bytes(), "image/png")]
        )
        req = urllib.request.Request(proc.url + "/api/upload", body, {"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.status == 201
    yield proc.url
    proc.stop()


@pytest.fixture(scope="module")
def browser():
    # The chart must not need JavaScript.
    driver = start_chromium("1100,1000", prefs={"profile.managed_default_content_settings.javascript": 2})
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def test_trends_chart_renders_without_javascript_and_privacy_states_the_settings(server, browser):
    d = browser
    d.get(server + "/login?next=/trends")
    d.find_element(By.ID, "username").send_keys(USER)
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(d, 30).until(lambda drv: "/trends" in drv.current_url)
    chart = d.find_element(By.ID, "trend-chart")
    # Drawn by the server: bars exist with a real size, and the title counts all four uploads.
    bars = d.find_elements(By.CSS_SELECTOR, "#trend-chart rect.bar")
    assert bars, "no bars in the chart"
    assert max(b.rect["height"] for b in bars) > 50
    assert ": 4 in all" in chart.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    totals = [int(td.text) for td in d.find_elements(By.CSS_SELECTOR, "#trend-table tbody tr td:last-child")]
    assert sum(totals) == 4
    d.save_screenshot(str(SHOTS / "trends.png"))

    d.get(server + "/privacy")
    assert "without their metadata" in d.find_element(By.ID, "setting-metadata").text
    assert "kept until you delete them" in d.find_element(By.ID, "setting-retention").text
    d.save_screenshot(str(SHOTS / "privacy.png"))
    assert (SHOTS / "trends.png").stat().st_size > 1000
