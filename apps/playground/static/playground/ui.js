// DOM helpers shared by the page's modules (no framework: a few functions).

export const $ = (id) => document.getElementById(id);

// h("td", {className: "num", dataset: {x: 1}}, "text", node) → an element; strings become text nodes.
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const numbers = new Intl.NumberFormat(navigator.language || "en");
export const fmt = (n) => (n === null || n === undefined ? "—" : numbers.format(n));

// Characters as billing counts them: Unicode code points.
export const chars = (text) => [...text].length;

let errorTimer = null;
export function showError(error) {
  const box = $("error");
  if (error === null) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  const message = typeof error === "string" ? error : error.message || String(error);
  box.replaceChildren(h("strong", {}, "Error: "), message);
  box.dataset.status = error && error.status ? String(error.status) : "";
  box.hidden = false;
  clearTimeout(errorTimer);
}

export function clearError() {
  showError(null);
}

// Run an async action; a failure is shown in the error box (never a silent console error).
export async function guarded(action) {
  try {
    clearError();
    return await action();
  } catch (error) {
    if (error && error.name === "AbortError") return undefined;
    showError(error);
    return undefined;
  }
}

// "Charged 12 (input 0 + output 12) · free quota 12 · paid 0" with the numbers as data attributes.
export function renderConsumption(box, consumption, { outputChars = null, note = "" } = {}) {
  if (!consumption) {
    box.hidden = true;
    return;
  }
  box.dataset.totalCost = String(consumption.totalCost);
  box.dataset.usedPaid = String(consumption.usedPaid);
  box.dataset.usedDailyFree = String(consumption.usedDailyFree);
  if (outputChars !== null) box.dataset.outputChars = String(outputChars);
  const parts = [
    h("strong", {}, `Charged ${fmt(consumption.totalCost)} characters`),
    ` (input ${fmt(consumption.inputCost)} + output ${fmt(consumption.outputCost)})`,
    ` · from free quota ${fmt(consumption.usedDailyFree)} · paid ${fmt(consumption.usedPaid)}`,
  ];
  if (outputChars !== null) parts.push(` · ${fmt(outputChars)} characters delivered`);
  if (consumption.memberBenefitApplied) parts.push(" · member: output free");
  if (consumption.stoppedByBalance) parts.push(" · stopped: balance exhausted");
  if (note) parts.push(h("span", { className: "muted" }, ` · ${note}`));
  box.replaceChildren(...parts);
  box.hidden = false;
}

export function setBusy(status, text) {
  status.textContent = text;
  status.classList.toggle("live", Boolean(text));
}
