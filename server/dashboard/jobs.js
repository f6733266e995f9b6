"use strict";
// The jobs page: the server rendered the table; the overview stream sends the rows that
// changed (rendered by the server as well) and the order of all of them, newest first.
(() => {
  const body = document.querySelector("#jobs tbody");
  qlorad.follow(() => "/api/stream", {
    jobs: ({order, rows}) => {
      for (const [id, html] of Object.entries(rows)) {
        const fresh = qlorad.fragment(html).firstElementChild;
        const old = document.getElementById(`job-row-${id}`);
        if (old) old.replaceWith(fresh);
        else body.appendChild(fresh);
      }
      const keep = new Set(order.map((id) => `job-row-${id}`));
      for (const tr of [...body.children]) if (!keep.has(tr.id) && order.length > 0) tr.remove();
      for (const id of order) body.appendChild(document.getElementById(`job-row-${id}`));
    },
  });
})();
