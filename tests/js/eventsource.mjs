// eventsource.mjs - a small EventSource for the tests (Node.js 20 has
// none), enough of the WHATWG one for herald.js: open/message/error,
// named events, the id field and Last-Event-ID on its own reconnects,
// CLOSED on an HTTP error. Test hooks: TestEventSource.instances (every one
// made), es.drop() (cuts the connection as a network failure would), and
// es.requests (the Last-Event-ID header of each request, or null). The
// server's retry hint is capped at RETRY_MAX ms to keep tests short.
import http from "node:http";

const RETRY_MAX = 300;

export class TestEventSource {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0; // CONNECTING
    this.lastEventId = "";
    this.onopen = this.onmessage = this.onerror = null;
    this.status = 0;
    this.requests = [];
    this._listeners = new Map();
    this._retry = RETRY_MAX;
    this._closed = false;
    this._conn = null;
    this._timer = null;
    TestEventSource.instances.push(this);
    this._connect();
  }

  addEventListener(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, []);
    this._listeners.get(type).push(fn);
  }

  close() {
    this._closed = true;
    this.readyState = 2; // CLOSED
    clearTimeout(this._timer);
    if (this._conn) this._conn.req.destroy();
  }

  drop() {
    if (this._conn && this._conn.res) this._conn.res.destroy();
  }

  _dispatch(type, ev) {
    if (type === "message" && this.onmessage) this.onmessage(ev);
    for (const fn of this._listeners.get(type) || []) fn(ev);
  }

  _connect() {
    const headers = { Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    this.requests.push(this.lastEventId || null);
    const conn = { req: null, res: null, over: false };
    this._conn = conn;
    const lost = () => {
      if (conn.over || this._closed) return;
      conn.over = true;
      this.readyState = 0;
      if (this.onerror) this.onerror({ type: "error" });
      this._timer = setTimeout(() => {
        if (!this._closed) this._connect();
      }, this._retry);
    };
    conn.req = http.get(this.url, { headers }, (res) => {
      conn.res = res;
      this.status = res.statusCode;
      const type = res.headers["content-type"] || "";
      if (res.statusCode !== 200 || !type.startsWith("text/event-stream")) {
        conn.over = true;
        res.resume();
        this.readyState = 2;
        if (this.onerror) this.onerror({ type: "error" });
        return;
      }
      this.readyState = 1; // OPEN
      if (this.onopen) this.onopen({ type: "open" });
      res.setEncoding("utf8");
      let buf = "";
      let data = [];
      let event = "";
      res.on("data", (chunk) => {
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, "");
          buf = buf.slice(nl + 1);
          if (line === "") {
            if (data.length && !this._closed && this._conn === conn) {
              this._dispatch(event || "message", {
                type: event || "message",
                data: data.join("\n"),
                lastEventId: this.lastEventId,
              });
            }
            data = [];
            event = "";
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") data.push(value);
          else if (field === "event") event = value;
          else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
          else if (field === "retry" && /^\d+$/.test(value)) {
            this._retry = Math.min(Number(value), RETRY_MAX);
          }
        }
      });
      res.on("end", lost);
      res.on("error", lost);
      res.on("close", lost);
    });
    conn.req.on("error", lost);
  }
}
