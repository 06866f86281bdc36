// @ts-check
// ocapd Chat: the page's entry point. It reads the token from the URL
// fragment, keeps a CapTP session with the gateway (connection.js), and wires
// the panels — inventory, inbox, transcript, chat input, eval dialog, weblet
// panel, install dialog, permission prompts — to the agent the token was
// minted for. A line that is not a `/command` goes to the host's chat agent
// (agent.js) with the open panels as the visible hint. Open weblet panels are
// the widget manager's persistent panels (E(host).weblets(): create_instance /
// remove_instance), so a reload brings the same panels back on the same
// origins; the manager itself is manager.js.

import { AgentChat } from "./agent.js";
import { lookupCommand, completeCommand, UsageError } from "./commands.js";
import { E, Far } from "/_ocapd/captp.js";
import { Connection } from "./connection.js";
import { byId, h, replaceChildren } from "./dom.js";
import { EvalDialog } from "./evaldialog.js";
import { formatError } from "./format.js";
import { Inbox } from "./inbox.js";
import { InstallDialog } from "./installdialog.js";
import { Inventory } from "./inventory.js";
import { followNotices } from "./notices.js";
import { WebletManagerView } from "./manager.js";
import { referenceAt, suggestWebletName } from "./parse.js";
import { PermissionPrompts } from "./prompts.js";
import { Transcript } from "./transcript.js";
import { MAX_OPEN, WebletDirectory, WebletPanel } from "./weblets.js";

/** Where the token is kept for this tab once it has left the URL bar (survives reload, not the tab). */
const TOKEN_KEY = "ocapd-chat-token";
/** Liveness changes without a name changing (a worker exits): look again this often. */
const LIVE_REFRESH_MS = 5000;
/** Batch a burst of name events into one list_entries call. */
const REFRESH_DEBOUNCE_MS = 100;
/** Commands remembered for ↑/↓. */
const HISTORY_MAX = 200;

const transcript = new Transcript();
/** @type {HTMLInputElement} */
const input = byId("input");
const suggestionsEl = byId("suggestions");

// ---------------------------------------------------------------------------
// The token: from the fragment (then removed from the URL bar), else from
// this tab's storage (a reload after the fragment was removed).

function takeToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    history.replaceState(null, "", location.pathname + location.search);
    return fromUrl;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

// A new link pasted into this tab changes only the fragment: start over with it.
window.addEventListener("hashchange", () => {
  if (new URLSearchParams(location.hash.slice(1)).get("token")) location.reload();
});

// ---------------------------------------------------------------------------
// Panels

const inventory = new Inventory({
  onPick: (name) => insertReference(name),
  onOpen: (name) => {
    const out = transcript.command(`/open ${name}`);
    openWeblet(name, out).catch((error) => out.error(error)).finally(focusInput);
  },
  onAction: (action, name) => runAction(action, name),
});

/** Answer from the inbox or a prompt: call the agent, say how it went; true on success. */
async function act(label, method, ...args) {
  try {
    await connection.call(method, ...args);
    transcript.ok(label);
    scheduleRefresh();
    return true;
  } catch (error) {
    transcript.error(error);
    return false;
  } finally {
    focusInput();
  }
}

const weblets = new WebletDirectory({
  entries: () => inventory.list(),
  info: async (name) => connection.callOn(await connection.call("lookup", name), "info"),
});

const inbox = new Inbox({
  senderNames: (record) => {
    // The inventory's names follow renames; the record's from_names are the
    // daemon's names when it was sent or listed (a weblet's: the weblet's).
    const names = inventory.namesForId(String(record.from));
    if (names.length) return names;
    const webletNames = record.from_weblet ? inventory.namesForId(String(record.from_weblet)) : [];
    if (webletNames.length) return webletNames;
    const weblet = weblets.known(String(record.from));
    if (weblet?.name) return [weblet.name];
    return Array.isArray(record.from_names) ? record.from_names.map(String) : [];
  },
  act,
});

