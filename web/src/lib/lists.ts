/** Names typed into one field, separated by commas or spaces ("bob, ada" → ["bob", "ada"]). */
export function splitList(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((each) => each.trim())
    .filter(Boolean);
}
