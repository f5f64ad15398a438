"""The README's screenshots: a short-form trace, a long-form beam tree and the playground, on the quickstart model.

    python -m selfrag quickstart --export /tmp/selfrag-demo        # the demo generator, passages and questions
    python scripts/trace_screenshots.py /tmp/selfrag-demo docs/images

Needs Debian's chromium and chromium-driver (scripts/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from selfrag.eval.long_form import LongFormConfig, run_long_form
from selfrag.eval.short_form import ShortFormConfig, run_short_form
from selfrag.server.app import create_app
from selfrag.server.config import ServerConfig, build_engine


def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(
        service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")), options=options
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a folder written by `selfrag quickstart --export`")
    parser.add_argument("out_dir", help="where the PNG files go")
    args = parser.parse_args()
    model, out = Path(args.model_dir), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    common = dict(model_name=str(model), input_file=str(model / "questions.jsonl"), backend="hf", dtype="float32")
    run_short_form(
        ShortFormConfig(**common, output_file=str(tmp / "s.json"), limit=3, ndocs=3, trace_dir=str(tmp / "short"))
    )
    run_long_form(
        LongFormConfig(
            **common,
            output_file=str(tmp / "l.json"),
            limit=1,
            ndocs=2,
            max_depth=3,
            max_new_tokens=40,
            mode="always_retrieve",
            use_groundness=True,
            trace_dir=str(tmp / "long"),
        )
    )
    driver = browser()
    try:
        for name, page in (
            ("trace_short_form.png", tmp / "short" / "0.html"),
            ("trace_long_form.png", tmp / "long" / "0.html"),
        ):
            driver.get(page.as_uri())
            driver.save_screenshot(str(out / name))
        import uvicorn

        engine = build_engine(
            ServerConfig(model_name=str(model), passages=str(model / "passages.tsv"), dtype="float32")
        )
        server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=8765, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.1)
        driver.get("http://127.0.0.1:8765/")
        driver.find_element("id", "question").send_keys("Who wrote Hamlet?\n")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 120).until(lambda d: d.execute_script("return window.lastResponse || null"))
        driver.save_screenshot(str(out / "playground.png"))
        server.should_exit = True
    finally:
        driver.quit()
    print("wrote", *sorted(str(p) for p in out.glob("*.png")))


if __name__ == "__main__":
    main()
