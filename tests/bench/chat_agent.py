"""The chat agent as the chat page shows it, in a real Chromium. Prints one JSON object (one line).

    .venv/bin/python tests/bench/chat_agent.py [--quick]

Starts a real daemon (`ocapd start`, gateway on a free port, fresh
OCAPD_HOME), installs the counter example (a Python backend with
``invoke``), opens the chat page in Debian's Chromium with the counter's
panel open, and times in the page (``performance.now()``, from the form's
submit to the transcript line appearing):

- ``read_command_ms``: typing ``value`` -> ``E(agent).message`` -> the
  router -> the backend's ``invoke`` -> the call line showing its result;
- ``allow_once_ms``: clicking Allow once on a waiting ``increment`` -> the
  call line showing its result (``permission`` -> the backend);
- ``asked_elsewhere_ms``: a write asked by another client (``POST
  /api/agent/message`` with the host token, as a script or MCP would) ->
  the server's push (``follow_pending``) -> the page's Allow dialog open
  on that call (before the push, the page found it by polling every 2 s);
- ``baseline_ms``: ``/show n`` in the same page (a stored value: two CapTP
  calls, describe and lookup, and a transcript line), the page's own round
  trip; each ``ratio`` is the median against it.

Only the JSON goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from browser import launch_chromium  # noqa: E402
from daemon_harness import DaemonProcess, example_zip  # noqa: E402
from test_chat_browser import free_port  # noqa: E402

#: Submit `line` in the chat and resolve with the milliseconds until the transcript has one more `selector`.
TIME_LINE = """async ([line, selector]) => {
  const transcript = document.getElementById("transcript");
  const before = transcript.querySelectorAll(selector).length;
  const seen = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (transcript.querySelectorAll(selector).length > before) { observer.disconnect(); resolve(undefined); }
    });
    observer.observe(transcript, { subtree: true, childList: true, attributes: true });
  });
  const t0 = performance.now();
  document.getElementById("input").value = line;
  document.getElementById("composer").requestSubmit();
  await seen;
  return performance.now() - t0;
}"""

#: Click Allow once (armed) and resolve with the milliseconds until the call's line says done.
TIME_ALLOW = """async () => {
  const dialog = document.getElementById("agent-dialog");
  const call = dialog.dataset.call;
  const line = document.querySelector(`#transcript .line.agent-call[data-call="${call}"]`);
  const done = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (line.dataset.status === "done") { observer.disconnect(); resolve(undefined); }
    });
    observer.observe(line, { attributes: true });
  });
  const t0 = performance.now();
  document.getElementById("agent-once").click();
  await done;
  return performance.now() - t0;
}"""


#: Ask for a write over REST (another client) and resolve with the milliseconds until the page's dialog shows it.
TIME_ELSEWHERE = """async ([token, panel]) => {
  const dialog = document.getElementById("agent-dialog");
  let wanted = null;
  const shown = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (wanted && dialog.open && dialog.dataset.call === wanted) { observer.disconnect(); resolve(undefined); }
    });
    observer.observe(dialog, { attributes: true });
  });
  const t0 = performance.now();
  const answer = await fetch("/api/agent/message", {
    method: "POST", headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ text: "increment", visible: [panel] }),
  }).then((r) => r.json());
  wanted = answer.calls[0].call;
  if (!(dialog.open && dialog.dataset.call === wanted)) await shown;
  return performance.now() - t0;
}"""


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def summary(samples: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(samples), 2), "min": round(min(samples), 2), "max": round(max(samples), 2), "n": len(samples)}


def run(quick: bool) -> dict[str, Any]:
    rounds = 10 if quick else 40
    allows = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="ocapd-bench-chat-agent-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        port = free_port()
        d = DaemonProcess(home, port=port)
        d.cli("start", "--port", str(port))
        try:
            bundle = Path(tmp) / "counter.zip"
            bundle.write_bytes(example_zip("counter"))
            d.cli("install", str(bundle), "-n", "counter")
            d.cli("store", "--json", "1", "-n", "n")
            with launch_chromium(Path(tmp) / "chromium") as browser:
                page = browser.new_page(viewport={"width": 1400, "height": 860})
                page.goto(d.chat_url())
                page.locator('#connection[data-state="connected"]').wait_for()
                page.locator('#inventory[data-state="ready"]').wait_for()
                page.locator("#input").fill("/open counter")
                page.locator("#input").press("Enter")
                page.frame_locator('#weblet-frames iframe[data-name="counter"]').locator("#incr:enabled").wait_for()
                read: list[float] = []
                baseline: list[float] = []
                log(f"{rounds} reads and baselines")
                for i in range(rounds + 2):  # the first two warm up
                    r = page.evaluate(TIME_LINE, ["value", '.line.agent-call[data-status="done"]'])
                    b = page.evaluate(TIME_LINE, ["/show n", ".line.value"])
                    if i >= 2:
                        read.append(r)
                        baseline.append(b)
                allow: list[float] = []
                log(f"{allows} allow-once round trips")
                for _ in range(allows):
                    page.locator("#input").fill("increment")
                    page.locator("#input").press("Enter")
                    page.locator("#agent-once:enabled").wait_for()
                    allow.append(page.evaluate(TIME_ALLOW))
                    page.locator("#agent-dialog").wait_for(state="hidden")
                elsewhere: list[float] = []
                token = d.chat_url().split("#token=", 1)[1]
                panel = next(w for w in json.loads(d.out("weblets", "list", "--json")) if w["name"] == "counter")["instances"][0]["panel"]
                log(f"{allows} calls asked elsewhere")
                for _ in range(allows):
                    elsewhere.append(page.evaluate(TIME_ELSEWHERE, [token, panel]))
                    page.locator("#agent-deny").click()
                    page.locator("#agent-dialog").wait_for(state="hidden")
        finally:
            d.cli("stop", check=False)
    base = statistics.median(baseline)
    return {
        "bench": "chat_agent",
        "browser": "chromium (Debian), headless",
        "read_command_ms": {**summary(read), "ratio": round(statistics.median(read) / base, 2)},
        "allow_once_ms": {**summary(allow), "ratio": round(statistics.median(allow) / base, 2)},
        "asked_elsewhere_ms": {**summary(elsewhere), "ratio": round(statistics.median(elsewhere) / base, 2)},
        "baseline_ms": {**summary(baseline), "what": "/show n in the same page"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick), separators=(",", ":")))


if __name__ == "__main__":
    main()
