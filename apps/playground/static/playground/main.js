// The page: sign in (or paste a token), tabs, the balance; writing.js and roleplay.js do the modes.
// `?api=https://api.example.com` points the page at an API on another origin (it must allow this
// page's origin in CORS_ALLOWED_ORIGINS); by default the API is this page's own origin.

import { Api } from "./api.js";
import { Roleplay } from "./roleplay.js";
import { $, fmt, guarded, showError } from "./ui.js";
import { Writing } from "./writing.js";

const apiBase = new URL(location.href).searchParams.get("api") || "";
const storageKey = `playground.token:${apiBase || location.origin}`;

const app = {
  api: new Api({ base: apiBase, token: sessionStorage.getItem(storageKey) || "", language: navigator.language }),
  me: null,
  models: [],
  macroNames: JSON.parse($("macro-names").textContent),

  async refreshBalance() {
    const balance = await this.api.get("billing/balance");
    const box = $("balance");
    const free = balance.dailyFree.remaining;
    box.dataset.free = String(free);
    box.dataset.paid = String(balance.paidBalance);
    box.dataset.available = String(free + balance.available);
    box.replaceChildren(`Free today ${fmt(free)} · Balance ${fmt(balance.paidBalance)}`);
    if (balance.membership && balance.membership.active) box.append(" · member");
    return balance;
  },
};

const writing = new Writing(app);
const roleplay = new Roleplay(app);

function signedOut() {
  app.api.token = "";
  app.me = null;
  sessionStorage.removeItem(storageKey);
  $("app").hidden = true;
  $("account").hidden = true;
  $("signin").hidden = false;
}

async function enter() {
  app.me = await app.api.get("auth/me");
  sessionStorage.setItem(storageKey, app.api.token);
  const models = await app.api.get("models?pageSize=100");
  app.models = models.items;
  $("who").textContent = app.me.username;
  await Promise.all([app.refreshBalance(), writing.load(), roleplay.load()]);
  $("signin").hidden = true; // shown once everything is loaded: a visible balance is a current one
  $("account").hidden = false;
  $("app").hidden = false;
}

async function useToken(token) {
  app.api.token = token.trim();
  try {
    await enter();
  } catch (error) {
    signedOut();
    throw error;
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    app.api.token = "";
    const issued = await app.api.post("auth/token", {
      username: $("login-username").value,
      password: $("login-password").value,
      name: "playground",
      expiresInDays: 1,
    });
    $("login-password").value = "";
    await useToken(issued.token);
  });
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => useToken($("token-input").value));
});

$("sign-out").addEventListener("click", () => {
  writing.stop();
  roleplay.stop();
  signedOut();
  showError(null);
});

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".tab")) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      $(other.dataset.panel).hidden = !selected;
    }
  });
}

$("api-base").textContent = apiBase || location.origin;
if (app.api.token) {
  guarded(async () => {
    try {
      await enter();
    } catch (error) {
      signedOut();
      throw error;
    }
  });
}
