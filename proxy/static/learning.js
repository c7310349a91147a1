// memproxy memory browser, the Learning tab: what a user's learning jobs did (GET
// /v1/learning), with a retry for dead letters. Uses app.js's api(), state and helpers; every
// text is set with textContent (stored facts and errors are hostile input).
"use strict";

const LOG_PAGE = 20;
const learning = { user: null, cursor: null };

function showTab(name) {
  const onLearning = name === "learning";
  $("tab-memories").setAttribute("aria-selected", String(!onLearning));
  $("tab-learning").setAttribute("aria-selected", String(onLearning));
  $("results").hidden = onLearning;
  $("search-form").hidden = onLearning;
  $("add-form").hidden = onLearning;
  $("learning").hidden = !onLearning;
  if (onLearning) $("history").hidden = true;
}

function onLearningTab() {
  return !$("learning").hidden;
}

async function loadLearning(user) {
  const me = state.me || {};
  const anyUser = me.admin || (me.users || []).includes("*");
  if (!user && !anyUser) {
    setStatus("Pick a user.", true);
    return;
  }
  learning.user = user || null;
  learning.cursor = null;
  $("jobs").replaceChildren();
  await loadLearningPage();
}

async function loadLearningPage() {
  const params = new URLSearchParams({ limit: String(LOG_PAGE) });
  if (learning.user) params.set("user_id", learning.user);
  if (learning.cursor) params.set("cursor", learning.cursor);
  try {
    const page = await api("GET", "/learning?" + params);
    for (const entry of page.results) $("jobs").append(renderJob(entry));
    learning.cursor = page.next_cursor;
    $("learning-more").hidden = !learning.cursor;
    const count = $("jobs").children.length;
    const whose = learning.user ? `of ${learning.user}` : "of every user";
    $("learning-title").textContent = `${count}${learning.cursor ? "+" : ""} learning jobs ${whose}`;
    setStatus(count ? "" : "No learning jobs yet.");
  } catch (error) {
    showError(error);
  }
}

function renderJob(entry) {
  const node = $("job-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = entry.id;
  const status = node.querySelector(".job-status");
  status.textContent = entry.status.replace("_", " ");
  status.classList.add(entry.status);
  const meta = [`finished ${formatDate(entry.finished_at)}`, `attempts ${entry.attempts}`];
  if (entry.kind !== "learn") meta.push(entry.kind);
  if (!learning.user) meta.push(`user ${entry.user_id}`);
  if (entry.result && entry.result.skipped) meta.push(`skipped: ${entry.result.skipped}`);
  const rejected = Object.entries((entry.result && entry.result.rejected) || {});
  if (rejected.length) meta.push("rejected " + rejected.map(([k, v]) => `${k} ${v}`).join(", "));
  node.querySelector(".job-meta").textContent = "· " + meta.join(" · ");
  const facts = node.querySelector(".facts");
  for (const fact of entry.facts) {
    const li = document.createElement("li");
    li.textContent = fact;
    facts.append(li);
  }
  facts.hidden = !entry.facts.length;
  const decisions = node.querySelector(".decisions");
  for (const decision of entry.decisions) decisions.append(renderDecision(decision));
  decisions.hidden = !entry.decisions.length;
  if (entry.error) {
    const error = node.querySelector(".job-error");
    error.textContent = (entry.status === "dead" ? "Error: " : "Failed attempt: ") + entry.error;
    error.hidden = false;
  }
  const retry = node.querySelector(".retry-button");
  retry.hidden = entry.status !== "dead";
  retry.addEventListener("click", () => retryJob(entry.id, retry));
  return node;
}

function renderDecision(decision) {
  const li = document.createElement("li");
  li.className = "decision";
  const event = document.createElement("strong");
  event.textContent = decision.event;
  const change = document.createElement("span");
  const old = decision.old_memory;
  if (decision.event === "UPDATE" && old) change.textContent = ` ${old} → ${decision.text}`;
  else change.textContent = " " + (decision.text ?? old ?? "");
  li.append(event, change);
  if (decision.reason) {
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = ` (${decision.reason})`;
    li.append(reason);
  }
  const origin = document.createElement("span");
  origin.className = "muted";
  origin.textContent = ` · ${decision.origin.replace("_", " ")}`;
  li.append(origin);
  return li;
}

async function retryJob(id, button) {
  try {
    await api("POST", "/learning/" + encodeURIComponent(id) + "/retry");
    button.disabled = true;
    button.textContent = "Queued";
    setStatus("Queued again: refresh to see how it went.");
  } catch (error) {
    showError(error);
  }
}

$("tab-memories").addEventListener("click", () => showTab("memories"));
$("tab-learning").addEventListener("click", () => {
  showTab("learning");
  loadLearning(chosenUser() || state.user);
});
$("user-form").addEventListener("submit", () => {
  if (onLearningTab()) loadLearning(chosenUser());
});
$("learning-refresh").addEventListener("click", () => loadLearning(learning.user));
$("learning-more").addEventListener("click", loadLearningPage);
