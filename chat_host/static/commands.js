// @ts-check
// The chat input's command registry: `/name args` → a handler.
//
// A command is one row in COMMANDS: its usage line, a one-line summary and a
// `run(ctx, args)` that talks to the agent through `ctx`. Adding a command is
// adding a row. Handlers throw UsageError for bad input; errors from the
// daemon propagate and are shown by the caller.

import { firstWord, NAME_PATH, parseEval, parseInstall, parseMessage, PET_NAME, words } from "./parse.js";

export class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = "UsageError";
  }
}

function need(condition, usage) {
  if (!condition) throw new UsageError(`usage: ${usage}`);
}

function needName(name, what) {
  if (!NAME_PATH.test(name)) throw new UsageError(`${what}: ${JSON.stringify(name)} is not a name`);
}

function messageNumber(text, usage) {
  need(/^\d+$/.test(text ?? ""), usage);
  return Number(text);
}

/**
 * @typedef {object} CommandContext
 * @property {(method: string, ...args: any[]) => Promise<any>} call  calls the agent
 * @property {(text: string) => void} info
 * @property {(text: string) => void} ok
 * @property {(value: any, label?: string) => void} value
 * @property {(lines: Array<[string, string]>) => void} table
 * @property {() => void} clear
 * @property {(prefill?: object) => void} openEval
 * @property {(args: import("./evaldialog.js").EvalArgs) => {result: Promise<unknown>, cancel: () => void}} evaluate
 *           evaluate with a pending line and Cancel, printed output, then the result or error (all written here)
 * @property {(promise: Promise<any>, what: string) => void} background
 * @property {(name: string) => Promise<void>} cancel  cancel a name (closes its weblet frame)
 * @property {(name: string) => Promise<void>} remove  forget a name (a weblet is cancelled first)
 * @property {(bundle: string, name: string|null, powers: string|string[]) => Promise<void>} install
 * @property {(prefill?: object) => void} openInstall  the install dialog
 * @property {(name: string) => Promise<void>} openWeblet
 * @property {() => Promise<void>} openManager  the widget manager
 * @property {(name?: string) => string|null} closeWeblet  the closed weblet's name, or null
 */