const prompts = new PermissionPrompts({
  identify: async (handleId) => {
    if (inventory.namesForId(handleId).length) return null; // a named agent: its requests stay in the inbox
    const weblet = await weblets.forHandle(handleId);
    if (weblet) inbox.refreshSenders();
    return weblet?.name ? weblet : null;
  },
  entries: () => inventory.list(),
  answer: act,
  onClose: () => focusInput(),
});

const panel = new WebletPanel({
  cancel: (name) => runAction("cancel", name),
  remove: (name) => runAction("remove", name),
  reopen: (name) => {
    panel.close(name, { keep: true }); // the same panel (and origin) opens again
    const out = transcript.command(`/open ${name}`);
    openWeblet(name, out).catch((error) => out.error(error));
  },
  onChange: (open) => {
    byId("layout").dataset.weblet = open ? "open" : "none";
  },
});

const installDialog = new InstallDialog({
  entries: () => inventory.list(),
  inspect: (bundle) => connection.call("inspect_weblet", bundle),
  install: async (bundle, name, powers, from) => {
    const out = transcript.command(`/install ${typeof bundle === "string" ? bundle : `<${from}>`} --as ${name} --powers ${
      Array.isArray(powers) ? powers.join(",") : powers}`);
    try {
      await installWeblet(bundle, name, powers, out);
    } catch (error) {
      out.error(error);
      throw new Error(formatError(error));
    }
    openWeblet(name, out).catch((error) => out.error(error));
  },
  onClose: () => focusInput(),
});

byId("install-button").addEventListener("click", () => installDialog.open());
byId("install-link").addEventListener("click", () => installDialog.open());

/**
 * Evaluate, for /eval and the eval dialog alike, on a session of its own
 * (connection.openWorkSession): while it runs, a pending line with Cancel,
 * which ends that session — the daemon cancels the evaluation and stops a
 * fresh worker, as when the tab closes. What the code prints shows as it
 * prints, above the result or the error. `result` rejects with the error
 * once it is shown (a cancelled one with an Error named "Cancelled").
 * @param {any} out the transcript writer of the command
 * @param {import("./evaldialog.js").EvalArgs} args
 * @param {string} nameTakenHint how to replace a name in use, said after that error
 */
function startEval(out, { worker, source, codeNames, petPaths, resultName, replace }, nameTakenHint) {
  let cancelled = false;
  /** @type {(() => void) | null} */
  let close = null;
  const cancel = () => {
    cancelled = true;
    close?.();
  };
  const output = Far("Output", {
    write: (stream, text) => {
      out.output(String(stream), String(text));
    },
  });
  const pending = out.pending("Evaluating…", cancel);
  const run = async () => {
    const work = await connection.openWorkSession();
    close = work.close;
    if (cancelled) work.close();
    try {
      return await E(work.agent).evaluate(worker, source, codeNames, petPaths, resultName,
        { output, replace: Boolean(replace) });
    } finally {
      work.close(); // a result that is a reference is shown as text only: nothing here holds it
    }
  };
  const result = run().then(
    (value) => {
      pending.done();
      out.value(value, resultName ? `named ${resultName}` : undefined);
      scheduleRefresh();
      return value;
    },
    (error) => {
      pending.done();
      if (cancelled) {
        out.warn("Cancelled: the evaluation was stopped (a fresh worker with it).");
        const stopped = new Error("the evaluation was cancelled");
        stopped.name = "Cancelled";
        throw stopped;
      }
      out.error(error?.name === "NameTaken" ? `${formatError(error)} — ${nameTakenHint}` : error);
      throw error;
    },
  );
  return { result, cancel };
}

