// The nodejs20.x runtime loop: load `_HANDLER` (CommonJS or ES module), then fetch events from
// the Runtime API, call the handler (async or callback style), post its result. No npm
// dependencies. Error documents and console output follow AWS's Node.js runtime.

import fs from "node:fs";
import http from "node:http";
import { createRequire, register } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import util from "node:util";
import { installGlobals, invokeStreaming, isStreaming } from "./streaming.mjs";

const [API_HOST, API_PORT] = process.env.AWS_LAMBDA_RUNTIME_API.split(":");
const PREFIX = "/2018-06-01/runtime";
const TASK_ROOT = process.env.LAMBDA_TASK_ROOT || "/var/task";
// Free keep-alive sockets are unref'd by the agent, so an idle runtime does not keep the
// event loop alive: that is how "the event loop is empty" becomes observable below.
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });

let currentRequestId; // undefined during init, as AWS prints it

function request(method, route, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: API_HOST, port: API_PORT, method, path: PREFIX + route, agent: keepAlive, headers },
      (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

// -- console, as AWS patches it: "<ISO time>\t<request id>\t<LEVEL>\t<message>" -----------
function patchConsole() {
  const write = (level) => (...args) => {
    const message = util.format(...args).replace(/\n/g, "\r");
    process.stdout.write(`${new Date().toISOString()}\t${currentRequestId}\t${level}\t${message}\n`);
  };
  console.log = write("INFO");
  console.info = write("INFO");
  console.warn = write("WARN");
  console.error = write("ERROR");
  console.debug = write("DEBUG");
  console.trace = write("TRACE");
  console.fatal = write("FATAL");
}

// -- errors ---------------------------------------------------------------------------
class RuntimeError extends Error {
  constructor(name, message, cause) {
    super(message);
    this.name = name;
    if (cause && cause.stack) this.stack = `${name}: ${message}\n${cause.stack.split("\n").slice(1).join("\n")}`;
  }
}

function describe(error) {
  if (error instanceof Error) {
    const stack = typeof error.stack === "string" ? error.stack.split("\n") : [];
    return { errorType: error.name || "Error", errorMessage: error.message, trace: stack };
  }
  let message;
  try {
    message = typeof error === "string" ? error : JSON.stringify(error);
  } catch {
    message = String(error);
  }
  return { errorType: typeof error, errorMessage: message, trace: [] };
}

function logError(prefix, document) {
  const logged = { errorType: document.errorType, errorMessage: document.errorMessage, stack: document.trace };
  console.error(prefix, JSON.stringify(logged));
}

// -- handler loading --------------------------------------------------------------------
// As AWS's runtime loads it: a .mjs file, and a .js file in a "type": "module" package (the
// nearest package.json decides, as in Node), are ES modules and imported; the rest is
// required. A .js file that is an ES module all the same (Node tells by its syntax) is
// imported when require() refuses it, also when it uses top-level await.
function inModulePackage(file) {
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    let text;
    try {
      text = fs.readFileSync(path.join(dir, "package.json"), "utf8");
    } catch {
      if (dir === path.dirname(dir)) return false;
      continue;
    }
    try {
      return JSON.parse(text).type === "module";
    } catch {
      return false; // require() then reports the broken package.json
    }
  }
}

// ES modules never search NODE_PATH (CommonJS does), only the node_modules of the directories
// above the importing file; AWS's Node searches NODE_PATH after those. Without layers, the host
// links /node_modules to the runtime's SDK, which every ES module finds that way. Directories
// of NODE_PATH that this does not cover (a layer's nodejs/node_modules, the SDK when a layer
// is there) are added by resolve hooks (node_path.mjs), only then: their thread costs ~30 ms.
function hasModules(dir) {
  try {
    return fs.readdirSync(dir).length > 0;
  } catch {
    return false;
  }
}

let esmSearchesNodePath = false;
function searchNodePathFromEsm() {
  if (esmSearchesNodePath) return;
  esmSearchesNodePath = true;
  const dirs = (process.env.NODE_PATH || "").split(":").filter((dir) => path.basename(dir) === "node_modules");
  let linked;
  try {
    linked = fs.realpathSync("/node_modules");
  } catch {
    linked = undefined;
  }
  if (dirs.some((dir) => dir !== linked && hasModules(dir))) {
    register("./node_path.mjs", import.meta.url, { data: { dirs } });
  }
}

function importModule(file) {
  searchNodePathFromEsm();
  return import(pathToFileURL(file).href);
}

async function loadModule(modulePath) {
  const require = createRequire(path.join(TASK_ROOT, "index.js"));
  for (const extension of [".js", ".mjs", ".cjs"]) {
    const file = modulePath + extension;
    if (!fs.existsSync(file)) continue;
    if (extension === ".mjs" || (extension === ".js" && inModulePackage(file))) return importModule(file);
    try {
      return require(file);
    } catch (error) {
      if (error && (error.code === "ERR_REQUIRE_ESM" || error.code === "ERR_REQUIRE_ASYNC_MODULE")) {
        return importModule(file);
      }
      throw error;
    }
  }
  return require(path.basename(modulePath)); // a module on NODE_PATH, as AWS allows
}

