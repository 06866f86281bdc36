// @ts-check
// Pure parsing for the chat input: no DOM, no daemon (node can test it).

/** A pet name, as the daemon validates it. */
export const PET_NAME = /^[a-z0-9][a-z0-9-]{0,127}$/;
/** A pet name path (dotted) or a special name such as MAIN or SELF. */
export const NAME_PATH = /^(?:[A-Z][A-Z0-9_]*|[a-z0-9][a-z0-9-]*)(?:\.[a-z0-9][a-z0-9-]*)*$/;

// `@edge` or `@edge:pet.path` inside message text, as the CLI reads it.
const REFERENCE = /@([a-z0-9][a-z0-9-]*)(?::([A-Za-z0-9][A-Za-z0-9.-]*))?/g;

/**
 * Split "see @doc:report now" into the daemon's send() arguments:
 * strings (one more than references), edge names and pet names.
 */
export function parseMessage(text) {
  const strings = [];
  const edgeNames = [];
  const petNames = [];
  let pos = 0;
  for (const m of text.matchAll(REFERENCE)) {
    strings.push(text.slice(pos, m.index));
    edgeNames.push(m[1]);
    petNames.push(m[2] ?? m[1]);
    pos = m.index + m[0].length;
  }
  strings.push(text.slice(pos));
  return { strings, edgeNames, petNames };
}

/** Split off the first whitespace-separated word: [word, rest]. */
export function firstWord(text) {
  const trimmed = text.trimStart();
  const m = /^(\S+)\s*([\s\S]*)$/.exec(trimmed);
  return m ? [m[1], m[2]] : ["", ""];
}

/** Whitespace-separated words. */
export function words(text) {
  return text.trim().split(/\s+/).filter(Boolean);
}

// A trailing endowment `code:pet.path`: a Python name bound to a named value.
const ENDOWMENT = /^([A-Za-z_][A-Za-z0-9_]*):((?:[A-Z][A-Z0-9_]*|[a-z0-9][a-z0-9-]*)(?:\.[a-z0-9][a-z0-9-]*)*)$/;

/**
 * Read `/eval` arguments: `<source> [code:pet ...] [-w worker] [-n name] [--replace]`.
 * Endowments and options are taken from the end, so the source may contain
 * spaces (and even colons, as long as its last word is not `a:b`).
 * @returns {{source: string, codeNames: string[], petPaths: string[], worker: string|null, resultName: string|null, replace: boolean}}
 */
export function parseEval(text) {
  const tokens = text.trim().split(/(\s+)/); // keep separators to rebuild the source
  const codeNames = [];
  const petPaths = [];
  let worker = null;
  let resultName = null;
  let replace = false;
  // tokens alternate word, space, word, …; walk words from the end.
  let end = tokens.length;
  while (end > 0) {
    const word = tokens[end - 1];
    if (word === "--replace" && !replace && end >= 3) {
      replace = true;
      end -= 2;
      continue;
    }
    const before = end >= 3 ? tokens[end - 3] : null;
    if ((before === "-w" || before === "-n") && end >= 3 && NAME_PATH.test(word)) {
      if (before === "-w" && worker === null) worker = word;
      else if (before === "-n" && resultName === null) resultName = word;
      else break;
      end -= 4;
      continue;
    }
    const m = ENDOWMENT.exec(word);
    if (!m) break;
    codeNames.unshift(m[1]);
    petPaths.unshift(m[2]);
    end -= 2;
  }
  const source = tokens.slice(0, Math.max(end, 0)).join("").trim();
  return { source, codeNames, petPaths, worker, resultName, replace };
}

/** The `@word` being typed at `cursor` in `text`, or null. */
export function referenceAt(text, cursor) {
  const before = text.slice(0, cursor);
  const m = /(?:^|\s)@([a-z0-9-]*(?::[A-Za-z0-9.-]*)?)$/.exec(before);
  if (!m) return null;
  const typed = m[1];
  const colon = typed.indexOf(":");
  return {
    start: cursor - typed.length,
    // after a colon the pet name is being typed; before it, the edge (= pet) name
    prefix: colon >= 0 ? typed.slice(colon + 1) : typed,
    offset: colon >= 0 ? colon + 1 : 0,
  };
}

/** The power levels a weblet can be installed with (besides a list of names). */
export const POWER_LEVELS = ["NONE", "ENDO", "HOST"];

/**
 * Read `/install` arguments: `<bundle-name> [--as <name>] [--powers <level>]`.
 * `level` is NONE, ENDO, HOST or a comma-separated list of pet names (custom).
 * Throws Error with a one-line reason for anything else.
 * @returns {{bundle: string, name: string|null, powers: string|string[]}}
 */
export function parseInstall(text) {
  const ws = words(text);
  let bundle = null;
  let name = null;
  let powers = "NONE";
  for (let i = 0; i < ws.length; i += 1) {
    const word = ws[i];
    if (word === "--as" || word === "--powers") {
      const value = ws[i + 1];
      if (value === undefined) throw new Error(`${word} needs a value`);
      i += 1;
      if (word === "--as") {
        if (!PET_NAME.test(value)) throw new Error(`--as: ${JSON.stringify(value)} is not a pet name`);
        name = value;
      } else {
        powers = parsePowers(value);
      }
    } else if (bundle === null && !word.startsWith("--")) {
      if (!NAME_PATH.test(word)) throw new Error(`${JSON.stringify(word)} is not a name`);
      bundle = word;
    } else {
      throw new Error(`unexpected ${JSON.stringify(word)}`);
    }
  }
  if (bundle === null) throw new Error("which bundle? name a stored blob");
  return { bundle, name, powers };
}

/** `NONE` / `ENDO` / `HOST` (any case), or `a,b` → ["a", "b"]. */
export function parsePowers(text) {
  const upper = text.toUpperCase();
  if (POWER_LEVELS.includes(upper)) return upper;
  const names = text.split(",").filter(Boolean);
  if (names.length === 0 || !names.every((n) => PET_NAME.test(n))) {
    throw new Error(`--powers: ${JSON.stringify(text)} is not NONE, ENDO, HOST or a comma-separated list of names`);
  }
  return names;
}

/**
 * A pet name for a weblet made from a bundle's name or a file's name
 * ("Counter.zip" → "counter", "notes-bundle" → "notes"), not one of `taken`.
 */
export function suggestWebletName(source, taken = new Set()) {
  let base = String(source)
    .replace(/\.(zip|html?)$/i, "")
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .replace(/-{2,}/g, "-")
    .replace(/-(bundle|zip|html|weblet)$/, "")
    .slice(0, 60)
    .replace(/-+$/, "");
  if (!base || !/^[a-z0-9]/.test(base)) base = "weblet";
  if (!taken.has(base)) return base;
  for (let i = 2; ; i += 1) if (!taken.has(`${base}-${i}`)) return `${base}-${i}`;
}
