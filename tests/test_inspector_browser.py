"""The inspector page (GET /) in a real browser: Debian's chromium + chromedriver driven by selenium.

The page is loaded from a service on loopback with every other address routed to a dead proxy (the network is
"unplugged"); prompts are typed into it, and what it renders (token ids, the 77-token cut marker, SD chunk markers,
expansion phrases and scores, neighbours) must equal /v1/inspect's JSON for the same request. Hostile input is shown as
text and never runs; the browser console stays free of errors; a screenshot lands in build/artifacts/.
"""
import json
import os
import pathlib

import _prompt_helpers as helpers
import httpx
import pytest
from conftest import ROOT, read_lines
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from clipprompt import serve

ARTIFACTS = pathlib.Path(os.environ.get("CLIPPROMPT_ARTIFACTS", ROOT / "build" / "artifacts"))
ZH = "红色连衣裙 女 夏季"
LONG = ("A professional studio photograph of a red silk summer dress on a mannequin, soft window light from the left, "
        "shallow depth of field, 85mm lens, film grain, muted pastel background, high detail fabric texture, "
        "folded straw hat and leather sandals on a wooden floor beside it, catalogue style, warm colour grading, "
        "8k, sharp focus, award winning composition, glossy magazine cover layout with a bold serif headline, "
        "gentle vignette, dust particles floating in the light beam")


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    d = tmp_path_factory.mktemp("browser")
    (d / "pool.txt").write_text("\n".join(helpers.small_pool(80)) + "\n", encoding="utf-8")
    (d / "corpus.txt").write_text("\n".join(read_lines("captions/coco_dev_caps.txt")[:80]) + "\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with serve.ServiceProcess(["--pool", d / "pool.txt", "--corpus", d / "corpus.txt"], env=env, cwd=str(ROOT),
                              timeout=240) as s:
        yield s
    assert s.returncode == 0, s.output


@pytest.fixture(scope="module")
def browser(svc):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1900",
              "--lang=en-US", "--no-first-run", "--disable-extensions", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-default-apps",
              # no network but loopback: every other host goes to a closed port
              "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()


def _inspect_in_page(drv, url, text, *, batch=False):
    drv.get(url + "/")
    WebDriverWait(drv, 60).until(lambda d: "·" in d.find_element(By.ID, "model").text)
    box = drv.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(text)
    assert box.get_attribute("value") == text  # typed as given (CJK included)
    if batch:
        drv.find_element(By.ID, "batch-mode").click()
    drv.find_element(By.ID, "run").click()
    WebDriverWait(drv, 120).until(
        lambda d: d.find_element(By.ID, "out").get_attribute("data-state") == "done")


