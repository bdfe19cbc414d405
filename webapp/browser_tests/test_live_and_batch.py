"""Headless Chromium on the live camera page and the batch upload page of a real `mask-web`
on 127.0.0.1. The camera is Chromium's fake capture device fed from a Y4M file that the test
makes from a real photo; the page must draw boxes over it and count the faces. Screenshots go
to target/screenshots/ (camera.png, batch-*.png)."""

from __future__ import annotations

import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_support"))
from chromium import start_chromium  # noqa: E402
from mask_web_process import PHOTOS, ROOT, MaskWebProcess, base_env, free_port  # noqa: E402

CAMERA_PHOTO = PHOTOS / "maksssksksss0.png"  # three faces, one masked
BATCH_PHOTOS = [PHOTOS / n for n in ("maksssksksss0.png", "maksssksksss2.png", "maksssksksss7.png")]
SHOTS = ROOT / "target" / "screenshots"
ADMIN_PASSWORD = "browser-admin-password"
USER, PASSWORD = "camera-user", "camera-user-password"


def write_y4m(photo: Path, out: Path, frames: int = 10) -> None:
    """A YUV4MPEG2 (4:2:0) video of `frames` copies of `photo`, BT.601 full range as JPEG."""
    img = Image.open(photo).convert("RGB")
    w, h = img.size[0] // 2 * 2, img.size[1] // 2 * 2
    ycc = np.asarray(img.crop((0, 0, w, h)).convert("YCbCr"))
    y = ycc[:, :, 0].tobytes()
    # Average each 2x2 block for the chroma planes.
    chroma = ycc[:, :, 1:].reshape(h // 2, 2, w // 2, 2, 2).astype(np.uint16).mean(axis=(1, 3))
    u = chroma[:, :, 0].round().astype(np.uint8).tobytes()
    v = chroma[:, :, 1].round().astype(np.uint8).tobytes()
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + y + u + v)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base_dir = tmp_path_factory.mktemp("live")
    port = free_port()
    env = base_env(base_dir / "data", port, ADMIN_PASSWORD)
    proc = MaskWebProcess(base_dir / "data", base_dir / "server.log", env, base_dir, port)

    def ready():
        with urllib.request.urlopen(proc.url + "/healthz", timeout=1) as r:
            return r.status == 200

    proc.wait_until(ready, 60, 0.1)
    body = urllib.parse.urlencode({"username": USER, "password": PASSWORD}).encode()
    with urllib.request.urlopen(proc.url + "/api/register", data=body, timeout=10) as r:
        assert r.status == 201
    yield proc.url
    proc.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    video = tmp_path_factory.mktemp("camera") / "camera.y4m"
    write_y4m(CAMERA_PHOTO, video)
    driver = start_chromium(
        "1200,1000",
        flags=[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
            "--autoplay-policy=no-user-gesture-required",
        ],
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000


def log_in(d, base: str) -> None:
    d.get(base + "/login")
    if "/login" not in d.current_url:
        return
    d.find_element(By.ID, "username").send_keys(USER)
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(d, 30).until(lambda drv: "/login" not in drv.current_url)


def count(d, element_id: str) -> int:
    return int(d.find_element(By.ID, element_id).text or 0)


def history_total(d, base: str) -> int:
    d.get(base + "/history")
    text = d.find_element(By.ID, "tab-all").text  # "All (n)"
    return int(text.split("(")[1].rstrip(")"))


def test_camera_page_draws_boxes_over_the_fake_camera_and_saves_a_frame(server, browser):
    d = browser
    log_in(d, server)
    d.get(server + "/camera")
    WebDriverWait(d, 180).until(lambda drv: count(drv, "count-frames") >= 2)
    assert count(d, "count-faces") >= 2, d.find_element(By.ID, "camera-counts").text
    assert count(d, "count-masked") + count(d, "count-unmasked") == count(d, "count-faces")
    assert not d.find_element(By.ID, "camera-error").is_displayed()
    # The boxes are on the canvas: pixels in the exact green or red of the box strokes.
    colours = d.execute_script("""
        const c = document.getElementById('camera-overlay');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let green = 0, red = 0;
        for (let i = 0; i < px.length; i += 4) {
          if (px[i] === 0x1a && px[i + 1] === 0x7f && px[i + 2] === 0x37) green++;
          if (px[i] === 0xcf && px[i + 1] === 0x22 && px[i + 2] === 0x2e) red++;
        }
        return [c.width, c.height, green, red];""")
    width, height, green, red = colours
    shot(d, "camera")
    assert (width, height) == (512, 366), colours
    assert green > 50 and red > 50, colours

    # Frames were only checked; Save records the current one.
    before = history_total(d, server)
    assert before == 0
    d.get(server + "/camera")
    WebDriverWait(d, 180).until(lambda drv: drv.find_element(By.ID, "camera-save").is_enabled())
    d.find_element(By.ID, "camera-save").click()
    WebDriverWait(d, 120).until(lambda drv: drv.find_elements(By.ID, "camera-saved-link"))
    d.find_element(By.ID, "camera-saved-link").click()
    WebDriverWait(d, 30).until(lambda drv: "/results/" in drv.current_url)
    assert len(d.find_elements(By.CSS_SELECTOR, "#faces tbody tr")) >= 2
    assert history_total(d, server) == 1


def test_batch_page_uploads_each_photo_with_progress_and_shows_a_summary(server, browser):
    d = browser
    log_in(d, server)
    before = history_total(d, server)
    d.get(server + "/batch")
    d.find_element(By.ID, "files").send_keys("\n".join(str(p.resolve()) for p in BATCH_PHOTOS))
    shot(d, "batch-1-chosen")
    d.find_element(By.CSS_SELECTOR, "#batch-form button[type=submit]").click()
    WebDriverWait(d, 240).until(lambda drv: drv.find_element(By.ID, "batch-done").is_displayed())
    items = d.find_elements(By.CSS_SELECTOR, "#batch-progress li")
    assert len(items) == len(BATCH_PHOTOS)
    assert all(li.get_attribute("class") == "done" for li in items), [li.text for li in items]
    assert any("mask" in li.text for li in items), [li.text for li in items]
    shot(d, "batch-2-progress")
    d.find_element(By.ID, "summary-link").click()
    WebDriverWait(d, 30).until(lambda drv: "/batch/summary" in drv.current_url)
    assert f"{len(BATCH_PHOTOS)} photo(s) recorded" in d.find_element(By.ID, "batch-totals").text
    counted = sum(int(r.find_elements(By.TAG_NAME, "td")[1].text)
                  for r in d.find_elements(By.CSS_SELECTOR, "#batch-counts tbody tr"))
    assert counted == len(BATCH_PHOTOS)
    shot(d, "batch-3-summary")
    assert history_total(d, server) == before + len(BATCH_PHOTOS)
