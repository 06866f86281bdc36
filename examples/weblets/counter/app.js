// The counter's page: shows the count its backend (`app`) keeps, and asks
// the backend to add one when the button is pressed.
import { connect, E } from "/_ocapd/weblet.js";

const countEl = document.getElementById("count");
const button = document.getElementById("incr");
const statusEl = document.getElementById("status");

function show(count) {
  countEl.textContent = String(count);
}

function report(error) {
  statusEl.textContent = `Error: ${error?.message ?? error}`;
}

async function main() {
  const { app } = await connect();
  if (!app) {
    statusEl.textContent = "This weblet's backend is not running.";
    return;
  }
  show(await E(app).get());
  statusEl.textContent = "";
  button.disabled = false;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      show(await E(app).incr());
    } catch (error) {
      report(error);
    } finally {
      button.disabled = false;
    }
  });
}

main().catch(report);
