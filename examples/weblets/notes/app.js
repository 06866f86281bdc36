// The notes page. It holds no place of its own to keep notes: it asks its
// host for one with a request, which the host sees in its inbox and answers
// (or declines). The answer is named "notes" in this weblet's pet store, so
// the request is asked only once: later visits get the same place at once.
//
// The place is any object with two methods:
//   get()      -> the saved text (a string; "" when empty)
//   set(text)  -> saves the text
//
// Its commands (weblet.json's interface) are handled here, by the page, since
// it has no backend: `read` answers the text, `append` adds a line and saves.
import { connect, E, commands } from "/_ocapd/weblet.js";

const SAVE_DELAY_MS = 600; // save once typing pauses, not on every key

const textEl = document.getElementById("text");
const statusEl = document.getElementById("status");
const savedEl = document.getElementById("saved");
const copyButton = document.getElementById("copy");

function say(text) {
  statusEl.textContent = text;
}

function describe(error) {
  return error?.message ?? String(error);
}

async function askForPlace(powers) {
  say("Asking your host for a place to keep notes…");
  return E(powers).request("HOST", "a place to keep notes", "notes");
}

function autosave(place) {
  let timer;
  let saving = Promise.resolve();
  textEl.addEventListener("input", () => {
    savedEl.textContent = "Editing…";
    clearTimeout(timer);
    timer = setTimeout(() => {
      const text = textEl.value;
      // Saves run one after another, so an older text never lands last.
      saving = saving
        .then(() => E(place).set(text))
        .then(
          () => {
            savedEl.textContent = "Saved";
          },
          (error) => {
            savedEl.textContent = `Not saved: ${describe(error)}`;
          },
        );
    }, SAVE_DELAY_MS);
  });
}

copyButton.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(textEl.value);
    savedEl.textContent = "Copied";
  } catch (error) {
    savedEl.textContent = `Not copied: ${describe(error)}`;
  }
});

/** @type {() => void} */
let saveNow = () => {};

async function offerCommands() {
  await commands.handle("read", async () => ({ text: textEl.value }));
  await commands.handle("append", async (args) => {
    const line = typeof args?.text === "string" ? args.text : "";
    if (!line) throw new Error("append: give the text to add");
    const sep = textEl.value === "" || textEl.value.endsWith("\n") ? "" : "\n";
    textEl.value += sep + line;
    saveNow();
    return { length: textEl.value.length };
  });
}

async function main() {
  const { powers } = await connect();
  await offerCommands();
  let place;
  try {
    place = await askForPlace(powers);
  } catch (error) {
    say(`Your host declined (${describe(error)}): notes will not be kept.`);
    textEl.placeholder = "Notes written here are lost when the page closes.";
    textEl.disabled = false;
    return;
  }
  const text = await E(place).get();
  textEl.value = typeof text === "string" ? text : "";
  textEl.placeholder = "Write here.";
  textEl.disabled = false;
  say("");
  autosave(place);
  saveNow = () => textEl.dispatchEvent(new Event("input"));
}

main().catch((error) => say(`Error: ${describe(error)}`));