async function loadHandler(handlerString) {
  const slash = handlerString.lastIndexOf("/");
  const root = handlerString.slice(0, slash + 1);
  const match = /^([^.]*)\.(.*)$/.exec(handlerString.slice(slash + 1));
  if (!match) {
    throw new RuntimeError("Runtime.MalformedHandlerName", "Bad handler");
  }
  const [, moduleName, handlerPath] = match;
  let module;
  try {
    module = await loadModule(path.resolve(TASK_ROOT, root, moduleName));
  } catch (error) {
    if (error instanceof SyntaxError) {
      throw new RuntimeError("Runtime.UserCodeSyntaxError", String(error), error);
    }
    if (error && (error.code === "MODULE_NOT_FOUND" || error.code === "ERR_MODULE_NOT_FOUND")) {
      throw new RuntimeError("Runtime.ImportModuleError", String(error), error);
    }
    throw error;
  }
  const handler = handlerPath.split(".").reduce((value, key) => (value == null ? undefined : value[key]), module);
  if (handler === undefined) {
    throw new RuntimeError("Runtime.HandlerNotFound", `${handlerString} is undefined or not exported`);
  }
  if (typeof handler !== "function") {
    throw new RuntimeError("Runtime.HandlerNotFound", `${handlerString} is not a function`);
  }
  return handler;
}

// -- invocation -----------------------------------------------------------------------
let emptyLoopWaiter = null;
process.on("beforeExit", () => {
  if (emptyLoopWaiter) {
    const resolve = emptyLoopWaiter;
    emptyLoopWaiter = null;
    resolve();
  }
});
const emptyEventLoop = () => new Promise((resolve) => (emptyLoopWaiter = resolve));

function makeContext(headers) {
  const env = process.env;
  const deadline = Number(headers["lambda-runtime-deadline-ms"] || 0);
  const parse = (value) => (value ? JSON.parse(value) : undefined);
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parse(headers["lambda-runtime-client-context"]),
    identity: parse(headers["lambda-runtime-cognito-identity"]),
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
}

// Resolves with [error, result] once the handler finished: its promise settled, its callback
// was called (after the event loop drained, if the context asks for that), or - a sync
// handler that did neither - once the event loop is empty (result null).
function runHandler(handler, event, context) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (error, result) => {
      if (settled) return;
      settled = true;
      resolve([error, result]);
    };
    const callback = (error, result) => {
      if (context.callbackWaitsForEmptyEventLoop) {
        emptyEventLoop().then(() => finish(error, result));
      } else {
        finish(error, result);
      }
    };
    context.done = callback;
    context.succeed = (result) => callback(null, result);
    context.fail = (error) => callback(error ?? "handled");
    let returned;
    try {
      returned = handler(event, context, callback);
    } catch (error) {
      return finish(error);
    }
    if (returned && typeof returned.then === "function") {
      returned.then((result) => finish(null, result), (error) => finish(error ?? new Error("undefined")));
    } else if (handler.length < 3) {
      emptyEventLoop().then(() => finish(null, null));
    }
  });
}

async function postError(route, document) {
  const body = JSON.stringify(document);
  await request("POST", route, body, {
    "Content-Type": "application/json",
    "Lambda-Runtime-Function-Error-Type": document.errorType,
  });
}

async function invoke(handler, response) {
  const headers = response.headers;
  const requestId = headers["lambda-runtime-aws-request-id"];
  currentRequestId = requestId;
  if (headers["lambda-runtime-trace-id"]) process.env._X_AMZN_TRACE_ID = headers["lambda-runtime-trace-id"];
  else delete process.env._X_AMZN_TRACE_ID;
  const context = makeContext(headers);
  const text = response.body.toString();
  const event = text ? JSON.parse(text) : {};
  if (isStreaming(handler)) {
    const warn = (message) => console.warn(message);
    return invokeStreaming(handler, event, context, { host: API_HOST, port: API_PORT, requestId, describe, logError, warn });
  }
  const [error, result] = await runHandler(handler, event, context);
  if (error !== null && error !== undefined) {
    const document = describe(error);
    logError("Invoke Error \t", document);
    return postError(`/invocation/${requestId}/error`, document);
  }
  let body;
  try {
    body = JSON.stringify(result === undefined ? null : result);
  } catch (marshal) {
    const document = { errorType: "Runtime.MarshalError", errorMessage: `Unable to stringify response body: ${marshal.message}`, trace: [] };
    logError("Invoke Error \t", document);
    return postError(`/invocation/${requestId}/error`, document);
  }
  await request("POST", `/invocation/${requestId}/response`, body, { "Content-Type": "application/json" });
}

// Errors that escape the handler (a throw in a timer, an unhandled rejection) fail the
// current invocation and end the runtime, as in AWS.
async function crash(error, errorType) {
  const document = describe(error);
  if (errorType) {
    document.errorMessage = `${document.errorType}: ${document.errorMessage}`;
    document.errorType = errorType;
  }
  logError("Uncaught Exception \t", document);
  const route = currentRequestId ? `/invocation/${currentRequestId}/error` : "/init/error";
  try {
    await postError(route, document);
  } finally {
    process.exit(129);
  }
}
process.on("uncaughtException", (error) => crash(error));
process.on("unhandledRejection", (reason) => crash(reason, "Runtime.UnhandledPromiseRejection"));

async function main() {
  patchConsole();
  installGlobals(); // `awslambda`, which handler modules use as they load
  let handler;
  try {
    handler = await loadHandler(process.env._HANDLER || "");
  } catch (error) {
    const document = describe(error);
    logError("Uncaught Exception \t", document);
    await postError("/init/error", document);
    process.exit(129);
  }
  for (;;) {
    const next = await request("GET", "/invocation/next");
    await invoke(handler, next);
    currentRequestId = undefined;
  }
}

main();
