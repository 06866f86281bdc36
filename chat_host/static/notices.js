// @ts-check
// What the browser blocked in an open weblet's page, as one line of the
// transcript each. The weblet's CSP asks the browser to report violations to
// the gateway (report-uri on the instance's own origin); the gateway reduces a
// report to a directive and what was blocked (inline, eval, an origin, other),
// keeps a few per instance, and hands them to whoever follows the instance's
// notices (Weblet.follow_notices). Anyone can post a report, so the line is
// built here from fixed words: the notice only chooses among them.

/** Directive families the gateway names (it drops the -elem/-attr suffix). */
const DIRECTIVES = new Set([
  "default-src", "script-src", "style-src", "img-src", "font-src", "media-src", "connect-src",
  "frame-src", "child-src", "worker-src", "manifest-src", "object-src", "base-uri", "form-action",
]);
const ORIGIN = /^(https?|wss?):\/\/[a-z0-9.-]{1,253}(:[0-9]{1,5})?$/;
/** Notices already shown, by instance label and number: a reconnect replays them. */
const shown = new Set();

/**
 * The transcript line for a notice of the weblet titled `title`, or null if
 * the notice is not one this page knows.
 * @param {string} title
 * @param {{directive?: unknown, blocked?: unknown}} notice
 * @returns {string | null}
 */
export function noticeLine(title, notice) {
  const directive = String(notice?.directive ?? "");
  const blocked = String(notice?.blocked ?? "");
  if (!DIRECTIVES.has(directive)) return null;
  let what = "something its page asked for";
  let advice = "see docs/weblets.md";
  if (blocked === "inline" && directive === "script-src") {
    what = "an inline script";
    advice = "bundle scripts as files — see docs/weblets.md";
  } else if (blocked === "inline") {
    what = "inline content";
  } else if (blocked === "eval" || blocked === "wasm-eval") {
    what = blocked === "eval" ? "a use of eval()" : "WebAssembly compilation";
    advice = "weblets cannot compile code at run time — see docs/weblets.md";
  } else if (ORIGIN.test(blocked)) {
    what = `a request to ${blocked}`;
    advice = "a weblet reaches only the origins its manifest declares — see docs/weblets.md";
  }
  return `${title}: the browser blocked ${what} (Content-Security-Policy ${directive}); ${advice}`;
}

/**
 * Follow one open instance's notices and show each once, until the stream or
 * the session ends. Failures are quiet: notices are a help, not a feature a
 * page depends on (an older daemon has none).
 * @param {{follow: () => Promise<unknown>, next: (stream: unknown) => Promise<{done?: boolean, value?: any}>,
 *          alive: () => boolean, show: (line: string) => void}} io
 * @param {string} title the weblet's title, as this page shows it
 */
export async function followNotices(io, title) {
  try {
    const stream = await io.follow();
    for (;;) {
      const { done, value } = await io.next(stream);
      if (done || !io.alive()) return;
      const key = `${value?.label}:${value?.seq}`;
      const line = noticeLine(title, value);
      if (line === null || shown.has(key)) continue;
      shown.add(key);
      io.show(line);
    }
  } catch {
    // The instance closed, or the session ended: nothing more to show.
  }
}
