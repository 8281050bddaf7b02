/** Where command results go: stdout, as the API's JSON (`--json`) or as text. */
export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printText(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** Result of a command: the API's JSON for scripts, or the text rendering for people. */
export function emit<T>(json: boolean, value: T, render: (value: T) => string): void {
  if (json) printJson(value);
  else printText(render(value));
}
