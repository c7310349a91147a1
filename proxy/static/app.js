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

// ---- graph view: the user's entities and relations (GET /graph), drawn in SVG ----------

const SVG_NS = "http://www.w3.org/2000/svg";
const GRAPH_PAGE = 100;
const NODE_RADIUS = 9;
// Shown as a real user's node: the graph builder's name for the person the memories are about.
const USER_NODE = "User";
const graphState = { nodes: new Map(), edges: new Map(), cursor: null, selected: null };

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes || {})) {
    element.setAttribute(key, String(value));
  }
  return element;
}

async function showGraph() {
  const user = chosenUser();
  if (!user) {
    setStatus("Enter a user id.", true);
    return;
  }
  state.user = user;
  state.scope = chosenScope();
  rememberUser(user);
  graphState.nodes.clear();
  graphState.edges.clear();
  graphState.cursor = null;
  closeEdgePanel();
  $("results").hidden = true;
  $("history").hidden = true;
  $("graph-view").hidden = false;
  await loadGraphPage();
}

function hideGraph() {
  $("graph-view").hidden = true;
  $("results").hidden = false;
}

async function loadGraphPage() {
  const params = new URLSearchParams({ ...scoped(), limit: String(GRAPH_PAGE) });
  if ($("graph-history").checked) params.set("include_invalid", "true");
  if (graphState.cursor) params.set("cursor", graphState.cursor);
  try {
    const page = await api("GET", "/graph?" + params);
    for (const node of page.nodes) graphState.nodes.set(node.id, node);
    for (const edge of page.edges) graphState.edges.set(edge.id, edge);
    graphState.cursor = page.next_cursor;
    $("graph-more").hidden = !graphState.cursor;
    drawGraph();
    const count = graphState.edges.size;
    setStatus(count ? "Click a relation to rename or delete it." : "No relations yet.");
  } catch (error) {
    showError(error);
  }
}

function graphTitle() {
  const more = graphState.cursor ? "+" : "";
  const edges = graphState.edges.size;
  $("graph-title").textContent =
    `Graph of ${scopeLabel()}: ${graphState.nodes.size} entities, ${edges}${more} relations`;
}

// A force-directed layout (Fruchterman–Reingold), deterministic: nodes start on a circle in
// name order, so the same graph is drawn the same way each time.
function layoutGraph(nodes, edges, width, height) {
  const count = nodes.length;
  const positions = new Map();
  const sorted = [...nodes].sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  sorted.forEach((node, index) => {
    const angle = (2 * Math.PI * index) / Math.max(count, 1);
    const radius = Math.min(width, height) * 0.35;
    positions.set(node.id, {
      x: width / 2 + radius * Math.cos(angle),
      y: height / 2 + radius * Math.sin(angle),
    });
  });
  if (count < 2) return positions;
  const ideal = Math.min(Math.sqrt((width * height) / count) * 0.8, 170);
  const iterations = Math.max(60, Math.min(300, Math.floor(40000 / count)));
  let temperature = Math.min(width, height) / 8;
  const ids = sorted.map((node) => node.id);
  for (let step = 0; step < iterations; step += 1) {
    const shift = new Map(ids.map((id) => [id, { x: 0, y: 0 }]));
    for (let i = 0; i < count; i += 1) {
      for (let j = i + 1; j < count; j += 1) {
        const a = positions.get(ids[i]);
        const b = positions.get(ids[j]);
        const dx = a.x - b.x || 0.01;
        const dy = a.y - b.y || 0.01;
        const distance = Math.max(Math.hypot(dx, dy), 0.01);
        const force = (ideal * ideal) / distance;
        const fx = (dx / distance) * force;
        const fy = (dy / distance) * force;
        shift.get(ids[i]).x += fx;
        shift.get(ids[i]).y += fy;
        shift.get(ids[j]).x -= fx;
        shift.get(ids[j]).y -= fy;
      }
    }
    for (const edge of edges) {
      const a = positions.get(edge.source_id);
      const b = positions.get(edge.target_id);
      if (!a || !b || a === b) continue;
      const dx = a.x - b.x;
      const dy = a.y - b.y;
      const distance = Math.max(Math.hypot(dx, dy), 0.01);
      const force = (distance * distance) / ideal;
      const fx = (dx / distance) * force;
      const fy = (dy / distance) * force;
      shift.get(edge.source_id).x -= fx;
      shift.get(edge.source_id).y -= fy;
      shift.get(edge.target_id).x += fx;
      shift.get(edge.target_id).y += fy;
    }
    for (const id of ids) {
      const move = shift.get(id);
      const position = positions.get(id);
      // A weak pull to the middle keeps parts that are not connected on screen.
      move.x += (width / 2 - position.x) * 0.05;
      move.y += (height / 2 - position.y) * 0.05;
      const length = Math.max(Math.hypot(move.x, move.y), 0.01);
      position.x += (move.x / length) * Math.min(length, temperature);
      position.y += (move.y / length) * Math.min(length, temperature);
    }
    temperature *= 0.97;
  }
  return positions;
}

