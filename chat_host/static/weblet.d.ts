// weblet.d.ts — the types of the weblet SDK, served at /_ocapd/weblet.js.
//
// Written for weblet authors (docs/weblets.md): copy it next to your page's
// scripts and point TypeScript or your editor's JavaScript checking at it,
// for example in a tsconfig.json or jsconfig.json:
//
//   "compilerOptions": { "checkJs": true, "paths": { "/_ocapd/weblet.js": ["./weblet.d.ts"] } }
//
// ocapd's own `npm run typecheck` checks weblet.js against this file, so the
// two cannot drift apart.

declare const methods: unique symbol;

/** Any methods at all: what an untyped reference offers. */
export type Methods = Record<string, (...args: any[]) => any>;

/**
 * A reference to an object on the other side of the connection (the
 * weblet's guest, its backend, anything they hand out). It has no methods of
 * its own: call them with `E(ref).method(...args)`. `M` describes them.
 */
export interface Remote<M extends object = Methods> {
  readonly [methods]?: M;
}

/**
 * What `E(ref)` offers: each method of `M`, returning a promise for its
 * result; and, when `M` is a function (a far function, `Far(iface, fn)`),
 * `E(ref)(...args)` calls it.
 */
export type EProxy<M extends object> = {
  readonly [K in keyof M]: M[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never;
} & (M extends (...args: infer A) => infer R
  ? (...args: A) => Promise<Awaited<R>>
  : string extends keyof M // untyped (Methods): callable with anything, as it has any method
    ? (...args: any[]) => Promise<any>
    : unknown);
/** What `E.sendOnly(ref)` offers: each method of `M`, returning nothing (and a call of `M` itself, if a function). */
export type SendOnlyProxy<M extends object> = {
  readonly [K in keyof M]: M[K] extends (...args: infer A) => any ? (...args: A) => void : never;
} & (M extends (...args: infer A) => any ? (...args: A) => void : string extends keyof M ? (...args: any[]) => void : unknown);

/**
 * Eventual send: `E(target).method(...args)` calls `method` on a reference,
 * a promise for one, or a local object, and returns a promise for the
 * result. The call never runs in the caller's turn. Calls on the promise of
 * an earlier call are pipelined (sent at once, one round trip). A null
 * target (`app` without a backend) is allowed by the types and rejects.
 */
export declare const E: {
  <M extends object>(target: Remote<M> | PromiseLike<Remote<M>> | null): EProxy<M>;
  (target: unknown): EProxy<Methods> & ((...args: any[]) => Promise<any>);
  /** Deliver-only: the result and any failure are dropped. */
  sendOnly: {
    <M extends object>(target: Remote<M> | PromiseLike<Remote<M>> | null): SendOnlyProxy<M>;
    (target: unknown): SendOnlyProxy<Methods> & ((...args: any[]) => void);
  };
};

/**
 * Make `methods` an object the other side can call (passed by reference):
 * its own function properties whose names are identifiers not starting
 * with "_" are its remote methods. Returns the same object, frozen. Given a
 * function, makes a far function: the other side calls it with `E(fn)(...args)`.
 */
export declare function Far<T extends object>(iface: string, methods?: T): T;

/** A pet name path: "notes" or ["dir", "notes"]. */
export type NamePath = string | string[];

/**
 * The weblet's guest agent: its own names and mailbox, never its host's
 * powers. The special name "HOST" is the host's handle (send or request to it).
 */
export interface GuestPowers {
  list(): string[];
  list_entries(): { name: string; type: string; id: string; live: boolean }[];
  describe(path: NamePath): Record<string, unknown>;
  has(path: NamePath): boolean;
  identify(path: NamePath): string | null;
  locate(path: NamePath): string | null;
  lookup(path: NamePath): any;
  reverse_lookup(value: unknown): string[];
  write(path: NamePath, value: unknown): null;
  remove(path: NamePath): null;
  move(fromPath: NamePath, toPath: NamePath): null;
  copy(fromPath: NamePath, toPath: NamePath): null;
  make_directory(path: NamePath): Remote;
  follow_name_changes(path?: NamePath | null): Remote;
  handle(): Remote;
  list_messages(): Record<string, unknown>[];
  follow_messages(): Remote;
  /** Send text with capabilities attached: `edgeNames[i]` names the value of `petNames[i]`. */
  send(to: NamePath, strings: string[], edgeNames: string[], petNames: string[]): null;
  /** Ask an agent for something; settles when they answer (stored under `responseName` if given). */
  request(to: NamePath, description: string, responseName?: string | null): any;
  resolve(number: number, path: NamePath): null;
  reject(number: number, reason?: string): null;
  adopt(number: number, edgeName: string, path: NamePath): null;
  dismiss(number: number): null;
}

/** This open instance of the weblet, as its own page sees it. */
export interface WebletInstance {
  /** The instance's label: the first part of its origin's host name. */
  label(): string;
  /** The stored, normalized manifest (what the host validated at install). */
  manifest(): Record<string, unknown>;
  /** Record an event for the host; `payload` is plain data (no references). */
  emit(event: string, payload?: unknown): null;
  /** Hand the host the page's command handlers (`commands.handle` does this). */
  register_commands(commands: object): null;
  /** Close this instance: its origin stops serving and its sessions end. */
  close(): null;
}

/** What `connect()` resolves to. `App` describes the backend's object. */
export interface Weblet<App extends object = Methods> {
  /** The weblet's guest agent. */
  powers: Remote<GuestPowers>;
  /** What the backend's `make(powers, context)` returned; null without a backend. */
  app: Remote<App> | null;
  /** This open instance. */
  instance: Remote<WebletInstance>;
}

/**
 * Connect to this weblet's host: one CapTP session per page over
 * ws(s)://<this origin>/_ocapd/ws; later calls share it. A failed attempt
 * may be retried.
 */
export declare function connect<App extends object = Methods>(): Promise<Weblet<App>>;

/** Arguments of a command, as declared in weblet.json's interface.commands. */
export type CommandArgs = Record<string, unknown>;
/** Runs a command; what it returns (or its promise settles to) is the answer. */
export type CommandHandler = (args: CommandArgs) => unknown;

export declare const commands: Readonly<{
  /**
   * Handle the command `name` (declared in weblet.json's interface.commands)
   * with `fn(args)`. The handlers are handed to the host once the page is
   * connected; the promise settles when that is done (at once before then).
   */
  handle(name: string, fn: CommandHandler): Promise<void>;
}>;

export declare const events: Readonly<{
  /** Tell the host that `name` happened, with plain data `payload` (connects if needed). */
  emit(name: string, payload?: unknown): Promise<null>;
}>;
