"use strict";
// The workers page: the server rendered the table; the overview stream sends it again when a
// worker registers, leaves, heartbeats or takes a job.
(() => {
  const body = document.querySelector("#workers tbody");
  qlorad.follow(() => "/api/stream", {
    workers: ({html}) => {
      body.replaceChildren(qlorad.fragment(html));
    },
  });
})();