const evalDialog = new EvalDialog({
  evaluate: (args) => {
    const { worker, source, codeNames, petPaths, resultName, replace } = args;
    const out = transcript.command(`/eval ${source}${codeNames.map((c, i) => ` ${c}:${petPaths[i]}`).join("")}` +
      `${worker ? ` -w ${worker}` : ""}${resultName ? ` -n ${resultName}` : ""}${replace ? " --replace" : ""}`);
    return startEval(out, args, "tick Replace in the eval dialog to name the new result instead");
  },
  onClose: () => focusInput(),
});

byId("eval-button").addEventListener("click", () => evalDialog.open());

const managerView = new WebletManagerView({
  manager: () => webletManager(),
  callOn: (ref, method, ...args) => connection.callOn(ref, method, ...args),
  nameOf: (entry) => nameOfEntry(entry),
  open: async (entry) => {
    const name = nameOfEntry(entry);
    const out = transcript.command(`/open ${name}`);
    await openWeblet(name, out).catch((error) => out.error(error));
    focusInput();
  },
  changed: (entry, what) => {
    const names = entry.formula ? panel.namesFor(entry.formula) : [];
    if (what === "disabled" || what === "removed" || what === "updated") {
      for (const name of names) panel.close(name, { keep: true });
    }
    if (what === "enabled" || what === "updated") restorePanels(entry.id).catch((error) => transcript.error(error));
    transcript.ok({
      enabled: `Enabled ${entry.title}.`, disabled: `Disabled ${entry.title}: the agent no longer sees it.`,
      removed: `Uninstalled ${entry.title}.`, updated: `Updated ${entry.title}.`, installed: `Installed ${entry.title}.`,
    }[what]);
    scheduleRefresh();
  },
  agent: () => chatAgent(),
  onClose: () => focusInput(),
});

byId("manager-button").addEventListener("click", () => managerView.open());

async function runAction(action, name) {
  if (action === "install") {
    installDialog.open({ bundle: name });
    return;
  }
  try {
    if (action === "cancel") await cancelName(name, transcript);
    else if (action === "remove") await removeName(name, transcript);
  } catch (error) {
    transcript.error(error);
  }
  scheduleRefresh();
  focusInput();
}

// ---------------------------------------------------------------------------
// Weblets: install, open, cancel, remove

/** The type of what `name` names, from the inventory or else the daemon. */
async function typeOf(name) {
  return inventory.entryFor(name)?.type ?? (await connection.call("describe", name)).type;
}

function powersText(powers) {
  if (Array.isArray(powers)) return `the names ${powers.join(", ")}`;
  return `${powers} powers`;
}

/** Install `bundle` (bytes, or a stored blob's name) as `name`; it is opened by the caller. */
async function installWeblet(bundle, name, powers, out) {
  const weblet = await connection.call("install_weblet", bundle, name, powers);
  scheduleRefresh();
  const info = await connection.callOn(weblet, "info");
  weblets.remember(info);
  out.ok(`Installed ${info.title || name} as ${name} with ${powersText(powers)}.`);
  if (info.webrtc === true) out.warn(`${name} declares WebRTC: its page may send data to any address.`);
}

/** Weblets being opened (a double click opens one frame, not two). */
const opening = new Set();

/** This session's widget manager (E(host).weblets()); a guest has none. */
/** @type {Promise<any> | null} */
let managerRef = null;
function webletManager() {
  if (!managerRef) {
    const asked = connection.call("weblets");
    managerRef = asked;
    asked.catch(() => {
      if (managerRef === asked) managerRef = null;
    });
  }
  return managerRef;
}

/** This session's chat agent (E(host).agent()); a guest has none. */
/** @type {Promise<any> | null} */
let agentRef = null;
/** This session has no chat agent (asking failed): not asked again until the next session. */
let noAgent = false;
function chatAgent() {
  if (noAgent) return Promise.reject(new Error("no chat agent here"));
  if (!agentRef) {
    const asked = connection.call("agent");
    agentRef = asked;
    asked.catch(() => {
      if (agentRef === asked) {
        agentRef = null;
        noAgent = true;
      }
    });
  }
  return agentRef;
}

