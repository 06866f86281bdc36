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
 * Read `/eval` arguments: `<source> [code:pet ...] [-w worker] [-n name]`.
 * Endowments and options are taken from the end, so the source may contain
 * spaces (and even colons, as long as its last word is not `a:b`).
 * @returns {{source: string, codeNames: string[], petPaths: string[], worker: string|null, resultName: string|null}}
 */
export function parseEval(text) {
  const tokens = text.trim().split(/(\s+)/); // keep separators to rebuild the source
  const codeNames = [];
  const petPaths = [];
  let worker = null;
  let resultName = null;
  // tokens alternate word, space, word, …; walk words from the end.
  let end = tokens.length;
  while (end > 0) {
    const word = tokens[end - 1];
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
  return { source, codeNames, petPaths, worker, resultName };
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
