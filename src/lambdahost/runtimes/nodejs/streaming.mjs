// Response streaming for the nodejs20.x runtime, as AWS's Node runtime provides it: the global
// `awslambda.streamifyResponse(handler)` marks a handler `(event, responseStream, context)`,
// and `awslambda.HttpResponseStream.from(stream, metadata)` prefixes the body with the JSON
// metadata and 8 NUL bytes that function URLs turn into status, headers and cookies.
// The response stream is the HTTP request to the Runtime API itself, in streaming mode
// (`Lambda-Runtime-Function-Response-Mode: streaming`, chunked); a failure after it has begun
// travels as the Lambda-Runtime-Function-Error-Type / -Error-Body (base64) trailers.

import http from "node:http";

const HANDLER_STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
const STREAM_RESPONSE = "response";
const HTTP_INTEGRATION_TYPE = "application/vnd.awslambda.http-integration-response";
const ERROR_TYPE = "Lambda-Runtime-Function-Error-Type";
const ERROR_BODY = "Lambda-Runtime-Function-Error-Body";

class InvalidStreamingOperation extends Error {
  constructor(message) {
    super(message);
    this.name = "Runtime.InvalidStreamingOperation";
  }
}

class HttpResponseStream {
  static from(underlyingStream, prelude) {
    underlyingStream.setContentType(HTTP_INTEGRATION_TYPE);
    const metadata = JSON.stringify(prelude); // JSON cannot hold a raw NUL: a safe delimiter
    underlyingStream._onBeforeFirstWrite = (write) => {
      write(metadata);
      write(new Uint8Array(8));
    };
    return underlyingStream;
  }
}

export function installGlobals() {
  globalThis.awslambda = {
    streamifyResponse(handler, options) {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE;
      if (options && options.highWaterMark) handler.highWaterMark = options.highWaterMark;
      return handler;
    },
    HttpResponseStream,
  };
}

export const isStreaming = (handler) => handler[HANDLER_STREAMING] === STREAM_RESPONSE;

// The Runtime API request that carries the response; resolves `done` with the agent's answer.
function openResponseStream({ host, port, path, highWaterMark }) {
  let resolveDone, rejectDone;
  const done = new Promise((resolve, reject) => ((resolveDone = resolve), (rejectDone = reject)));
  const req = http.request({
    host,
    port,
    path,
    method: "POST",
    agent: false, // its own connection: /error must still get through while this one is open
    highWaterMark,
    headers: {
      "Lambda-Runtime-Function-Response-Mode": "streaming",
      "Transfer-Encoding": "chunked",
      Trailer: `${ERROR_TYPE}, ${ERROR_BODY}`,
      "Content-Type": "application/octet-stream",
    },
  });
  req.on("response", (res) => {
    const chunks = [];
    res.on("data", (chunk) => chunks.push(chunk));
    res.on("end", () => resolveDone({ status: res.statusCode, body: Buffer.concat(chunks) }));
    res.on("error", rejectDone);
  });
  req.on("error", rejectDone);
  let started = false;
  const write = req.write.bind(req);
  req.setContentType = (contentType) => {
    if (started) throw new InvalidStreamingOperation("Cannot set content-type, too late.");
    req.setHeader("Content-Type", contentType);
  };
  req.write = (chunk, encoding, callback) => {
    if (typeof chunk !== "string" && !Buffer.isBuffer(chunk) && !(chunk instanceof Uint8Array)) {
      chunk = JSON.stringify(chunk);
    }
    if (!started) {
      started = true;
      if (typeof req._onBeforeFirstWrite === "function") req._onBeforeFirstWrite((piece) => write(piece));
    }
    return write(chunk, encoding, callback);
  };
  const end = req.end.bind(req);
  req.end = (chunk, encoding, callback) => {
    if (typeof chunk === "function") return req.end(undefined, undefined, chunk);
    if (chunk !== undefined && chunk !== null) req.write(chunk, encoding);
    else if (!started) req.write(""); // the prelude still goes first
    return end(callback);
  };
  const fail = (document) => {
    req.addTrailers({
      [ERROR_TYPE]: document.errorType,
      [ERROR_BODY]: Buffer.from(JSON.stringify(document)).toString("base64"),
    });
    end();
  };
  return { stream: req, done, fail };
}

// Runs a streaming handler to the end of its stream. `describe` and `logError` are the
// runtime's own error helpers, so a failure is shaped and logged as in buffered mode.
export async function invokeStreaming(handler, event, context, options) {
  const { host, port, requestId, describe, logError, warn } = options;
  const { stream, done, fail } = openResponseStream({
    host,
    port,
    path: `/2018-06-01/runtime/invocation/${requestId}/response`,
    highWaterMark: handler.highWaterMark,
  });
  try {
    const returned = handler(event, stream, context);
    if (!returned || typeof returned.then !== "function") {
      throw new Error("Streaming does not support non-async handlers.");
    }
    const result = await returned;
    if (result !== undefined) warn("Streaming handlers ignore return values.");
    if (!stream.writableEnded) stream.end(); // a handler that forgot end() still finishes
  } catch (error) {
    const document = describe(error ?? new Error("undefined"));
    logError("Invoke Error \t", document);
    if (stream.writableEnded) return; // too late for trailers: the response is complete
    fail(document);
  }
  await done.catch(() => undefined);
}