const agentChat = new AgentChat({
  agent: () => chatAgent(),
  callOn: (ref, method, ...args) => connection.callOn(ref, method, ...args),
  visible: () => panel.tabs.map((t) => t.panel).filter((p) => typeof p === "string"),
  transcript,
  onClose: () => focusInput(),
  changed: () => scheduleRefresh(),
});

/** The manager's list, or null where there is no manager (a guest's chat). */
async function managerList() {
  let m;
  try {
    m = await webletManager();
  } catch {
    return null;
  }
  return { m, entries: await connection.callOn(m, "list") };
}

/** The name a registry entry goes by here: its name in the inventory (renames follow), else the one it was installed as. */
function nameOfEntry(entry) {
  return (entry.formula && inventory.namesForId(entry.formula)[0]) || entry.name;
}

/** What the panel needs of a weblet, from its registry entry (without starting it). */
function infoOfEntry(entry) {
  const manifest = entry.manifest ?? {};
  return {
    id: entry.formula, title: String(manifest.title ?? entry.title ?? ""), level: entry.level ?? "", guest_handle: "",
    size: manifest.size ?? null, permissions: Array.isArray(manifest.permissions) ? manifest.permissions : [],
    webrtc: manifest.webrtc === true, live: Boolean(entry.live),
  };
}

/**
 * The manager's panels this tab shows — and those it would, once their weblet
 * is enabled again — kept for this tab like its token, so a reload brings the
 * same panels back on the same origins. Which panels a tab shows is the tab's
 * view (a new tab starts empty; opening a weblet there shows its existing
 * panel); the panels themselves (id, origin, config) are the daemon's rows.
 */
const PANELS_KEY = "ocapd-chat-panels";
const tabPanels = new Set(loadTabPanels());

function loadTabPanels() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(PANELS_KEY) ?? "[]");
    return Array.isArray(saved) ? saved.filter((x) => typeof x === "string") : [];
  } catch {
    return [];
  }
}

function keepTabPanel(panelId, shown) {
  if (shown) tabPanels.add(panelId);
  else tabPanels.delete(panelId);
  sessionStorage.setItem(PANELS_KEY, JSON.stringify([...tabPanels]));
}

/** Show, one line each, what the browser's CSP blocks in the page of `name`'s instance `label` (notices.js). */
function followWebletNotices(name, info, label) {
  const session = connection.session;
  followNotices({
    follow: async () => connection.callOn(await connection.call("lookup", name), "follow_notices", label),
    next: (stream) => connection.callOn(stream, "next"),
    alive: () => isCurrent(session),
    show: (line) => transcript.warn(line),
  }, String(info.title || name));
}

/** Show a registry panel of `entry` as `name`. */
function showPanel(m, name, entry, instance, info) {
  const panelId = instance.panel;
  const currentName = () => panel.tabs.find((t) => t.panel === panelId)?.name ?? name;
  keepTabPanel(panelId, true);
  const release = () => {
    keepTabPanel(panelId, false); // closed for good: Close, Cancel, or its name went
    return connection.callOn(m, "remove_instance", entry.id, panelId);
  };
  panel.add(name, info, instance, release, {
    panel: panelId,
    kind: entry.kind,
    projection: {
      fetch: async () => connection.callOn(await connection.call("lookup", currentName()), "projection"),
      image: async (src) => connection.callOn(await connection.call("lookup", currentName()), "projection_image", src),
    },
  });
  if (entry.kind !== "projection-only") followWebletNotices(name, info, instance.label);
}

