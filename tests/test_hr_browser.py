"""The ranking page in headless Chromium against `stackgan hr serve` in a child process: a rater
ranks captions with the keyboard, the server restarts, ranking goes on where it stopped, a
second rater quits early, and `stackgan hr aggregate` gives exactly the ranks that were keyed in.

Needs Debian's chromium and chromium-driver (.ci/run installs them); skipped without them unless
STACKGAN_REQUIRE_BROWSER=1 (CI), where their absence fails."""

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from test_hr_server import EXPERIMENTS, fake_study, model_of

pytestmark = pytest.mark.subprocess

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1000,900"]


def browser(tmp_path):
    if not (CHROMIUM and DRIVER):
        why = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("STACKGAN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"STACKGAN_REQUIRE_BROWSER=1 but the browser is missing: {why}")
        pytest.skip(why)
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(study, tmp_path):
    port = free_port()
    log = open(tmp_path / f"serve-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "stackgan.cli", "hr", "serve", str(study), "--port", str(port)],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not start within 60 s")


def stop(proc):
    proc.terminate()
    proc.wait(timeout=20)


def wait_for(driver, condition, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; page says {driver.find_element('id', 'status').text!r}")


def rank(driver, manifest, n):
    """Key in the n-th order of the models (of all 6) for the caption on screen, submit it with
    Enter or the button; (caption id, the order best first)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    models = model_of(manifest)
    caption_of = {f"/{f}": c["id"] for c in manifest["captions"] for files in c["images"] for f in files}

    def shown():
        rows = driver.find_elements("css selector", "li.slot")
        return rows, [models["/" + r.find_element("tag name", "img").get_attribute("src").split("/", 3)[3]]
                      for r in rows]

    wait_for(driver, lambda: shown()[1], "the caption's images")
    before = driver.find_element("id", "progress").text
    first = driver.find_element("css selector", "li.slot img").get_attribute("src")
    want = list(itertools.permutations(EXPERIMENTS))[n % 6]
    for position, experiment in enumerate(want):
        rows, names = shown()
        rows[names.index(experiment)].click()
        ActionChains(driver).send_keys(*[Keys.ARROW_UP] * (names.index(experiment) - position)).perform()
    assert shown()[1] == list(want)
    if n % 2:
        driver.find_element("id", "submit").click()
    else:
        ActionChains(driver).send_keys(Keys.ENTER).perform()
    wait_for(driver, lambda: driver.find_element("id", "progress").text != before
             or "Thank you" in driver.find_element("id", "status").text, "the answer to be recorded")
    return caption_of["/" + first.split("/", 3)[3]], list(want)


def test_ranks_keyed_in_the_browser_are_what_aggregate_reports(tmp_path):
    driver = browser(tmp_path)
    study = tmp_path / "study"
    manifest = fake_study(study, n_captions=4)
    keyed, proc = {}, None  # {(rater, caption): the models best first}
    try:
        proc, url = serve(study, tmp_path)
        driver.get(f"{url}/?rater=ann")
        for n in range(2):
            caption, order = rank(driver, manifest, n)
            keyed["ann", caption] = order
        stop(proc)
        proc, url = serve(study, tmp_path)  # a restart (on another port): ann goes on where she stopped
        driver.get(f"{url}/?rater=ann")
        wait_for(driver, lambda: driver.find_element("id", "progress").text == "(2 of 4 ranked)", "ann's progress")
        for n in range(2, 4):
            caption, order = rank(driver, manifest, n)
            keyed["ann", caption] = order
        assert "all 4 descriptions are ranked" in driver.find_element("id", "status").text
        driver.get(f"{url}/?rater=bob")  # bob quits after one caption
        caption, order = rank(driver, manifest, 5)
        keyed["bob", caption] = order
    finally:
        driver.quit()
        if proc is not None:
            stop(proc)
    answers = [json.loads(line) for line in (study / "answers.jsonl").read_text().splitlines()]
    assert {(a["rater"], a["caption"]): sorted(a["ranks"], key=a["ranks"].get) for a in answers} == keyed
    assert len(answers) == 5 and len({c for r, c in keyed if r == "ann"}) == 4

    done = subprocess.run([sys.executable, "-m", "stackgan.cli", "hr", "aggregate", str(study),
                           "--out", str(tmp_path / "hr.json")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "hr.json").read_text())
    for e in EXPERIMENTS:
        expected = sum(order.index(e) + 1 for order in keyed.values()) / len(keyed)
        assert record["metrics"][f"hr_{e}"]["value"] == pytest.approx(expected)
    assert (record["human_study"]["raters"], record["human_study"]["answers"]) == (2, 5)
