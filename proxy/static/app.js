// memproxy memory browser: plain JS, no build step, only the REST API under /v1.
"use strict";

const API = "/v1";
const KEY_STORAGE = "memproxy.apiKey";
const PAGE = 50;

const $ = (id) => document.getElementById(id);
const state = { user: null, scope: {}, cursor: null, searching: false, me: null };
// Narrowing ids besides the user (Mem0's entities): every one given must match.
const SCOPE_INPUTS = { agent_id: "agent-input", run_id: "run-input", app_id: "app-input" };

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : response.statusText;
    throw new ApiError(response.status, message);
  }
  return data;
}

function setStatus(message, isError) {
  const status = $("status");
  status.textContent = message || "";
  status.classList.toggle("error", Boolean(isError));
}

function showError(error) {
  const prefix = error instanceof ApiError ? `Error ${error.status}: ` : "Error: ";
  setStatus(prefix + error.message, true);
}

function formatDate(value) {
  if (!value) return "";
  const date = new Date(value);
  return isNaN(date) ? value : date.toLocaleString();
}

// ---- connect ---------------------------------------------------------------------------

async function connect() {
  try {
    state.me = await api("GET", "/auth/me");
  } catch (error) {
    $("controls").hidden = true;
    $("whoami").textContent = "";
    showError(error);
    return;
  }
  const me = state.me;
  $("whoami").textContent = me.open_mode
    ? "open mode (no keys configured)"
    : `key “${me.name}”${me.admin ? " (admin)" : ""}`;
  const anyUser = me.admin || me.users.includes("*");
  const select = $("user-select");
  const input = $("user-input");
  select.replaceChildren();
  if (anyUser) {
    select.hidden = true;
    input.hidden = false;
  } else {
    for (const user of me.users) {
      const option = document.createElement("option");
      option.value = user;
      option.textContent = user;
      select.append(option);
    }
    select.hidden = false;
    input.hidden = true;
  }
  $("controls").hidden = false;
  setStatus(anyUser ? "Connected. Enter a user id." : "Connected. Pick a user.");
  if (!anyUser && me.users.length === 1) await loadUser(me.users[0]);
}

function chosenScope() {
  const scope = {};
  for (const [field, id] of Object.entries(SCOPE_INPUTS)) {
    const value = $(id).value.trim();
    if (value) scope[field] = value;
  }
  return scope;
}

// The user and scope as request fields (query parameters or JSON body).
function scoped() {
  return { user_id: state.user, ...state.scope };
}

function scopeLabel() {
  const extra = Object.entries(state.scope).map(([k, v]) => `${k} ${v}`);
  return [state.user, ...extra].join(" · ");
}

function chosenUser() {
  return $("user-select").hidden ? $("user-input").value.trim() : $("user-select").value;
}

// ---- list / search ---------------------------------------------------------------------

async function loadUser(user) {
  if (!user) {
    setStatus("Enter a user id.", true);
    return;
  }
  state.user = user;
  state.scope = chosenScope();
  state.cursor = null;
  state.searching = false;
  $("memories").replaceChildren();
  $("search-input").value = "";
  rememberUser(user);
  await loadPage();
}

async function loadPage() {
  const params = new URLSearchParams({ ...scoped(), top_k: String(PAGE) });
  if ($("show-expired").checked) params.set("include_expired", "true");
  if (state.cursor) params.set("cursor", state.cursor);
  try {
    const page = await api("GET", "/memories?" + params);
    for (const item of page.results) $("memories").append(renderMemory(item));
    state.cursor = page.next_cursor;
    $("more").hidden = !state.cursor;
    const count = $("memories").children.length;
    showTitle(`${count}${state.cursor ? "+" : ""} memories of ${scopeLabel()}`);
    setStatus(count ? "" : "No memories yet.");
  } catch (error) {
    showError(error);
  }
}

async function search(query) {
  if (!state.user) return;
  if (!query) return loadUser(state.user);
  try {
    const result = await api("POST", "/search", { query, ...scoped(), top_k: 50 });
    state.searching = true;
    $("more").hidden = true;
    $("memories").replaceChildren(...result.results.map(renderMemory));
    showTitle(`${result.results.length} results for “${query}”`);
    setStatus(result.results.length ? "" : "Nothing found.");
  } catch (error) {
    showError(error);
  }
}

