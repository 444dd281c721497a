/* SmartStream time-on-page beacon (SPEC §3.1): include it in the template of every page whose
   reading time you measure, as a script element with data attributes naming the endpoint, the
   user and the page type (Django: {% load smartstream %}{% smartstream_beacon "A" %} renders it):
     script src="/static/smartstream-beacon.js"
            data-endpoint="https://worker:6066/events/page-time?key=PUBLIC_INGEST_KEY"
            data-user-id="42" data-page-type="A"
   sendBeacon cannot set headers: the credential is the public ingest key in the endpoint's query
   (never the server token, which must not reach a page). On leaving the page it sends
   {"metric": "time_spent", "user_id", "page_type", "time_spent"} as text/plain with
   navigator.sendBeacon, which survives the page unload. Works inline too (document.currentScript). */
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
