// The floor's Node runtime loop: the least a Node runtime can do (http keep-alive, a no-op
// handler returning {}), to compare lambdahost's nodejs20.x runtime with.
import http from "node:http";

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
const prefix = `${process.env.FLOOR_PREFIX || ""}/2018-06-01/runtime/invocation/`;
const once = Boolean(process.env.FLOOR_ONCE);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, agent }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("end", () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

const handler = async () => ({});

for (;;) {
  const next = await request("GET", prefix + "next");
  const id = next.headers["lambda-runtime-aws-request-id"];
  const result = await handler(JSON.parse(next.body.toString() || "{}"));
  await request("POST", `${prefix}${id}/response`, JSON.stringify(result));
  if (once) break;
}
agent.destroy();