async function openWeblet(name, out) {
  if (panel.activate(name)) {
    out.info(`${name} is open.`);
    return;
  }
  if (opening.has(name)) return;
  opening.add(name);
  try {
    const type = await typeOf(name);
    if (type !== "weblet") throw new Error(`${name} names a ${type}, not a weblet`);
    const weblet = await connection.call("lookup", name);
    const info = await connection.callOn(weblet, "info");
    weblets.remember(info);
    const listed = await managerList();
    const entry = listed?.entries.find((e) => e.formula === info.id);
    if (listed && entry) {
      // A panel of the manager's: it outlives reloads and restarts, on the same origin.
      if (!entry.enabled) throw new Error(`${name} is disabled: enable it in /weblets first`);
      const shown = new Set(panel.tabs.map((t) => t.panel));
      const instance = entry.instances.find((i) => !shown.has(i.panel)) ??
        await connection.callOn(listed.m, "create_instance", entry.id, {});
      showPanel(listed.m, name, entry, instance, info);
    } else {
      const instance = await connection.callOn(weblet, "open");
      panel.add(name, info, instance, () => connection.callOn(weblet, "close", instance.label));
      followWebletNotices(name, info, instance.label);
    }
    out.ok(`Opened ${info.title || name}.`);
    scheduleRefresh();
  } finally {
    opening.delete(name);
  }
}

/**
 * Bring back this tab's panels (after a reload or a reconnect; `only`: one
 * weblet's, after it was enabled or updated). One tab per weblet name.
 * @param {string|null} [only]
 */
async function restorePanels(only = null) {
  const listed = await managerList();
  if (!listed) return;
  for (const entry of listed.entries) {
    if (entry.builtin || !entry.enabled || !entry.formula || (only && entry.id !== only)) continue;
    const name = nameOfEntry(entry);
    const shown = new Set(panel.tabs.map((t) => t.panel));
    const instance = entry.instances.find((i) => tabPanels.has(i.panel) && !shown.has(i.panel));
    if (!instance || panel.has(name) || panel.tabs.length >= MAX_OPEN) continue;
    showPanel(listed.m, name, entry, instance, infoOfEntry(entry));
  }
}

/** Cancel what `name` names; a weblet's frame closes with it (its page has lost its session). */
async function cancelName(name, out) {
  await connection.call("cancel", name, "cancelled from chat");
  const closed = panel.close(name);
  out.ok(closed ? `Stopped ${name} and closed its page.` : `Cancelled ${name}.`);
}

/** Forget `name`; a weblet is cancelled first (a name is not a capability: forgetting it stops nothing). */
async function removeName(name, out) {
  if ((await typeOf(name)) === "weblet") {
    const info = await connection.callOn(await connection.call("lookup", name), "info");
    const listed = await managerList();
    const entry = listed?.entries.find((e) => e.formula === info.id);
    if (listed && entry) {
      // Installed through the manager: uninstall (it stops; its names and panels go).
      panel.close(name, { keep: true });
      await connection.callOn(listed.m, "remove", entry.id);
      out.ok(`Stopped ${name} and removed it.`);
      return;
    }
    await connection.call("cancel", name, "removed from chat");
    panel.close(name);
    await connection.call("remove", name);
    out.ok(`Stopped ${name} and removed its name.`);
    return;
  }
  await connection.call("remove", name);
  out.ok(`Removed the name ${name}.`);
}

// ---------------------------------------------------------------------------
// The connection and what each session follows

const connectionEl = byId("connection");
const connectionText = byId("connection-text");
const retryButton = byId("retry-now");
const layout = byId("layout");
let everConnected = false;
/** A session is up (so losing it is news worth a line in the transcript). */
let sessionUp = false;
/** @type {ReturnType<typeof setInterval> | undefined} */
let countdown;

