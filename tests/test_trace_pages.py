"""The answer traces and the playground as a person sees them: Debian's chromium, headless, driven by selenium.

Each page is opened from `file://` (or from the server for the playground); the tests compare the visible text with
the trace JSON embedded in the page, find the `chosen` marker where the trace says, and check the browser logged no
console error and requested nothing but the page itself (and, for the playground, its own server).
"""

from __future__ import annotations

import json
import shutil
from urllib.parse import urlparse

import pytest
from golden_runs import EVAL, pseudo_backend

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
    "scripts/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def open_page(driver, url: str):
    driver.get_log("browser"), driver.get_log("performance")  # drop what earlier pages logged
    driver.get(url)
    return json.loads(driver.find_element("id", "selfrag-trace").get_attribute("textContent"))


def assert_quiet_and_offline(driver, allowed_origin: str | None = None) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    for url in requested_urls(driver):
        parsed = urlparse(url)
        origin = f"{parsed.scheme}://{parsed.netloc}"
        assert parsed.scheme in ("file", "data") or origin == allowed_origin, f"the page requested {url}"


def fmt(p) -> str:
    return "–" if p is None else f"{p:.2f}"


def check_card(card, item) -> None:
    text = card.text
    assert (item["passage"]["title"] if item["passage"] else "(no passage)") in text
    for name, key in (("IsRel", "rel"), ("IsSup", "sup"), ("IsUse", "use")):
        j = item[key]
        assert f"{name} {j['token'] or '(none)'} {fmt(j['prob'])}" in text


def check_short(driver, trace) -> None:
    assert driver.find_element("css selector", "h1.question").text == trace["question"]
    assert driver.find_element("css selector", ".answer").text == trace["answer"].strip()
    cards = driver.find_elements("css selector", "#view .card")
    assert len(cards) == len(trace["candidates"])
    for card, item in zip(cards, trace["candidates"]):
        check_card(card, item)
    chosen = [i for i, card in enumerate(cards) if "chosen" in card.get_attribute("class")]
    assert chosen == ([] if trace["chosen"] is None else [trace["chosen"]])


def check_long(driver, trace) -> None:
    assert driver.find_element("css selector", "h1.question").text == trace["question"]
    assert driver.find_element("css selector", ".answer").text == trace["answer"].strip()
    nodes = {int(n.get_attribute("data-node")): n for n in driver.find_elements("css selector", ".node")}
    assert sorted(nodes) == sorted(n["id"] for n in trace["nodes"])
    for item in trace["nodes"]:
        card = nodes[item["id"]].find_element("css selector", ".card")
        if item["kept"]:
            check_card(card, item)
        assert ("chosen" in card.get_attribute("class")) == (item["id"] in trace["chosen_path"])


def test_short_form_trace_pages_show_the_trace(browser, tmp_path):
    from selfrag.eval.short_form import ShortFormConfig, run_short_form

    config = ShortFormConfig(
        model_name="pseudo",
        input_file=str(EVAL / "popqa_longtail_w_gs.jsonl"),
        output_file=str(tmp_path / "out.json"),
        ndocs=3,
        threshold=0.3,
        use_groundness=True,
        use_utility=True,
        trace_dir=str(tmp_path / "trace"),
    )
    output = run_short_form(config, backend=pseudo_backend())
    pages = sorted((tmp_path / "trace").glob("[0-9]*.html"), key=lambda p: int(p.stem))
    assert len(pages) == len(output["preds"]) == 15
    retrieved = 0
    for k, page in enumerate(pages):
        assert "http://" not in page.read_text() and "https://" not in page.read_text()
        trace = open_page(browser, page.as_uri())
        assert trace["answer"] == output["preds"][k]
        assert trace["retrieve"] == output["retrieve"][k]
        assert (trace["retrieve_prob"] > 0.3) == trace["retrieve"]
        retrieved += trace["retrieve"]
        assert not browser.find_element("id", "ask").is_displayed()  # a static page has no question box
        check_short(browser, trace)
        assert_quiet_and_offline(browser)
    assert 0 < retrieved < 15  # both kinds of page were seen
    index = (tmp_path / "trace" / "index.html").as_uri()
    browser.get(index)
    links = browser.find_elements("css selector", "a")
    assert [a.get_attribute("href").rsplit("/", 1)[1] for a in links] == [f"{k}.html" for k in range(15)]
    marks = [
        row.find_elements("css selector", "td")[2].text for row in browser.find_elements("css selector", "tbody tr")
    ]
    assert marks == ["correct" if m else "wrong" for m in output["metric_results"]]


def test_long_form_trace_pages_show_the_beam_tree(browser, tmp_path):
    from selfrag.eval.long_form import LongFormConfig, run_long_form

    config = LongFormConfig(
        model_name="pseudo",
        input_file=str(EVAL / "asqa_eval_gtr_top100.json"),
        output_file=str(tmp_path / "out.json"),
        task="asqa",
        ndocs=3,
        beam_width=2,
        max_depth=3,
        mode="always_retrieve",
        use_groundness=True,
        trace_dir=str(tmp_path / "trace"),
    )
    outputs = run_long_form(config, backend=pseudo_backend())
    for k, out in enumerate(outputs):
        trace = open_page(browser, (tmp_path / "trace" / f"{k}.html").as_uri())
        assert trace["answer"] == out["output"]
        nodes = {n["id"]: n for n in trace["nodes"]}
        path = trace["chosen_path"]
        assert path and all(nodes[i]["kept"] for i in path)
        assert [nodes[i]["parent"] for i in path] == [0, *path[:-1]]
        check_long(browser, trace)
        assert_quiet_and_offline(browser)


def test_playground_answers_as_the_api_does(browser, tmp_path):
    from golden_runs import SERVER_PASSAGES
    from selenium.webdriver.support.ui import WebDriverWait
    from test_server import ServerThread

    from selfrag.server.app import create_app
    from selfrag.server.config import ServerConfig
    from selfrag.server.engine import SelfRagEngine

    engine = SelfRagEngine(
        pseudo_backend(),
        "pseudo",
        search=lambda queries, k: [SERVER_PASSAGES[:k] for _ in queries],
        defaults=ServerConfig(model_name="pseudo", mode="always_retrieve").defaults(),
    )
    with ServerThread(create_app(engine)) as server:
        base = f"http://127.0.0.1:{server.port}"
        open_page(browser, base + "/")
        question = "Who founded the river city?"
        browser.find_element("id", "question").send_keys(question + "\n")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.lastResponse || null"))
        response = browser.execute_script("return window.lastResponse")
        trace = response["selfrag"]["trace"]
        assert trace["answer"] == response["choices"][0]["message"]["content"]
        check_short(browser, trace)
        import httpx

        direct = httpx.post(base + "/v1/chat/completions", json={"messages": [{"role": "user", "content": question}]})
        assert direct.json()["choices"] == response["choices"]
        assert {k: v for k, v in response["selfrag"].items() if k != "trace"} == direct.json()["selfrag"]
        assert_quiet_and_offline(browser, allowed_origin=base)
