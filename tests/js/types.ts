// types.ts - a typical program against web/herald.d.ts; tests/js compiles
// it with tsc --strict --noEmit (it is never run).
import { Herald, HeraldError, Publication, Subscription } from "../../web/herald";

const herald = new Herald("/connection/websocket", {
  name: "ann",
  getToken: async () => "a.jwt.token",
  pingInterval: 25000,
});
const offState = herald.on("state", (s) => {
  const label: string = `${s.state} ${s.transport ?? "-"} ${s.retryIn}`;
  void label;
});
herald.on("disconnected", (d) => {
  if (d.code >= 3500 && !d.reconnect) {
    offState();
  }
});
const sub: Subscription = herald.subscribe(
  "chat:lobby",
  {
    onPublication(pub: Publication) {
      const n: number = pub.offset;
      void n;
    },
    onUnrecovered(result) {
      void result.recovered;
    },
    onError(err: HeraldError) {
      const code: number = err.code;
      void code;
    },
  },
  { getToken: (channel) => Promise.resolve(channel) }
);
herald.on("refreshed", (r) => {
  const what: string = r.channel ?? "connection";
  const ttl: number | undefined = r.result.ttl;
  void what;
  void ttl;
});
herald.on("publication", (p) => {
  const where: string = p.channel;
  const offset: number = p.pub.offset;
  void where;
  void offset;
});
herald.on("unsubscribed", (u) => {
  const why: string = u.reason;
  void why;
});
herald.on("error", (e) => {
  const where: string | undefined = e.channel;
  void where;
});
herald.connect();
async function main(): Promise<void> {
  const pos = await herald.publish("chat:lobby", { text: "hi", n: [1, 2] });
  const offset: number = pos.offset;
  const { publications } = await herald.history("chat:lobby", { limit: 20 });
  const { clients } = await herald.presence("chat:lobby");
  void offset;
  void publications.length;
  void Object.keys(clients);
  sub.unsubscribe();
  herald.disconnect();
}
void main();
