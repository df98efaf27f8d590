// Resolve hooks (`module.register`, see index.mjs) that give ES modules NODE_PATH, as AWS's
// Node does: a bare specifier that the node_modules above the importing file do not have is
// looked up in each NODE_PATH directory, in order. Only directories named node_modules are
// searched: Node's own package lookup is pointed at each one from a file beside it.
import path from "node:path";
import { pathToFileURL } from "node:url";

let parents = [];

export function initialize(data) {
  parents = data.dirs.map((dir) => pathToFileURL(path.join(path.dirname(dir), "index.js")).href);
}

// A package name, not a relative or absolute path, a URL (node:, file:, data:) or #import.
const BARE = /^(?![./#]|[a-zA-Z][a-zA-Z0-9+.-]*:)/;

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    if (error?.code !== "ERR_MODULE_NOT_FOUND" || !BARE.test(specifier)) throw error;
    for (const parentURL of parents) {
      try {
        return await nextResolve(specifier, { ...context, parentURL });
      } catch (missing) {
        if (missing?.code !== "ERR_MODULE_NOT_FOUND") throw missing; // there, but broken
      }
    }
    throw error;
  }
}