// Move (and, when it is larger, shrink) the layout into the view, leaving room on the right
// for names; the text keeps its size.
function fitInto(positions, width, height) {
  const points = [...positions.values()];
  if (!points.length) return;
  const pad = 30;
  const labelRoom = 150;
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const scale = Math.min(
    1,
    (width - 2 * pad - labelRoom) / Math.max(maxX - minX, 1),
    (height - 2 * pad) / Math.max(maxY - minY, 1),
  );
  const offsetX = (width - labelRoom) / 2 - ((minX + maxX) / 2) * scale;
  const offsetY = height / 2 - ((minY + maxY) / 2) * scale;
  for (const point of points) {
    point.x = point.x * scale + offsetX;
    point.y = point.y * scale + offsetY;
  }
}

function drawGraph() {
  graphTitle();
  const svg = $("graph-svg");
  const width = Math.max(svg.clientWidth, 300);
  const height = Math.max(svg.clientHeight, 300);
  const nodes = [...graphState.nodes.values()];
  const edges = [...graphState.edges.values()];
  const positions = layoutGraph(nodes, edges, width, height);
  fitInto(positions, width, height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren(arrowDefs());
  const edgeLayer = svgElement("g", { class: "edges" });
  const nodeLayer = svgElement("g", { class: "nodes" });
  const labelLayer = svgElement("g", { class: "edge-labels" });
  // Relations between the same two entities bend apart, so each label stays readable.
  const siblings = new Map();
  for (const edge of edges) {
    const key = [edge.source_id, edge.target_id].sort().join(" ");
    if (!siblings.has(key)) siblings.set(key, []);
    siblings.get(key).push(edge.id);
  }
  for (const edge of edges) {
    const from = positions.get(edge.source_id);
    const to = positions.get(edge.target_id);
    if (!from || !to) continue;
    const group = siblings.get([edge.source_id, edge.target_id].sort().join(" "));
    const bend = (group.indexOf(edge.id) - (group.length - 1) / 2) * 34;
    const drawn = drawEdge(edge, from, to, edge.source_id < edge.target_id ? bend : -bend);
    edgeLayer.append(drawn.group);
    labelLayer.append(drawn.label);
  }
  for (const node of nodes) {
    const position = positions.get(node.id);
    const group = svgElement("g", {
      class: node.name === USER_NODE ? "node user" : "node",
      "data-id": node.id,
      transform: `translate(${position.x.toFixed(1)} ${position.y.toFixed(1)})`,
    });
    const title = svgElement("title");
    title.textContent = `${node.name} (${node.type})`;
    const label = svgElement("text", { x: NODE_RADIUS + 4, y: 4 });
    // Text, never markup: names come from conversations.
    label.textContent = node.name.length > 40 ? node.name.slice(0, 39) + "…" : node.name;
    group.append(title, svgElement("circle", { r: NODE_RADIUS }), label);
    nodeLayer.append(group);
  }
  svg.append(edgeLayer, nodeLayer, labelLayer);
}

function arrowDefs() {
  const defs = svgElement("defs");
  const marker = svgElement("marker", {
    id: "graph-arrow",
    viewBox: "0 0 10 10",
    refX: 10,
    refY: 5,
    markerWidth: 7,
    markerHeight: 7,
    orient: "auto-start-reverse",
  });
  marker.append(svgElement("path", { d: "M 0 0 L 10 5 L 0 10 z" }));
  defs.append(marker);
  return defs;
}

function drawEdge(edge, from, to, bend) {
  const dx = to.x - from.x;
  const dy = to.y - from.y;
  const length = Math.max(Math.hypot(dx, dy), 0.01);
  // The control point sits ``bend`` px off the middle, perpendicular to the line.
  const cx = (from.x + to.x) / 2 - (dy / length) * bend;
  const cy = (from.y + to.y) / 2 + (dx / length) * bend;
  // End at the target circle's rim, so the arrow head shows.
  const ex = to.x - cx;
  const ey = to.y - cy;
  const toControl = Math.max(Math.hypot(ex, ey), 0.01);
  const endX = to.x - (ex / toControl) * (NODE_RADIUS + 2);
  const endY = to.y - (ey / toControl) * (NODE_RADIUS + 2);
  const d = `M ${from.x.toFixed(1)} ${from.y.toFixed(1)} Q ${cx.toFixed(1)} ${cy.toFixed(1)} ${endX.toFixed(1)} ${endY.toFixed(1)}`;
  const classes = ["edge"];
  if (edge.invalid_at) classes.push("invalid");
  if (graphState.selected === edge.id) classes.push("selected");
  const group = svgElement("g", { class: classes.join(" "), "data-id": edge.id });
  const title = svgElement("title");
  title.textContent = `${edge.source} ${edge.relationship} ${edge.destination}`;
  const line = svgElement("path", { d, "marker-end": "url(#graph-arrow)" });
  const hit = svgElement("path", { d, class: "hit" });
  group.append(title, line, hit);
  // The label is drawn above the nodes (its own layer), so it stays readable and clickable.
  const midX = 0.25 * from.x + 0.5 * cx + 0.25 * to.x;
  const midY = 0.25 * from.y + 0.5 * cy + 0.25 * to.y;
  const label = svgElement("text", {
    class: classes.map((name) => (name === "edge" ? "edge-label" : name)).join(" "),
    "data-id": edge.id,
    x: midX.toFixed(1),
    y: (midY - 3).toFixed(1),
    "text-anchor": "middle",
  });
  label.textContent = edge.relationship;
  label.setAttribute("tabindex", "0");
  label.setAttribute("role", "button");
  label.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      openEdgePanel(edge.id);
    }
  });
  for (const element of [group, label]) {
    element.addEventListener("click", () => openEdgePanel(edge.id));
  }
  return { group, label };
}