async function addMemory(text) {
  if (!state.user || !text) return;
  try {
    const body = {
      messages: [{ role: "user", content: text }],
      ...scoped(),
      infer: false,
      immutable: $("add-immutable").checked,
    };
    if ($("add-expiry").value) body.expiration_date = $("add-expiry").value;
    const result = await api("POST", "/memories", body);
    $("add-input").value = "";
    $("add-expiry").value = "";
    $("add-immutable").checked = false;
    setStatus(result.results.length ? "Added." : "Already remembered.");
    await loadUser(state.user);
  } catch (error) {
    showError(error);
  }
}

async function deleteScope() {
  if (!state.user) return;
  try {
    const result = await api("DELETE", "/memories?" + new URLSearchParams(scoped()));
    $("confirm-delete-scope").hidden = true;
    const label = scopeLabel();
    await loadUser(state.user);
    setStatus(`Deleted ${result.deleted} memories of ${label}.`);
  } catch (error) {
    showError(error);
  }
}

function showTitle(text) {
  const title = $("results-title");
  title.textContent = text;
  title.hidden = false;
}

function rememberUser(user) {
  const list = $("recent-users");
  if ([...list.options].some((o) => o.value === user)) return;
  const option = document.createElement("option");
  option.value = user;
  list.append(option);
}

// ---- one memory ------------------------------------------------------------------------

