// fleetcron dashboard: fetches server-rendered fragments with the bearer token kept in this tab's
// session storage, refreshes them every 3 s, and sends Run/Enable/Disable as POSTs with the token
// header (no cookies: nothing a cross-site page could ride on).
"use strict";
(function () {
  const KEY = "fleetcron-token";
  const REFRESH_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const state = { task: params.get("task"), before: params.get("before") || "", status: params.get("status") || "" };
  let loading = false;
  let timer = null;

  function headers(extra) {
    const h = Object.assign({ "X-Fleetcron-Request": "1" }, extra || {});
    const token = sessionStorage.getItem(KEY);
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  function fragmentUrl() {
    if (!state.task) return "/ui/tasks";
    const q = new URLSearchParams({ id: state.task });
    if (state.before) q.set("before", state.before);
    if (state.status) q.set("status", state.status);
    return "/ui/task?" + q.toString();
  }

  function flash(text, bad) {
    const el = $("flash");
    el.textContent = text;
    el.className = bad ? "err" : "ok";
  }

  function showLogin(message) {
    $("login").hidden = false;
    $("logout").hidden = true;
    $("content").textContent = "";
    $("login-error").textContent = message || "";
    $("live").textContent = "";
  }

  async function errorText(response) {
    try { return (await response.json()).error || response.statusText; } catch (_) { return response.statusText; }
  }

  async function refresh() {
    if (loading) return;
    loading = true;
    try {
      const response = await fetch(fragmentUrl(), { headers: headers(), cache: "no-store" });
      if (response.status === 401) {
        sessionStorage.removeItem(KEY);
        showLogin(sessionStorage.getItem(KEY) ? "" : "");
        return;
      }
      if (!response.ok) {
        flash(await errorText(response), true);
        return;
      }
      const html = await response.text();
      $("login").hidden = true;
      $("logout").hidden = !sessionStorage.getItem(KEY);
      // Keep what the operator is typing across refreshes.
      const note = $("note");
      const typed = note ? note.value : "";
      const focused = note && document.activeElement === note;
      $("content").innerHTML = html; // rendered and escaped by the server; CSP forbids inline script
      const again = $("note");
      if (again) { again.value = typed; if (focused) again.focus(); }
      $("live").textContent = "live · " + new Date().toLocaleTimeString();
    } catch (error) {
      $("live").textContent = "offline: " + error;
    } finally {
      loading = false;
    }
  }

  async function act(action, task) {
    const note = $("note");
    const body = action === "trigger" ? undefined : JSON.stringify(note && note.value.trim() ? { note: note.value.trim() } : {});
    const response = await fetch("/api/tasks/" + encodeURIComponent(task) + "/" + action, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: body,
    });
    if (response.ok) {
      flash(action === "trigger" ? "Triggered " + task : (action === "enable" ? "Enabled " : "Disabled ") + task, false);
      if (note) note.value = "";
    } else {
      flash(await errorText(response), true);
    }
    await refresh();
  }

  function navigate() {
    const q = new URLSearchParams();
    if (state.task) q.set("task", state.task);
    if (state.before) q.set("before", state.before);
    if (state.status) q.set("status", state.status);
    history.replaceState(null, "", "/" + (q.toString() ? "?" + q.toString() : ""));
    refresh();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) { event.preventDefault(); act(button.dataset.action, button.dataset.task); return; }
    const page = event.target.closest("button[data-before]");
    if (page) { event.preventDefault(); state.before = page.dataset.before; navigate(); }
  });
  document.addEventListener("change", (event) => {
    if (event.target.id === "status-filter") { state.status = event.target.value; state.before = ""; navigate(); }
  });

  function start() {
    $("login").addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      const response = await fetch("/api/whoami", { headers: { Authorization: "Bearer " + token } });
      if (!response.ok) { showLogin(await errorText(response)); return; }
      sessionStorage.setItem(KEY, token);
      $("token").value = "";
      await refresh();
    });
    $("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(""); });
    refresh();
    timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
