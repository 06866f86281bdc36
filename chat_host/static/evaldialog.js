// @ts-check
// The eval dialog: source, endowments (Python name ← pet name), worker,
// result name and whether it may replace a name in use, sent as one
// evaluate() call. While it runs the dialog waits with a Stop button (the
// transcript shows its pending line with Cancel too); it closes when the
// result comes, and stays open on an error to fix and try again — a result
// name in use says to tick Replace. Escape closes it (the <dialog> element's
// own cancel) and leaves a running evaluation to the transcript; focus goes
// back to the chat input.

import { byId, h } from "./dom.js";
import { NAME_PATH, PET_NAME } from "./parse.js";

const PYTHON_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class EvalDialog {
  /**
   * @typedef {{worker: string|null, source: string, codeNames: string[], petPaths: string[],
   *            resultName: string|null, replace: boolean}} EvalArgs
   * @param {{evaluate: (args: EvalArgs) => {result: Promise<unknown>, cancel: () => void},
   *          onClose: () => void}} hooks  `result` rejects to keep the dialog open
   */
  constructor(hooks) {
    this.hooks = hooks;
    /** @type {HTMLDialogElement} */
    this.dialog = byId("eval-dialog");
    /** @type {HTMLFormElement} */
    this.form = byId("eval-form");
    /** @type {HTMLTextAreaElement} */
    this.source = byId("eval-source");
    this.endowments = byId("eval-endowments");
    /** @type {HTMLInputElement} */
    this.worker = byId("eval-worker");
    /** @type {HTMLInputElement} */
    this.resultName = byId("eval-result-name");
    this.error = byId("eval-error");
    /** @type {HTMLInputElement} */
    this.replace = byId("eval-replace");
    /** @type {HTMLButtonElement} */
    this.submitButton = byId("eval-submit");
    /** @type {HTMLButtonElement} */
    this.cancelButton = byId("eval-cancel");
    /** The evaluation this dialog waits for, if any. @type {{result: Promise<unknown>, cancel: () => void} | null} */
    this.running = null;
    byId("eval-add-endowment").addEventListener("click", () => /** @type {HTMLInputElement} */ (this.addEndowment().querySelector("input")).focus());
    this.cancelButton.addEventListener("click", () => {
      if (this.running) this.running.cancel(); // Stop: the error says it was cancelled; the dialog stays
      else this.dialog.close();
    });
    this.form.addEventListener("submit", (event) => this.submit(event));
    this.dialog.addEventListener("close", () => {
      this.showRunning(null); // a running evaluation carries on in the transcript
      this.hooks.onClose();
    });
    this.source.addEventListener("keydown", (event) => {
      // Ctrl/Cmd+Enter evaluates; plain Enter is a newline in the source.
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
  }

  open(prefill = {}) {
    this.source.value = prefill.source ?? this.source.value;
    this.error.hidden = true;
    if (!this.dialog.open) this.dialog.showModal();
    this.source.focus();
  }

  addEndowment(codeName = "", petName = "") {
    const row = h("div", { class: "endowment" },
      h("input", { class: "code-name", placeholder: "python_name", value: codeName, spellcheck: "false", "aria-label": "Python name" }),
      h("span", { class: "arrow", "aria-hidden": "true" }, "←"),
      h("input", { class: "pet-name", placeholder: "pet name", list: "pet-names", value: petName, spellcheck: "false", "aria-label": "Pet name" }),
      h("button", { class: "icon-button", type: "button", title: "Remove this endowment", onclick: () => row.remove() }, "✕"));
    this.endowments.append(row);
    return row;
  }

  read() {
    const codeNames = [];
    const petPaths = [];
    for (const row of this.endowments.querySelectorAll(".endowment")) {
      const code = /** @type {HTMLInputElement} */ (row.querySelector(".code-name")).value.trim();
      const pet = /** @type {HTMLInputElement} */ (row.querySelector(".pet-name")).value.trim();
      if (!code && !pet) continue;
      if (!PYTHON_NAME.test(code)) throw new Error(`${JSON.stringify(code)} is not a Python name`);
      if (!NAME_PATH.test(pet)) throw new Error(`${JSON.stringify(pet)} is not a pet name`);
      codeNames.push(code);
      petPaths.push(pet);
    }
    const source = this.source.value;
    if (!source.trim()) throw new Error("Write some Python to evaluate.");
    const worker = this.worker.value.trim() || null;
    if (worker !== null && !NAME_PATH.test(worker)) throw new Error(`${JSON.stringify(worker)} is not a worker name`);
    const resultName = this.resultName.value.trim() || null;
    if (resultName !== null && !PET_NAME.test(resultName)) throw new Error(`${JSON.stringify(resultName)} is not a pet name`);
    return { worker, source, codeNames, petPaths, resultName, replace: this.replace.checked };
  }

  async submit(event) {
    event.preventDefault();
    if (this.running) return;
    let args;
    try {
      args = this.read();
    } catch (error) {
      this.showError(error.message);
      return;
    }
    this.error.hidden = true;
    const run = this.hooks.evaluate(args);
    this.showRunning(run);
    try {
      await run.result;
      if (this.running === run) this.dialog.close();
    } catch (error) {
      if (this.running !== run) return; // closed meanwhile: the transcript has said it
      if (error?.name === "NameTaken") {
        this.showError(`${error.message}: tick Replace to name the new result ${args.resultName} instead.`);
        this.replace.focus();
      } else {
        this.showError(error?.message ?? String(error));
      }
    } finally {
      if (this.running === run) this.showRunning(null);
    }
  }

  /** Waiting for `run` (Evaluate greyed, Cancel reads Stop), or not (null). */
  showRunning(run) {
    this.running = run;
    this.submitButton.disabled = run !== null;
    this.submitButton.textContent = run ? "Evaluating…" : "Evaluate";
    this.cancelButton.textContent = run ? "Stop" : "Cancel";
    this.cancelButton.title = run ? "Stop the evaluation (its worker is stopped too)" : "";
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = false;
  }
}
