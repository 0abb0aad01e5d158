"""The web dashboard in a real headless Chromium (Selenium + Debian's chromium/chromedriver)."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests.integration.test_standalone import SLOW_JOB, Cluster, cli, get, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

FAILING_JOB = '''
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource

def explode(v):
    if v == 500:
        raise ValueError("bad value 500")
    return v

env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(1000)).map(explode).name("exploding map").add_sink(lambda v: None)
env.execute("doomed")
'''


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def text_of(driver, css):
    """Text of the first element matching ``css``; the page re-renders every second, so retry."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    for _ in range(20):
        try:
            els = driver.find_elements(By.CSS_SELECTOR, css)
            return els[0].text if els else None
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{css} kept changing under the test")


def click(driver, css):
    """Click the first element matching ``css`` (retrying across re-renders)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"could not click {css}")


def test_dashboard_pages(tmp_path, browser):
    from selenium.webdriver.common.by import By
    c = Cluster(str(tmp_path / "cluster"), extra=("-D", "heartbeat.interval=500 ms"))
    try:
        job = tmp_path / "slow.py"
        job.write_text(SLOW_JOB)
        job_id = cli("run", "-d", "-p", "2", "-m", c.rest, "-D", "execution.checkpointing.interval=500ms",
                     "-D", f"state.checkpoints.dir={tmp_path / 'checkpoints'}",
                     str(job), "300000", workdir=c.workdir).stdout.split()[-1]
        base = f"http://{c.rest}/"

        browser.get(base + "#/overview")
        wait_for(lambda: text_of(browser, "#ov-slots") == "0 / 2", what="overview with both slots in use")
        assert text_of(browser, "#ov-taskmanagers") == "2"
        assert text_of(browser, "#ov-running") == "1"
        assert "slow job" in browser.find_element(By.ID, "jobs").text
        browser.save_screenshot(str(tmp_path / "overview.png"))

        browser.get(base + f"#/jobs/{job_id}")
        wait_for(lambda: text_of(browser, "#job-state") == "RUNNING", what="job page")
        assert "slow map" in text_of(browser, ".vertex")
        assert text_of(browser, ".vertex .parallelism") == "2"

        def records_in():
            t = text_of(browser, ".vertex .records-in")
            return int(t.replace(",", "")) if t else 0
        first = wait_for(records_in, what="records in the operator graph")
        # the page refreshes itself: the counter grows without a reload
        wait_for(lambda: records_in() > first, what="the counter to grow")
        wait_for(lambda: float(text_of(browser, ".vertex .rate-in").replace(",", "")) > 0, what="records/s")
        assert text_of(browser, "#exceptions") == "No exceptions."

        def completed_checkpoints():
            t = text_of(browser, "#checkpoints") or ""
            return t.startswith("Completed ") and int(t.split()[1].replace(",", "")) > 0 and t
        shown = wait_for(completed_checkpoints, what="completed checkpoints on the job page")
        assert "latest checkpoint #" in shown and str(tmp_path / "checkpoints") in shown
        browser.save_screenshot(str(tmp_path / "job.png"))

        click(browser, ".vertex")
        wait_for(lambda: text_of(browser, "#subtask-table"), what="subtask table")
        assert text_of(browser, "#subtask-table").count("RUNNING") == 2
        time.sleep(1.5)  # survives the page's own refresh
        assert text_of(browser, "#subtask-table").count("RUNNING") == 2

        browser.get(base + "#/taskmanagers")
        wait_for(lambda: text_of(browser, "#taskmanagers"), what="TaskManagers page")
        assert text_of(browser, "#taskmanagers").count("\ntm-") == 2
        # heartbeats carry each TaskManager's memory: shown once the first one arrived
        wait_for(lambda: " 0 MiB" not in text_of(browser, "#taskmanagers"), what="TaskManager RSS")
        browser.save_screenshot(str(tmp_path / "taskmanagers.png"))

        browser.get(base + f"#/jobs/{job_id}")
        wait_for(lambda: browser.find_elements(By.ID, "cancel"), what="cancel button")
        click(browser, "#cancel")
        wait_for(lambda: text_of(browser, "#job-state") == "CANCELED", what="cancelled state on the page")
        assert get(c.rest, f"/jobs/{job_id}")["state"] == "CANCELED"

        bad = tmp_path / "bad.py"
        bad.write_text(FAILING_JOB)
        bad_id = cli("run", "-d", "-m", c.rest, str(bad), workdir=c.workdir).stdout.split()[-1]
        browser.get(base + f"#/jobs/{bad_id}")
        wait_for(lambda: text_of(browser, "#job-state") == "FAILED", what="failed job")
        wait_for(lambda: "ValueError: bad value 500" in (text_of(browser, "#exceptions") or ""),
                 what="the exception on the page")
        assert "in explode" in text_of(browser, "#exceptions")
        browser.save_screenshot(str(tmp_path / "failed.png"))
        assert os.path.getsize(tmp_path / "job.png") > 10_000
    finally:
        assert not c.stop()