/** @type {Array<{name: string, usage: string, summary: string, run: (ctx: CommandContext, args: string) => any}>} */
export const COMMANDS = [
  {
    name: "help",
    usage: "/help",
    summary: "show the commands",
    run(ctx) {
      ctx.table(COMMANDS.map((c) => [c.usage, c.summary]));
      ctx.info("Text without a / goes to the chat agent: it runs a command of a weblet you have open (\"value\", " +
        "\"increment 5\", \"counter.increment by=5\"). A command that changes things asks first: Allow once, Always or " +
        "Deny. /weblets shows the grants and the audit.");
      ctx.info("Keys: Enter runs, ↑/↓ recall history, Tab completes @names and commands, Esc closes dialogs.");
    },
  },
  {
    name: "list",
    usage: "/list",
    summary: "list your names with their types",
    async run(ctx) {
      const entries = await ctx.call("list_entries");
      if (entries.length === 0) ctx.info("No names.");
      ctx.table(entries.map((e) => [e.name, `${e.type}${e.live ? " · live" : ""}`]));
    },
  },
  {
    name: "show",
    usage: "/show <name>",
    summary: "show the value a name refers to",
    async run(ctx, args) {
      const [name, extra] = words(args);
      need(name && !extra, this.usage);
      needName(name, "show");
      const info = await ctx.call("describe", name);
      if (["marshal", "eval", "lookup"].includes(info.type)) ctx.value(await ctx.call("lookup", name), name);
      else ctx.info(`${name} names ${/^[aeiou]/.test(info.type) ? "an" : "a"} ${info.type}.`);
    },
  },
  {
    name: "store",
    usage: "/store <name> <text>",
    summary: "store a piece of text under a name",
    async run(ctx, args) {
      const [name, text] = firstWord(args);
      need(name && text, this.usage);
      needName(name, "store");
      await ctx.call("store_value", text, name);
      ctx.ok(`Stored ${name}.`);
    },
  },
  {
    name: "mktext",
    usage: "/mktext <name> [text]",
    summary: "make a text store: text that outlives restarts (e.g. to answer a weblet asking for a place to keep notes)",
    async run(ctx, args) {
      const [name, text] = firstWord(args);
      need(name, this.usage);
      needName(name, "mktext");
      await ctx.call("make_text_store", name, text.trim());
      ctx.ok(`Made the text store ${name}.`);
    },
  },
  {
    name: "send",
    usage: "/send <to> <text with @edge:pet>",
    summary: "send a message; each @edge:pet (or @name) attaches that value",
    async run(ctx, args) {
      const [to, text] = firstWord(args);
      need(to && text, this.usage);
      needName(to, "send");
      const { strings, edgeNames, petNames } = parseMessage(text);
      await ctx.call("send", to, strings, edgeNames, petNames);
      ctx.ok(`Sent to ${to}${edgeNames.length ? ` with ${edgeNames.map((e) => `@${e}`).join(", ")}` : ""}.`);
    },
  },
  {
    name: "request",
    usage: "/request <to> <description> [-n name]",
    summary: "ask an agent for something; the answer appears here (and is named with -n)",
    run(ctx, args) {
      let [to, description] = firstWord(args);
      need(to && description, this.usage);
      needName(to, "request");
      /** @type {string | null} */
      let name = null;
      const m = /\s-n\s+(\S+)$/.exec(` ${description}`);
      if (m) {
        name = m[1];
        need(PET_NAME.test(name), this.usage);
        description = ` ${description}`.slice(0, m.index).trim();
      }
      ctx.info(`Asked ${to}: ${description} — waiting for the answer.`);
      ctx.background(ctx.call("request", to, description, name), `answer from ${to}${name ? `, named ${name}` : ""}`);
    },
  },
  {
    name: "eval",
    usage: "/eval <source> [code:pet ...] [-w worker] [-n name] [--replace]",
    summary: "evaluate Python in a worker; Cancel stops it (no arguments: open the eval dialog)",
    async run(ctx, args) {
      if (!args.trim()) {
        ctx.openEval();
        return;
      }
      const parsed = parseEval(args);
      need(parsed.source, this.usage);
      // The result, printed output and errors are written by ctx.evaluate.
      await ctx.evaluate(parsed).result.catch(() => {});
    },
  },
  {
    name: "install",
    usage: "/install <bundle-name> [--as <name>] [--powers <level>]",
    summary: "install a weblet from a stored bundle (NONE, ENDO, HOST or name,name; no arguments: the install dialog)",
    async run(ctx, args) {
      if (!args.trim()) {
        ctx.openInstall();
        return;
      }
      let parsed;
      try {
        parsed = parseInstall(args);
      } catch (error) {
        throw new UsageError(`${error.message} — usage: ${this.usage}`);
      }
      if (parsed.powers === "HOST") {
        // Full control of the agent is never granted from one typed line.
        ctx.info("HOST powers give full control of your agent: confirm in the install dialog.");
        ctx.openInstall(parsed);
        return;
      }
      await ctx.install(parsed.bundle, parsed.name, parsed.powers);
    },
  },
  {
    name: "open",
    usage: "/open <name>",
    summary: "open an installed weblet in the weblet panel",
    async run(ctx, args) {
      const [name, extra] = words(args);
      need(name && !extra, this.usage);
      needName(name, "open");
      await ctx.openWeblet(name);
    },
  },
  {
    name: "weblets",
    usage: "/weblets",
    summary: "manage weblets: install from a store, a URL or a file; enable, update, uninstall",
    async run(ctx, args) {
      need(!args.trim(), this.usage);
      await ctx.openManager();
    },
  },
  {
    name: "close",
    usage: "/close [name]",
    summary: "close the weblet in front (or the one named); it keeps running",
    run(ctx, args) {
      const [name, extra] = words(args);
      need(!extra, this.usage);
      const closed = ctx.closeWeblet(name);
      if (closed) ctx.ok(`Closed ${closed}.`);
      else ctx.info(name ? `${name} is not open.` : "No weblet is open.");
    },
  },
  {
    name: "cancel",
    usage: "/cancel <name>",
    summary: "cancel a value and what depends on it (it is remade on next use)",
    async run(ctx, args) {
      const [name] = words(args);
      need(name, this.usage);
      needName(name, "cancel");
      await ctx.cancel(name);
    },
  },
  {
    name: "remove",
    usage: "/remove <name>",
    summary: "forget a name",
    async run(ctx, args) {
      const [name] = words(args);
      need(name, this.usage);
      needName(name, "remove");
      await ctx.remove(name);
    },
  },
  {
    name: "mkguest",
    usage: "/mkguest <handle> [agent]",
    summary: "make a guest: its handle is named <handle>, its powers [agent] (default <handle>-agent)",
    async run(ctx, args) {
      const [handle, agent = `${handle}-agent`, extra] = words(args);
      need(handle && !extra, this.usage);
      need(PET_NAME.test(handle) && PET_NAME.test(agent), this.usage);
      await ctx.call("provide_guest", handle, agent, {});
      ctx.ok(`Guest ready: handle ${handle}, powers ${agent}.`);
    },
  },
  {
    name: "mkhost",
    usage: "/mkhost <handle> [agent]",
    summary: "make another host: its handle is named <handle>, its powers [agent] (default <handle>-agent)",
    async run(ctx, args) {
      const [handle, agent = `${handle}-agent`, extra] = words(args);
      need(handle && !extra, this.usage);
      need(PET_NAME.test(handle) && PET_NAME.test(agent), this.usage);
      await ctx.call("provide_host", handle, agent);
      ctx.ok(`Host ready: handle ${handle}, powers ${agent}.`);
    },
  },
  {
    name: "resolve",
    usage: "/resolve <n> <name>",
    summary: "answer request n with a named value",
    async run(ctx, args) {
      const [n, name] = words(args);
      const number = messageNumber(n, this.usage);
      need(name, this.usage);
      needName(name, "resolve");
      await ctx.call("resolve", number, name);
      ctx.ok(`Answered request ${number} with ${name}.`);
    },
  },
  {
    name: "reject",
    usage: "/reject <n> [reason]",
    summary: "decline request n",
    async run(ctx, args) {
      const [n, reason] = firstWord(args);
      const number = messageNumber(n, this.usage);
      await ctx.call("reject", number, reason.trim() || "declined");
      ctx.ok(`Declined request ${number}.`);
    },
  },
  {
    name: "adopt",
    usage: "/adopt <n> <edge> [name]",
    summary: "name a value attached to message n",
    async run(ctx, args) {
      const [n, edge, name = edge] = words(args);
      const number = messageNumber(n, this.usage);
      need(edge, this.usage);
      needName(name, "adopt");
      await ctx.call("adopt", number, edge, name);
      ctx.ok(`Adopted @${edge} from message ${number} as ${name}.`);
    },
  },
  {
    name: "dismiss",
    usage: "/dismiss <n>",
    summary: "delete message n",
    async run(ctx, args) {
      const number = messageNumber(words(args)[0], this.usage);
      await ctx.call("dismiss", number);
    },
  },
  {
    name: "clear",
    usage: "/clear",
    summary: "clear this transcript",
    run(ctx) {
      ctx.clear();
    },
  },
];

const BY_NAME = new Map(COMMANDS.map((c) => [c.name, c]));

/** Find the command for a line that starts with "/"; throws UsageError if unknown. */
export function lookupCommand(line) {
  const [word, args] = firstWord(line.slice(1));
  const command = BY_NAME.get(word.toLowerCase());
  if (!command) throw new UsageError(`unknown command /${word} — type /help for the list`);
  return { command, args };
}

/** Command names starting with `prefix` (for Tab completion). */
export function completeCommand(prefix) {
  return COMMANDS.map((c) => c.name).filter((n) => n.startsWith(prefix));
}
