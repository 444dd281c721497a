/* SmartStream time-on-page beacon (SPEC §3.1): include in the page template of every page whose
   reading time you measure, with data attributes naming the user and the page type:
     <script src="/static/smartstream-beacon.js" data-endpoint="https://worker:6066/events/page-time"
             data-user-id="{{ user.id }}" data-page-type="A"></script>
   On leaving the page it sends {"metric": "time_spent", "user_id", "page_type", "time_spent"} as
   text/plain with navigator.sendBeacon, which survives the page unload. */
(function () {
  var script = document.currentScript;
  var start = Date.now();
  var sent = false;
  function send() {
    if (sent) { return; }
    sent = true;
    var body = JSON.stringify({
      metric: "time_spent",
      user_id: script.dataset.userId,
      page_type: script.dataset.pageType,
      time_spent: (Date.now() - start) / 1000
    });
    navigator.sendBeacon(script.dataset.endpoint, body);
  }
  window.addEventListener("pagehide", send);
  window.addEventListener("beforeunload", send);
})();
