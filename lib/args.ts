/**
 * Command-line errors from node:util's parseArgs, said in one line. With positionals allowed,
 * Node's unknown-option message goes on for a paragraph about passing one after `--`; the option
 * is the point.
 */
export function argsErrorMessage(err: Error): string {
  const unknown = /^Unknown option '([^']+)'/.exec(err.message);
  return unknown ? `unknown option ${unknown[1]}` : err.message;
}
