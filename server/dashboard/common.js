"use strict";
// Shared by the dashboard's pages: number formats (twins of the ones in
// server/dashboard_pages.cc, so a value reads the same before and after a live update), the
// "live" indicator in the header, and following a server-sent event stream.
const qlorad = (() => {
  // A diverged loss arrives as the string "NaN" (or "Infinity"): shown as qloractl shows it.
  function fmtLoss(value) {
    const x = Number(value);
    if (Number.isFinite(x)) return x.toFixed(4);
    return Number.isNaN(x) ? "nan" : (x > 0 ? "inf" : "-inf");
  }

  // "0:35", "1:02:03"
  function fmtDuration(seconds) {
    if (!isFinite(seconds) || seconds < 0) return "";
    const total = Math.round(seconds);
    const h = Math.floor(total / 3600), m = Math.floor(total / 60) % 60, s = total % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
  }

  // "512 B", "1.50 GiB"
  function fmtBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let value = bytes / 1024, unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit++;
    }
    return `${value.toFixed(2)} ${units[unit]}`;
  }

  function setLive(text, state) {
    const live = document.getElementById("live");
    if (!live) return;
    live.textContent = text;
    live.dataset.state = state;
  }

  // Follows an event stream: handlers maps event names to functions of the parsed JSON data.
  // EventSource reconnects by itself after a dropped connection (resuming from the last event
  // id), but gives up on an answer other than 200 (the server's stream cap answers 503), so
  // then this opens urlFor(lastEventId) again after a pause. Returns {stop()}.
  function follow(urlFor, handlers) {
    let source = null, stopped = false, lastId = "";
    function open() {
      source = new EventSource(urlFor(lastId));
      source.onopen = () => setLive("live", "on");
      for (const [name, handle] of Object.entries(handlers)) {
        source.addEventListener(name, (event) => {
          if (event.lastEventId) lastId = event.lastEventId;
          handle(JSON.parse(event.data));
        });
      }
      source.onerror = () => {
        if (stopped) return;
        setLive("reconnecting…", "off");
        if (source.readyState === EventSource.CLOSED) setTimeout(() => stopped || open(), 5000);
      };
    }
    open();
    return {
      stop() {
        stopped = true;
        source.close();
      },
    };
  }

  // Elements from server-rendered HTML (the streams send fragments the pages render too).
  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  }

  return {fmtLoss, fmtDuration, fmtBytes, setLive, follow, fragment};
})();