function showState(s) {
  clearInterval(countdown);
  connectionEl.dataset.state = s.state;
  layout.dataset.connection = s.state;
  retryButton.hidden = s.state !== "waiting";
  if (s.state === "connecting") {
    connectionText.textContent = everConnected ? "Reconnecting…" : "Connecting…";
  } else if (s.state === "connected") {
    connectionText.textContent = "Connected";
    transcript.ok(everConnected ? "Reconnected to the daemon." : "Connected to the daemon. Type /help for commands.");
    everConnected = true;
    sessionUp = true;
  } else if (s.state === "waiting") {
    if (sessionUp) {
      transcript.warn(`Lost the connection to the daemon${reasonText(s.error)}. Reconnecting…`);
      sessionUp = false;
    }
    const until = Date.now() + s.retryInMs;
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      connectionText.textContent = `Disconnected — retrying${seconds ? ` in ${seconds}s` : "…"}`;
    };
    tick();
    countdown = setInterval(tick, 500);
    inventory.markStale();
  } else if (s.state === "refused") {
    sessionStorage.removeItem(TOKEN_KEY);
    connectionText.textContent = "Not connected";
    showFatal("This link's token was not accepted",
      `The daemon refused the token in this link: ${s.error?.message || formatError(s.error)}. ` +
      "It may have been revoked, or the link may be incomplete.");
  }
}

function reasonText(reason) {
  if (!reason) return "";
  const text = typeof reason.reason === "string" ? reason.reason : formatError(reason);
  return text && text !== "error" ? ` (${text})` : "";
}

function showFatal(title, text) {
  byId("fatal-title").textContent = title;
  byId("fatal-text").textContent = text;
  byId("fatal").hidden = false;
  layout.hidden = true;
  document.body.dataset.state = "fatal";
}

retryButton.addEventListener("click", () => connection.retryNow());
window.addEventListener("online", () => connection.retryNow());
// Leaving the page ends the session at once (the daemon drops what it held for us).
window.addEventListener("pagehide", () => connection.closeAll());
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") connection.retryNow();
});

/** Is this session still the current, open one? (Its errors are worth showing.) */
function isCurrent(session) {
  return connection.session === session && !session.conn.aborted;
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let refreshTimer;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshEntries, REFRESH_DEBOUNCE_MS);
}

async function refreshEntries() {
  const session = connection.session;
  if (!session) return;
  try {
    const entries = await connection.call("list_entries");
    if (isCurrent(session)) {
      inventory.update(entries);
      inbox.refreshSenders();
      panel.sync((name) => inventory.entryFor(name));
      prompts.consider(inbox.records());
    }
  } catch (error) {
    if (isCurrent(session)) transcript.error(error);
  }
}

setInterval(() => {
  if (connection.session && document.visibilityState === "visible") refreshEntries();
}, LIVE_REFRESH_MS);

/** Pull events from a remote ChangeStream until it ends or the session does. */
async function pump(session, stream, onEvent) {
  try {
    for (;;) {
      const { done, value } = await connection.callOn(stream, "next");
      if (!isCurrent(session) || done) return;
      onEvent(value);
    }
  } catch (error) {
    if (isCurrent(session)) transcript.error(error);
  }
}

function startSession(session) {
  managerRef = null; // a reference of the session that ended
  agentRef = null;
  noAgent = false;
  inventory.beginSession();
  inbox.beginSession();
  prompts.beginSession();
  // Pages still open from the last session: follow their notices again on this one.
  for (const tab of panel.tabs) if (tab.kind !== "projection-only") followWebletNotices(tab.name, tab.info, tab.label);
  const names = connection.call("follow_name_changes");
  const messages = connection.call("follow_messages");
  pump(session, names, (event) => {
    inventory.apply(event);
    if (typeof event.remove === "string") panel.forget(event.remove);
    else if (event.rename) panel.rename(event.rename.from, event.rename.to);
    inbox.refreshSenders();
    scheduleRefresh();
  });
  pump(session, messages, (event) => {
    inbox.apply(event);
    if (event.dismiss !== undefined) prompts.dismissed(event.dismiss);
    else prompts.consider([event.add ?? event.update]);
  });
  // The manager's panels come back once the names are known (a tab shows its inventory name).
  refreshEntries().then(() => (isCurrent(session) ? restorePanels() : undefined)).catch(
    (error) => isCurrent(session) && transcript.error(error));
  if (managerView.isOpen) managerView.open();
  agentChat.beginSession(() => isCurrent(session)); // calls waiting for an answer, followed live (docs/agent.md)
  connection.call("list_messages").then(
    (records) => {
      if (!isCurrent(session)) return;
      inbox.load(records);
      prompts.consider(records);
    },
    (error) => isCurrent(session) && transcript.error(error),
  );
}