function renderMemory(item) {
  const node = $("memory-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = item.id;
  fillMemory(node, item);
  const edit = node.querySelector(".edit");
  const textarea = edit.querySelector("textarea");
  node.querySelector(".edit-button").addEventListener("click", () => {
    textarea.value = node.querySelector(".text").textContent;
    edit.querySelector(".expiry").value = node.dataset.expirationDate || "";
    edit.querySelector(".immutable").checked = node.dataset.immutable === "true";
    edit.hidden = false;
    textarea.focus();
  });
  edit.querySelector(".cancel").addEventListener("click", () => {
    edit.hidden = true;
  });
  edit.querySelector(".save").addEventListener("click", async () => {
    const text = textarea.value.trim();
    if (!text) return;
    const body = {
      text,
      expiration_date: edit.querySelector(".expiry").value || null,
      immutable: edit.querySelector(".immutable").checked,
    };
    try {
      const updated = await api("PUT", "/memories/" + encodeURIComponent(item.id), body);
      fillMemory(node, updated);
      edit.hidden = true;
      setStatus("Saved.");
    } catch (error) {
      showError(error);
    }
  });
  const feedback = node.querySelector(".feedback");
  feedback.addEventListener("change", async () => {
    try {
      const given = await api("POST", "/memories/" + encodeURIComponent(item.id) + "/feedback", {
        feedback: feedback.value || null,
      });
      fillMemory(node, { ...node.item, ...given, id: item.id });
      setStatus(given.feedback ? `Feedback saved: ${given.feedback}.` : "Feedback removed.");
    } catch (error) {
      showError(error);
    }
  });
  node.querySelector(".history-button").addEventListener("click", () => showHistory(item.id));
  const confirm = node.querySelector(".confirm-delete");
  node.querySelector(".delete-button").addEventListener("click", () => {
    confirm.hidden = !confirm.hidden;
  });
  confirm.addEventListener("click", async () => {
    try {
      await api("DELETE", "/memories/" + encodeURIComponent(item.id));
      node.remove();
      setStatus("Deleted.");
    } catch (error) {
      showError(error);
    }
  });
  return node;
}

function fillMemory(node, item) {
  node.item = item;
  node.querySelector(".text").textContent = item.memory;
  fillLifecycle(node, item);
  const parts = [`created ${formatDate(item.created_at)}`];
  if (item.updated_at && item.updated_at !== item.created_at) {
    parts.push(`updated ${formatDate(item.updated_at)}`);
  }
  if (typeof item.score === "number") parts.push(`score ${item.score.toFixed(3)}`);
  for (const field of Object.keys(SCOPE_INPUTS)) {
    if (item[field]) parts.push(`${field} ${item[field]}`);
  }
  const { label, rest } = describeSource(item.metadata || {});
  if (label) parts.push(label);
  if (Object.keys(rest).length) parts.push("metadata " + JSON.stringify(rest));
  node.querySelector(".meta").textContent = parts.join(" · ");
}

// Expiration, immutability and feedback (the API's expiration_date, immutable, feedback).
const FEEDBACK_LABELS = {
  POSITIVE: "useful",
  NEGATIVE: "not useful: ranked lower",
  VERY_NEGATIVE: "wrong: hidden from search and recall",
};

function fillLifecycle(node, item) {
  const expired = Boolean(item.expires_at) && new Date(item.expires_at) <= new Date();
  node.dataset.expirationDate = item.expiration_date || "";
  node.dataset.immutable = String(Boolean(item.immutable));
  node.classList.toggle("expired", expired);
  node.classList.toggle("hidden-by-feedback", item.feedback === "VERY_NEGATIVE");
  const badges = [];
  if (item.immutable) badges.push(["immutable", "immutable"]);
  if (item.expiration_date) {
    const text = `${expired ? "expired after" : "visible until"} ${item.expiration_date}`;
    badges.push([expired ? "expired" : "expires", text]);
  }
  if (item.feedback) {
    const reason = item.feedback_reason ? ` (${item.feedback_reason})` : "";
    badges.push([item.feedback, FEEDBACK_LABELS[item.feedback] + reason]);
  }
  node.querySelector(".badges").replaceChildren(
    ...badges.map(([kind, text]) => {
      const span = document.createElement("span");
      span.className = "badge " + kind;
      span.textContent = text;
      return span;
    }),
  );
  node.querySelector(".feedback").value = item.feedback || "";
}

// Where a memory came from: an image, a document's page, or a way in (mcp...).
const SOURCE_KEYS = ["source", "filename", "page", "passage", "start", "end"];

function describeSource(metadata) {
  const source = typeof metadata.source === "string" ? metadata.source : "";
  if (source !== "image" && source !== "document") {
    return { label: source ? `via ${source}` : "", rest: withoutKeys(metadata, ["source"]) };
  }
  let label = "from an image";
  if (source === "document") {
    label = `from ${typeof metadata.filename === "string" ? metadata.filename : "a document"}`;
    if (Number.isInteger(metadata.page)) label += ` p. ${metadata.page}`;
  }
  return { label, rest: withoutKeys(metadata, SOURCE_KEYS) };
}

function withoutKeys(object, keys) {
  return Object.fromEntries(Object.entries(object).filter(([key]) => !keys.includes(key)));
}

async function showHistory(id) {
  try {
    const rows = await api("GET", "/memories/" + encodeURIComponent(id) + "/history");
    const list = $("history-list");
    list.replaceChildren();
    for (const row of rows) {
      const li = document.createElement("li");
      const event = document.createElement("strong");
      event.textContent = row.event;
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = " " + formatDate(row.created_at);
      const change = document.createElement("p");
      if (row.event === "UPDATE") change.textContent = `${row.old_memory} → ${row.new_memory}`;
      else change.textContent = row.new_memory ?? row.old_memory ?? "";
      li.append(event, when, change);
      list.append(li);
    }
    $("history-id").textContent = id;
    $("history").hidden = false;
  } catch (error) {
    showError(error);
  }
}

// ---- wiring ----------------------------------------------------------------------------

function submit(id, handler) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    handler();
  });
}

submit("key-form", () => {
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  connect();
});
submit("user-form", () => loadUser(chosenUser()));
$("show-expired").addEventListener("change", () => state.user && loadUser(state.user));
submit("search-form", () => search($("search-input").value.trim()));
submit("add-form", () => addMemory($("add-input").value.trim()));
$("clear-search").addEventListener("click", () => state.user && loadUser(state.user));
$("more").addEventListener("click", loadPage);
$("delete-scope").addEventListener("click", () => {
  if (state.user) $("confirm-delete-scope").hidden = !$("confirm-delete-scope").hidden;
});
$("confirm-delete-scope").addEventListener("click", deleteScope);
$("close-history").addEventListener("click", () => {
  $("history").hidden = true;
});

$("api-key").value = apiKey();
if (apiKey()) connect();
else setStatus("Enter your API key and connect (leave empty when the proxy runs without keys).");
