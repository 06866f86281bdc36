// @ts-check
// Turning values and errors that come back from the daemon into short,
// readable text for the transcript. Output is plain text; callers put it in
// text nodes.

import { Float64, RemoteRef, Tagged } from "/_ocapd/captp.js";

/** Longest value text shown in the transcript before it is cut. */
const MAX_VALUE_TEXT = 4000;

/** Is this a remote reference (a capability) or promise, not copy data? */
export function isReference(value) {
  return value instanceof RemoteRef || value instanceof Promise;
}

/** A value as text: strings as they are, data as JSON-like text. */
export function formatValue(value) {
  if (typeof value === "string") return cut(value);
  return cut(formatData(value, 0));
}

function formatData(value, depth) {
  if (depth > 20) return "…";
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
    case "boolean":
      return String(value);
    case "bigint":
      return String(value);
  }
  if (value instanceof Error) return formatError(value);
  if (value instanceof Float64) return Number.isInteger(value.value) ? value.value.toFixed(1) : String(value.value);
  if (value instanceof Uint8Array) {
    const hex = Array.from(value.slice(0, 64), (b) => b.toString(16).padStart(2, "0")).join("");
    return `bytes(${value.length}) ${hex}${value.length > 64 ? "…" : ""}`;
  }
  if (Array.isArray(value)) return `[${value.map((v) => formatData(v, depth + 1)).join(", ")}]`;
  if (value instanceof Tagged) return `${value.tag}(${formatData(value.payload, depth + 1)})`;
  if (isReference(value)) return "<a reference>";
  const entries = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${formatData(v, depth + 1)}`);
  return `{${entries.join(", ")}}`;
}

function safeString(value) {
  try {
    return String(value);
  } catch {
    return "";
  }
}

function cut(text) {
  return text.length > MAX_VALUE_TEXT ? `${text.slice(0, MAX_VALUE_TEXT)}… (${text.length} characters)` : text;
}

/**
 * An error as one readable line. Remote errors carry the daemon's exception
 * name (LookupError, ValueError, …) and its message; the message is what the
 * user needs, the name says what kind of problem it was.
 */
export function formatError(error) {
  if (error === null || error === undefined) return "unknown error";
  if (typeof error !== "object") return String(error);
  const name = typeof error.name === "string" ? error.name : "";
  if (name === "SessionAborted") return `the connection to the daemon ended (${error.reason ?? error.message})`;
  const message = typeof error.message === "string" ? error.message : safeString(error);
  if (!name || name === "Error" || message.startsWith(`${name}:`)) return message || name || "error";
  return `${message} (${name})`;
}