const token = takeToken();
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/_ocapd/ws`;
const connection = new Connection({ url: wsUrl, token, onState: showState, onSession: startSession });

if (!token) {
  connectionText.textContent = "Not connected";
  connectionEl.dataset.state = "refused";
  showFatal("No token in this link", "Chat needs the link with its #token=… part.");
} else {
  connection.run();
}

// ---------------------------------------------------------------------------
// The chat input

const commandHistory = loadHistory();
let historyIndex = commandHistory.length;
let draft = "";

function loadHistory() {
  try {
    const saved = JSON.parse(sessionStorage.getItem("ocapd-chat-history") ?? "[]");
    return Array.isArray(saved) ? saved.filter((x) => typeof x === "string") : [];
  } catch {
    return [];
  }
}

function remember(line) {
  if (commandHistory[commandHistory.length - 1] !== line) commandHistory.push(line);
  while (commandHistory.length > HISTORY_MAX) commandHistory.shift();
  historyIndex = commandHistory.length;
  draft = "";
  sessionStorage.setItem("ocapd-chat-history", JSON.stringify(commandHistory));
}

function focusInput() {
  if (!document.querySelector("dialog[open]")) input.focus();
}

function insertReference(name) {
  const pos = input.selectionStart ?? input.value.length;
  const before = input.value.slice(0, pos);
  const after = input.value.slice(input.selectionEnd ?? pos);
  const ref = `${before && !/\s$/.test(before) ? " " : ""}@${name}${/^\s/.test(after) ? "" : " "}`;
  input.value = before + ref + after;
  input.focus();
  const caret = before.length + ref.length;
  input.setSelectionRange(caret, caret);
  updateSuggestions();
}

/** What a command may do: call the agent, and write under its own line. */
function commandContext(out) {
  return {
    call: (method, ...args) => connection.call(method, ...args),
    info: (text) => out.info(text),
    ok: (text) => out.ok(text),
    value: (value, label) => out.value(value, label),
    table: (rows) => out.table(rows),
    clear: () => transcript.clear(),
    openEval: (prefill) => evalDialog.open(prefill),
    evaluate: (args) => startEval(out, args, "add --replace to name the new result instead"),
    cancel: (name) => cancelName(name, out),
    remove: (name) => removeName(name, out),
    install: async (bundle, name, powers) => {
      const taken = new Set(inventory.allNames());
      const as = name ?? suggestWebletName(bundle, taken);
      await installWeblet(bundle, as, powers, out);
      await openWeblet(as, out);
    },
    openInstall: (prefill) => installDialog.open(prefill),
    openWeblet: (name) => openWeblet(name, out),
    openManager: () => managerView.open(),
    closeWeblet: (name) => panel.close(name ?? panel.active),
    background: (promise, what) => {
      promise.then(
        (value) => {
          out.value(value, what);
          scheduleRefresh();
        },
        (error) => out.error(error),
      );
    },
  };
}

async function runLine(line) {
  const out = transcript.command(line);
  if (!line.startsWith("/")) {
    try {
      await chatAgent();
    } catch {
      // No chat agent here (a guest's chat, or a daemon run without it): only commands.
      out.info("Commands start with /. To message someone: /send <to> <text>. Type /help for the list.");
      return;
    }
    await agentChat.message(line, out).catch((error) => out.error(error));
    return;
  }
  try {
    const { command, args } = lookupCommand(line);
    await command.run(commandContext(out), args);
  } catch (error) {
    out.error(error instanceof UsageError ? error.message : error);
  }
  scheduleRefresh();
}

byId("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const line = input.value.trim();
  if (!line) return;
  remember(line);
  input.value = "";
  hideSuggestions();
  runLine(line);
  focusInput();
});

input.addEventListener("keydown", (event) => {
  if (event.key === "ArrowUp" && !event.shiftKey) {
    if (historyIndex === 0) return;
    if (historyIndex === commandHistory.length) draft = input.value;
    historyIndex -= 1;
    setInput(commandHistory[historyIndex]);
    event.preventDefault();
  } else if (event.key === "ArrowDown" && !event.shiftKey) {
    if (historyIndex >= commandHistory.length) return;
    historyIndex += 1;
    setInput(historyIndex === commandHistory.length ? draft : commandHistory[historyIndex]);
    event.preventDefault();
  } else if (event.key === "Tab" && !event.shiftKey) {
    if (complete()) event.preventDefault();
  } else if (event.key === "Escape") {
    hideSuggestions();
  }
});

input.addEventListener("input", () => updateSuggestions());
input.addEventListener("blur", () => setTimeout(hideSuggestions, 150));

function setInput(text) {
  input.value = text;
  input.setSelectionRange(text.length, text.length);
  hideSuggestions();
}

// Completion: command names after "/", pet names after "@".

function candidates() {
  const text = input.value;
  const cursor = input.selectionStart ?? text.length;
  const command = /^\/(\w*)$/.exec(text.slice(0, cursor));
  if (command) {
    return { start: 1, prefix: command[1], items: completeCommand(command[1]), suffix: " " };
  }
  const ref = referenceAt(text, cursor);
  if (ref) {
    const items = inventory.allNames().filter((n) => n.startsWith(ref.prefix) && /^[a-z0-9]/.test(n));
    return { start: ref.start + ref.offset, prefix: ref.prefix, items, suffix: " " };
  }
  return null;
}

function complete() {
  const c = candidates();
  if (!c || c.items.length === 0) return false;
  const common = c.items.reduce((a, b) => {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i += 1;
    return a.slice(0, i);
  });
  const chosen = c.items.length === 1 ? c.items[0] + c.suffix : common;
  if (chosen.length <= c.prefix.length && c.items.length > 1) return true; // nothing more to add; keep focus
  const cursor = input.selectionStart ?? input.value.length;
  input.value = input.value.slice(0, c.start) + chosen + input.value.slice(cursor);
  const caret = c.start + chosen.length;
  input.setSelectionRange(caret, caret);
  updateSuggestions();
  return true;
}

function updateSuggestions() {
  const c = candidates();
  if (!c || c.items.length === 0 || (c.items.length === 1 && c.items[0] === c.prefix)) {
    hideSuggestions();
    return;
  }
  replaceChildren(suggestionsEl,
    h("span", { class: "muted" }, "Tab"),
    c.items.slice(0, 8).map((item) => h("button", {
      class: "suggestion", type: "button", tabindex: "-1",
      onmousedown: (event) => event.preventDefault(), // keep focus in the input
      onclick: () => {
        const cursor = input.selectionStart ?? input.value.length;
        input.value = input.value.slice(0, c.start) + item + c.suffix + input.value.slice(cursor);
        const caret = c.start + item.length + c.suffix.length;
        input.setSelectionRange(caret, caret);
        hideSuggestions();
        input.focus();
      },
    }, item)),
    c.items.length > 8 ? h("span", { class: "muted" }, `+${c.items.length - 8}`) : null);
  suggestionsEl.hidden = false;
}

function hideSuggestions() {
  suggestionsEl.hidden = true;
}

// Typing anywhere on the page goes to the chat input (unless another field has focus).
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement || (target instanceof HTMLElement && target.isContentEditable);
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key.length === 1 || event.key === "/") focusInput();
});
