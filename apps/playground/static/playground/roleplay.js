// Roleplay mode: import a card, start a chat, send / regenerate / swipe (streamed), page through a
// reply's swipes, and the lorebook activation trace of the next turn (the preview endpoint: free).

import { ApiError } from "./api.js";
import { $, chars, fmt, guarded, h, renderConsumption, setBusy } from "./ui.js";

export class Roleplay {
  constructor(app) {
    this.app = app;
    this.characters = new Map();
    this.chatId = null;
    this.messages = [];
    this.controller = null;
    this.avatarUrl = null;

    $("card-file").addEventListener("change", () => guarded(() => this.importCard()));
    $("character-select").addEventListener("change", () => guarded(() => this.showCharacter()));
    $("start-chat").addEventListener("click", () => guarded(() => this.startChat()));
    $("send-form").addEventListener("submit", (event) => {
      event.preventDefault();
      guarded(() => this.turn("normal"));
    });
    $("rp-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("send-form").requestSubmit();
    });
    $("regenerate").addEventListener("click", () => guarded(() => this.turn("regenerate")));
    $("swipe").addEventListener("click", () => guarded(() => this.turn("swipe")));
    $("rp-stop").addEventListener("click", () => this.stop());
    $("trace-button").addEventListener("click", () => guarded(() => this.trace()));
  }

  async load() {
    const page = await this.app.api.get("characters?pageSize=100");
    this.characters = new Map(page.items.map((c) => [String(c.id), c]));
    this.fillCharacters();
    $("rp-model-select").replaceChildren(
      ...this.app.models.map((m) => h("option", { value: m.modelId, selected: m.isDefault }, m.displayName)),
    );
    await this.showCharacter();
  }

  fillCharacters(selected) {
    const select = $("character-select");
    select.replaceChildren(
      ...[...this.characters.values()].map((c) => h("option", { value: String(c.id), selected: String(c.id) === selected }, c.name)),
    );
    if (!this.characters.size) select.append(h("option", { value: "", disabled: true, selected: true }, "Import a card first"));
    $("start-chat").disabled = !this.characters.size;
  }

  async importCard() {
    const file = $("card-file").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    const character = await this.app.api.request("POST", "characters/import", { form });
    $("card-file").value = "";
    this.characters.set(String(character.id), character);
    this.fillCharacters(String(character.id));
    await this.showCharacter();
  }

  async showCharacter() {
    const character = this.characters.get($("character-select").value);
    const box = $("character");
    if (this.avatarUrl) URL.revokeObjectURL(this.avatarUrl);
    this.avatarUrl = null;
    if (!character) {
      box.replaceChildren();
      return;
    }
    const data = (character.card && character.card.data) || {};
    const avatar = h("div", { className: "avatar" }, character.name.slice(0, 1));
    box.replaceChildren(
      avatar,
      h("div", {}, h("strong", {}, character.name), h("p", { className: "muted small clamp" }, data.description || data.personality || "")),
    );
    if (character.avatarUrl) {
      // the avatar needs the token: fetched, then shown from a blob URL
      const response = await this.app.api.send("GET", `characters/${character.id}/avatar`);
      this.avatarUrl = URL.createObjectURL(await response.blob());
      avatar.replaceChildren(h("img", { src: this.avatarUrl, alt: "" }));
    }
  }

  async startChat() {
    const characterId = Number($("character-select").value);
    const chat = await this.app.api.post("chats", { characterId });
    this.chatId = chat.id;
    $("chat-title").textContent = `Chat with ${this.characters.get(String(characterId)).name}`;
    for (const id of ["rp-input", "send", "trace-button"]) $(id).disabled = false;
    $("trace-card").hidden = true;
    await this.loadMessages();
  }

  async loadMessages() {
    const page = await this.app.api.get(`chats/${this.chatId}/messages?pageSize=100`);
    this.messages = page.items.filter((m) => !m.hidden);
    this.render();
  }

  render(streaming = null) {
    const list = $("chat");
    const last = this.messages[this.messages.length - 1];
    const items = this.messages.map((m) => {
      const isLast = m === last;
      const replaced = streaming && streaming.replaceLast && isLast;
      const li = h(
        "li",
        { className: `bubble ${m.role}`, dataset: { messageId: String(m.id) } },
        h("div", { className: "msg-head" }, h("span", { className: "role" }, m.name || m.role)),
        h("div", { className: "msg-body" }, replaced ? streaming.node : m.content),
      );
      if (isLast && m.role === "assistant" && m.swipes.length > 1 && !streaming) {
        li.append(
          h(
            "div",
            { className: "swipes" },
            h("button", { type: "button", className: "link", disabled: m.swipeId === 0, onclick: () => guarded(() => this.pick(m, m.swipeId - 1)) }, "‹"),
            h("span", { dataset: { testid: "swipe-position" } }, `${m.swipeId + 1} / ${m.swipes.length}`),
            h("button", { type: "button", className: "link", disabled: m.swipeId >= m.swipes.length - 1, onclick: () => guarded(() => this.pick(m, m.swipeId + 1)) }, "›"),
          ),
        );
      }
      return li;
    });
    if (streaming && streaming.userText) items.push(h("li", { className: "bubble user" }, h("div", { className: "msg-body" }, streaming.userText)));
    if (streaming && !streaming.replaceLast) {
      items.push(h("li", { className: "bubble assistant streaming", dataset: { testid: "streaming" } }, h("div", { className: "msg-body" }, streaming.node)));
    }
    list.replaceChildren(...items);
    list.scrollTop = list.scrollHeight;
    const canRedo = Boolean(last && last.role === "assistant") && !streaming;
    $("regenerate").disabled = !canRedo;
    $("swipe").disabled = !canRedo;
  }

  async pick(message, swipeId) {
    await this.app.api.patch(`chats/${this.chatId}/messages/${message.id}`, { swipeId });
    await this.loadMessages();
  }

  async turn(generationType) {
    if (this.controller || !this.chatId) return;
    const input = $("rp-input");
    const userInput = generationType === "normal" ? input.value : "";
    const node = document.createTextNode("");
    this.render({ node, userText: userInput, replaceLast: generationType !== "normal" });
    this.controller = new AbortController();
    setBusy($("rp-status"), "Waiting for the model…");
    for (const id of ["send", "regenerate", "swipe"]) $(id).disabled = true;
    $("rp-stop").disabled = false;
    renderConsumption($("rp-consumption"), null);
    try {
      await this.app.api.stream(
        "generation/roleplay/stream",
        { chatId: this.chatId, userInput, generationType, modelId: $("rp-model-select").value },
        {
          signal: this.controller.signal,
          onOpen: () => setBusy($("rp-status"), "Streaming…"),
          onEvent: (event) => {
            if (event.error) throw new ApiError(event.error.message, { status: event.error.statusCode });
            if (event.content) node.appendData(event.content);
            if (event.finishReason) renderConsumption($("rp-consumption"), event.consumption, { outputChars: chars(node.data) });
          },
        },
      );
      if (generationType === "normal") input.value = "";
    } finally {
      this.controller = null;
      setBusy($("rp-status"), "");
      $("send").disabled = false;
      $("rp-stop").disabled = true;
      await this.loadMessages().catch(() => {});
      guarded(() => this.app.refreshBalance());
    }
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  async trace() {
    const preview = await this.app.api.post("generation/roleplay/preview", {
      chatId: this.chatId,
      userInput: $("rp-input").value,
      modelId: $("rp-model-select").value,
    });
    const rows = preview.trace.map((t) =>
      h(
        "tr",
        { className: t.status },
        h("td", {}, t.comment || `#${t.uid}`),
        h("td", {}, h("span", { className: `pill ${t.status}` }, t.status)),
        h("td", {}, [t.reason, t.matchedKey ? `“${t.matchedKey}”` : "", t.detail].filter(Boolean).join(" · ")),
      ),
    );
    const blocks = preview.blocks.map((b) => `${b.name} ${fmt(b.tokens)}`).join(" · ");
    $("trace").replaceChildren(
      rows.length
        ? h("div", { className: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Entry"), h("th", {}, "Status"), h("th", {}, "Why"))), h("tbody", {}, rows)))
        : h("p", { className: "muted" }, "No lorebook entries in this chat."),
      h("p", { className: "muted small" }, `Budget ${fmt(preview.budget.used)} / ${fmt(preview.budget.limit)} tokens · ${blocks}`),
    );
    $("trace-card").hidden = false;
  }
}