def _json(url, text, **kw):
    body = {"input": text, "top_k": 5, "k": 5, **kw}  # the page's defaults
    r = httpx.post(url + "/v1/inspect", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def _check_item(drv, sec, it):
    assert sec.find_element(By.CSS_SELECTOR, "h2.input").text == it["input"].strip() or \
        drv.execute_script("return arguments[0].querySelector('h2.input').textContent", sec) == it["input"]
    assert drv.execute_script("return arguments[0].querySelector('.normalized').textContent", sec) == it["normalized"]
    segs = drv.execute_script("return [...arguments[0].querySelectorAll('.seg')].map(e => e.textContent)", sec)
    assert segs == it["segments"]
    # tokens: ids in order, continuation flags, and the page's markers at the JSON's positions
    toks = drv.execute_script("""return [...arguments[0].querySelectorAll('.tokens > *')].map(e => ({
        kind: e.classList.contains('tok') ? 'tok' : e.className, id: e.dataset.id, pos: e.dataset.pos,
        dropped: e.classList.contains('dropped'), cont: e.classList.contains('cont')}))""", sec)
    chips = [t for t in toks if t["kind"] == "tok"]
    assert [int(t["id"]) for t in chips] == [t["id"] for t in it["clip"]["tokens"]]
    assert [t["cont"] for t in chips] == [t["cont"] for t in it["clip"]["tokens"]]
    cut = [i for i, t in enumerate(toks) if t["kind"] == "cut-marker"]
    if it["clip"]["cut"] is None:
        assert not cut and not any(t["dropped"] for t in chips)
    else:
        assert len(cut) == 1 and int(toks[cut[0]]["pos"]) == it["clip"]["cut"]
        assert toks[cut[0] + 1]["kind"] == "tok" and int(toks[cut[0] + 1]["pos"]) == it["clip"]["cut"]
        assert sum(t["dropped"] for t in chips) == it["clip"]["dropped"]
    chunk_pos = [int(t["pos"]) for t in toks if t["kind"] == "chunk-marker"]
    assert chunk_pos == [c["start"] for c in it["sd"]["chunks"][1:]]
    # expansion: phrases and scores (3 decimals, as shown), and what the guards dropped with their reasons
    rows = drv.execute_script("""return [...arguments[0].querySelectorAll('table.added tr')].slice(1)
        .map(r => [...r.cells].map(c => c.textContent))""", sec)
    assert rows == [[a["phrase"], f"{a['score']:.3f}"] for a in it["expansion"]["added"]]
    rows = drv.execute_script("""const t = arguments[0].querySelector('table.dropped');
        return t ? [...t.rows].slice(1).map(r => [...r.cells].map(c => c.textContent)) : []""", sec)
    assert rows == [[q["phrase"], f"{q['score']:.3f}", q["reason"]] for q in it["expansion"]["dropped"]]
    assert drv.execute_script("return arguments[0].querySelector('.expanded-text').textContent", sec) == \
        it["expansion"]["text"]
    rows = drv.execute_script("""return [...arguments[0].querySelectorAll('table.pool tr')].slice(1)
        .map(r => [...r.cells].map(c => c.textContent))""", sec)
    assert rows == [[n["phrase"], f"{n['score']:.3f}"] for n in it["neighbors"]["pool"]]
    rows = drv.execute_script("""return [...arguments[0].querySelectorAll('table.index tr')].slice(1)
        .map(r => [...r.cells].map(c => c.textContent))""", sec)
    assert rows == [[str(n["id"]), n.get("text", ""), f"{n['score']:.3f}"] for n in it["neighbors"]["index"]]
    assert sec.find_element(By.CSS_SELECTOR, ".cache").text in ("hit", "miss")
    stages = drv.execute_script("return [...arguments[0].querySelectorAll('table.times th')].map(e => e.textContent)",
                                sec)
    assert stages == list(it["times_ms"])


def _console_errors(drv):
    return [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_page_renders_inspect_json(svc, browser):
    for text in (ZH, LONG):
        _inspect_in_page(browser, svc.url, text)
        ref = _json(svc.url, text)
        secs = browser.find_elements(By.CSS_SELECTOR, "#out section.item")
        assert len(secs) == 1
        _check_item(browser, secs[0], ref["items"][0])
        if text == LONG:
            assert ref["items"][0]["clip"]["cut"] == 76 and len(ref["items"][0]["sd"]["chunks"]) == 2
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            assert browser.save_screenshot(str(ARTIFACTS / "inspector.png"))
            assert (ARTIFACTS / "inspector.png").stat().st_size > 10_000
        else:
            assert ref["items"][0]["expansion"]["added"], "the Chinese prompt should get expansion phrases"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "inspector-zh.png"))
    # nothing but loopback was asked for
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(svc.url) for u in urls), urls
    assert _console_errors(browser) == []


def test_batch_table(svc, browser):
    lines = [ZH, "a cat sleeping on a sofa", "   ", "硬い帽子をかぶった男が踊っている。"]
    _inspect_in_page(browser, svc.url, "\n".join(lines), batch=True)
    ref = _json(svc.url, lines)
    rows = browser.execute_script("""return [...document.querySelectorAll('#batch tr')].slice(1)
        .map(r => [...r.cells].map(c => c.textContent))""")
    assert len(rows) == len(ref["items"]) == 4
    for row, it in zip(rows, ref["items"]):
        assert row[0] == str(it["index"])
        if "error" in it:
            assert row[2] == it["error"]["type"] + ": " + it["error"]["message"]
            continue
        assert row[1] == it["input"] and row[2] == it["normalized"]
        assert row[3] == str(it["clip"]["n_tokens"]) + ("" if it["clip"]["cut"] is None else " ✂")
        assert row[5] == "; ".join(f"{a['phrase']} {a['score']:.3f}" for a in it["expansion"]["added"])
    assert ref["items"][2]["error"]["type"] == "EmptyPromptError"
    assert _console_errors(browser) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "inspector-batch.png"))


def test_hostile_input_is_text(svc, browser):
    evil = ('<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
            '<b onmouseover=alert(1)>bold</b> "\'&amp; red dress')
    _inspect_in_page(browser, svc.url, evil)
    sec = browser.find_element(By.CSS_SELECTOR, "#out section.item")
    assert browser.execute_script("return arguments[0].querySelector('h2.input').textContent", sec) == evil
    assert browser.execute_script("return document.querySelectorAll('#out img, #out script, #out b').length") == 0
    assert browser.execute_script("return window.__pwned === undefined")
    ref = _json(svc.url, evil)
    _check_item(browser, sec, ref["items"][0])
    assert _console_errors(browser) == []


def test_error_answer_is_shown(svc, browser):
    _inspect_in_page(browser, svc.url, "x" * 9000)  # over the service's per-text limit
    msg = browser.find_element(By.ID, "error").text
    assert msg.startswith("InvalidArgumentError (413)") and "8192" in msg
    # a refused request is an answer, not a page error (the 413 shows in the console as a failed resource load)
    errs = _console_errors(browser)
    assert all("413" in e["message"] for e in errs), json.dumps(errs)
