// Writing mode: prompt and model, the prompt's parameters, Preview (free), Generate (streamed) and Stop,
// then what it cost; the last generations.

import { ApiError } from "./api.js";
import { detectParameters } from "./params.js";
import { $, chars, fmt, guarded, h, renderConsumption, setBusy, showError } from "./ui.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Writing {
  constructor(app) {
    this.app = app;
    this.prompts = new Map();
    this.values = new Map(); // parameter values typed so far, kept across prompt changes
    this.controller = null;
    this.generationId = null;

    $("prompt-select").addEventListener("change", () => this.showParameters());
    $("writing-form").addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(() => this.generate());
    });
    $("preview").addEventListener("click", () => guarded(() => this.preview()));
    $("stop").addEventListener("click", () => this.stop());
    $("refresh-generations").addEventListener("click", () => guarded(() => this.loadGenerations()));
  }

  async load() {
    const page = await this.app.api.get("prompts?scope=all&pageSize=100");
    const select = $("prompt-select");
    const mine = h("optgroup", { label: "My prompts" });
    const public_ = h("optgroup", { label: "Public prompts" });
    this.prompts.clear();
    for (const prompt of page.items) {
      this.prompts.set(String(prompt.id), prompt);
      const group = prompt.authorId === this.app.me.id ? mine : public_;
      group.append(h("option", { value: String(prompt.id) }, prompt.title));
    }
    select.replaceChildren(...[mine, public_].filter((group) => group.children.length));
    if (!page.items.length) select.append(h("option", { value: "", disabled: true, selected: true }, "No prompts yet"));

    const models = $("model-select");
    models.replaceChildren(
      ...this.app.models.map((m) =>
        h("option", { value: m.modelId, selected: m.isDefault }, m.displayName + (m.isFree ? " · free" : "")),
      ),
    );
    this.showParameters();
    await this.loadGenerations();
  }

  showParameters() {
    const prompt = this.prompts.get($("prompt-select").value);
    $("prompt-description").textContent = prompt ? prompt.description : "";
    const texts = prompt ? prompt.contents.map((c) => c.content || "") : [];
    const names = detectParameters(texts, this.app.macroNames);
    const fields = $("param-fields");
    for (const input of fields.querySelectorAll("input")) this.values.set(input.name, input.value);
    fields.replaceChildren(
      ...names.map((name) =>
        h(
          "label",
          {},
          name,
          h("input", { name, value: this.values.get(name) || "", dataset: { testid: `param-${name}` } }),
        ),
      ),
    );
    $("params").hidden = !names.length;
  }

  body() {
    const parameters = {};
    for (const input of $("param-fields").querySelectorAll("input")) parameters[input.name] = input.value;
    const body = {
      promptId: Number($("prompt-select").value),
      parameters,
      userInput: $("user-input").value,
      modelId: $("model-select").value,
      temperature: Number($("temperature").value || 0.7),
    };
    const maxTokens = $("max-tokens").value;
    if (maxTokens) body.maxTokens = Number(maxTokens);
    return body;
  }

  async preview() {
    const preview = await this.app.api.post("generation/writing/preview", this.body());
    const cost = preview.cost;
    const available = preview.available;
    const rows = [
      ["Input", `${fmt(cost.inputChars)} characters · ~${fmt(preview.totalTokens)} tokens`],
      ["Input cost", cost.inputCost ? fmt(cost.inputCost) : "0 (below the free threshold)"],
      ["Output cost", cost.memberBenefit ? "free (member)" : `${fmt(cost.outputCostPer1000Chars)} per 1,000 characters`],
      ["At most", `${fmt(cost.worstCaseCost)} (maxTokens ${fmt(preview.maxTokens)})`],
      ["Available", `${fmt(available.total)} (free today ${fmt(available.dailyFreeRemaining)} + paid ${fmt(available.paidAvailable)})`],
      [
        "Enough?",
        available.sufficient
          ? available.maxOutputChars === null
            ? "yes"
            : `yes — up to ${fmt(available.maxOutputChars)} output characters`
          : `no — ${fmt(cost.required)} needed to start`,
      ],
    ];
    const messages = preview.messages.map((m) =>
      h(
        "li",
        { className: `msg ${m.role}` },
        h("div", { className: "msg-head" }, h("span", { className: "role" }, m.role), h("span", { className: "muted small" }, `${fmt(m.chars)} chars · ~${fmt(m.tokens)} tokens`)),
        h("div", { className: "msg-body" }, m.content),
      ),
    );
    const budget = `Budget ${fmt(preview.budget.used)} / ${fmt(preview.budget.limit)} tokens`;
    const dropped = preview.historyDropped
      ? h("p", { className: "warn small" }, `${preview.historyDropped} history message(s) dropped to fit the budget.`)
      : null;
    const parts = [
      h("table", { className: "kv" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))),
      h("p", { className: "muted small" }, `${preview.messages.length} messages to ${preview.model} · ${budget}`),
      dropped,
      h("ol", { className: "messages", dataset: { testid: "preview-messages" } }, messages),
    ];
    $("preview-body").replaceChildren(...parts.filter(Boolean));
    $("preview-card").hidden = false;
  }

  async generate() {
    if (this.controller) return;
    const output = $("output");
    const status = $("writing-status");
    const text = document.createTextNode("");
    output.replaceChildren(text);
    output.classList.add("streaming");
    renderConsumption($("consumption"), null);
    this.controller = new AbortController();
    this.generationId = null;
    $("generate").disabled = true;
    $("stop").disabled = false;
    setBusy(status, "Waiting for the model…");
    let reasoning = null;
    try {
      await this.app.api.stream("generation/writing/stream", this.body(), {
        signal: this.controller.signal,
        onOpen: (response) => {
          this.generationId = response.headers.get("X-Generation-ID");
          setBusy(status, "Streaming…");
        },
        onEvent: (event) => {
          if (event.error) throw new ApiError(event.error.message, { status: event.error.statusCode });
          if (event.reasoning) {
            reasoning = reasoning || output.insertBefore(h("details", { className: "reasoning" }, h("summary", {}, "Reasoning"), ""), text);
            reasoning.append(event.reasoning);
          }
          if (event.content) text.appendData(event.content);
          if (event.finishReason) {
            this.generationId = event.generationId;
            const note = event.finishReason === "length" ? "stopped at maxTokens or the balance" : "";
            renderConsumption($("consumption"), event.consumption, { outputChars: chars(text.data), note });
          }
        },
      });
      setBusy(status, "");
    } catch (error) {
      if (error.name !== "AbortError") {
        setBusy(status, "");
        throw error;
      }
      setBusy(status, "Stopped — settling…");
      await this.settled(chars(text.data));
      setBusy(status, "Stopped");
    } finally {
      this.controller = null;
      output.classList.remove("streaming");
      $("generate").disabled = false;
      $("stop").disabled = true;
      guarded(() => Promise.all([this.app.refreshBalance(), this.loadGenerations()]));
    }
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  // After Stop the stream's last event never comes: the record says what was charged (the server
  // settles the delivered part when it sees the disconnect).
  async settled(deliveredChars) {
    for (let attempt = 0; attempt < 40; attempt++) {
      const record = this.generationId
        ? await this.app.api.get(`generations/${encodeURIComponent(this.generationId)}`)
        : (await this.app.api.get("generations?mode=writing&pageSize=1")).items[0];
      if (record && FINISHED.has(record.status)) {
        renderConsumption($("consumption"), record.consumption, { outputChars: deliveredChars, note: `stopped (${record.status})` });
        return;
      }
      await sleep(250);
    }
    showError("The generation did not finish settling yet; see the last generations list.");
  }

  async loadGenerations() {
    const page = await this.app.api.get("generations?pageSize=8");
    const when = new Intl.DateTimeFormat(navigator.language || "en", { dateStyle: "short", timeStyle: "medium" });
    $("generations").tBodies[0].replaceChildren(
      ...page.items.map((g) =>
        h(
          "tr",
          { title: g.generationId },
          h("td", {}, when.format(new Date(g.createdAt))),
          h("td", {}, g.mode),
          h("td", {}, g.model || g.modelRequested),
          h("td", {}, h("span", { className: `pill ${g.status}` }, g.status)),
          h("td", { className: "num" }, fmt(g.outputChars)),
          h("td", { className: "num" }, fmt(g.consumption.totalCost)),
        ),
      ),
    );
    if (!page.items.length) $("generations").tBodies[0].append(h("tr", {}, h("td", { colSpan: 6, className: "muted" }, "Nothing generated yet.")));
  }
}