function openEdgePanel(id) {
  const edge = graphState.edges.get(id);
  if (!edge) return;
  graphState.selected = id;
  for (const element of $("graph-svg").querySelectorAll("g.edge, text.edge-label")) {
    element.classList.toggle("selected", element.dataset.id === id);
  }
  $("edge-text").textContent = `${edge.source} —${edge.relationship}→ ${edge.destination}`;
  const parts = [`since ${formatDate(edge.valid_from)}`];
  if (edge.invalid_at) parts.push(`superseded ${formatDate(edge.invalid_at)}`);
  const count = edge.memory_ids.length;
  parts.push(`rests on ${count} ${count === 1 ? "memory" : "memories"}`);
  $("edge-meta").textContent = parts.join(" · ");
  $("edge-name").value = edge.relationship;
  $("edge-confirm-delete").hidden = true;
  $("edge-panel").hidden = false;
}

function closeEdgePanel() {
  graphState.selected = null;
  $("edge-panel").hidden = true;
  for (const element of $("graph-svg").querySelectorAll(".selected")) {
    element.classList.remove("selected");
  }
}

async function renameEdge() {
  const id = graphState.selected;
  const relationship = $("edge-name").value.trim();
  if (!id || !relationship) return;
  try {
    const edge = await api("PATCH", "/graph/relations/" + encodeURIComponent(id), {
      relationship,
    });
    // Renamed onto a relation the two already had, the two became that one.
    graphState.edges.delete(id);
    graphState.edges.set(edge.id, edge);
    drawGraph();
    openEdgePanel(edge.id);
    setStatus("Renamed.");
  } catch (error) {
    showError(error);
  }
}

async function deleteEdge() {
  const id = graphState.selected;
  if (!id) return;
  try {
    await api("DELETE", "/graph/relations/" + encodeURIComponent(id));
    graphState.edges.delete(id);
    const used = new Set();
    for (const edge of graphState.edges.values()) used.add(edge.source_id).add(edge.target_id);
    for (const node of [...graphState.nodes.keys()]) {
      if (!used.has(node)) graphState.nodes.delete(node);
    }
    closeEdgePanel();
    drawGraph();
    setStatus("Deleted.");
  } catch (error) {
    showError(error);
  }
}

$("show-graph").addEventListener("click", showGraph);
$("graph-more").addEventListener("click", loadGraphPage);
$("graph-history").addEventListener("change", () => state.user && showGraph());
submit("edge-form", renameEdge);
$("edge-delete").addEventListener("click", () => {
  $("edge-confirm-delete").hidden = !$("edge-confirm-delete").hidden;
});
$("edge-confirm-delete").addEventListener("click", deleteEdge);
$("edge-close").addEventListener("click", closeEdgePanel);
// The memory list's own actions show the list again.
for (const id of ["user-form", "search-form", "add-form"]) $(id).addEventListener("submit", hideGraph);
$("clear-search").addEventListener("click", hideGraph);

$("api-key").value = apiKey();
if (apiKey()) connect();
else setStatus("Enter your API key and connect (leave empty when the proxy runs without keys).");
