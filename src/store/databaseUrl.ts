/** Whether a --db value selects PostgreSQL. Kept apart from db.ts so the CLI can check it without loading the drivers. */
export function isPostgresUrl(url: string): boolean {
  return /^postgres(ql)?:\/\//.test(url);
}
