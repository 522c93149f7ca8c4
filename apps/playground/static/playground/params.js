// The `{{参数}}` of a prompt: argument-less macros whose name is not a built-in macro (the server
// expands parameters first, then macros; built-in names come from the page, see views.py).

const NAME = /^[\p{L}_][\p{L}\p{N}_]*(?:-[\p{L}\p{N}_]+)*$/u;
const MACRO = /\{\{([^{}]*)\}\}/gu;

export function detectParameters(texts, builtins) {
  const known = new Set(builtins.map((name) => name.toLowerCase()));
  const found = [];
  const seen = new Set();
  for (const text of texts) {
    for (const match of text.matchAll(MACRO)) {
      const name = match[1].trim();
      if (!NAME.test(name) || known.has(name.toLowerCase()) || seen.has(name)) continue;
      seen.add(name);
      found.push(name);
    }
  }
  return found;
}
