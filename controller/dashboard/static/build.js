// The build page, live: log lines and state changes from the build's event stream.
// Every line is inserted as text (never as markup); the status part is re-rendered by the
// server, from its templates, whenever a target changes state. EventSource resumes by
// itself after a dropped connection, sending the Last-Event-ID of the last event it got.
(function () {
  "use strict";
  var main = document.getElementById("build");
  if (!main || !window.EventSource) { return; }
  var logs = {};
  document.querySelectorAll("pre[data-log-target]").forEach(function (pre) {
    logs[pre.dataset.logTarget] = pre;
  });
  var live = document.getElementById("live");
  var refreshing = null;

  function append(target, text, meta) {
    var pre = logs[target] || Object.values(logs)[0];
    if (!pre) { return; }
    var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    var line = document.createElement("div");
    line.textContent = text;
    if (meta) { line.className = "meta"; }
    pre.appendChild(line);
    if (stick) { pre.scrollTop = pre.scrollHeight; }
  }

  function refreshStatus() {
    // One refresh at a time; a state change during it asks for one more.
    if (refreshing) { refreshing.again = true; return; }
    refreshing = { again: false };
    fetch(main.dataset.status, { credentials: "same-origin", cache: "no-store" })
      .then(function (reply) { return reply.ok ? reply.text() : null; })
      .then(function (html) {
        if (html !== null) { document.getElementById("status").innerHTML = html; }
      })
      .catch(function () {})
      .finally(function () {
        var again = refreshing.again;
        refreshing = null;
        if (again) { refreshStatus(); }
      });
  }

  var source = new EventSource(main.dataset.events);
  source.addEventListener("open", function () { live.hidden = false; });
  source.addEventListener("error", function () { live.hidden = true; });
  source.addEventListener("log", function (e) {
    var event = JSON.parse(e.data);
    append(event.target, event.line || "", (event.line || "").indexOf("crossfarm: ") === 0);
  });
  source.addEventListener("state", function (e) {
    var event = JSON.parse(e.data);
    append(event.target, "── " + event.state, true);
    refreshStatus();
  });
  source.addEventListener("end", function () {
    // The stream is complete: without close() the browser would reconnect and replay.
    source.close();
    live.hidden = true;
    main.dataset.ended = "true";
    refreshStatus();
  });
})();
